"""Batches for the training loop: 2-D toys drawn fresh, image sets sampled with replacement."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from gradpen.data.mnist import ImageDataset, get_image_dataset, split_holdout, to_range
from gradpen.data.stacked import StackedDigits
from gradpen.data.toys import ToyDistribution, get_toy
from gradpen.errors import UserError
from gradpen.nets import CRITICS, GENERATORS
from gradpen.nets._common import ANY_IMAGE_SIZE
from gradpen.train.config import STACKED_DATA, TOY_DATA, Config

HOLDOUT_SEED = 0
StackedOrImages = ImageDataset | StackedDigits


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
            if not self._fits(getattr(net, "image_size", None)):
                raise UserError(self._shape_mismatch(role, net, registry))
        if self.train_set is not None:
            self.output_range = getattr(generator, "out", "sigmoid")

    def _fits(self, size: int | None) -> bool:
        """Whether a network of ``image_size`` ``size`` takes this data's samples."""
        return size == self.image_size or (size == ANY_IMAGE_SIZE and self.image_size is not None)

    def _shape_mismatch(
        self, role: str, net: nn.Module, registry: dict[str, type[nn.Module]]
    ) -> str:
        """The message for a ``role`` network that does not fit the data, naming those that do."""

        def shape(size: int | None) -> str:
            if size == ANY_IMAGE_SIZE:
                return "images of any size"
            return "2-D points" if size is None else f"{size} x {size} images"

        kind = next((k for k, cls in registry.items() if type(net) is cls), type(net).__name__)
        fits = [k for k, cls in registry.items() if self._fits(getattr(cls, "image_size", None))]
        made = shape(getattr(net, "image_size", None))
        if fits:
            advice = f"use {role}.kind = {' or '.join(repr(k) for k in fits)}"
        else:
            sizes = ", ".join(
                f"{k!r} ({shape(getattr(cls, 'image_size', None))})" for k, cls in registry.items()
            )
            advice = (
                f"no {role} kind that gradpen ships fits them (kinds: {sizes}); choose "
                "data.name = 'mnist5k' or 'mnist' (28 x 28), or train your own networks on "
                f"gradpen.data.get_image_dataset({self.name!r}) through the library API"
            )
        return (
            f"data {self.name!r} holds {shape(self.image_size)}, but the {role} kind {kind!r} "
            f"works on {made}: {advice}."
        )

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


def make_source(config: Config, device: torch.device) -> BatchSource:
    """The batch source for ``config.data``."""
    data = config.data
    if data.name in TOY_DATA:
        return BatchSource(device, data.name, toy=get_toy(data.name))
    if data.name in STACKED_DATA:
        digits, channels = STACKED_DATA[data.name]
        train_digits, heldout_digits = split_holdout(
            get_image_dataset(digits), data.holdout, seed=HOLDOUT_SEED
        )
        train_set: StackedOrImages = StackedDigits(train_digits, channels)
        heldout: StackedOrImages = StackedDigits(heldout_digits, channels)
    else:
        full = get_image_dataset(data.name, data.root or None)
        train_set, heldout = split_holdout(full, data.holdout, seed=HOLDOUT_SEED)
    return BatchSource(
        device, data.name, train_set=train_set, heldout=heldout, conditional=data.conditional
    )
