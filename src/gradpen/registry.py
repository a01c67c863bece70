"""The registry: one :class:`PenaltySpec` per penalty name, the single source of truth.

Each entry says, with named fields, where each term is taken, its per-sample function, the
per-sample statistic of the input gradient, the weight factor, the options and their bounds,
how the batch is reduced, and whether it is an approximation. :class:`gradpen.Penalty`, the
training config, the compiled step and the training loop's forward reuse read it; adding a
penalty is adding an entry (see ``CONTRIBUTING.md``).
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

from gradpen.approx import approx_r1, approx_r2, wgan_gp_finite_difference
from gradpen.penalties import (
    distance_from_target,
    dragan,
    gradient_norm_power,
    interpolate,
    norm_power,
    perturb,
    perturbed_points,
    r1,
    r2,
    squared_norm,
    wgan_gp,
    zero_centered,
)

__all__ = ["BATCH_REDUCTIONS", "PENALTIES", "POINTS", "PenaltySpec", "sample_points"]

# Where a term is taken, and the batches it is made from.
POINTS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "interpolates": ("real", "fake"),
        "perturbed": ("real",),
        "real": ("real",),
        "fake": ("fake",),
    }
)

# How a batch of per-sample values becomes one number.
BATCH_REDUCTIONS: Mapping[str, Callable[[Tensor], Tensor]] = MappingProxyType(
    {"mean": torch.mean, "max": torch.amax}
)


def _finite_at_least(low: float, strict: bool) -> Callable[[Any], bool]:
    def check(value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        return math.isfinite(value) and (value > low if strict else value >= low)

    return check


# Option name -> (test, what is allowed): checked when a Penalty is made.
OPTION_BOUNDS: Mapping[str, tuple[Callable[[Any], bool], str]] = MappingProxyType(
    {
        "target": (_finite_at_least(0, strict=False), "a finite number >= 0 (a norm)"),
        "one_sided": (lambda v: isinstance(v, bool), "true or false"),
        "scale": (_finite_at_least(0, strict=False), "a finite number >= 0"),
        "noise": (lambda v: v in ("uniform", "gaussian"), "'uniform' or 'gaussian'"),
        "spread": (lambda v: v in ("global", "feature"), "'global' or 'feature'"),
        "p": (_finite_at_least(0, strict=True), "a finite number > 0"),
        "sigma": (_finite_at_least(0, strict=True), "a finite number > 0"),
        "h": (_finite_at_least(0, strict=True), "a finite number > 0"),
    }
)


@dataclass(frozen=True)
class PenaltySpec:
    """Everything gradpen knows about one registered penalty.

    Attributes:
        per_sample: the per-sample function of each term, e.g. ``(r1, r2)`` for R1+R2; each is
            called as ``f(critic, *batches, cond=..., **options)`` with the batches of its
            points (:data:`POINTS`) and returns ``(B,)``.
        points: where each term is taken, a key of :data:`POINTS` per term.
        statistic: the per-sample value of an input gradient, ``(B, ...) -> (B,)``, that every
            term takes (the compiled step composes it with its own gradient); None for an
            approximation, which takes no input gradient.
        weight_factor: the term is ``weight * weight_factor * reduction(per-sample)``, summed
            over terms: 1 for the WGAN-GP family, 1/2 when ``weight`` is a gamma (R1/R2).
        options: the options a user may set, with their defaults.
        fixed: options the name sets (``"one-sided"`` is WGAN-GP with ``one_sided=True``).
        batch_reduction: a key of :data:`BATCH_REDUCTIONS` (``"max"`` for max-GP).
        approximate: an estimate without double backward, not the exact penalty.
    """

    per_sample: tuple[Callable[..., Tensor], ...]
    points: tuple[str, ...]
    statistic: Callable[..., Tensor] | None
    weight_factor: float
    options: Mapping[str, Any] = field(default_factory=dict)
    fixed: Mapping[str, Any] = field(default_factory=dict)
    batch_reduction: str = "mean"
    approximate: bool = False

    @property
    def needs(self) -> frozenset[str]:
        """The batches (``"real"``, ``"fake"``) the penalty reads."""
        return frozenset(name for at in self.points for name in POINTS[at])

    @property
    def reuses_scores(self) -> bool:
        """Whether every term is an exact gradient at the batches themselves, so that the
        loss's own forward serves the penalty (R1, R2, WGAN-div)."""
        return (
            not self.approximate
            and bool(self.points)
            and all(at in ("real", "fake") for at in self.points)
        )

    def bound_statistic(self, options: Mapping[str, Any]) -> Callable[[Tensor], Tensor]:
        """The per-sample statistic ``(B, ...) -> (B,)`` with the given options bound.

        Args:
            options: the penalty's resolved options (``Penalty.resolved_options``: defaults, fixed
                and the user's); those the statistic does not take are ignored.

        Returns:
            A function from input gradients ``(B, ...)`` to per-sample values ``(B,)``.
        """
        if self.statistic is None:
            raise ValueError("an approximate penalty has no statistic of the input gradient")
        chosen = _accepted(self.statistic, options)
        return functools.partial(self.statistic, **chosen)


def _accepted(function: Callable[..., Any], options: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of ``options`` that ``function`` takes as keywords."""
    parameters = inspect.signature(function).parameters
    return {k: v for k, v in options.items() if k in parameters}


def check_options(name: str, options: Mapping[str, Any]) -> None:
    """Raise ValueError on an option ``name``'s entry does not know, or a value out of bounds."""
    spec = PENALTIES[name]
    unknown = set(options) - set(spec.options)
    if unknown:
        allowed = ", ".join(sorted(spec.options)) or "none"
        raise ValueError(
            f"penalty {name!r} got unknown option(s) {', '.join(sorted(unknown))}; "
            f"its options are: {allowed}"
        )
    for key, value in options.items():
        test, allowed = OPTION_BOUNDS[key]
        if not test(value):
            raise ValueError(f"penalty {name!r}: option {key} must be {allowed}; got {value!r}")


def sample_points(at: str, real: Tensor | None, fake: Tensor | None, **options: Any) -> Tensor:
    """The points a term named by ``at`` (a key of :data:`POINTS`) is taken at.

    ``options`` may hold any penalty options; those of :func:`gradpen.perturb` are used for
    ``"perturbed"``, the rest ignored.
    """
    if at == "interpolates":
        assert real is not None and fake is not None
        return interpolate(real, fake)
    if at == "perturbed":
        assert real is not None
        return perturbed_points(real, **_accepted(perturb, options))
    point = real if at == "real" else fake
    assert point is not None
    return point


_TARGET = {"target": 1.0}
PENALTIES: Mapping[str, PenaltySpec] = MappingProxyType(
    {
        "none": PenaltySpec((), (), None, 1.0),
        "wgan-gp": PenaltySpec(
            per_sample=(wgan_gp,),
            points=("interpolates",),
            statistic=distance_from_target,
            weight_factor=1.0,
            options=_TARGET | {"one_sided": False},
        ),
        "one-sided": PenaltySpec(
            per_sample=(wgan_gp,),
            points=("interpolates",),
            statistic=distance_from_target,
            weight_factor=1.0,
            options=_TARGET,
            fixed={"one_sided": True},
        ),
        "r1": PenaltySpec((r1,), ("real",), squared_norm, 0.5),
        "r2": PenaltySpec((r2,), ("fake",), squared_norm, 0.5),
        "r1r2": PenaltySpec((r1, r2), ("real", "fake"), squared_norm, 0.5),
        "dragan": PenaltySpec(
            per_sample=(dragan,),
            points=("perturbed",),
            statistic=distance_from_target,
            weight_factor=1.0,
            options=_TARGET | {"scale": 0.5, "noise": "uniform", "spread": "global"},
        ),
        "zero-centered": PenaltySpec((zero_centered,), ("interpolates",), squared_norm, 1.0),
        # Wu et al. 2018: k/2 * mean(||grad D(real)||^p + ||grad D(fake)||^p); weight is k.
        "wgan-div": PenaltySpec(
            per_sample=(gradient_norm_power, gradient_norm_power),
            points=("real", "fake"),
            statistic=norm_power,
            weight_factor=0.5,
            options={"p": 6.0},
        ),
        # Zhou et al. 2019 (LGAN): weight * the batch maximum of ||grad D(x_hat)||^2.
        "max-gp": PenaltySpec(
            per_sample=(zero_centered,),
            points=("interpolates",),
            statistic=squared_norm,
            weight_factor=1.0,
            batch_reduction="max",
        ),
        "approx-r1": PenaltySpec(
            (approx_r1,), ("real",), None, 0.5, {"sigma": 0.01}, approximate=True
        ),
        "approx-r2": PenaltySpec(
            (approx_r2,), ("fake",), None, 0.5, {"sigma": 0.01}, approximate=True
        ),
        "approx-wgan-gp": PenaltySpec(
            per_sample=(wgan_gp_finite_difference,),
            points=("interpolates",),
            statistic=None,
            weight_factor=1.0,
            options=_TARGET | {"one_sided": False, "h": 0.01},
            approximate=True,
        ),
    }
)
"""Every registered penalty by name (read-only): ``gp.Penalty(name, ...)`` accepts these keys."""
