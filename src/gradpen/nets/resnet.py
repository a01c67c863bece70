"""The WGAN-GP paper's ResNet for 32 x 32 images (Gulrajani et al. 2017, Appendix F).

After the structure of the official ``gan_cifar_resnet.py`` (rewritten in PyTorch, not copied):

- Generator: Linear(z, 4*4*w) -> three up-sampling residual blocks 4 -> 8 -> 16 -> 32 ->
  norm, ReLU -> 3x3 conv to C channels -> tanh. Batch norm by default (the paper's generator).
- Critic: a first block without pre-activation (conv, ReLU, conv, mean-pool; the shortcut
  mean-pools then applies a 1x1 conv) 32 -> 16, a down-sampling block 16 -> 8, two blocks at
  8 x 8 with identity shortcuts, ReLU, the spatial mean, Linear(w, 1). No norm by default
  (the paper: batch norm would break the per-sample penalty); ``norm="layer"`` is the paper's
  alternative.

A residual block computes ``shortcut(h) + conv2(act(norm(conv1(act(norm(h))))))``, with
nearest-neighbour up-sampling before ``conv1`` (generator) or a 2 x 2 mean pool after ``conv2``
(critic); its shortcut is the identity when shape and channels are kept, else a 1x1 conv with
the same resampling. With ``width = 128`` (the paper's) and no labels the networks have
1,204,483 (generator) and 1,053,825 (critic) parameters, as the official code's.

Conditioning (``n_classes > 0``), as the DCGANs of :mod:`gradpen.nets.dcgan` do it:
``onehot`` appends the one-hot label to z (G) and as constant maps to the input of D's first
conv; ``concat`` also appends them to the input of every later 3x3 conv of both networks and to
the features before D's linear head; ``embed`` appends a learned embedding to z (G) and makes D
a projection critic: logit = head(h) + <embed(y), h> on the pooled features h.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gradpen.errors import UserError
from gradpen.nets._common import NoiseSampler, check_choice, make_norm
from gradpen.nets.dcgan import (
    EMBED_DIM,
    OUTPUTS,
    _check_conditioning,
    _check_labels,
    _per_layer_labels,
    _with_label_maps,
)

IMAGE_SIZE = 32
BASE_SIZE = 4  # the generator's first feature map; the critic's last is 8 x 8
RESAMPLINGS = ("up", "down", "none")


def _maybe_with_labels(h: torch.Tensor, onehot: torch.Tensor | None) -> torch.Tensor:
    """``h`` with the label maps appended when ``onehot`` is given, else ``h``."""
    return h if onehot is None else _with_label_maps(h, onehot)


class ResidualBlock(nn.Module):
    """One residual block of the WGAN-GP ResNet; maps (B, in, S, S) to (B, out, S', S').

    Args:
        in_channels: channels of the input h.
        hidden: output channels of the first 3x3 conv.
        out_channels: output channels of the block.
        resample: "up" (S' = 2S, nearest-neighbour before the first conv), "down" (S' = S/2,
            a 2 x 2 mean pool after the second conv) or "none".
        norm: the norm before each activation ("none", "layer" or "batch").
        label_channels: label maps appended to the input of (conv1, conv2): 0 or n_classes.
        preactivate: norm and ReLU before the first conv (False: the critic's first block, whose
            input is the image).
    """

    def __init__(
        self,
        in_channels: int,
        hidden: int,
        out_channels: int,
        resample: str,
        norm: str,
        label_channels: tuple[int, int] = (0, 0),
        preactivate: bool = True,
    ) -> None:
        super().__init__()
        self.resample = check_choice("resampling", resample, RESAMPLINGS)
        self.preactivate = preactivate
        self.label_channels = label_channels
        self.norm1 = make_norm(norm if preactivate else "none", in_channels, spatial=True)
        self.conv1 = nn.Conv2d(in_channels + label_channels[0], hidden, 3, padding=1)
        self.norm2 = make_norm(norm, hidden, spatial=True)
        self.conv2 = nn.Conv2d(hidden + label_channels[1], out_channels, 3, padding=1)
        keeps_shape = in_channels == out_channels and resample == "none"
        self.shortcut_conv = None if keeps_shape else nn.Conv2d(in_channels, out_channels, 1)

    def _resampled(self, h: torch.Tensor, where: str) -> torch.Tensor:
        if where == "up" == self.resample:
            return F.interpolate(h, scale_factor=2, mode="nearest")
        if where == "down" == self.resample:
            return F.avg_pool2d(h, 2)
        return h

    def forward(self, h: torch.Tensor, onehot: torch.Tensor | None = None) -> torch.Tensor:
        """The block's output; ``onehot`` (B, K) feeds the convs that take label maps."""
        # A 1x1 conv commutes with nearest up-sampling and with mean pooling: the shortcut
        # resamples on the side with fewer channels, as the official code's MeanPoolConv.
        skip = h
        if self.shortcut_conv is not None:
            skip = self._resampled(self.shortcut_conv(self._resampled(skip, "down")), "up")
        r = F.relu(self.norm1(h)) if self.preactivate else h
        r = self._resampled(r, "up")
        first_labels, second_labels = (onehot if k else None for k in self.label_channels)
        r = self.conv1(_maybe_with_labels(r, first_labels))
        r = self.conv2(_maybe_with_labels(F.relu(self.norm2(r)), second_labels))
        return skip + self._resampled(r, "down")


class ResNetGenerator32(NoiseSampler):
    """Maps z (B, z_dim) [and labels y (B,)] to images (B, C, 32, 32) in ``output_range``.

    Args:
        z_dim: noise dimension (the paper: 128).
        n_classes: 0 (unconditional) or the number of labels.
        cond: "onehot", "concat" or "embed" (see the module's docstring).
        norm: norm in the residual blocks and before the output conv (the paper: "batch").
        out: "tanh" (the paper) or "sigmoid".
        width: channels of every block (the paper: 128).
        noise: "gaussian" (the paper) or "uniform".
        out_channels: C.
    """

    image_size = IMAGE_SIZE

    def __init__(
        self,
        z_dim: int = 128,
        n_classes: int = 0,
        cond: str = "onehot",
        norm: str = "batch",
        out: str = "tanh",
        width: int = 128,
        noise: str = "gaussian",
        out_channels: int = 3,
    ) -> None:
        super().__init__(z_dim, noise)
        if out_channels < 1 or width < 1:
            raise UserError(f"width and out_channels must be >= 1, got {width}, {out_channels}")
        self.n_classes = n_classes
        self.cond = _check_conditioning(n_classes, cond)
        self.output_range = OUTPUTS[check_choice("output", out, tuple(OUTPUTS))]
        self.out = out
        self.width = width
        self.label_embedding = (
            nn.Embedding(n_classes, EMBED_DIM) if n_classes and cond == "embed" else None
        )
        label_dim = 0 if not n_classes else (EMBED_DIM if cond == "embed" else n_classes)
        extra = _per_layer_labels(n_classes, cond)
        self.project = nn.Linear(z_dim + label_dim, width * BASE_SIZE**2)
        self.blocks = nn.ModuleList(
            ResidualBlock(width, width, width, "up", norm, (extra, extra)) for _ in range(3)
        )
        self.out_norm = make_norm(norm, width, spatial=True)
        self.to_image = nn.Conv2d(width + extra, out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Images (B, C, 32, 32): tanh output in [-1, 1] or sigmoid output in [0, 1]."""
        _check_labels(self.n_classes, y, type(self).__name__)
        onehot = None
        if y is not None:
            onehot = F.one_hot(y, self.n_classes).to(z.dtype)
            labels = self.label_embedding(y) if self.label_embedding is not None else onehot
            z = torch.cat([z, labels], dim=1)
        per_layer = onehot if self.cond == "concat" else None
        h = self.project(z).view(-1, self.width, BASE_SIZE, BASE_SIZE)
        for block in self.blocks:
            h = block(h, per_layer)
        logits = self.to_image(_maybe_with_labels(F.relu(self.out_norm(h)), per_layer))
        return torch.sigmoid(logits) if self.out == "sigmoid" else torch.tanh(logits)


class ResNetCritic32(nn.Module):
    """Scores images (B, C, 32, 32) [given labels y (B,)] with one logit each, shape (B,).

    Args:
        n_classes: 0 (unconditional) or the number of labels.
        cond: "onehot", "concat" or "embed" (see the module's docstring).
        norm: "none" (the paper), "layer" (the paper's alternative, per sample) or "batch"
            (mixes the batch: refused by the penalty unless allowed).
        width: channels of every block (the paper: 128).
        in_channels: C.
    """

    image_size = IMAGE_SIZE

    def __init__(
        self,
        n_classes: int = 0,
        cond: str = "onehot",
        norm: str = "none",
        width: int = 128,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if in_channels < 1 or width < 1:
            raise UserError(f"width and in_channels must be >= 1, got {width}, {in_channels}")
        self.n_classes = n_classes
        self.cond = _check_conditioning(n_classes, cond)
        first = n_classes if cond in ("onehot", "concat") else 0
        extra = _per_layer_labels(n_classes, cond)
        self.blocks = nn.ModuleList(
            [
                ResidualBlock(
                    in_channels, width, width, "down", norm, (first, extra), preactivate=False
                ),
                ResidualBlock(width, width, width, "down", norm, (extra, extra)),
                ResidualBlock(width, width, width, "none", norm, (extra, extra)),
                ResidualBlock(width, width, width, "none", norm, (extra, extra)),
            ]
        )
        self.head = nn.Linear(width + extra, 1)
        self.projection = nn.Embedding(n_classes, width) if n_classes and cond == "embed" else None

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Critic logits, shape (B,)."""
        _check_labels(self.n_classes, y, type(self).__name__)
        onehot = None
        if y is not None and self.projection is None:
            onehot = F.one_hot(y, self.n_classes).to(x.dtype)
        h = x
        for block in self.blocks:
            h = block(h, onehot)
        h = F.relu(h).mean(dim=(2, 3))
        concat = onehot is not None and self.cond == "concat"
        logits = self.head(torch.cat([h, onehot], dim=1) if concat else h).squeeze(-1)
        if y is not None and self.projection is not None:
            logits = logits + (self.projection(y) * h).sum(dim=1)
        return logits
