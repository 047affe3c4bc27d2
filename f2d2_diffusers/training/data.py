"""The training data named on the command line, as a torch ``Dataset`` plus what the model and the card need.

Images are held as integer grey levels (``uint8``) and uniformly dequantised into [-1, 1] per batch; vectors are
used as they are. Sources: the embedded data sets (``--dataset``), a folder of images (``--train_data_dir``), a Hub
image dataset (``--dataset_name``) or a file of vectors (``--train_data_file``).
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Tuple

import numpy as np
import torch

from ..data import DIGITS_NUM_LEVELS, DIGITS_TEST_START, EMBEDDED_DATASETS, TOY_DATASETS
from ..data import load_digits_levels, load_test_split, load_toy, load_vectors
from ..dequantization import dequantize, pixels_to_levels
from .cli import DEFAULT_RESOLUTION, DIGITS_RESOLUTION, TrainingError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff", ".ppm", ".pgm")


@dataclass
class TrainingData:
    """The training set and how to turn one of its batches into model-space data.

    ``kind``: ``"image"`` (batches of integer levels ``(B, C, H, W)``, uint8, dequantised per batch into [-1, 1])
    or ``"vector"`` (batches of float vectors ``(B, d)``, used as they are).
    """

    dataset: torch.utils.data.Dataset
    kind: str
    sample_shape: Tuple[int, ...]
    num_levels: Optional[int]
    description: str
    card_datasets: List[str] = field(default_factory=list)

    def to_model_space(self, batch: torch.Tensor) -> torch.Tensor:
        if self.kind == "image":
            return dequantize(batch, self.num_levels)
        return batch.float()


class LevelsTensorDataset(torch.utils.data.Dataset):
    """Images already held as integer levels ``(N, C, H, W)``; optional random horizontal flip."""

    def __init__(self, levels: torch.Tensor, random_flip: bool = False):
        self.levels = levels
        self.random_flip = random_flip

    def __len__(self):
        return self.levels.shape[0]

    def __getitem__(self, index):
        image = self.levels[index]
        if self.random_flip and torch.rand(()) < 0.5:
            image = image.flip(-1)
        return image


class VectorDataset(torch.utils.data.Dataset):
    """Float vectors ``(N, d)``, one per example."""

    def __init__(self, vectors: torch.Tensor):
        self.vectors = vectors

    def __len__(self):
        return self.vectors.shape[0]

    def __getitem__(self, index):
        return self.vectors[index]


class PILImageDataset(torch.utils.data.Dataset):
    """Images read lazily with PIL and made into integer levels, like ``train_unconditional.py``'s transforms
    (resize the shorter side, center or random crop, random flip) without torchvision."""

    def __init__(self, get_image: Callable[[int], "object"], length: int, channels: int, resolution: int,
                 num_levels: int, center_crop: bool, random_flip: bool):
        self.get_image = get_image
        self.length = length
        self.mode = "L" if channels == 1 else "RGB"
        self.resolution = resolution
        self.num_levels = num_levels
        self.center_crop = center_crop
        self.random_flip = random_flip

    def __len__(self):
        return self.length

    def __getitem__(self, index):
        from PIL import Image

        image = self.get_image(index)
        if image.mode.startswith("I") or image.mode == "F":
            # 16-bit, 32-bit and float pixels would be clipped to 8 bits by convert(): refuse instead of training on that.
            raise TrainingError(
                f"training image {index} has PIL mode {image.mode!r} (16-bit, 32-bit or float pixels); the training "
                "loader reads 8-bit images: convert the data set to 8-bit PNG/JPEG first"
            )
        image = image.convert(self.mode)
        res = self.resolution
        width, height = image.size
        if min(width, height) != res:
            scale = res / min(width, height)
            new_size = (max(res, round(width * scale)), max(res, round(height * scale)))
            image = image.resize(new_size, resample=Image.BILINEAR)
            width, height = image.size
        if self.center_crop:
            left, top = (width - res) // 2, (height - res) // 2
        else:
            left = int(torch.randint(0, width - res + 1, ()))
            top = int(torch.randint(0, height - res + 1, ()))
        image = image.crop((left, top, left + res, top + res))
        pixels = np.asarray(image, dtype=np.uint8).reshape(res, res, -1).transpose(2, 0, 1)
        levels = pixels_to_levels(pixels, self.num_levels).astype(np.uint8)
        tensor = torch.from_numpy(np.ascontiguousarray(levels))
        if self.random_flip and torch.rand(()) < 0.5:
            tensor = tensor.flip(-1)
        return tensor


def load_training_data(args, channels: Optional[int] = None, resolution: Optional[int] = None) -> TrainingData:
    """The training set named on the command line.

    ``channels``/``resolution``: what the model (config or teacher) needs, ``None`` to infer from the data.
    """
    limit = args.max_train_samples
    if args.dataset == "digits":
        if channels not in (None, 1):
            raise TrainingError(f"digits have 1 channel; the model wants {channels}")
        if resolution not in (None, DIGITS_RESOLUTION):
            raise TrainingError(f"digits are 8x8; the model wants {resolution}x{resolution}")
        levels = load_digits_levels("train")[:limit]
        return TrainingData(
            LevelsTensorDataset(levels, args.random_flip), "image", tuple(levels.shape[1:]), DIGITS_NUM_LEVELS,
            f"scikit-learn 8x8 digits, train split ({levels.shape[0]} images, 17 grey levels)", ["sklearn-digits"],
        )
    if args.dataset in TOY_DATASETS:
        if channels is not None:
            raise TrainingError(f"{args.dataset} is 2-D vector data; the model is an image model")
        vectors = load_toy(args.dataset, "train", args.num_toy_samples)[:limit]
        return TrainingData(VectorDataset(vectors), "vector", (2,), None,
                            f"2-D toy '{args.dataset}', train split ({vectors.shape[0]} points)")
    if args.train_data_file:
        if channels is not None:
            raise TrainingError("--train_data_file holds vectors; the model is an image model")
        try:
            vectors = load_vectors(args.train_data_file)
        except (FileNotFoundError, ValueError) as err:
            raise TrainingError(f"--train_data_file: {err}") from None
        vectors = vectors[:limit]
        return TrainingData(VectorDataset(vectors), "vector", (vectors.shape[1],), None,
                            f"vectors from {Path(args.train_data_file).name} ({vectors.shape[0]} x {vectors.shape[1]})")

    num_levels = args.num_levels or 256
    resolution = resolution or args.resolution or DEFAULT_RESOLUTION
    if args.train_data_dir:
        files = _image_folder_files(args.train_data_dir)[:limit]
        if channels is None:
            grey = True
            for path in files:
                image = _open_image(path)
                grey = grey and _is_grayscale(image)
                if not grey:
                    break
            channels = 1 if grey else 3
        get_image = lambda i: _open_image(files[i])  # noqa: E731
        length = len(files)
        description = f"image folder {Path(args.train_data_dir).name} ({length} images)"
        card_datasets = []
    else:
        hf_dataset, column = _load_hub_dataset(args)
        if limit is not None:
            hf_dataset = hf_dataset.select(range(min(limit, len(hf_dataset))))
        if channels is None:
            probe = [hf_dataset[i][column] for i in range(min(len(hf_dataset), 100))]
            channels = 1 if all(_is_grayscale(image) for image in probe) else 3
        get_image = lambda i: hf_dataset[i][column]  # noqa: E731
        length = len(hf_dataset)
        description = f"Hub dataset {args.dataset_name} ({length} images)"
        card_datasets = [args.dataset_name]
    dataset = PILImageDataset(get_image, length, channels, resolution, num_levels, args.center_crop, args.random_flip)
    description += f", {resolution}x{resolution}, {channels} channel{'s' if channels > 1 else ''}, {num_levels} grey levels"
    return TrainingData(dataset, "image", (channels, resolution, resolution), num_levels, description, card_datasets)


def calibration_data(args, data: TrainingData, num_samples: int, seed: int = 0) -> Tuple[torch.Tensor, str]:
    """Up to ``num_samples`` (at least 1) model-space points to calibrate on, and what they are.

    Embedded data sets have test splits (``f2d2_diffusers.data.load_test_split``: digits images 1500 on, dequantised
    with a draw seeded by ``seed``; toys the test seed); other data have none here, so the first training examples
    are used, dequantised with a seeded draw.
    """
    if args.dataset in EMBEDDED_DATASETS:
        sample, _ = load_test_split(args.dataset, num_samples, seed)
        if args.dataset == "digits":
            return sample, f"digits test images (images {DIGITS_TEST_START} on)"
        return sample, f"'{args.dataset}' test points (fresh seed)"
    kind = "images" if data.kind == "image" else "vectors"
    return first_training_points(data, num_samples, seed), f"training {kind} (this data has no held-out split here)"


def first_training_points(data: TrainingData, num_samples: int, seed: int = 0) -> torch.Tensor:
    """The first ``num_samples`` training examples (all, if there are fewer) in model space, images dequantised with
    a draw seeded by ``seed``."""
    count = min(num_samples, len(data.dataset))
    batch = torch.stack([torch.as_tensor(data.dataset[i]) for i in range(count)])
    if data.kind == "image":
        return dequantize(batch, data.num_levels, torch.Generator().manual_seed(seed))
    return batch.float()


def generalization_data(args, data: TrainingData, seed: int = 0) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
    """``(training points, held-out points)`` in model space, as many of each, to compare a model's loss on the two;
    ``None`` where the data has no held-out split here (only the embedded data sets have one).

    The training points are the first training examples (images dequantised with a draw seeded by ``seed``), the
    held-out ones the test split of :func:`calibration_data`.
    """
    if args.dataset not in EMBEDDED_DATASETS:
        return None
    held_out, _ = load_test_split(args.dataset, 0, seed)
    training = first_training_points(data, held_out.shape[0], seed)
    return training, held_out[: training.shape[0]]


def _is_grayscale(image) -> bool:
    return image.mode in ("1", "L", "LA", "I", "I;16", "F")


def _image_folder_files(folder: str) -> List[Path]:
    root = Path(folder)
    if not root.is_dir():
        raise TrainingError(f"--train_data_dir: no folder at {folder}")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise TrainingError(f"--train_data_dir: {folder} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    return files


def _open_image(path: Path):
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(path)
        image.load()
    except (OSError, UnidentifiedImageError) as err:
        raise TrainingError(f"cannot read image {path}: {err}") from None
    return image


def _load_hub_dataset(args):
    """``(dataset, image column)`` of ``--dataset_name``'s train split."""
    import datasets

    try:
        dataset = datasets.load_dataset(args.dataset_name, args.dataset_config_name, cache_dir=args.cache_dir, split="train")
    except Exception as err:  # noqa: BLE001
        raise TrainingError(f"--dataset_name: cannot load {args.dataset_name!r} ({type(err).__name__}: {err})") from None
    column = args.image_column
    if column is None:
        image_columns = [n for n, f in dataset.features.items() if isinstance(f, datasets.Image)]
        for name in ("image", "img"):
            if name in dataset.column_names:
                column = name
                break
        else:
            column = image_columns[0] if image_columns else None
    if column is None or column not in dataset.column_names:
        raise TrainingError(
            f"--dataset_name: no image column {'named ' + repr(column) + ' ' if column else ''}in {args.dataset_name} "
            f"(columns: {dataset.column_names}); pass --image_column"
        )
    if len(dataset) == 0:
        raise TrainingError(f"--dataset_name: {args.dataset_name} has no training examples")
    return dataset, column
