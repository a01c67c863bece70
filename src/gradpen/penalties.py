"""The mathematics of the gradient penalties: points, norms and the per-sample penalties.

Read top to bottom: the points a penalty is taken at (:func:`interpolate`, :func:`perturb`),
the norms of an input gradient (:func:`grad_norm`), the per-sample penalties (:func:`wgan_gp`,
:func:`r1`, ...). The registry that names them is :mod:`gradpen.registry`; the input gradient
itself is :func:`gradpen.gradients.input_gradient`.

Every per-sample function returns a ``(B,)`` tensor; weighting and reduction belong to the
caller (or to :class:`gradpen.Penalty`, which applies the conventions of the reference
material). The gradient is always taken with respect to the data only (never the condition),
one interpolation coefficient is drawn per sample, and the norm runs over every non-batch dim:
the three places where popular implementations are quietly wrong.

Speed: with ``fast=True`` (the default) the critic runs through :mod:`gradpen.fastpath`, exact
autograd twins with a cheaper double backward; ``fast=False`` runs plain autograd.

Precision: norms are taken in float32 for 16-bit gradients; ``scaler=`` (a
``torch.amp.GradScaler``) follows PyTorch's gradient-penalty recipe for float16.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from gradpen import outputs
from gradpen.gradients import (
    _gradient_of_scores,
    check_batch,
    check_no_batchnorm,
    eager_original,
    input_grad_reuse_pays,
    input_gradient,
    judge_twins,
)
from gradpen.outputs import Critic

__all__ = [
    "check_pair",
    "distance_from_target",
    "dragan",
    "grad_norm",
    "gradient_at",
    "gradient_norm_power",
    "interpolate",
    "norm_power",
    "perturb",
    "perturbed_points",
    "r1",
    "r2",
    "squared_norm",
    "wgan_div",
    "wgan_gp",
    "zero_centered",
]


def check_pair(real: Tensor, fake: Tensor) -> None:
    check_batch(real, "real")
    check_batch(fake, "fake")
    if real.shape != fake.shape or real.dtype != fake.dtype or real.device != fake.device:
        raise ValueError(
            "real and fake must share shape, dtype and device; got real "
            f"{tuple(real.shape)} {real.dtype} on {real.device} and fake "
            f"{tuple(fake.shape)} {fake.dtype} on {fake.device}"
        )


def _per_sample_shape(x: Tensor) -> tuple[int, ...]:
    """(B, 1, ..., 1): one value per sample that broadcasts over every other dim."""
    return (x.shape[0],) + (1,) * (x.dim() - 1)


def interpolate(real: Tensor, fake: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
    """Points ``eps * real + (1 - eps) * fake`` with one ``eps ~ U[0, 1]`` per sample.

    Works for any rank (2-D points, images, sequences). The result is detached: the penalty
    trains the critic, so no gradient may flow back into the generator that made ``fake``.

    Args:
        real: real samples, shape ``(B, ...)``.
        fake: generated samples, the same shape as ``real``.
        generator: the random generator that draws ``eps`` (None: torch's default).

    Returns:
        The interpolates, shape ``(B, ...)``, detached; ``eps`` has shape ``(B, 1, ..., 1)``.
    """
    check_pair(real, fake)
    eps = torch.rand(
        _per_sample_shape(real), generator=generator, dtype=real.dtype, device=real.device
    )
    return (eps * real.detach() + (1 - eps) * fake.detach()).detach()


def perturb(
    real: Tensor,
    *,
    scale: float = 0.5,
    noise: str = "uniform",
    spread: str = "global",
    generator: torch.Generator | None = None,
) -> Tensor:
    """DRAGAN's perturbed reals ``real + scale * std * u`` (detached).

    Args:
        real: the real batch, shape (B, ...).
        scale: the perturbation's size in units of ``std`` (the official code's 0.5).
        noise: ``"uniform"`` draws ``u ~ U[0, 1)`` per element, as in the official DRAGAN code;
            ``"gaussian"`` draws ``u ~ N(0, 1)``, the paper's ``N(0, c * sigma)`` variant.
        spread: ``"global"`` (default, the official code's ``X.std()``): one std over all
            elements of the batch, so every element (a constant background pixel too) moves
            by the same scale; ``"feature"``: the std of each feature over the batch, shape
            (1, ...), so a feature that is constant across the batch is never perturbed.
        generator: the random stream for ``u``.

    Returns:
        The perturbed points, shape (B, ...). A single element has no spread, so its std is
        zero and it is returned unchanged (as is every feature of a batch of one with
        ``spread="feature"``).
    """
    check_batch(real, "real")
    if noise not in ("uniform", "gaussian"):
        raise ValueError(f"noise must be 'uniform' or 'gaussian', got {noise!r}")
    if spread not in ("global", "feature"):
        raise ValueError(f"spread must be 'global' or 'feature', got {spread!r}")
    if not math.isfinite(scale) or scale < 0:
        raise ValueError(f"scale must be a finite number >= 0, got {scale}")
    data = real.detach()
    dims = {"global": None, "feature": 0}[spread]
    std = data.std(dim=dims, keepdim=True, unbiased=False)
    draw = torch.rand if noise == "uniform" else torch.randn
    u = draw(data.shape, generator=generator, dtype=data.dtype, device=data.device)
    return data + scale * std * u


# --- norms --------------------------------------------------------------------------------------


def grad_norm(g: Tensor) -> Tensor:
    """L2 norm of each sample's gradient over all non-batch dims.

    Finite value and finite gradient at ``g = 0`` (the plain norm's derivative is 0/0 there).
    A NaN in ``g`` (a float16 gradient that overflowed under a ``GradScaler``) gives a NaN norm,
    so that the penalty shows the overflow and the scaler skips the step.

    Args:
        g: gradients, shape ``(B, ...)``.

    Returns:
        Norms, shape ``(B,)``; float32 for 16-bit ``g``.
    """
    squared = squared_norm(g)
    zero = squared == 0
    safe = torch.where(zero, torch.ones_like(squared), squared)
    return torch.where(zero, torch.zeros_like(squared), safe.sqrt())


def squared_norm(g: Tensor) -> Tensor:
    """``||g_i||^2`` over all non-batch dims, shape ``(B,)`` (float32 for 16-bit ``g``)."""
    flat = g.flatten(1)
    if flat.dtype in (torch.float16, torch.bfloat16):
        flat = flat.float()
    return flat.pow(2).sum(dim=1)


def distance_from_target(g: Tensor, target: float = 1.0, one_sided: bool = False) -> Tensor:
    """``(||g|| - target)^2`` per sample, or ``max(0, ||g|| - target)^2`` when one-sided.

    Args:
        g: gradients, shape ``(B, ...)``.
        target: the norm aimed at.
        one_sided: only norms above ``target`` cost.

    Returns:
        Shape ``(B,)``.
    """
    excess = grad_norm(g) - target
    if one_sided:
        excess = excess.clamp_min(0)
    return excess.pow(2)


# --- the per-sample penalties -------------------------------------------------------------------
# Each returns ``(B,)``. ``**how`` is how the input gradient is taken, passed to
# :func:`gradpen.gradients.input_gradient`: ``cond``, ``allow_batchnorm``, ``scaler``, ``fast``
# and ``reduce`` (how a critic's outputs become one score per sample). ``generator`` seeds the
# random points.


def wgan_gp(
    critic: Critic,
    real: Tensor,
    fake: Tensor,
    *,
    target: float = 1.0,
    one_sided: bool = False,
    generator: torch.Generator | None = None,
    **how: Any,
) -> Tensor:
    """``(||grad D(x_hat)|| - target)^2`` at interpolates, per sample (Gulrajani et al. 2017).

    Args:
        critic: the critic.
        real: real samples, shape ``(B, ...)``.
        fake: generated samples, the same shape as ``real``.
        target: the norm aimed at.
        one_sided: ``max(0, ||g|| - target)^2``: only norms above the target cost.
        generator: seeds the interpolation coefficients.
        **how: how the input gradient is taken, as for :func:`gradpen.input_gradient`:
            ``cond``, ``allow_batchnorm``, ``scaler``, ``fast``, ``reduce``.

    Returns:
        Shape ``(B,)``.
    """
    x_hat = interpolate(real, fake, generator=generator)
    return distance_from_target(input_gradient(critic, x_hat, **how), target, one_sided)


def r1(critic: Critic, real: Tensor, *, scores: Any = None, **how: Any) -> Tensor:
    """``||grad D(real)||^2`` per sample (Mescheder et al. 2018); weight it by gamma / 2.

    Args:
        critic: the critic.
        real: the real batch, shape ``(B, ...)``.
        scores: the critic's outputs on ``real`` from the loss's forward (``real`` must require
            grad and be the tensor that produced them): the gradient then reuses that forward.
        **how: how the input gradient is taken, as for :func:`gradpen.input_gradient`:
            ``cond``, ``allow_batchnorm``, ``scaler``, ``fast``, ``reduce``.

    Returns:
        Shape ``(B,)``.
    """
    return squared_norm(gradient_at(critic, real, scores, **how))


def r2(critic: Critic, fake: Tensor, *, scores: Any = None, **how: Any) -> Tensor:
    """``||grad D(fake)||^2`` per sample: R1's twin on generated samples (see :func:`r1`).

    Args:
        critic: the critic.
        fake: the generated batch, shape ``(B, ...)``.
        scores: the critic's outputs on ``fake`` from the loss's forward (``fake`` must require
            grad and be the tensor that produced them): the gradient then reuses that forward.
        **how: how the input gradient is taken, as for :func:`gradpen.input_gradient`:
            ``cond``, ``allow_batchnorm``, ``scaler``, ``fast``, ``reduce``.

    Returns:
        Shape ``(B,)``.
    """
    return squared_norm(gradient_at(critic, fake, scores, **how))


def gradient_at(critic: Critic, x: Tensor, scores: Any = None, **how: Any) -> Tensor:
    """The input gradient at ``x``, from the given ``scores`` (forward reuse) or a new forward.

    Args:
        critic: the critic.
        x: the points, ``(B, ...)``; with ``scores``, the tensor (requiring grad) that made them.
        scores: the critic's output on ``x``, any form :mod:`gradpen.outputs` reads, or None.
        **how: as for :func:`gradpen.gradients.input_gradient`.

    Returns:
        The gradient, shape of ``x``.
    """
    if scores is None:
        return input_gradient(critic, x, **how)
    critic = eager_original(critic)
    if not how.get("allow_batchnorm", False):
        check_no_batchnorm(critic)
    per_sample = outputs.scores(scores, x.shape[0], how.get("reduce", "sum"))
    fast = how.get("fast", True)
    reused = input_grad_reuse_pays(critic)
    grad = _gradient_of_scores(per_sample, x, how.get("scaler"), fast, reused_forward=reused)
    if fast:
        judge_twins(critic, per_sample, x, grad, surely_twinned=False)
    return grad


def dragan(
    critic: Critic,
    real: Tensor,
    *,
    target: float = 1.0,
    scale: float = 0.5,
    noise: str = "uniform",
    spread: str = "global",
    generator: torch.Generator | None = None,
    **how: Any,
) -> Tensor:
    """``(||grad D(x)|| - target)^2`` around the reals (Kodali et al. 2017), per sample.

    As in the official DRAGAN code, ``x`` lies at a uniform random point (one per sample) on the
    segment between each real and its perturbation
    ``perturb(real, scale=scale, noise=noise, spread=spread)``; the default ``spread="global"``
    is the official code's one std over the whole batch (see :func:`perturb`).

    Args:
        critic: the critic.
        real: real samples, shape ``(B, ...)``.
        target: the norm aimed at.
        scale: the perturbation's multiple of the batch's standard deviation (see
            :func:`perturb`).
        noise: ``"uniform"`` or ``"gaussian"`` (see :func:`perturb`).
        spread: ``"global"`` or ``"feature"`` (see :func:`perturb`).
        generator: seeds the perturbation and the points on the segments.
        **how: how the input gradient is taken, as for :func:`gradpen.input_gradient`:
            ``cond``, ``allow_batchnorm``, ``scaler``, ``fast``, ``reduce``.

    Returns:
        Shape ``(B,)``.
    """
    x = perturbed_points(real, scale=scale, noise=noise, spread=spread, generator=generator)
    return distance_from_target(input_gradient(critic, x, **how), target)


def perturbed_points(
    real: Tensor, generator: torch.Generator | None = None, **options: Any
) -> Tensor:
    """DRAGAN's points: uniform on the segment from each real to its perturbation."""
    return interpolate(real, perturb(real, generator=generator, **options), generator=generator)


def zero_centered(
    critic: Critic,
    real: Tensor,
    fake: Tensor,
    *,
    generator: torch.Generator | None = None,
    **how: Any,
) -> Tensor:
    """``||grad D(x_hat)||^2`` at interpolates (Thanh-Tung et al. 2019's 0-GP), per sample.

    Args:
        critic: the critic.
        real: real samples, shape ``(B, ...)``.
        fake: generated samples, the same shape as ``real``.
        generator: seeds the interpolation coefficients.
        **how: how the input gradient is taken, as for :func:`gradpen.input_gradient`:
            ``cond``, ``allow_batchnorm``, ``scaler``, ``fast``, ``reduce``.

    Returns:
        Shape ``(B,)``.
    """
    x_hat = interpolate(real, fake, generator=generator)
    return squared_norm(input_gradient(critic, x_hat, **how))


def norm_power(g: Tensor, p: float = 2.0) -> Tensor:
    """``||g_i||^p`` per sample, finite with a finite gradient at ``g = 0`` for any ``p > 0``.

    Args:
        g: gradients, shape ``(B, ...)``.
        p: the power, > 0.

    Returns:
        Shape ``(B,)``.
    """
    squared = squared_norm(g)
    positive = squared > 0
    safe = torch.where(positive, squared, torch.ones_like(squared))
    return torch.where(positive, safe.pow(p / 2), torch.zeros_like(squared))


def wgan_div(
    critic: Critic,
    real: Tensor,
    fake: Tensor,
    *,
    p: float = 6.0,
    real_scores: Any = None,
    fake_scores: Any = None,
    **how: Any,
) -> Tensor:
    """``||grad D(real)||^p + ||grad D(fake)||^p`` per sample (WGAN-div, Wu et al. 2018).

    The paper's term is ``k/2 * mean``: ``Penalty("wgan-div", weight=k, p=p)``; the official
    code's k = 2, p = 6 is ``Penalty("wgan-div", weight=2.0, p=6)``.

    Args:
        critic: the critic.
        real: real samples, shape ``(B, ...)``.
        fake: generated samples, shape ``(B, ...)``.
        p: the power, > 0.
        real_scores: the critic's outputs on ``real`` from the loss's forward, to reuse (see
            :func:`r1`), or None.
        fake_scores: the same for ``fake``.
        **how: how the input gradient is taken, as for :func:`gradpen.input_gradient`:
            ``cond``, ``allow_batchnorm``, ``scaler``, ``fast``, ``reduce``.

    Returns:
        Shape ``(B,)``.
    """
    return gradient_norm_power(critic, real, p=p, scores=real_scores, **how) + (
        gradient_norm_power(critic, fake, p=p, scores=fake_scores, **how)
    )


def gradient_norm_power(
    critic: Critic, x: Tensor, *, p: float = 2.0, scores: Any = None, **how: Any
) -> Tensor:
    """``||grad D(x)||^p`` per sample, one term of :func:`wgan_div` (see :func:`gradient_at`)."""
    if not (math.isfinite(p) and p > 0):
        raise ValueError(f"p must be a finite number > 0, got {p}")
    return norm_power(gradient_at(critic, x, scores, **how), p)
