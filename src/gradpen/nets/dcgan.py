"""DCGAN generator and critic for 28 x 28 single-channel images (MNIST).

After the code of Patel & Siddiki ("Effects of Gradient Penalty on GANs", itself the MNIST
model of carpedm20's DCGAN-tensorflow): z ~ U(-1, 1)^100, the one-hot label concatenated to z,
a sigmoid output, batch norm removed (``norm="none"``, our default). Simplified for CPU: the
generator goes Linear -> 7x7 -> transposed convs 14 -> 28 (no extra 1024-unit dense layer); the
critic goes strided convs 28 -> 14 -> 7 with LeakyReLU(0.2), then a linear head giving one logit
per image.

Conditioning (``n_classes > 0``), called ``G(z, y)`` / ``D(x, y)`` with int64 labels ``y``:
- ``onehot``: G concatenates the one-hot label to z; D appends the one-hot label as
  ``n_classes`` constant maps to the image channels at its input. The label enters once.
- ``concat`` (the paper's code, DCGAN-tensorflow's ``conv_cond_concat``): as ``onehot``, and
  the one-hot label is concatenated again before every later layer of both networks: as
  constant maps before each transposed conv of G and before D's second conv, and as a vector
  before D's linear head.
- ``embed``: G concatenates a learned ``EMBED_DIM``-d label embedding to z; D is a projection
  critic (Miyato & Koyama 2018): logit = head(h) + <embed(y), h> on the flattened features h.
Either way D is a function of x for each fixed y, so the penalty's gradient is taken with
respect to the image only.
"""

from __future__ import annotations

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

IMAGE_SIZE = 28
BASE_SIZE = 7  # the feature-map side after two stride-2 steps down from 28
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


class DCGANGenerator28(NoiseSampler):
    """Maps z (B, z_dim) [and labels y (B,)] to images (B, C, 28, 28) in ``output_range``.

    ``out_channels`` is C (1 for digits, 3 for Stacked MNIST).
    """

    image_size = IMAGE_SIZE  # the side of the images it makes (None: not an image network)

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
        self.base_channels = 2 * width
        self.project = nn.Linear(z_dim + label_dim, self.base_channels * BASE_SIZE**2)
        self.upsample = nn.Sequential(
            make_norm(norm, self.base_channels, spatial=True),
            nn.ReLU(),
            nn.ConvTranspose2d(self.base_channels + extra, width, 4, stride=2, padding=1),  # 7->14
            make_norm(norm, width, spatial=True),
            nn.ReLU(),
            nn.ConvTranspose2d(width + extra, out_channels, 4, stride=2, padding=1),  # 14 -> 28
        )

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Images (B, C, 28, 28): sigmoid output in [0, 1] or tanh output in [-1, 1]."""
        _check_labels(self.n_classes, y, "DCGANGenerator28")
        onehot = None
        if y is not None:
            onehot = F.one_hot(y, self.n_classes).to(z.dtype)
            labels = self.label_embedding(y) if self.label_embedding is not None else onehot
            z = torch.cat([z, labels], dim=1)
        concat = onehot is not None and self.cond == "concat"
        h = self.project(z).view(-1, self.base_channels, BASE_SIZE, BASE_SIZE)
        for layer in self.upsample:
            if concat and isinstance(layer, nn.ConvTranspose2d):
                h = _with_label_maps(h, onehot)
            h = layer(h)
        logits = h
        return torch.sigmoid(logits) if self.out == "sigmoid" else torch.tanh(logits)


class DCGANCritic28(nn.Module):
    """Scores images (B, C, 28, 28) [given labels y (B,)] with one logit each, shape (B,).

    The first conv has no norm (the DCGAN convention); ``norm`` applies after the second.
    ``in_channels`` is C.
    """

    image_size = IMAGE_SIZE

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
        self.features = nn.Sequential(
            nn.Conv2d(in_channels + label_maps, width, 4, stride=2, padding=1),  # 28 -> 14
            nn.LeakyReLU(LEAKY_SLOPE),
            nn.Conv2d(width + extra, 2 * width, 4, stride=2, padding=1),  # 14 -> 7
            make_norm(norm, 2 * width, spatial=True),
            nn.LeakyReLU(LEAKY_SLOPE),
            nn.Flatten(),
        )
        feature_dim = 2 * width * BASE_SIZE**2
        self.head = nn.Linear(feature_dim + extra, 1)
        self.projection = (
            nn.Embedding(n_classes, feature_dim) if n_classes and cond == "embed" else None
        )

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Critic logits, shape (B,)."""
        _check_labels(self.n_classes, y, "DCGANCritic28")
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
