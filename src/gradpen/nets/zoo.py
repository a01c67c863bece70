"""A zoo of small reference critics, of the kinds people train with a gradient penalty.

Each is a per-sample function of its input (group/layer norm or none, never batch norm), so a
gradient penalty on it is valid, and each returns one of the output forms gradpen reads (see
:mod:`gradpen.outputs`): a score per sample, a patch map, a list of patch maps, a dict of head
outputs. They exist to pin the penalties against an independent reference on real
architectures (``tests/test_critic_zoo.py``) and to time them
(``benchmarks/penalty_overhead.py --critic``); the defaults are the usual small published
sizes, and every size is a constructor option so the tests can run them tiny.

| critic | input | output |
|---|---|---|
| :class:`PatchGANCritic` | ``(B, C, H, W)``, any size | ``(B, 1, H', W')`` |
| :class:`MultiScaleCritic` | ``(B, C, H, W)`` | list of ``scales`` patch maps |
| :class:`FrozenBackboneHeads` | ``(B, C, H, W)`` | ``{"patch": (B, 1, h, w), "global": (B, 1)}`` |
| :class:`ResNetGNCritic` | ``(B, C, 32, 32)`` (any size) | ``(B,)`` |
| :class:`ViTCritic` | ``(B, C, resolution, resolution)`` | ``(B,)`` |
| :class:`AudioCritic` | ``(B, C, T)`` waveforms | ``(B, 1, T')`` |
| :class:`ProjectionCritic` | ``(B, C, H, W)`` and labels ``(B,)`` | ``(B,)`` |
| :func:`spectral_norm_critic` | ``(B, C, H, W)`` | ``(B,)`` |
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gradpen.errors import UserError
from gradpen.lipschitz import spectral_norm
from gradpen.nets._common import ANY_IMAGE_SIZE, make_activation, make_norm

__all__ = [
    "AudioCritic",
    "FrozenBackboneHeads",
    "MultiScaleCritic",
    "PatchGANCritic",
    "ProjectionCritic",
    "ResNetGNCritic",
    "ViTCritic",
    "spectral_norm_critic",
]


def _check_positive(**sizes: int) -> None:
    """Raise UserError naming the first size that is not an integer >= 1."""
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"{name} must be an integer >= 1, got {value!r}")


def _conv_stack(
    in_channels: int, width: int, n_layers: int, activation: str, norm: str, max_width: int
) -> tuple[nn.Sequential, int]:
    """Strided 4x4 convs, channels doubling from ``width`` up to ``max_width``.

    The first conv has no norm (pix2pix); padding 2 (pix2pixHD) keeps every size >= 1, so the
    stack works at any resolution. Returns the stack and its output channel count.
    """
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, width, 4, stride=2, padding=2),
        make_activation(activation),
    ]
    channels = width
    for _ in range(n_layers - 1):
        out = min(2 * channels, max_width)
        layers += [
            nn.Conv2d(channels, out, 4, stride=2, padding=2),
            make_norm(norm, out, spatial=True),
            make_activation(activation),
        ]
        channels = out
    return nn.Sequential(*layers), channels


class PatchGANCritic(nn.Module):
    """pix2pix's N-layer PatchGAN: one score per overlapping input patch.

    ``n_layers`` strided 4x4 convs (the first without norm), a stride-1 4x4 conv with norm, and
    a stride-1 4x4 conv to one channel, as in pix2pix's ``NLayerDiscriminator``, with
    pix2pixHD's padding of 2 so that any input size (28, 32, 64 px, ...) gives a non-empty map.
    The default ``n_layers=3`` is the 70x70 PatchGAN. Norm is group norm over one group (layer
    norm, per sample) instead of batch norm, which mixes samples and voids the penalty.

    Args:
        in_channels: image channels ``C``.
        width: channels of the first conv; doubled per strided layer up to ``8 * width``.
        n_layers: strided convs, >= 1.
        activation: ``"leaky_relu"`` (slope 0.2, pix2pix), ``"relu"`` or ``"tanh"``.
        norm: ``"layer"`` (default), ``"none"``, or ``"batch"`` (refused by the penalty).

    Shapes:
        ``(B, C, H, W) -> (B, 1, H', W')``.
    """

    image_size = ANY_IMAGE_SIZE  # fully convolutional: images of any side

    def __init__(
        self,
        in_channels: int = 3,
        width: int = 64,
        n_layers: int = 3,
        activation: str = "leaky_relu",
        norm: str = "layer",
    ) -> None:
        super().__init__()
        _check_positive(in_channels=in_channels, width=width, n_layers=n_layers)
        stack, channels = _conv_stack(in_channels, width, n_layers, activation, norm, 8 * width)
        out = min(2 * channels, 8 * width)
        self.net = nn.Sequential(
            *stack,
            nn.Conv2d(channels, out, 4, stride=1, padding=2),
            make_norm(norm, out, spatial=True),
            make_activation(activation),
            nn.Conv2d(out, 1, 4, stride=1, padding=2),
        )

    def forward(self, x: Tensor) -> Tensor:
        """Patch scores of images ``x`` ``(B, C, H, W)``, shape ``(B, 1, H', W')``."""
        return self.net(x)


class MultiScaleCritic(nn.Module):
    """pix2pixHD's multi-scale critic: one PatchGAN per scale of the input.

    Scale ``k`` sees the image average-pooled ``k`` times (3x3, stride 2, padding not counted,
    as in pix2pixHD), so the coarse critics judge global structure and the fine one texture.
    Each scale has its own weights. A penalty on it sees the sum (or, with ``reduce="mean"``, the
    sum of the means) of all maps.

    Args:
        in_channels, width, n_layers, activation, norm: of each :class:`PatchGANCritic`.
        scales: how many scales, >= 1 (pix2pixHD: 2 or 3).

    Shapes:
        ``(B, C, H, W) ->`` a list of ``scales`` maps ``(B, 1, H_k, W_k)``, finest first.
    """

    def __init__(
        self,
        in_channels: int = 3,
        width: int = 64,
        n_layers: int = 3,
        scales: int = 3,
        activation: str = "leaky_relu",
        norm: str = "layer",
    ) -> None:
        super().__init__()
        _check_positive(scales=scales)
        self.critics = nn.ModuleList(
            PatchGANCritic(in_channels, width, n_layers, activation, norm) for _ in range(scales)
        )

    def forward(self, x: Tensor) -> list[Tensor]:
        """The patch maps of ``x`` ``(B, C, H, W)`` at each scale, finest first."""
        maps = []
        for index, critic in enumerate(self.critics):
            if index:
                x = F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)
            maps.append(critic(x))
        return maps


class FrozenBackboneHeads(nn.Module):
    """A frozen feature extractor with trainable heads (projected-GAN / DINO-critic style).

    The backbone (strided convs) has ``requires_grad=False`` on every parameter: only the heads
    train, but the penalty's input gradient still runs through the backbone. Two heads read its
    features: ``"patch"``, a 1x1 conv giving a patch map, and ``"global"``, a two-layer MLP on
    the spatially averaged features giving one score per sample.

    Args:
        in_channels: image channels ``C``.
        width: channels of the backbone's first conv (doubled once).
        activation: the backbone's and the global head's activation (see
            :class:`PatchGANCritic`).

    Shapes:
        ``(B, C, H, W) -> {"patch": (B, 1, H', W'), "global": (B, 1)}``.
    """

    def __init__(
        self, in_channels: int = 3, width: int = 32, activation: str = "leaky_relu"
    ) -> None:
        super().__init__()
        _check_positive(in_channels=in_channels, width=width)
        self.backbone, channels = _conv_stack(in_channels, width, 2, activation, "layer", 2 * width)
        self.backbone.requires_grad_(False)
        self.heads = nn.ModuleDict(
            {
                "patch": nn.Conv2d(channels, 1, 1),
                "global": nn.Sequential(
                    nn.Linear(channels, channels),
                    make_activation(activation),
                    nn.Linear(channels, 1),
                ),
            }
        )

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """The heads' outputs on ``x`` ``(B, C, H, W)``: ``{"patch": ..., "global": ...}``."""
        features = self.backbone(x)
        return {
            "patch": self.heads["patch"](features),
            "global": self.heads["global"](features.mean(dim=(2, 3))),
        }


class _ResBlock(nn.Module):
    """Pre-activation residual block, GroupNorm -> act -> 3x3 conv twice, optional 2x2 pooling.

    The shortcut is a 1x1 conv when the channels change or the block pools, as in the WGAN-GP
    ResNet; ``first`` skips the leading norm and activation (the block that sees the image).
    """

    def __init__(
        self, cin: int, cout: int, groups: int, activation: str, *, down: bool, first: bool
    ) -> None:
        super().__init__()
        pre: list[nn.Module] = (
            [] if first else [nn.GroupNorm(groups, cin), make_activation(activation)]
        )
        self.residual = nn.Sequential(
            *pre,
            nn.Conv2d(cin, cout, 3, padding=1),
            nn.GroupNorm(groups, cout),
            make_activation(activation),
            nn.Conv2d(cout, cout, 3, padding=1),
        )
        self.shortcut = nn.Conv2d(cin, cout, 1) if (cin != cout or down) else nn.Identity()
        self.down = down

    def forward(self, x: Tensor) -> Tensor:
        out = self.residual(x) + self.shortcut(x)
        return F.avg_pool2d(out, 2) if self.down else out


class ResNetGNCritic(nn.Module):
    """The WGAN-GP paper's 32-px ResNet critic, with GroupNorm and average pooling.

    Four residual blocks (two that halve the size by 2x2 average pooling, 32 -> 16 -> 8, then
    two at 8x8), an activation, a global spatial mean and a linear layer to one score, as in
    Gulrajani et al.'s CIFAR-10 critic, with group norm in the blocks (the paper uses layer
    norm; batch norm would mix samples). Any input size divisible by 4 works; 32 is the design.

    Args:
        in_channels: image channels ``C``.
        width: channels of every block (the paper: 128).
        groups: GroupNorm groups; must divide ``width``.
        activation: ``"relu"`` (the paper), ``"leaky_relu"`` or ``"tanh"``.

    Shapes:
        ``(B, C, H, W) -> (B,)``.
    """

    def __init__(
        self, in_channels: int = 3, width: int = 128, groups: int = 8, activation: str = "relu"
    ) -> None:
        super().__init__()
        _check_positive(in_channels=in_channels, width=width, groups=groups)
        if width % groups:
            raise UserError(f"groups ({groups}) must divide width ({width})")
        block = [
            (in_channels, True, True),
            (width, True, False),
            (width, False, False),
            (width, False, False),
        ]
        self.blocks = nn.Sequential(
            *(
                _ResBlock(cin, width, groups, activation, down=down, first=first)
                for cin, down, first in block
            )
        )
        self.activation = make_activation(activation)
        self.head = nn.Linear(width, 1)

    def forward(self, x: Tensor) -> Tensor:
        """Scores of images ``x`` ``(B, C, H, W)``, shape ``(B,)``."""
        features = self.activation(self.blocks(x)).mean(dim=(2, 3))
        return self.head(features).squeeze(1)


class _Attention(nn.Module):
    """Multi-head self-attention via ``F.scaled_dot_product_attention`` on ``(B, heads, T, d)``."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.heads, dim // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, heads, T, d)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, dim))


class _TransformerBlock(nn.Module):
    """Pre-norm transformer block: x + attention(LN(x)), then x + MLP(LN(x)) (GELU, 4x wide)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attention = _Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attention(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViTCritic(nn.Module):
    """A small vision transformer critic (ViT-GAN style, without its Lipschitz changes).

    Non-overlapping ``patch x patch`` patches are embedded by a strided conv, a learned
    position embedding is added, ``depth`` pre-norm transformer blocks run multi-head attention
    through ``F.scaled_dot_product_attention`` (q, k, v of shape ``(B, heads, T, d)``), and a
    final layer norm and linear layer score either a prepended class token (``pool="cls"``) or
    the mean of the patch tokens (``pool="mean"``). Attention mixes tokens, never samples.

    Its penalty needs a double backward through attention; PyTorch's fused CPU attention
    kernels do not have one, its math kernel does
    (``torch.nn.attention.sdpa_kernel(SDPBackend.MATH)``).

    Args:
        in_channels: image channels ``C``.
        resolution: image side; a multiple of ``patch``.
        patch: patch side.
        dim: token width; a multiple of ``heads``.
        depth: transformer blocks.
        heads: attention heads.
        pool: ``"cls"`` or ``"mean"``.

    Shapes:
        ``(B, C, resolution, resolution) -> (B,)``.
    """

    def __init__(
        self,
        in_channels: int = 3,
        resolution: int = 32,
        patch: int = 4,
        dim: int = 128,
        depth: int = 4,
        heads: int = 4,
        pool: str = "cls",
    ) -> None:
        super().__init__()
        _check_positive(
            in_channels=in_channels,
            resolution=resolution,
            patch=patch,
            dim=dim,
            depth=depth,
            heads=heads,
        )
        if resolution % patch or dim % heads:
            raise UserError(
                f"resolution ({resolution}) must be a multiple of patch ({patch}) and dim "
                f"({dim}) a multiple of heads ({heads})"
            )
        if pool not in ("cls", "mean"):
            raise UserError(f"unknown pool {pool!r}; valid: cls, mean")
        self.pool = pool
        tokens = (resolution // patch) ** 2 + (pool == "cls")
        self.embed = nn.Conv2d(in_channels, dim, patch, stride=patch)
        self.cls_token = nn.Parameter(0.02 * torch.randn(1, 1, dim)) if pool == "cls" else None
        self.position = nn.Parameter(0.02 * torch.randn(1, tokens, dim))
        self.blocks = nn.Sequential(*(_TransformerBlock(dim, heads) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        """Scores of images ``x`` ``(B, C, resolution, resolution)``, shape ``(B,)``."""
        tokens = self.embed(x).flatten(2).transpose(1, 2)  # (B, T, dim)
        if self.cls_token is not None:
            tokens = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), tokens], dim=1)
        tokens = self.norm(self.blocks(tokens + self.position))
        pooled = tokens[:, 0] if self.cls_token is not None else tokens.mean(dim=1)
        return self.head(pooled).squeeze(1)


class AudioCritic(nn.Module):
    """A 1-D conv critic on raw waveforms (MelGAN's scale discriminator, shrunk).

    A wide 15-tap conv, ``n_layers`` strided (stride 4, 41 taps, grouped as in MelGAN when the
    channels allow) convs with channels doubling up to ``16 * width``, a 5-tap conv and a 3-tap
    conv to one channel: one score per stretch of audio.

    Args:
        in_channels: audio channels ``C`` (1 for mono).
        width: channels of the first conv.
        n_layers: stride-4 convs, >= 1.
        activation: ``"leaky_relu"`` (slope 0.2, MelGAN), ``"relu"`` or ``"tanh"``.

    Shapes:
        ``(B, C, T) -> (B, 1, T')`` with ``T' = ceil(T / 4 ** n_layers)``.
    """

    def __init__(
        self,
        in_channels: int = 1,
        width: int = 16,
        n_layers: int = 4,
        activation: str = "leaky_relu",
    ) -> None:
        super().__init__()
        _check_positive(in_channels=in_channels, width=width, n_layers=n_layers)
        layers: list[nn.Module] = [
            nn.Conv1d(in_channels, width, 15, padding=7),
            make_activation(activation),
        ]
        channels = width
        for _ in range(n_layers):
            out = min(4 * channels, 16 * width)
            groups = math.gcd(channels, out, max(channels // 4, 1))
            layers += [
                nn.Conv1d(channels, out, 41, stride=4, padding=20, groups=groups),
                make_activation(activation),
            ]
            channels = out
        layers += [
            nn.Conv1d(channels, channels, 5, padding=2),
            make_activation(activation),
            nn.Conv1d(channels, 1, 3, padding=1),
        ]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """Scores of waveforms ``x`` ``(B, C, T)``, shape ``(B, 1, T')``."""
        return self.net(x)


class ProjectionCritic(nn.Module):
    """A conditional critic by projection (Miyato & Koyama 2018): ``forward(x, y)``.

    Strided conv features ``h(x)`` (layer norm, leaky ReLU), summed over space into ``(B, F)``;
    the score is ``head(h) + <embed(y), h>``. For each fixed label it is a function of ``x``
    alone, so the penalty's gradient is taken with respect to the image; the label embedding
    trains through the penalty too (the input gradient depends on it).

    Args:
        in_channels: image channels ``C``.
        n_classes: number of labels.
        width: channels of the first conv (doubled per layer).
        n_layers: strided convs.
        activation: see :class:`PatchGANCritic`.

    Shapes:
        ``(B, C, H, W)`` and int64 labels ``(B,) -> (B,)``.
    """

    def __init__(
        self,
        in_channels: int = 3,
        n_classes: int = 10,
        width: int = 64,
        n_layers: int = 3,
        activation: str = "leaky_relu",
    ) -> None:
        super().__init__()
        _check_positive(n_classes=n_classes)
        self.features, channels = _conv_stack(
            in_channels, width, n_layers, activation, "layer", 2 ** (n_layers - 1) * width
        )
        self.activation = make_activation(activation)
        self.head = nn.Linear(channels, 1)
        self.embed = nn.Embedding(n_classes, channels)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """Scores of images ``x`` ``(B, C, H, W)`` with labels ``y`` ``(B,)``, shape ``(B,)``."""
        h = self.activation(self.features(x)).sum(dim=(2, 3))
        return self.head(h).squeeze(1) + (self.embed(y) * h).sum(dim=1)


class _SumOver(nn.Module):
    """Sum over one dim (a global pooling as a module, for ``nn.Sequential``)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: Tensor) -> Tensor:
        return x.sum(dim=self.dim)


def spectral_norm_critic(
    in_channels: int = 3, width: int = 64, n_layers: int = 3, n_power_iterations: int = 1
) -> nn.Module:
    """A small conv critic (SN-GAN style) with torch's spectral-norm parametrization.

    Strided 4x4 convs with leaky ReLU (no norm layer; spectral norm is the constraint), a
    global spatial sum and a linear layer, with every conv and linear layer wrapped by
    ``torch.nn.utils.parametrizations.spectral_norm`` (:func:`gradpen.lipschitz.spectral_norm`).
    In training mode each forward also advances the power iteration (a buffer update), so two
    forwards of the same input differ slightly; in eval mode the forward is a fixed function.

    Args:
        in_channels: image channels ``C``.
        width: channels of the first conv (doubled per layer).
        n_layers: strided convs.
        n_power_iterations: power iterations per forward in training mode.

    Returns:
        The critic, ``(B, C, H, W) -> (B,)``.
    """
    features, channels = _conv_stack(
        in_channels, width, n_layers, "leaky_relu", "none", 2 ** (n_layers - 1) * width
    )
    critic = nn.Sequential(
        features,
        nn.Flatten(2),
        _SumOver(2),
        nn.Linear(channels, 1),
        nn.Flatten(0),
    )
    return spectral_norm(critic, n_power_iterations=n_power_iterations)
