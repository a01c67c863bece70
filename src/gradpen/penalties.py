"""The mathematics of the gradient penalties: points, norms, per-sample penalties, the registry.

Read top to bottom: the points a penalty is taken at (:func:`interpolate`, :func:`perturb`),
the norms of an input gradient (:func:`grad_norm`), the per-sample penalties (:func:`wgan_gp`,
:func:`r1`, ...) and the registry (:data:`PENALTIES`, one :class:`PenaltySpec` per name), which
:class:`gradpen.Penalty`, the compiled path and the training loop read. The input gradient
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

import functools
import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch
from torch import Tensor

from gradpen import outputs
from gradpen.gradients import (
    check_batch,
    check_no_batchnorm,
    eager_original,
    gradient_of_scores,
    input_gradient,
)
from gradpen.outputs import Critic

__all__ = [
    "PENALTIES",
    "POINTS",
    "PenaltySpec",
    "distance_from_target",
    "dragan",
    "grad_norm",
    "interpolate",
    "perturb",
    "r1",
    "r2",
    "sample_points",
    "squared_norm",
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
    generator: torch.Generator | None = None,
) -> Tensor:
    """DRAGAN's perturbed reals ``real + scale * std * u`` (detached).

    ``std`` is the standard deviation of each feature over the batch. ``noise="uniform"`` draws
    ``u ~ U[0, 1)`` per element, as in the official DRAGAN code; ``noise="gaussian"`` draws
    ``u ~ N(0, 1)``, the paper's ``N(0, c * sigma)`` variant. A batch of one has no spread,
    so its std is zero and the point is returned unchanged.
    """
    check_batch(real, "real")
    if noise not in ("uniform", "gaussian"):
        raise ValueError(f"noise must be 'uniform' or 'gaussian', got {noise!r}")
    if not math.isfinite(scale) or scale < 0:
        raise ValueError(f"scale must be a finite number >= 0, got {scale}")
    data = real.detach()
    std = data.std(dim=0, keepdim=True, unbiased=False)
    draw = torch.rand if noise == "uniform" else torch.randn
    u = draw(data.shape, generator=generator, dtype=data.dtype, device=data.device)
    return data + scale * std * u


# --- norms --------------------------------------------------------------------------------------


def grad_norm(g: Tensor) -> Tensor:
    """L2 norm of each sample's gradient over all non-batch dims.

    Finite value and finite gradient at ``g = 0`` (the plain norm's derivative is 0/0 there).

    Args:
        g: gradients, shape ``(B, ...)``.

    Returns:
        Norms, shape ``(B,)``; float32 for 16-bit ``g``.
    """
    squared = squared_norm(g)
    positive = squared > 0
    safe = torch.where(positive, squared, torch.ones_like(squared))
    return torch.where(positive, safe.sqrt(), torch.zeros_like(squared))


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
# Common keywords: ``cond``, ``allow_batchnorm``, ``scaler`` and ``fast`` as in
# :func:`input_gradient`; ``generator`` seeds the points' random draws. Each returns ``(B,)``.


def wgan_gp(
    critic: Critic,
    real: Tensor,
    fake: Tensor,
    *,
    target: float = 1.0,
    one_sided: bool = False,
    cond: Any = None,
    allow_batchnorm: bool = False,
    generator: torch.Generator | None = None,
    scaler: Any = None,
    fast: bool = True,
) -> Tensor:
    """``(||grad D(x_hat)|| - target)^2`` at interpolates, per sample (Gulrajani et al. 2017).

    Args:
        critic: the critic.
        real, fake: batches of the same shape ``(B, ...)``.
        target: the norm aimed at.
        one_sided: ``max(0, ||g|| - target)^2``: only norms above the target cost.

    Returns:
        Shape ``(B,)``.
    """
    x_hat = interpolate(real, fake, generator=generator)
    g = input_gradient(
        critic, x_hat, cond=cond, allow_batchnorm=allow_batchnorm, scaler=scaler, fast=fast
    )
    return distance_from_target(g, target, one_sided)


def r1(
    critic: Critic,
    real: Tensor,
    *,
    cond: Any = None,
    allow_batchnorm: bool = False,
    scores: Tensor | None = None,
    scaler: Any = None,
    fast: bool = True,
) -> Tensor:
    """``||grad D(real)||^2`` per sample (Mescheder et al. 2018); weight it by gamma / 2.

    Args:
        critic: the critic.
        real: the real batch, shape ``(B, ...)``.
        scores: the critic's outputs on ``real`` from the loss's forward (``real`` must require
            grad and be the tensor that produced them): the gradient then reuses that forward.

    Returns:
        Shape ``(B,)``.
    """
    return squared_norm(_gradient_at(critic, real, cond, allow_batchnorm, scores, scaler, fast))


def r2(
    critic: Critic,
    fake: Tensor,
    *,
    cond: Any = None,
    allow_batchnorm: bool = False,
    scores: Tensor | None = None,
    scaler: Any = None,
    fast: bool = True,
) -> Tensor:
    """``||grad D(fake)||^2`` per sample: R1's twin on generated samples (see :func:`r1`)."""
    return squared_norm(_gradient_at(critic, fake, cond, allow_batchnorm, scores, scaler, fast))


def _gradient_at(
    critic: Critic,
    x: Tensor,
    cond: Any,
    allow_batchnorm: bool,
    scores: Tensor | None,
    scaler: Any,
    fast: bool,
) -> Tensor:
    if scores is None:
        return input_gradient(
            critic, x, cond=cond, allow_batchnorm=allow_batchnorm, scaler=scaler, fast=fast
        )
    if not allow_batchnorm:
        check_no_batchnorm(eager_original(critic))
    return gradient_of_scores(outputs.scores(scores, x.shape[0]), x, scaler=scaler, fast=fast)


def dragan(
    critic: Critic,
    real: Tensor,
    *,
    target: float = 1.0,
    scale: float = 0.5,
    noise: str = "uniform",
    cond: Any = None,
    allow_batchnorm: bool = False,
    generator: torch.Generator | None = None,
    scaler: Any = None,
    fast: bool = True,
) -> Tensor:
    """``(||grad D(x)|| - target)^2`` around the reals (Kodali et al. 2017), per sample.

    As in the official DRAGAN code, ``x`` lies at a uniform random point (one per sample) on the
    segment between each real and its perturbation ``perturb(real, scale=scale, noise=noise)``.

    Returns:
        Shape ``(B,)``.
    """
    x = _perturbed_points(real, scale=scale, noise=noise, generator=generator)
    g = input_gradient(
        critic, x, cond=cond, allow_batchnorm=allow_batchnorm, scaler=scaler, fast=fast
    )
    return distance_from_target(g, target)


def _perturbed_points(
    real: Tensor, generator: torch.Generator | None = None, **options: Any
) -> Tensor:
    """DRAGAN's points: uniform on the segment from each real to its perturbation."""
    return interpolate(real, perturb(real, generator=generator, **options), generator=generator)


def zero_centered(
    critic: Critic,
    real: Tensor,
    fake: Tensor,
    *,
    cond: Any = None,
    allow_batchnorm: bool = False,
    generator: torch.Generator | None = None,
    scaler: Any = None,
    fast: bool = True,
) -> Tensor:
    """``||grad D(x_hat)||^2`` at interpolates (Thanh-Tung et al. 2019's 0-GP), per sample.

    Returns:
        Shape ``(B,)``.
    """
    x_hat = interpolate(real, fake, generator=generator)
    g = input_gradient(
        critic, x_hat, cond=cond, allow_batchnorm=allow_batchnorm, scaler=scaler, fast=fast
    )
    return squared_norm(g)


# --- the registry -------------------------------------------------------------------------------

# Where a term's gradient is taken, and the batches it is made from.
POINTS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "interpolates": ("real", "fake"),
        "perturbed": ("real",),
        "real": ("real",),
        "fake": ("fake",),
    }
)


def sample_points(at: str, real: Tensor | None, fake: Tensor | None, **options: Any) -> Tensor:
    """The points a term named by ``at`` (a key of :data:`POINTS`) is taken at.

    ``options`` may hold any penalty options; those of :func:`perturb` are used for
    ``"perturbed"``, the rest ignored.
    """
    if at == "interpolates":
        assert real is not None and fake is not None
        return interpolate(real, fake)
    if at == "perturbed":
        assert real is not None
        return _perturbed_points(real, **_accepted(perturb, options))
    point = real if at == "real" else fake
    assert point is not None
    return point


def _accepted(function: Callable[..., Any], options: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of ``options`` that ``function`` takes as keywords."""
    parameters = inspect.signature(function).parameters
    return {k: v for k, v in options.items() if k in parameters}


REDUCTIONS: Mapping[str, Callable[[Tensor], Tensor]] = MappingProxyType({"mean": torch.mean})


@dataclass(frozen=True)
class PenaltySpec:
    """Everything gradpen knows about one registered penalty (the single source of truth).

    Attributes:
        per_sample: the per-sample function of each term, e.g. ``(r1, r2)`` for R1+R2.
        points: where each term's gradient is taken, a key of :data:`POINTS` per term.
        statistic: the per-sample value of an input gradient ``(B, ...) -> (B,)`` that every
            term takes (:func:`squared_norm` or :func:`distance_from_target`); the compiled
            path composes it with its own gradient.
        weight_factor: the term is ``weight * weight_factor * reduction(per-sample)`` summed
            over terms: 1 for the WGAN-GP family, 1/2 for R1/R2 (then ``weight`` is gamma).
        options: the options a user may set, with their defaults.
        fixed: options the name sets (``"one-sided"`` is WGAN-GP with ``one_sided=True``).
        reduction: how the batch of per-sample values becomes one number (a key of
            :data:`REDUCTIONS`).
    """

    per_sample: tuple[Callable[..., Tensor], ...]
    points: tuple[str, ...]
    statistic: Callable[..., Tensor]
    weight_factor: float
    options: Mapping[str, Any] = field(default_factory=dict)
    fixed: Mapping[str, Any] = field(default_factory=dict)
    reduction: str = "mean"

    @property
    def needs(self) -> frozenset[str]:
        """The batches (``"real"``, ``"fake"``) the penalty reads."""
        return frozenset(name for at in self.points for name in POINTS[at])

    @property
    def reuses_scores(self) -> bool:
        """Whether every term is taken at the batches themselves, so the loss's forward serves."""
        return bool(self.points) and all(at in ("real", "fake") for at in self.points)

    def bound_statistic(self, options: Mapping[str, Any]) -> Callable[[Tensor], Tensor]:
        """The per-sample statistic ``(B, ...) -> (B,)`` with the given options bound."""
        return functools.partial(self.statistic, **_accepted(self.statistic, self.fixed | options))


_TARGET = {"target": 1.0}
PENALTIES: Mapping[str, PenaltySpec] = MappingProxyType(
    {
        "none": PenaltySpec((), (), squared_norm, 1.0),
        "wgan-gp": PenaltySpec(
            (wgan_gp,),
            ("interpolates",),
            distance_from_target,
            1.0,
            _TARGET | {"one_sided": False},
        ),
        "one-sided": PenaltySpec(
            (wgan_gp,),
            ("interpolates",),
            distance_from_target,
            1.0,
            _TARGET,
            {"one_sided": True},
        ),
        "r1": PenaltySpec((r1,), ("real",), squared_norm, 0.5),
        "r2": PenaltySpec((r2,), ("fake",), squared_norm, 0.5),
        "r1r2": PenaltySpec((r1, r2), ("real", "fake"), squared_norm, 0.5),
        "dragan": PenaltySpec(
            (dragan,),
            ("perturbed",),
            distance_from_target,
            1.0,
            _TARGET | {"scale": 0.5, "noise": "uniform"},
        ),
        "zero-centered": PenaltySpec((zero_centered,), ("interpolates",), squared_norm, 1.0),
    }
)
