"""The critic's input-gradient norms as diagnostics: the one helper the loop and studies log."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from gradpen.gradients import input_gradient
from gradpen.outputs import Critic
from gradpen.penalties import grad_norm


def grad_norm_stats(norms: Tensor, below: float = 1.0) -> dict[str, float]:
    """Mean, population std and the fraction of norms strictly below ``below``.

    Args:
        norms: per-sample gradient norms, shape ``(B,)``, ``B >= 1``.
        below: the threshold of ``frac_below``.

    Returns:
        ``{"mean", "std", "frac_below"}`` as floats.
    """
    if norms.ndim != 1 or norms.numel() == 0:
        raise ValueError(f"expected a non-empty (B,) tensor of norms, got {tuple(norms.shape)}")
    values = norms.detach().double()
    return {
        "mean": float(values.mean()),
        "std": float(values.std(unbiased=False)),
        "frac_below": float((values < below).double().mean()),
    }


def gradient_norm_stats(
    critic: Critic, points: dict[str, Tensor], *, cond: Any = None, below: float = 1.0
) -> dict[str, dict[str, float]]:
    """:func:`grad_norm_stats` of ``critic``'s input-gradient norms at each set of points.

    Logging never changes training: the critic's buffers (spectral-norm vectors, batch-norm
    statistics), which a forward in train mode moves, are restored afterwards, and batch norm
    is allowed (the diagnostic reports what the critic does, mixing or not).

    Args:
        critic: the critic.
        points: named batches, each ``(B, ...)``.
        cond: the condition of a conditional critic, ``(B, ...)``, shared by every batch.
        below: the threshold of ``frac_below``.

    Returns:
        For each name of ``points``, ``{"mean", "std", "frac_below"}``.
    """
    buffers = (
        {name: b.detach().clone() for name, b in critic.named_buffers()}
        if isinstance(critic, torch.nn.Module)
        else {}
    )
    stats = {}
    for name, x in points.items():
        with torch.enable_grad():
            norms = grad_norm(input_gradient(critic, x, cond=cond, allow_batchnorm=True))
        stats[name] = grad_norm_stats(norms.detach(), below)
    with torch.no_grad():
        for name, buffer in buffers.items():
            dict(critic.named_buffers())[name].copy_(buffer)
    return stats
