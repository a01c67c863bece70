"""Stacked MNIST: three digits as the channels of one image; its mode is the digit triple.

The dataset is every ordered triple of a set of digits (the 4000 training digits of the shipped
5000: 4000^3 images), indexed lazily: index ``i`` stacks digits ``i // D^2``, ``(i // D) % D``
and ``i % D`` of the ``D`` digits. Sampling indices uniformly with replacement, as the training
loop does, therefore draws three independent random digits per image, fresh in every batch, and
the 1000 modes are exactly equally likely when each class holds the same number of digits (the
stratified split of the 5000 gives 400 per class). Evaluation stacks the held-out digits the
same way, so its reference images share no digit with training.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from gradpen.data.mnist import ImageDataset

STACKED_CHANNELS = 3
DIGIT_CLASSES = 10


def mode_index(digit_labels: Tensor, num_classes: int = DIGIT_CLASSES) -> Tensor:
    """The mode of each stacked image: its channels' digits read as one base-10 number.

    Args:
        digit_labels: int64 ``(N, C)``, the digit of each channel (0..num_classes-1).
        num_classes: classes per channel.

    Returns:
        int64 ``(N,)`` in ``[0, num_classes ** C)``: ``(3, 0, 7)`` is mode 307.
    """
    channels = digit_labels.shape[-1]
    place = num_classes ** torch.arange(channels - 1, -1, -1, device=digit_labels.device)
    return (digit_labels.long() * place).sum(dim=-1)


@dataclass
class StackedDigits:
    """Every ordered ``channels``-tuple of ``digits`` as one image, indexed lazily.

    ``dataset[index]`` (an int, or an int64 tensor of any shape) returns the images
    ``(..., C, H, W)`` float32 in [0, 1] and their modes ``(...)`` (see :func:`mode_index`), as
    ``ImageDataset`` returns images and labels; ``len`` is ``len(digits) ** channels``.

    Args:
        digits: single-channel digits ``(D, 1, H, W)`` with labels 0..9.
        channels: how many digits each image stacks (3 for Stacked MNIST).
    """

    digits: ImageDataset
    channels: int = STACKED_CHANNELS

    def __len__(self) -> int:
        return len(self.digits) ** self.channels

    @property
    def num_classes(self) -> int:
        """The number of modes: 10 ** channels."""
        return DIGIT_CLASSES**self.channels

    def digit_indices(self, index: Tensor) -> Tensor:
        """The digits stacked by ``index``: int64 ``(..., C)``, channel 0 first."""
        count = len(self.digits)
        powers = count ** torch.arange(self.channels - 1, -1, -1)
        return (index.unsqueeze(-1) // powers) % count

    def __getitem__(self, index: int | Tensor) -> tuple[Tensor, Tensor]:
        index = torch.as_tensor(index, dtype=torch.long)
        if bool(((index < 0) | (index >= len(self))).any()):
            raise IndexError(f"stacked index out of range [0, {len(self)})")
        picks = self.digit_indices(index)
        images = self.digits.images[picks].squeeze(-3)  # (..., C, 1, H, W) -> (..., C, H, W)
        return images, mode_index(self.digits.labels[picks])

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """``n`` images drawn uniformly with replacement, and their modes.

        Args:
            n: how many.
            generator: the random stream (the global one when None).

        Returns:
            Images ``(n, C, H, W)`` and modes ``(n,)``.
        """
        return self[torch.randint(len(self), (n,), generator=generator)]
