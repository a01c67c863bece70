"""Critic outputs as per-sample scores: the one place that turns what a critic returns to (B,).

The penalties, the training loop, the compiled path and the approximations all read a critic
through :func:`scores`, so they agree on what the penalized score of a sample is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

Critic = Callable[..., Any]

__all__ = ["Critic", "critic_scores", "scores"]


def critic_scores(critic: Critic, x: Tensor, cond: Any = None) -> Tensor:
    """The ``(B,)`` scores of ``critic(x)``, or of ``critic(x, cond)`` when ``cond`` is not None."""
    return scores(critic(x) if cond is None else critic(x, cond), x.shape[0])


def scores(out: Any, batch: int) -> Tensor:
    """One score per sample from a critic's output.

    Args:
        out: what the critic returned: a tensor of shape ``(B,)`` or ``(B, 1)``.
        batch: ``B``, the number of samples the critic was given.

    Returns:
        The scores, shape ``(B,)``.

    Raises:
        ValueError: ``out`` is not a tensor of one of those shapes.
    """
    if not isinstance(out, Tensor):
        raise ValueError(f"the critic must return a tensor, got {type(out).__name__}")
    if out.shape == (batch, 1):
        out = out.squeeze(1)
    if out.shape != (batch,):
        raise ValueError(
            f"the critic must return one score per sample, shape ({batch},) or ({batch}, 1); "
            f"got {tuple(out.shape)}"
        )
    return out
