"""Data: the 2-D toy distributions, the digit image datasets, Stacked MNIST, your own images."""

from gradpen.data.images import SkippedImagesWarning, fit_image, load_image_array, load_image_folder
from gradpen.data.mnist import (
    IMAGE_DATASET_NAMES,
    ImageDataset,
    from_range,
    get_image_dataset,
    load_mnist5k,
    load_mnist_idx,
    load_sklearn_digits,
    split_holdout,
    to_range,
)
from gradpen.data.stacked import StackedDigits, mode_index
from gradpen.data.toys import TOY_NAMES, ToyDistribution, get_toy

__all__ = [
    "IMAGE_DATASET_NAMES",
    "TOY_NAMES",
    "ImageDataset",
    "SkippedImagesWarning",
    "StackedDigits",
    "ToyDistribution",
    "fit_image",
    "from_range",
    "get_image_dataset",
    "get_toy",
    "load_image_array",
    "load_image_folder",
    "load_mnist5k",
    "load_mnist_idx",
    "load_sklearn_digits",
    "mode_index",
    "split_holdout",
    "to_range",
]
