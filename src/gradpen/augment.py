"""Differentiable augmentation (DiffAugment, Zhao et al. 2020): color, translation, cutout.

The critic sees ``T(x)`` for reals and fakes alike, in the critic's and the generator's loss, so
that a small data set does not let it memorize; every ``T`` is differentiable, so the generator
learns through it. Each transform draws its parameters per sample from torch's global RNG and
never mixes samples (row ``i`` of the output depends on row ``i`` of the input only), so the
gradient of ``critic(T(x)).sum()`` is still the per-sample input gradient a penalty needs.

The policy names the families, comma-separated, applied in the order named (DiffAugment's
recipes use ``"color,translation,cutout"``): ``color`` (brightness, then saturation, then
contrast), ``translation`` (an integer shift of up to 1/8 of each side, zeros shifted in),
``cutout`` (a square of half the side set to zero, centered anywhere in the image and clipped
at its border). The deterministic transforms (:func:`translate`,
:func:`cut_out`, :func:`adjust_color`) take the per-sample parameters; :func:`diff_augment` draws
them. :class:`AugmentedCritic` is ``x -> critic(T(x))``: a penalty taken through it is taken at
the pre-augmentation image (StyleGAN2-ADA's convention).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "POLICIES",
    "AugmentedCritic",
    "adjust_color",
    "cut_out",
    "diff_augment",
    "parse_policy",
    "translate",
]

POLICIES = ("color", "translation", "cutout")
"""The augmentation families a policy may name."""
TRANSLATION_RATIO = 0.125  # the largest shift, as a fraction of the side (DiffAugment's)
CUTOUT_RATIO = 0.5  # the side of the cut-out square, as a fraction of the image's side


def parse_policy(policy: str) -> tuple[str, ...]:
    """The families named in ``policy`` (comma-separated, spaces ignored; empty: none).

    Args:
        policy: e.g. ``"color,translation,cutout"`` or ``""``.

    Returns:
        The names, in the order given.

    Raises:
        ValueError: an unknown or repeated name.
    """
    names = tuple(part.strip() for part in policy.split(",") if part.strip())
    unknown = [name for name in names if name not in POLICIES]
    if unknown:
        raise ValueError(
            f"unknown augmentation {unknown[0]!r}; choose from {', '.join(POLICIES)} "
            "(comma-separated, or empty for none)"
        )
    if len(set(names)) != len(names):
        raise ValueError(f"augmentation policy {policy!r} names a family twice")
    return names


def _per_sample(values: Tensor, like: Tensor) -> Tensor:
    """``(B,)`` values shaped ``(B, 1, 1, 1)`` in ``like``'s dtype, to broadcast over an image."""
    return values.to(like.dtype).reshape(-1, 1, 1, 1)


def adjust_color(x: Tensor, brightness: Tensor, saturation: Tensor, contrast: Tensor) -> Tensor:
    """Brightness, then saturation, then contrast, per sample.

    Brightness adds its value; saturation scales each pixel's distance from its mean over the
    channels; contrast scales each value's distance from the image's mean over all channels
    and pixels.

    Args:
        x: images, ``(B, C, H, W)``.
        brightness: ``(B,)`` offsets (DiffAugment draws them from U(-0.5, 0.5)).
        saturation: ``(B,)`` factors (U(0, 2)).
        contrast: ``(B,)`` factors (U(0.5, 1.5)).

    Returns:
        The adjusted images, ``(B, C, H, W)``.
    """
    x = x + _per_sample(brightness, x)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * _per_sample(saturation, x) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * _per_sample(contrast, x) + mean


def translate(x: Tensor, shift_h: Tensor, shift_w: Tensor) -> Tensor:
    """Shift each image by whole pixels, filling with zeros: ``out[i, j] = x[i - dh, j - dw]``.

    Args:
        x: images, ``(B, C, H, W)``.
        shift_h: ``(B,)`` integer shifts down (negative: up).
        shift_w: ``(B,)`` integer shifts right (negative: left).

    Returns:
        The shifted images, ``(B, C, H, W)``; pixels shifted in from outside are 0.
    """
    batch, channels, height, width = x.shape
    rows = torch.arange(height, device=x.device) - shift_h.reshape(-1, 1).to(x.device)  # (B, H)
    cols = torch.arange(width, device=x.device) - shift_w.reshape(-1, 1).to(x.device)  # (B, W)
    row_index = rows.clamp(0, height - 1).reshape(batch, 1, height, 1)
    col_index = cols.clamp(0, width - 1).reshape(batch, 1, 1, width)
    out = x.gather(2, row_index.expand(batch, channels, height, width))
    out = out.gather(3, col_index.expand(batch, channels, height, width))
    inside_rows = ((rows >= 0) & (rows < height)).reshape(batch, 1, height, 1)
    inside_cols = ((cols >= 0) & (cols < width)).reshape(batch, 1, 1, width)
    return out * (inside_rows & inside_cols).to(x.dtype)


def cut_out(x: Tensor, top: Tensor, left: Tensor, size: tuple[int, int]) -> Tensor:
    """Set a ``size`` rectangle of each image to zero, clipped at the border.

    Args:
        x: images, ``(B, C, H, W)``.
        top: ``(B,)`` the first row of each rectangle (may be negative: clipped).
        left: ``(B,)`` its first column (may be negative: clipped).
        size: ``(height, width)`` of the rectangle.

    Returns:
        The images with rows ``top .. top + height - 1`` x columns ``left .. left + width - 1``
        zeroed, ``(B, C, H, W)``.
    """
    height, width = x.shape[2:]
    rows = torch.arange(height, device=x.device) - top.reshape(-1, 1).to(x.device)
    cols = torch.arange(width, device=x.device) - left.reshape(-1, 1).to(x.device)
    in_rows = ((rows >= 0) & (rows < size[0]))[:, None, :, None]
    in_cols = ((cols >= 0) & (cols < size[1]))[:, None, None, :]
    return x * (~(in_rows & in_cols)).to(x.dtype)


def _uniform(batch: int, low: float, high: float, device: torch.device) -> Tensor:
    return torch.rand(batch, device=device) * (high - low) + low


def _random_color(x: Tensor) -> Tensor:
    batch, device = x.shape[0], x.device
    return adjust_color(
        x,
        brightness=_uniform(batch, -0.5, 0.5, device),
        saturation=_uniform(batch, 0.0, 2.0, device),
        contrast=_uniform(batch, 0.5, 1.5, device),
    )


def _random_translation(x: Tensor) -> Tensor:
    batch, device = x.shape[0], x.device
    max_h, max_w = (int(side * TRANSLATION_RATIO + 0.5) for side in x.shape[2:])
    return translate(
        x,
        torch.randint(-max_h, max_h + 1, (batch,), device=device),
        torch.randint(-max_w, max_w + 1, (batch,), device=device),
    )


def _random_cutout(x: Tensor) -> Tensor:
    batch, device = x.shape[0], x.device
    height, width = x.shape[2:]
    size = (int(height * CUTOUT_RATIO + 0.5), int(width * CUTOUT_RATIO + 0.5))
    # The center is drawn over the image (one position past it for an even side, as DiffAugment
    # does), so a square near the border is partly outside and clipped.
    center_h = torch.randint(0, height + 1 - size[0] % 2, (batch,), device=device)
    center_w = torch.randint(0, width + 1 - size[1] % 2, (batch,), device=device)
    return cut_out(x, center_h - size[0] // 2, center_w - size[1] // 2, size)


_RANDOM = {"color": _random_color, "translation": _random_translation, "cutout": _random_cutout}


def diff_augment(x: Tensor, policy: str | tuple[str, ...]) -> Tensor:
    """``x`` through the random transforms of ``policy``, fresh parameters per sample.

    Args:
        x: images, ``(B, C, H, W)``.
        policy: ``"color,translation,cutout"`` or any part of it (see :func:`parse_policy`), or
            the parsed tuple; empty: ``x`` itself.

    Returns:
        The augmented images, ``(B, C, H, W)``, differentiable in ``x``.
    """
    names = parse_policy(policy) if isinstance(policy, str) else policy
    if names and x.dim() != 4:
        raise ValueError(
            f"augmentation needs images of shape (B, C, H, W), got shape {tuple(x.shape)}"
        )
    for name in names:
        x = _RANDOM[name](x)
    return x


class AugmentedCritic(nn.Module):
    """``x -> critic(diff_augment(x, policy))``: the critic as the losses and penalties see it.

    Each call draws a fresh augmentation. A penalty given this module differentiates with
    respect to ``x``, the pre-augmentation image, through the augmentation (StyleGAN2-ADA).

    Args:
        critic: the critic (or its DDP wrapper), called as ``critic(x)`` or
            ``critic(x, cond)``.
        policy: the families to apply (see :func:`parse_policy`).
    """

    def __init__(self, critic: nn.Module, policy: str) -> None:
        super().__init__()
        self.critic = critic
        self.policy = parse_policy(policy)

    def forward(self, x: Tensor, *cond: Any) -> Any:
        """The critic's output on the augmented images.

        Args:
            x: images, ``(B, C, H, W)``, before the augmentation.
            *cond: the condition of a conditional critic, if any.

        Returns:
            What the critic returns for ``diff_augment(x)`` (e.g. ``(B,)`` scores).
        """
        return self.critic(diff_augment(x, self.policy), *cond)
