#!/usr/bin/env python
"""Train the small digits classifier whose features score generated digits (Frechet distance), and ship it.

Train split: scikit-learn's digits 0..1499 (the F2D2 models' train split), labels ``load_digits().target``; each
epoch re-dequantises the 17 grey levels with fresh uniform noise (``f2d2_diffusers.dequantize``), the same
model-space inputs in ``[-1, 1]`` the generative models see. Test accuracy is measured on images 1500 on (297
images, one seeded dequantisation draw). Writes the model with ``save_pretrained`` and a model card ``README.md``.

    python benchmarks/train_digits_classifier.py --output_dir checkpoints/digits-classifier

Load with ``f2d2_diffusers.DigitsClassifier.from_pretrained("checkpoints/digits-classifier")``.
"""

import argparse
import json
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from f2d2_diffusers.evaluation.reports import benchmark_paths

DEFAULT_OUTPUT = benchmark_paths(Path(__file__).resolve().parents[1]).digits_classifier


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output_dir", default=DEFAULT_OUTPUT)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--learning_rate", type=float, default=2e-3)
    p.add_argument("--weight_decay", type=float, default=1e-4)
    p.add_argument("--feature_dim", type=int, default=64)
    p.add_argument("--max_shift", type=int, default=1, help="random translation by up to this many pixels (0: off)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def digits_labels(split: str) -> torch.Tensor:
    from sklearn.datasets import load_digits

    from f2d2_diffusers.data import DIGITS_TEST_START

    target = torch.as_tensor(load_digits().target, dtype=torch.long)
    return target[:DIGITS_TEST_START] if split == "train" else target[DIGITS_TEST_START:]


def random_shift(levels: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image by up to ``max_shift`` pixels in each direction, filling with level 0 (background)."""
    if max_shift <= 0:
        return levels
    size = levels.shape[-1]
    padded = torch.nn.functional.pad(levels, (max_shift,) * 4)
    dy, dx = torch.randint(0, 2 * max_shift + 1, (2, len(levels)), generator=generator)
    return torch.stack([padded[i, :, dy[i]:dy[i] + size, dx[i]:dx[i] + size] for i in range(len(levels))])


@torch.no_grad()
def accuracy(model, images: torch.Tensor, labels: torch.Tensor) -> float:
    model.eval()
    return (model(images).argmax(1) == labels).float().mean().item()


def main(args):
    from f2d2_diffusers import dequantize
    from f2d2_diffusers.evaluation import DigitsClassifier
    from f2d2_diffusers.data import DIGITS_NUM_LEVELS, load_digits_levels

    torch.manual_seed(args.seed)
    train_levels, train_labels = load_digits_levels("train"), digits_labels("train")
    test_levels, test_labels = load_digits_levels("test"), digits_labels("test")
    test_images = dequantize(test_levels, DIGITS_NUM_LEVELS, generator=torch.Generator().manual_seed(args.seed))
    model = DigitsClassifier(feature_dim=args.feature_dim)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=args.weight_decay)
    steps_per_epoch = -(-len(train_levels) // args.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, args.learning_rate, total_steps=args.epochs * steps_per_epoch)
    noise_gen = torch.Generator().manual_seed(args.seed + 1)
    start = time.perf_counter()
    for _ in (bar := tqdm(range(args.epochs), desc="epochs")):
        model.train()
        images = dequantize(random_shift(train_levels, args.max_shift, noise_gen), DIGITS_NUM_LEVELS, generator=noise_gen)
        order = torch.randperm(len(images), generator=noise_gen)
        for i in range(0, len(order), args.batch_size):
            idx = order[i:i + args.batch_size]
            loss = F.cross_entropy(model(images[idx]), train_labels[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    seconds = time.perf_counter() - start
    model.eval()
    train_acc = accuracy(model, dequantize(train_levels, DIGITS_NUM_LEVELS, generator=torch.Generator().manual_seed(args.seed)), train_labels)
    test_acc = accuracy(model, test_images, test_labels)
    num_params = sum(p.numel() for p in model.parameters())
    print(f"train accuracy {train_acc:.4f}, test accuracy {test_acc:.4f} (297 images), {num_params} parameters, {seconds:.1f} s")

    os.makedirs(args.output_dir, exist_ok=True)
    model.save_pretrained(args.output_dir)
    metrics = dict(train_accuracy=train_acc, test_accuracy=test_acc, test_images=len(test_labels), num_parameters=num_params,
                   train_seconds=seconds, epochs=args.epochs, seed=args.seed)
    with open(os.path.join(args.output_dir, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    card = f"""---
library_name: diffusers
tags: [f2d2, digits, classifier, evaluation]
---

# digits-classifier

A tiny CNN ({num_params:,} parameters; `f2d2_diffusers.DigitsClassifier`) on scikit-learn's 8x8 digits in the
package's model space: `(B, 1, 8, 8)` in `[-1, 1]`, i.e. the 17 grey levels uniformly dequantised
(`f2d2_diffusers.dequantize`).

**What it is for.** It is the feature extractor of the sample-quality benchmark (`benchmarks/bench_sampling.py`):
`features(x)` (the {args.feature_dim}-unit penultimate layer) feeds `f2d2_diffusers.metrics.frechet_distance`, an
FID analogue for 8x8 digits. `forward(x)` returns 10 class logits.

| split | images | accuracy |
|---|---|---|
| train (0..1499) | 1500 | {train_acc:.4f} |
| test (1500..1796, never trained on) | {len(test_labels)} | {test_acc:.4f} |

Trained in {seconds:.0f} s on one CPU thread ({args.epochs} epochs, batch {args.batch_size}, AdamW lr {args.learning_rate}
one-cycle, fresh dequantisation noise and random shifts of up to {args.max_shift} pixel each epoch, seed {args.seed}):

```bash
OMP_NUM_THREADS=1 python benchmarks/train_digits_classifier.py --output_dir checkpoints/digits-classifier
```

```python
from f2d2_diffusers.evaluation import DigitsClassifier
clf = DigitsClassifier.from_pretrained("checkpoints/digits-classifier")
features = clf.features(x)   # (B, {args.feature_dim})
```
"""
    with open(os.path.join(args.output_dir, "README.md"), "w") as f:
        f.write(card)
    print(f"wrote {args.output_dir}")
    return metrics


if __name__ == "__main__":
    main(parse_args())
