"""Batches for the training loop: 2-D toys drawn fresh, image sets sampled with replacement."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from gradpen.data.images import load_image_array, load_image_folder
from gradpen.data.mnist import ImageDataset, get_image_dataset, split_holdout, to_range
from gradpen.data.stacked import StackedDigits
from gradpen.data.toys import ToyDistribution, get_toy
from gradpen.errors import UserError
from gradpen.nets import CRITICS, GENERATORS
from gradpen.nets._common import ANY_IMAGE_SIZE
from gradpen.train.config import STACKED_DATA, TOY_DATA, USER_IMAGE_DATA, Config

HOLDOUT_SEED = 0
StackedOrImages = ImageDataset | StackedDigits


def fits(net_size: int | None, data_size: int | None) -> bool:
    """Whether a network of ``image_size`` ``net_size`` takes samples of side ``data_size``."""
    return net_size == data_size or (net_size == ANY_IMAGE_SIZE and data_size is not None)


def _shape(size: int | None) -> str:
    if size == ANY_IMAGE_SIZE:
        return "images of any size"
    return "2-D points" if size is None else f"{size} x {size} images"


def shape_mismatch(
    data_name: str, data_size: int | None, role: str, kind: str, net_size: int | None
) -> str:
    """The message for a ``role`` network that does not fit the data, naming those that do.

    Args:
        data_name: ``data.name``.
        data_size: the side of the data's images (None: 2-D points).
        role: "generator" or "critic".
        kind: the network's kind name.
        net_size: the network's ``image_size``.

    Returns:
        One paragraph for a UserError.
    """
    registry = GENERATORS if role == "generator" else CRITICS
    sizes = {k: getattr(cls, "image_size", None) for k, cls in registry.items()}
    fitting = [k for k, size in sizes.items() if fits(size, data_size)]
    if data_name in USER_IMAGE_DATA:
        sided = [
            f"{k!r}: {size}" for k, size in sizes.items() if size not in (None, ANY_IMAGE_SIZE)
        ]
        advice = f"set data.resolution to a side the {role} kinds make ({', '.join(sided)})"
        if fitting:
            advice += f", or use {role}.kind = {' or '.join(repr(k) for k in fitting)}"
    elif fitting:
        advice = f"use {role}.kind = {' or '.join(repr(k) for k in fitting)}"
    else:
        listed = ", ".join(f"{k!r} ({_shape(size)})" for k, size in sizes.items())
        advice = (
            f"no {role} kind that gradpen ships fits them (kinds: {listed}); choose "
            "data.name = 'mnist5k' or 'mnist' (28 x 28), or train your own networks on "
            f"gradpen.data.get_image_dataset({data_name!r}) through the library API"
        )
    return (
        f"data {data_name!r} holds {_shape(data_size)}, but the {role} kind {kind!r} "
        f"works on {_shape(net_size)}: {advice}."
    )


@dataclass
class BatchSource:
    """Real batches on ``device`` from the global RNG; the held-out part is for evaluation."""

    device: torch.device
    name: str = ""
    toy: ToyDistribution | None = None
    train_set: StackedOrImages | None = None
    heldout: StackedOrImages | None = None
    conditional: bool = False
    output_range: str = "sigmoid"

    @property
    def num_classes(self) -> int:
        return self.train_set.num_classes if self.train_set is not None else 0

    @property
    def image_shape(self) -> tuple[int, ...] | None:
        """The shape ``(C, H, W)`` of one image; None for 2-D toy points."""
        return None if self.train_set is None else tuple(self.train_set[0][0].shape)

    @property
    def image_size(self) -> int | None:
        """The side of the data's square images; None for 2-D toy points."""
        return None if self.image_shape is None else self.image_shape[-1]

    def check_networks(self, generator: nn.Module, critic: nn.Module) -> None:
        """Reject networks whose samples do not have the data's shape; match pixel ranges.

        Args:
            generator: the built generator; its class attribute ``image_size`` is the side of
                the images it makes (None: it makes flat points).
            critic: the built critic, with ``image_size`` likewise.

        Raises:
            UserError: naming the network kinds that fit the data (exit status 2).
        """
        for role, net, registry in (
            ("generator", generator, GENERATORS),
            ("critic", critic, CRITICS),
        ):
            kind = next((k for k, cls in registry.items() if type(net) is cls), type(net).__name__)
            size = getattr(net, "image_size", None)
            if not fits(size, self.image_size):
                raise UserError(shape_mismatch(self.name, self.image_size, role, kind, size))
        if self.train_set is not None:
            self.output_range = getattr(generator, "out", "sigmoid")

    def batch(self, n: int) -> tuple[Tensor, Tensor | None]:
        """``n`` real samples (in the generator's range) and their labels when conditional."""
        if self.toy is not None:
            return self.toy.sample(n).to(self.device), None
        assert self.train_set is not None
        images, labels = self.train_set[torch.randint(len(self.train_set), (n,))]
        images = to_range(images, self.output_range).to(self.device)
        return images, labels.to(self.device) if self.conditional else None

    def labels(self, n: int) -> Tensor | None:
        """Uniform random labels for generator-only steps (None when unconditional)."""
        if not self.conditional:
            return None
        return torch.randint(self.num_classes, (n,)).to(self.device)


def _check_resolution(config: Config) -> None:
    """Refuse a ``data.resolution`` that the configured networks do not take, before decoding."""
    for role, registry in (("generator", GENERATORS), ("critic", CRITICS)):
        kind = getattr(config, role).kind
        if kind in registry:  # an unknown kind is refused when it is built
            size = getattr(registry[kind], "image_size", None)
            if not fits(size, config.data.resolution):
                message = shape_mismatch(config.data.name, config.data.resolution, role, kind, size)
                raise UserError(message)


def _load_images(config: Config) -> ImageDataset:
    """The image set that ``config.data`` names (MNIST-like sets, or the user's images)."""
    data = config.data
    if data.name == "folder":
        return load_image_folder(
            data.root,
            data.resolution,
            data.channels,
            conditional=data.conditional,
            cache=data.cache,
        )
    if data.name == "npz":
        return load_image_array(
            data.root, data.resolution, data.channels, conditional=data.conditional
        )
    return get_image_dataset(data.name, data.root or None)


def make_source(config: Config, device: torch.device) -> BatchSource:
    """The batch source for ``config.data``.

    Raises:
        UserError: for the user's images, a resolution the networks do not take (checked
            before decoding); for any image set, fewer training images than one batch.
    """
    data = config.data
    if data.name in TOY_DATA:
        return BatchSource(device, data.name, toy=get_toy(data.name))
    if data.name in USER_IMAGE_DATA:
        _check_resolution(config)
    if data.name in STACKED_DATA:
        digits, channels = STACKED_DATA[data.name]
        train_digits, heldout_digits = split_holdout(
            get_image_dataset(digits), data.holdout, seed=HOLDOUT_SEED
        )
        train_set: StackedOrImages = StackedDigits(train_digits, channels)
        heldout: StackedOrImages = StackedDigits(heldout_digits, channels)
    else:
        train_set, heldout = split_holdout(_load_images(config), data.holdout, seed=HOLDOUT_SEED)
    if len(train_set) < config.train.batch_size:
        raise UserError(
            f"data {data.name!r} has {len(train_set)} training images (after holding out "
            f"data.holdout = {data.holdout} for evaluation), fewer than one batch of "
            f"train.batch_size = {config.train.batch_size}: add images or lower train.batch_size"
        )
    return BatchSource(
        device, data.name, train_set=train_set, heldout=heldout, conditional=data.conditional
    )
