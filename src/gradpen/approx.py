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
- :func:`approx_r1` / :func:`approx_r2`: R1 / R2 as a squared finite difference along Gaussian
  noise (Seaweed-APT), for critics with an operation that has no double backward. Unbiased as
  ``sigma -> 0``; noisy, and biased by ``O(sigma)`` otherwise.

All three are registered (``"approx-wgan-gp"``, ``"approx-r1"``, ``"approx-r2"``), so
``gp.Penalty`` and the training config use them like the exact penalties.

``benchmarks/penalty_overhead.py`` measures their cost and their bias against the exact penalty.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from gradpen import outputs
from gradpen.gradients import check_no_batchnorm, eager_original
from gradpen.outputs import Critic
from gradpen.penalties import check_pair, interpolate

__all__ = ["approx_r1", "approx_r2", "sub_batch", "wgan_gp_finite_difference"]


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


def _scored_pairs(
    critic: Critic, first: Tensor, second: Tensor, how: dict[str, Any]
) -> tuple[Tensor, Tensor]:
    """The scores of two batches of points, in one critic call of ``2B`` samples.

    16-bit scores are returned in float32 (a difference of nearby scores cancels digits).

    ``how``: ``cond`` (repeated for both halves), ``reduce`` and ``allow_batchnorm`` as for the
    exact penalties; ``scaler`` and ``fast`` do not apply (there is no double backward).
    """
    if not how.get("allow_batchnorm", False):
        check_no_batchnorm(eager_original(critic))
    cond = how.get("cond")
    both_cond = None if cond is None else torch.cat([cond, cond])
    points = torch.cat([first, second])
    scores = outputs.critic_scores(critic, points, both_cond, how.get("reduce", "sum"))
    if scores.dtype in (torch.float16, torch.bfloat16):
        scores = scores.float()
    upper, lower = scores.chunk(2)
    return upper, lower


def wgan_gp_finite_difference(
    critic: Critic,
    real: Tensor,
    fake: Tensor,
    *,
    h: float = 1e-2,
    target: float = 1.0,
    one_sided: bool = False,
    generator: torch.Generator | None = None,
    **how: Any,
) -> Tensor:
    """``(|D'(x_hat; u)| - target)^2`` per sample, ``u`` the unit real-fake direction.

    ``D'(x; u) ~ (D(x + h u) - D(x - h u)) / 2h``, both points scored in one critic call.
    APPROXIMATION: a lower bound on the gradient norm (see the module docstring). A sample whose
    real and fake coincide has no direction; its derivative is taken as 0.

    Args:
        critic: the critic.
        real, fake: batches of the same shape ``(B, ...)``.
        h: the finite-difference step, > 0.
        target, one_sided: as for :func:`gradpen.wgan_gp`.
        generator: seeds the interpolation coefficients.
        **how: ``cond``, ``reduce``, ``allow_batchnorm``.

    Returns:
        Shape ``(B,)``.
    """
    check_pair(real, fake)
    _check_positive("h", h)
    x_hat = interpolate(real, fake, generator=generator)
    direction = (real - fake).detach().flatten(1)
    length = direction.norm(dim=1, keepdim=True)
    unit = torch.where(length > 0, direction / length.clamp_min(1e-30), 0.0).view_as(real)
    forward, backward = _scored_pairs(critic, x_hat + h * unit, x_hat - h * unit, how)
    excess = ((forward - backward) / (2 * h)).abs() - target
    if one_sided:
        excess = excess.clamp_min(0)
    return excess.pow(2)


def approx_r1(
    critic: Critic,
    real: Tensor,
    *,
    sigma: float = 0.01,
    generator: torch.Generator | None = None,
    **how: Any,
) -> Tensor:
    """``(D(x + sigma e) - D(x))^2 / sigma^2`` per sample at the reals, ``e ~ N(0, I)``.

    R1 without a double backward (Seaweed-APT's approximate R1, Lin et al. 2025): only forwards
    and the ordinary backward, so it works through operations that have no double backward.
    Since ``D(x + sigma e) - D(x) = sigma g.e + O(sigma^2)`` and ``E[(g.e)^2] = ||g||^2``, its
    expectation tends to R1's ``||grad D(x)||^2`` as ``sigma -> 0``; weighted ``gamma / 2``
    (``Penalty("approx-r1", weight=gamma, sigma=sigma)``) it tends to ``Penalty("r1", gamma)``.
    APPROXIMATION: one noise draw per sample (noisy), and an ``O(sigma)`` bias.

    Args:
        critic: the critic.
        real: the batch, ``(B, ...)``.
        sigma: the noise scale, > 0.
        generator: seeds the noise.
        **how: ``cond``, ``reduce``, ``allow_batchnorm``.

    Returns:
        Shape ``(B,)``.
    """
    _check_positive("sigma", sigma)
    x = real.detach()
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    moved, here = _scored_pairs(critic, x + sigma * noise, x, how)
    return ((moved - here) / sigma).pow(2)


def approx_r2(
    critic: Critic,
    fake: Tensor,
    *,
    sigma: float = 0.01,
    generator: torch.Generator | None = None,
    **how: Any,
) -> Tensor:
    """:func:`approx_r1` at the fakes: R2 without a double backward. APPROXIMATION."""
    return approx_r1(critic, fake, sigma=sigma, generator=generator, **how)


def _check_positive(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number > 0, got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value}")
