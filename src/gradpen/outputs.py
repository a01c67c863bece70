"""Critic outputs as per-sample scores: the one place that reads what a critic returns.

A critic may return a tensor ``(B,)``, ``(B, 1)`` or ``(B, ...)`` (a patch map, a sequence of
frame scores), or a list, tuple or dict of such outputs, nested (multi-scale critics, heads
over a shared backbone). The penalized score of sample ``i`` is, with ``reduce="sum"`` (the
default), the sum over every output of the sum of its non-batch elements: the gradient of
``logits.sum()``, as StyleGAN2 and MaskGIT-style trainers take it. With ``reduce="mean"`` it is
the mean of each output's non-batch elements, summed over outputs. The penalties, the training
loop, the compiled path and the losses all read a critic through this module, so they agree.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch import Tensor

Critic = Callable[..., Any]
REDUCTIONS = ("sum", "mean")

__all__ = ["REDUCTIONS", "Critic", "critic_output", "critic_scores", "leaves", "scores"]


def leaves(out: Any, batch: int | None, path: str = "output") -> list[tuple[str, Tensor]]:
    """The tensors of a (nested) critic output, each with its path, in a fixed order.

    Args:
        out: a tensor ``(B, ...)``, or a list, tuple or dict of outputs (nested).
        batch: ``B``, the number of samples the critic was given (None: any, but at least
            one dim).
        path: the name of ``out`` in error messages.

    Returns:
        ``[(path, tensor), ...]``, e.g. ``[("output[0]", t0), ("output['patch']", t1)]``.

    Raises:
        ValueError: a leaf is not a tensor, has no batch dim or a batch dim other than ``B``,
            or a container is empty.
    """
    if isinstance(out, Tensor):
        if out.dim() == 0 or (batch is not None and out.shape[0] != batch):
            size = "the batch size" if batch is None else f"the batch size {batch}"
            raise ValueError(
                f"the critic's {path} has shape {tuple(out.shape)}: every output must have "
                f"{size} as its first dim, (B,), (B, 1) or (B, ...) such as a patch map"
            )
        return [(path, out)]
    if isinstance(out, Mapping):
        items = [(f"{path}[{key!r}]", value) for key, value in out.items()]
    elif isinstance(out, list | tuple):
        items = [(f"{path}[{index}]", value) for index, value in enumerate(out)]
    else:
        raise ValueError(
            f"the critic's {path} is a {type(out).__name__}; a critic must return a tensor "
            "(B, ...), or a list, tuple or dict of them"
        )
    if not items:
        raise ValueError(f"the critic's {path} is an empty {type(out).__name__}")
    return [leaf for name, value in items for leaf in leaves(value, batch, name)]


def check_reduce(reduce: str) -> None:
    """Raise ValueError unless ``reduce`` is one of :data:`REDUCTIONS`."""
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce must be one of {', '.join(REDUCTIONS)}; got {reduce!r}")


def scores(out: Any, batch: int, reduce: str = "sum") -> Tensor:
    """One score per sample from a critic's output.

    Args:
        out: what the critic returned (see the module docstring).
        batch: ``B``, the number of samples the critic was given.
        reduce: ``"sum"`` or ``"mean"`` over each output's non-batch elements; outputs are
            summed.

    Returns:
        The scores, shape ``(B,)``.
    """
    check_reduce(reduce)
    total = None
    for _, leaf in leaves(out, batch):
        if leaf.numel() == batch:  # (B,) or (B, 1): one score per sample already, a view
            value = leaf.reshape(batch)
        else:
            flat = leaf.reshape(batch, -1)
            value = flat.sum(dim=1) if reduce == "sum" else flat.mean(dim=1)
        total = value if total is None else total + value
    assert total is not None
    return total


def critic_output(critic: Critic, x: Tensor, cond: Any = None) -> Any:
    """``critic(x)``, or ``critic(x, cond)`` when ``cond`` is not None (a conditional critic)."""
    return critic(x) if cond is None else critic(x, cond)


def critic_scores(critic: Critic, x: Tensor, cond: Any = None, reduce: str = "sum") -> Tensor:
    """The ``(B,)`` scores of ``critic(x)``, or of ``critic(x, cond)`` when ``cond`` is not None.

    Args:
        critic: the critic.
        x: its input, ``(B, ...)``.
        cond: the condition of a conditional critic.
        reduce: see :func:`scores`.

    Returns:
        Shape ``(B,)``.
    """
    return scores(critic_output(critic, x, cond), x.shape[0], reduce)
