"""DCGAN generators and critics for 28 x 28 (MNIST), 32 x 32 and 64 x 64 images, any channels.

The 28-px pair follows the code of Patel & Siddiki ("Effects of Gradient Penalty on GANs", itself
the MNIST model of carpedm20's DCGAN-tensorflow): z ~ U(-1, 1)^100, the one-hot label
concatenated to z, a sigmoid output, batch norm removed (``norm="none"``, our default).
Simplified for CPU: the generator goes Linear -> 7x7 -> transposed convs 14 -> 28 (no extra
1024-unit dense layer); the critic goes strided convs 28 -> 14 -> 7 with LeakyReLU(0.2), then a
linear head giving one logit per image.

The 32- and 64-px pairs are the same networks with more levels, as in Radford et al.'s DCGAN and
the WGAN-GP code's CIFAR-10 / 64 x 64 DCGAN: a 4 x 4 base, the channels halving at each 4x4
stride-2 transposed conv (generator: ``4w, 2w, w`` at 32 px, ``8w, 4w, 2w, w`` at 64 px, w =
``width``) and doubling at each strided conv of the critic. The defaults are those of the 28-px
pair; the WGAN-GP code uses ``out="tanh"``, ``noise="gaussian"``, ``z_dim=128`` (set them in the
recipe, as ``configs/folder/dcgan32.toml`` does).

Conditioning (``n_classes > 0``), called ``G(z, y)`` / ``D(x, y)`` with int64 labels ``y``:
- ``onehot``: G concatenates the one-hot label to z; D appends the one-hot label as
  ``n_classes`` constant maps to the image channels at its input. The label enters once.
- ``concat`` (the paper's code, DCGAN-tensorflow's ``conv_cond_concat``): as ``onehot``, and
  the one-hot label is concatenated again before every later layer of both networks: as
  constant maps before each transposed conv of G and before each later conv of D, and as a
  vector before D's linear head.
- ``embed``: G concatenates a learned ``EMBED_DIM``-d label embedding to z; D is a projection
  critic (Miyato & Koyama 2018): logit = head(h) + <embed(y), h> on the flattened features h.
Either way D is a function of x for each fixed y, so the penalty's gradient is taken with
respect to the image only.
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import nn

from gradpen.errors import UserError
from gradpen.nets._common import (
    CONDITIONINGS,
    LEAKY_SLOPE,
    NoiseSampler,
    check_choice,
    make_norm,
)

EMBED_DIM = 50
OUTPUTS = {"sigmoid": (0.0, 1.0), "tanh": (-1.0, 1.0)}


def _check_labels(n_classes: int, y: torch.Tensor | None, who: str) -> None:
    """Conditional models need labels and unconditional ones must not get any."""
    if n_classes > 0 and y is None:
        raise ValueError(f"{who} is conditional on {n_classes} classes: call it with labels y")
    if n_classes == 0 and y is not None:
        raise ValueError(f"{who} is unconditional (n_classes=0): call it without labels")


def _per_layer_labels(n_classes: int, cond: str) -> int:
    """Label channels appended before each layer after the first (``cond="concat"`` only)."""
    return n_classes if cond == "concat" else 0


def _with_label_maps(h: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
    """``h`` (B, C, H, W) with the one-hot labels (B, K) appended as K constant maps."""
    maps = onehot[:, :, None, None].expand(-1, -1, h.shape[2], h.shape[3])
    return torch.cat([h, maps], dim=1)


def _check_conditioning(n_classes: int, cond: str) -> str:
    if n_classes < 0:
        raise UserError(f"n_classes must be >= 0 (0 = unconditional), got {n_classes}")
    return check_choice("conditioning", cond, CONDITIONINGS)


def _levels(image_size: int, base_size: int) -> int:
    """The stride-2 steps between a ``base_size`` feature map and ``image_size`` images."""
    levels = round(math.log2(image_size / base_size))
    assert base_size * 2**levels == image_size, (image_size, base_size)
    return levels


class DCGANGenerator(NoiseSampler):
    """Maps z (B, z_dim) [and labels y (B,)] to images (B, C, S, S) in ``output_range``.

    The base of :class:`DCGANGenerator28`, ``32`` and ``64``, which set S (``image_size``) and
    the side of the first feature map (``base_size``). ``out_channels`` is C (1 for digits, 3
    for RGB); ``width`` is the channel count of the last hidden layer.
    """

    image_size: int  # the side of the images it makes (None: not an image network)
    base_size: int  # the side of the feature map that the linear layer makes from z

    def __init__(
        self,
        z_dim: int = 100,
        n_classes: int = 0,
        cond: str = "onehot",
        norm: str = "none",
        out: str = "sigmoid",
        width: int = 64,
        noise: str = "uniform",
        out_channels: int = 1,
    ) -> None:
        super().__init__(z_dim, noise)
        if out_channels < 1:
            raise UserError(f"out_channels must be >= 1, got {out_channels}")
        self.n_classes = n_classes
        self.cond = _check_conditioning(n_classes, cond)
        self.output_range = OUTPUTS[check_choice("output", out, tuple(OUTPUTS))]
        self.out = out
        self.label_embedding = (
            nn.Embedding(n_classes, EMBED_DIM) if n_classes and cond == "embed" else None
        )
        label_dim = 0 if not n_classes else (EMBED_DIM if cond == "embed" else n_classes)
        extra = _per_layer_labels(n_classes, cond)
        levels = _levels(self.image_size, self.base_size)
        channels = [width * 2 ** (levels - 1 - level) for level in range(levels)] + [out_channels]
        self.base_channels = channels[0]
        self.project = nn.Linear(z_dim + label_dim, self.base_channels * self.base_size**2)
        layers: list[nn.Module] = []
        for c_in, c_out in itertools.pairwise(channels):  # each doubles the side
            layers += [
                make_norm(norm, c_in, spatial=True),
                nn.ReLU(),
                nn.ConvTranspose2d(c_in + extra, c_out, 4, stride=2, padding=1),
            ]
        self.upsample = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Images (B, C, S, S): sigmoid output in [0, 1] or tanh output in [-1, 1]."""
        _check_labels(self.n_classes, y, type(self).__name__)
        onehot = None
        if y is not None:
            onehot = F.one_hot(y, self.n_classes).to(z.dtype)
            labels = self.label_embedding(y) if self.label_embedding is not None else onehot
            z = torch.cat([z, labels], dim=1)
        concat = onehot is not None and self.cond == "concat"
        h = self.project(z).view(-1, self.base_channels, self.base_size, self.base_size)
        for layer in self.upsample:
            if concat and isinstance(layer, nn.ConvTranspose2d):
                h = _with_label_maps(h, onehot)
            h = layer(h)
        logits = h
        return torch.sigmoid(logits) if self.out == "sigmoid" else torch.tanh(logits)


class DCGANCritic(nn.Module):
    """Scores images (B, C, S, S) [given labels y (B,)] with one logit each, shape (B,).

    The base of :class:`DCGANCritic28`, ``32`` and ``64`` (which set S = ``image_size`` and the
    side ``base_size`` of the last feature map). The first conv has no norm (the DCGAN
    convention); ``norm`` applies after each later one. ``in_channels`` is C; ``width`` the
    channel count of the first conv, doubling at each later one.
    """

    image_size: int
    base_size: int

    def __init__(
        self,
        n_classes: int = 0,
        cond: str = "onehot",
        norm: str = "none",
        width: int = 64,
        in_channels: int = 1,
    ) -> None:
        super().__init__()
        if in_channels < 1:
            raise UserError(f"in_channels must be >= 1, got {in_channels}")
        self.n_classes = n_classes
        self.cond = _check_conditioning(n_classes, cond)
        label_maps = n_classes if cond in ("onehot", "concat") else 0
        extra = _per_layer_labels(n_classes, cond)
        levels = _levels(self.image_size, self.base_size)
        channels = [width * 2**level for level in range(levels)]
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels + label_maps, width, 4, stride=2, padding=1),
            nn.LeakyReLU(LEAKY_SLOPE),
        ]
        for c_in, c_out in itertools.pairwise(channels):  # each halves the side
            layers += [
                nn.Conv2d(c_in + extra, c_out, 4, stride=2, padding=1),
                make_norm(norm, c_out, spatial=True),
                nn.LeakyReLU(LEAKY_SLOPE),
            ]
        self.features = nn.Sequential(*layers, nn.Flatten())
        feature_dim = channels[-1] * self.base_size**2
        self.head = nn.Linear(feature_dim + extra, 1)
        self.projection = (
            nn.Embedding(n_classes, feature_dim) if n_classes and cond == "embed" else None
        )

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Critic logits, shape (B,)."""
        _check_labels(self.n_classes, y, type(self).__name__)
        onehot = None
        h = x
        if y is not None and self.projection is None:
            onehot = F.one_hot(y, self.n_classes).to(x.dtype)
            h = _with_label_maps(h, onehot)
        concat = onehot is not None and self.cond == "concat"
        for index, layer in enumerate(self.features):
            if concat and index > 0 and isinstance(layer, nn.Conv2d):
                h = _with_label_maps(h, onehot)
            h = layer(h)
        logits = self.head(torch.cat([h, onehot], dim=1) if concat else h).squeeze(-1)
        if y is not None and self.projection is not None:
            logits = logits + (self.projection(y) * h).sum(dim=1)
        return logits


class DCGANGenerator28(DCGANGenerator):
    """:class:`DCGANGenerator` for 28 x 28 images: 7 -> 14 -> 28."""

    image_size = 28
    base_size = 7


class DCGANCritic28(DCGANCritic):
    """:class:`DCGANCritic` for 28 x 28 images: 28 -> 14 -> 7."""

    image_size = 28
    base_size = 7


class DCGANGenerator32(DCGANGenerator):
    """:class:`DCGANGenerator` for 32 x 32 images: 4 -> 8 -> 16 -> 32."""

    image_size = 32
    base_size = 4


class DCGANCritic32(DCGANCritic):
    """:class:`DCGANCritic` for 32 x 32 images: 32 -> 16 -> 8 -> 4."""

    image_size = 32
    base_size = 4


class DCGANGenerator64(DCGANGenerator):
    """:class:`DCGANGenerator` for 64 x 64 images: 4 -> 8 -> 16 -> 32 -> 64."""

    image_size = 64
    base_size = 4


class DCGANCritic64(DCGANCritic):
    """:class:`DCGANCritic` for 64 x 64 images: 64 -> 32 -> 16 -> 8 -> 4."""

    image_size = 64
    base_size = 4
