"""Cheaper penalty estimators. APPROXIMATIONS: each trades exactness for time, as labelled.

- :func:`sub_batch`: the penalty on a random fraction ``f`` of the batch. Its mean is an
  unbiased estimate of the full-batch mean (the subset is uniform); the cost of the penalty
  part scales with ``f``; the price is variance (about ``1/f`` times the full batch's).
- :func:`wgan_gp_finite_difference`: the WGAN-GP penalty with the gradient norm replaced by
  the central finite difference of the critic along the real-fake line. No double backward
  (two extra forwards and a first-order backward), but BIASED: ``|u . g| <= ||g||``, so it
  under-estimates the norm unless the gradient points along the line (as it does for the
  optimal WGAN critic, Gulrajani et al. 2017, Prop. 1), plus an ``O(h^2)`` truncation error
  where the critic is smooth.

``benchmarks/penalty_overhead.py`` measures their cost and their bias against the exact penalty.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from gradpen import outputs
from gradpen.outputs import Critic
from gradpen.penalties import check_pair, interpolate

__all__ = ["sub_batch", "wgan_gp_finite_difference"]


def sub_batch(
    fraction: float, *tensors: Tensor | None, generator: torch.Generator | None = None
) -> tuple[Tensor | None, ...]:
    """The same ``ceil(fraction * B)`` random rows of every tensor (``None`` passes through).

    Use it to feed a :class:`gradpen.Penalty` a sub-batch:
    ``real_s, fake_s = sub_batch(0.25, real, fake)``. APPROXIMATION (unbiased, noisier).
    """
    if not (isinstance(fraction, int | float) and 0 < fraction <= 1):
        raise ValueError(f"fraction must be a number in (0, 1], got {fraction!r}")
    present = [t for t in tensors if t is not None]
    if not present:
        raise ValueError("sub_batch needs at least one tensor")
    batch = present[0].shape[0]
    if any(t.shape[0] != batch for t in present):
        raise ValueError(
            f"all tensors must share the batch size; got {[t.shape[0] for t in present]}"
        )
    keep = math.ceil(fraction * batch)
    rows = torch.randperm(batch, generator=generator)[:keep].to(present[0].device)
    return tuple(None if t is None else t[rows] for t in tensors)


def wgan_gp_finite_difference(
    critic: Critic,
    real: Tensor,
    fake: Tensor,
    *,
    step: float = 1e-2,
    target: float = 1.0,
    one_sided: bool = False,
    cond: Any = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """``(|D'(x_hat; u)| - target)^2`` per sample, ``u`` the unit real-fake direction.

    ``D'(x; u) ~ (D(x + h u) - D(x - h u)) / 2h`` with ``h = step``, both points scored in one
    critic call. APPROXIMATION: a lower bound on the gradient norm (see the module docstring).
    A sample whose real and fake coincide has no direction; its derivative is taken as 0.
    """
    check_pair(real, fake)
    if not (math.isfinite(step) and step > 0):
        raise ValueError(f"step must be a finite number > 0, got {step}")
    x_hat = interpolate(real, fake, generator=generator)
    direction = (real - fake).detach().flatten(1)
    length = direction.norm(dim=1, keepdim=True)
    unit = torch.where(length > 0, direction / length.clamp_min(1e-30), 0.0).view_as(real)
    points = torch.cat([x_hat + step * unit, x_hat - step * unit])
    both_cond = None if cond is None else torch.cat([cond, cond])
    scores = outputs.critic_scores(critic, points, both_cond)
    forward, backward = scores.float().chunk(2)
    excess = ((forward - backward) / (2 * step)).abs() - target
    if one_sided:
        excess = excess.clamp_min(0)
    return excess.pow(2)
