"""Sample grids written and logged while training (``--save_images_steps``), as diffusers'
``train_unconditional.py`` does with ``--save_images_epochs``.

Every N optimisation steps the main process draws samples from the model being trained (its EMA weights with
``--use_ema``), from noise fixed once for the whole run, so the grids of successive steps show the same samples
improving. Each grid is written to ``output_dir/samples/step-NNNNNN.png`` (crash-safe: a kill leaves the previous
grids and, at most, a hidden ``.incomplete-*`` entry that the next write removes) and logged to the trackers:
TensorBoard (``SummaryWriter.add_image``) and Weights & Biases (``wandb.Image``); other trackers get the numbers only.

- Teacher (:func:`teacher_grid`): ``eval_batch_size`` images from the teacher's Euler sampler
  (:func:`f2d2_diffusers.sampling.teacher_euler_sample`); for 2-D vectors a scatter plot over the training data.
- F2D2 student (:func:`f2d2_grid`): one row per step count (1, 2, 4), the same noise in every row, drawn by
  :class:`f2d2_diffusers.F2D2Pipeline`, each sample's log-likelihood written under it (bits/dim on the data's
  grey-level scale); for 2-D vectors one scatter panel per step count, points coloured by their log-density (nats).

Other vector data (``d != 2``) have no picture: the grid is skipped with one info line. Sampling draws from its own
generator, never from the global random state, so a resumed run trains exactly as the uninterrupted one.
"""

import logging
import math
import os
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..atomic import staged_output

logger = logging.getLogger("f2d2_training")

#: Sub-folder of ``output_dir`` the grids go to.
SAMPLES_DIR = "samples"
#: Rows of the F2D2 grid: network calls per sample.
GRID_STEP_COUNTS = (1, 2, 4)
#: Points drawn for a 2-D scatter plot (``--eval_batch_size`` sets images per row, too few for a scatter).
SCATTER_POINTS = 1000
#: Seed of the grids' fixed noise.
GRID_SEED = 0
#: Images per row of the teacher's grid.
TEACHER_ROW = 8
#: Tracker tag of the grids.
TRACKER_TAG = "samples"

#: A function of the (unwrapped, eval-mode) model that draws and renders one grid.
GridFn = Callable[[torch.nn.Module], "SampleGrid"]


@dataclass
class SampleGrid:
    """One rendered grid: the picture, a one-line caption, and scalars for the trackers (e.g. mean bits/dim)."""

    image: "object"  # PIL.Image.Image
    caption: str
    metrics: Dict[str, float] = field(default_factory=dict)


def grid_path(output_dir: str, step: int) -> str:
    """``output_dir/samples/step-{step:06d}.png``."""
    return os.path.join(output_dir, SAMPLES_DIR, f"step-{step:06d}.png")


def fixed_noise(num_samples: int, sample_shape: Sequence[int], seed: int = GRID_SEED) -> torch.Tensor:
    """The grids' noise: the same for every grid of a run (and every run with the same shape), on the CPU."""
    return torch.randn((num_samples, *sample_shape), generator=torch.Generator().manual_seed(seed))


def _has_picture(data) -> bool:
    if data.kind == "image" or tuple(data.sample_shape) == (2,):
        return True
    logger.info(f"--save_images_steps: {data.sample_shape[0]}-D vectors have no picture (images and 2-D vectors "
                "only); no sample grids are written")
    return False


def teacher_grid(data, num_samples: int, num_inference_steps: int = 50) -> Optional[GridFn]:
    """The teacher's grid: ``num_samples`` images (or :data:`SCATTER_POINTS` 2-D points) from its Euler sampler with
    ``num_inference_steps`` steps; ``None`` for data without a picture."""
    from ..sampling import teacher_euler_sample

    if not _has_picture(data):
        return None
    noise = fixed_noise(num_samples if data.kind == "image" else SCATTER_POINTS, data.sample_shape)
    reference = None if data.kind == "image" else _training_points(data)

    def make(model) -> SampleGrid:
        param = next(model.parameters())
        samples = teacher_euler_sample(model, noise.to(param.device, param.dtype), num_inference_steps).float().cpu()
        what = f"teacher Euler samples, {num_inference_steps} steps"
        if data.kind == "image":
            image = render_image_grid(list(samples.split(TEACHER_ROW)), title=what)
        else:
            image = render_scatter([(samples.numpy(), None, f"{num_inference_steps} Euler steps")], reference, title=what)
        return SampleGrid(image, f"{what} (fixed noise)")

    return make


def f2d2_grid(data, num_samples: int, step_counts: Sequence[int] = GRID_STEP_COUNTS,
              shift: float = 1.0) -> Optional[GridFn]:
    """The F2D2 grid: a row per step count, the same noise in each, every sample's log-likelihood under it (bits/dim
    for images, nats for 2-D vectors, shown by colour); ``None`` for data without a picture. ``shift``: the
    scheduler's, the grid the map was trained on."""
    if not _has_picture(data):
        return None
    noise = fixed_noise(num_samples if data.kind == "image" else SCATTER_POINTS, data.sample_shape)
    reference = None if data.kind == "image" else _training_points(data)

    def make(model) -> SampleGrid:
        from ..pipelines import F2D2Pipeline
        from ..schedulers import F2D2Scheduler

        pipeline = F2D2Pipeline(unet=model, scheduler=F2D2Scheduler(shift=shift), num_levels=data.num_levels)
        pipeline.set_progress_bar_config(disable=True)
        param = next(model.parameters())
        rows, scores, metrics = [], [], {}
        for steps in step_counts:
            out = pipeline(latents=noise.to(param.device, param.dtype), num_inference_steps=steps, output_type="latent")
            rows.append(out.images.float().cpu())
            if data.kind == "image":
                score = out.bits_per_dim.float().cpu()
                metrics[f"samples/bits_per_dim_{steps}_step"] = float(score.mean())
            else:
                score = out.log_prob.float().cpu()
                metrics[f"samples/log_prob_nats_{steps}_step"] = float(score.mean())
            scores.append(score)
        counts = "/".join(str(s) for s in step_counts)
        if data.kind == "image":
            title = f"F2D2 samples, rows: {counts} steps; under each: its bits/dim"
            image = render_image_grid(rows, row_labels=[_steps_label(s) for s in step_counts],
                                      cell_labels=[[f"{v:.2f}" for v in score.tolist()] for score in scores], title=title)
        else:
            title = f"F2D2 samples at {counts} steps, coloured by log p (nats)"
            panels = [(row.numpy(), score.numpy(), f"{_steps_label(s)}: mean log p {float(score.mean()):.2f}")
                      for row, score, s in zip(rows, scores, step_counts)]
            image = render_scatter(panels, reference, title=title)
        return SampleGrid(image, f"{title} (fixed noise)", metrics)

    return make


def save_sample_grid(args, accelerator, model, ema_model, step: int, make_grid: Optional[GridFn]) -> Optional[str]:
    """Draw the grid with the EMA weights (if any), write it to :func:`grid_path` and log it to the trackers.

    Main process only (the others go on to the next step and wait for it there); the model is back in training
    mode with its own weights afterwards. Returns the PNG's path, or ``None`` when nothing was written (another
    process, no grid function, or samples that came out NaN, which is logged as a warning and not fatal).
    """
    if make_grid is None or not accelerator.is_main_process:
        return None
    from .loop import ema_weights

    unwrapped = accelerator.unwrap_model(model)
    was_training = unwrapped.training
    try:
        with ema_weights(unwrapped, ema_model), torch.no_grad():
            unwrapped.eval()
            grid = make_grid(unwrapped)
    except ValueError as err:  # NaN / inf samples early in training: a warning, not the end of the run
        logger.warning(f"step {step}: no sample grid ({err})")
        return None
    finally:
        unwrapped.train(was_training)
    path = grid_path(args.output_dir, step)
    folder, name = os.path.split(path)
    with staged_output(folder) as staging:
        grid.image.save(os.path.join(staging, name))
    log_grid(accelerator, grid, step)
    return path


def log_grid(accelerator, grid: SampleGrid, step: int, tag: str = TRACKER_TAG) -> None:
    """``grid`` to each tracker that takes images (TensorBoard, Weights & Biases; others skipped), and its
    metrics to all of them through ``accelerator.log``."""
    for tracker in getattr(accelerator, "trackers", []):
        name = getattr(tracker, "name", None)
        if name == "tensorboard":
            writer = tracker.writer
            writer.add_image(tag, np.asarray(grid.image.convert("RGB")), step, dataformats="HWC")
            writer.add_text(f"{tag}/caption", grid.caption, step)
        elif name == "wandb":
            import wandb

            tracker.log({tag: wandb.Image(grid.image, caption=grid.caption)}, step=step)
    if grid.metrics:
        accelerator.log(dict(grid.metrics), step=step)


# --- rendering (PIL only: no plotting library needed) ---------------------------------------------------------------

#: Smallest side, in pixels, of one image in a grid (small images are enlarged by an integer factor).
MIN_TILE = 64
_PAD = 4
_TEXT_HEIGHT = 14
_SCATTER_SIDE = 256


def _steps_label(steps: int) -> str:
    return f"{steps} step{'s' if steps != 1 else ''}"


def _font():
    from PIL import ImageFont

    return ImageFont.load_default()


def _text_width(draw, text: str, font) -> int:
    left, _, right, _ = draw.textbbox((0, 0), text, font=font)
    return right - left


def to_pixels(images: torch.Tensor) -> np.ndarray:
    """Model-space images ``(B, C, H, W)`` in [-1, 1] to ``uint8`` arrays ``(B, H, W, C)``."""
    pixels = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).numpy()


def render_image_grid(rows: Sequence[torch.Tensor], row_labels: Optional[Sequence[str]] = None,
                      cell_labels: Optional[Sequence[Sequence[str]]] = None, title: Optional[str] = None):
    """A PIL grid of model-space image batches, one row per batch, with row labels on the left, a label under each
    image and a title line on top."""
    from PIL import Image, ImageDraw

    font = _font()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    arrays = [to_pixels(row) for row in rows]
    height, width = arrays[0].shape[1:3]
    scale = max(1, math.ceil(MIN_TILE / max(height, width)))
    tile_w, tile_h = width * scale, height * scale
    labels = cell_labels or [[] for _ in rows]
    label_w = max([_text_width(probe, t, font) for row in labels for t in row] or [0])
    cell_w = max(tile_w, label_w) + _PAD
    cell_h = tile_h + (_TEXT_HEIGHT if cell_labels else 0) + _PAD
    left = max([_text_width(probe, t, font) for t in (row_labels or [])] or [0]) + (2 * _PAD if row_labels else _PAD)
    top = _TEXT_HEIGHT + _PAD if title else _PAD
    columns = max(a.shape[0] for a in arrays)
    canvas_w = max(left + columns * cell_w + _PAD, (_text_width(probe, title, font) + 2 * _PAD) if title else 0)
    canvas = Image.new("RGB", (canvas_w, top + len(arrays) * cell_h + _PAD), "white")
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((_PAD, 2), title, fill="black", font=font)
    for r, array in enumerate(arrays):
        y = top + r * cell_h
        if row_labels:
            draw.text((_PAD, y + tile_h // 2 - _TEXT_HEIGHT // 2), row_labels[r], fill="black", font=font)
        for c, pixels in enumerate(array):
            tile = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
            tile = tile.resize((tile_w, tile_h), resample=Image.NEAREST).convert("RGB")
            x = left + c * cell_w
            canvas.paste(tile, (x + (cell_w - _PAD - tile_w) // 2, y))
            if c < len(labels[r]):
                text = labels[r][c]
                draw.text((x + (cell_w - _PAD - _text_width(draw, text, font)) // 2, y + tile_h + 1), text,
                          fill="black", font=font)
    return canvas


def _training_points(data, limit: int = 2000) -> np.ndarray:
    count = min(limit, len(data.dataset))
    return torch.stack([torch.as_tensor(data.dataset[i]) for i in range(count)]).float().numpy()


def _colour(values: np.ndarray) -> List[Tuple[int, int, int]]:
    """Dark blue (low) to yellow (high), scaled to the 2nd-98th percentile of ``values``."""
    lo, hi = np.percentile(values, [2, 98]) if values.size else (0.0, 1.0)
    t = np.clip((values - lo) / (hi - lo if hi > lo else 1.0), 0, 1)
    low, high = np.array([40, 30, 120]), np.array([250, 220, 30])
    return [tuple(int(c) for c in low + (high - low) * v) for v in t]


def render_scatter(panels: Sequence[Tuple[np.ndarray, Optional[np.ndarray], str]], reference: Optional[np.ndarray],
                   title: Optional[str] = None):
    """Side-by-side scatter panels of 2-D points ``(points, values or None, label)`` over training data (grey),
    all on the training data's bounds, so panels and grids compare. ``values`` colour the points."""
    from PIL import Image, ImageDraw

    font = _font()
    bounds_from = reference if reference is not None and len(reference) else np.concatenate([p[0] for p in panels])
    lo, hi = bounds_from.min(axis=0), bounds_from.max(axis=0)
    span = np.maximum(hi - lo, 1e-6)
    lo, hi = lo - 0.1 * span, hi + 0.1 * span
    side = _SCATTER_SIDE
    top = _TEXT_HEIGHT + _PAD if title else _PAD
    width = len(panels) * (side + _PAD) + _PAD
    if title:
        width = max(width, _text_width(ImageDraw.Draw(Image.new("RGB", (1, 1))), title, font) + 2 * _PAD)
    canvas = Image.new("RGB", (width, top + side + _TEXT_HEIGHT + 2 * _PAD), "white")
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((_PAD, 2), title, fill="black", font=font)

    def to_xy(points, x0):
        xy = (np.clip(points, lo, hi) - lo) / (hi - lo)
        return np.stack([x0 + xy[:, 0] * (side - 1), top + (1 - xy[:, 1]) * (side - 1)], axis=1)

    for i, (points, values, label) in enumerate(panels):
        x0 = _PAD + i * (side + _PAD)
        draw.rectangle((x0, top, x0 + side - 1, top + side - 1), outline=(180, 180, 180))
        if reference is not None:
            for x, y in to_xy(reference, x0):
                draw.rectangle((x, y, x + 1, y + 1), fill=(185, 185, 185))
        colours = _colour(values) if values is not None else [(30, 90, 200)] * len(points)
        for (x, y), colour in zip(to_xy(points, x0), colours):
            draw.rectangle((x - 1, y - 1, x + 1, y + 1), fill=colour)
        draw.text((x0, top + side + 2), label, fill="black", font=font)
    return canvas
