"""Batches for the training loop: 2-D toys drawn fresh, image sets sampled with replacement."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from gradpen.data.mnist import ImageDataset, get_image_dataset, split_holdout, to_range
from gradpen.data.toys import ToyDistribution, get_toy
from gradpen.errors import UserError
from gradpen.train.config import TOY_DATA, Config

HOLDOUT_SEED = 0


@dataclass
class BatchSource:
    """Real batches on ``device`` from the global RNG; the held-out part is for evaluation."""

    device: torch.device
    toy: ToyDistribution | None = None
    train_set: ImageDataset | None = None
    heldout: ImageDataset | None = None
    conditional: bool = False
    output_range: str = "sigmoid"

    @property
    def num_classes(self) -> int:
        return self.train_set.num_classes if self.train_set is not None else 0

    def check_generator(self, generator: nn.Module) -> None:
        """Match image pixels to the generator's output range; reject shape mismatches."""
        if self.train_set is None:
            return
        self.output_range = getattr(generator, "out", "sigmoid")
        side = self.train_set.images.shape[-1]
        if side != 28 and type(generator).__name__.endswith("28"):
            raise UserError(
                f"the generator makes 28 x 28 images but the data set's images are {side} x {side}"
            )

    def batch(self, n: int) -> tuple[Tensor, Tensor | None]:
        """``n`` real samples (in the generator's range) and their labels when conditional."""
        if self.toy is not None:
            return self.toy.sample(n).to(self.device), None
        assert self.train_set is not None
        index = torch.randint(len(self.train_set), (n,))
        images = to_range(self.train_set.images[index], self.output_range).to(self.device)
        labels = self.train_set.labels[index].to(self.device) if self.conditional else None
        return images, labels

    def labels(self, n: int) -> Tensor | None:
        """Uniform random labels for generator-only steps (None when unconditional)."""
        if not self.conditional:
            return None
        return torch.randint(self.num_classes, (n,)).to(self.device)


def make_source(config: Config, device: torch.device) -> BatchSource:
    """The batch source for ``config.data``."""
    data = config.data
    if data.name in TOY_DATA:
        return BatchSource(device, toy=get_toy(data.name))
    full = get_image_dataset(data.name, data.root or None)
    train_set, heldout = split_holdout(full, data.holdout, seed=HOLDOUT_SEED)
    return BatchSource(device, train_set=train_set, heldout=heldout, conditional=data.conditional)
