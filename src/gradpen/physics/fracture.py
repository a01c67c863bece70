"""Phase-field fracture (AT1 / AT2): regularized cracks from a gradient-penalized damage energy.

Dissipated energy (G_c / c_w) integral w(alpha)/l + l |alpha'|^2 with w = alpha^2, c_w = 2 (AT2) or
w = alpha, c_w = 8/3 (AT1). A fully broken point alpha(0) = 1 relaxes into exp(-|x|/l) (AT2) or
(1 - |x|/(2l))^2 on |x| <= 2l (AT1), each dissipating exactly G_c: the gradient penalty turns a
sharp crack into a smeared one of finite, calibrated cost.
"""

from __future__ import annotations

import math

import torch
from scipy import optimize
from torch import Tensor

from gradpen.physics.calculus import minimize_energy

NORMALIZATION = {"at1": 8.0 / 3.0, "at2": 2.0}


def _check_model(model: str) -> None:
    if model not in NORMALIZATION:
        raise ValueError(f"unknown phase-field model {model!r}; use 'at1' or 'at2'")


def dissipated_energy(
    alpha: Tensor, spacing: float, model: str, toughness: float, length: float
) -> Tensor:
    """1-D discretized (G_c / c_w) sum [w(alpha)/l (trapezoid) + l (forward difference)^2] h.

    Args:
        alpha: the damage at equally spaced nodes, shape ``(N,)``.
        spacing: the node spacing h.
        model: ``"at1"`` (w = alpha) or ``"at2"`` (w = alpha^2).
        toughness: G_c.
        length: the regularization length l.

    Returns:
        The dissipated energy, a scalar tensor.
    """
    _check_model(model)
    local = alpha**2 if model == "at2" else alpha
    bulk = (local.sum() - 0.5 * (local[0] + local[-1])) * spacing / length
    gradient = length * (torch.diff(alpha) ** 2).sum() / spacing
    return toughness / NORMALIZATION[model] * (bulk + gradient)


def optimal_profile(
    model: str, length: float, half_length: float, points: int, toughness: float = 1.0
) -> tuple[Tensor, Tensor, float]:
    """Minimize the dissipated energy of a bar [-a, a] with alpha(0) = 1, alpha in [0, 1].

    The ends are free (natural Neumann condition).

    Args:
        model: ``"at1"`` or ``"at2"``.
        length: the regularization length l.
        half_length: a, the bar's half-length.
        points: the number of nodes, odd (x = 0 is a node).
        toughness: G_c.

    Returns:
        The nodes ``x`` and the damage ``alpha``, each ``(points,)``, and the energy.
    """
    _check_model(model)
    if points % 2 == 0:
        raise ValueError(f"points must be odd so that x = 0 is a node, got {points}")
    x = torch.linspace(-half_length, half_length, points, dtype=torch.float64)
    spacing = 2.0 * half_length / (points - 1)
    start = torch.exp(-x.abs() / length)
    free = torch.ones(points, dtype=torch.bool)
    free[points // 2] = False
    alpha = minimize_energy(
        lambda a: dissipated_energy(a, spacing, model, toughness, length),
        start,
        free,
        bounds=(0.0, 1.0),
    )
    return x, alpha, dissipated_energy(alpha, spacing, model, toughness, length).item()


def exact_profile(model: str, x: Tensor, length: float) -> Tensor:
    """AT2: exp(-|x|/l); AT1: (1 - |x|/(2 l))^2 for |x| <= 2 l, else 0 (infinite bar).

    Args:
        model: ``"at1"`` or ``"at2"``.
        x: positions, any shape.
        length: the regularization length l.

    Returns:
        The damage at ``x``, the shape of ``x``.
    """
    _check_model(model)
    if model == "at2":
        return torch.exp(-x.abs() / length)
    return torch.clamp(1.0 - x.abs() / (2.0 * length), min=0.0) ** 2


def finite_bar_energy_ratio(half_length: float, length: float) -> float:
    """AT2 crack in a bar of half-length a dissipates G_c tanh(a / l).

    Args:
        half_length: a.
        length: the regularization length l.

    Returns:
        tanh(a / l), the dissipated energy as a fraction of G_c.
    """
    return math.tanh(half_length / length)


def at2_homogeneous_stress(
    strain: Tensor, stiffness: float, toughness: float, length: float
) -> Tensor:
    """Stress of a homogeneous AT2 bar: sigma = d psi / d strain at the optimal damage.

    psi = (1 - alpha)^2 E eps^2 / 2 + G_c alpha^2 / (2 l); the damage minimizes psi, so by the
    envelope theorem the stress is the partial derivative, taken here by autograd.
    """
    eps = strain.detach().clone().requires_grad_(True)
    drive = stiffness * eps.detach() ** 2
    alpha = drive / (drive + toughness / length)  # d psi / d alpha = 0
    psi = (1 - alpha) ** 2 * stiffness * eps**2 / 2 + toughness * alpha**2 / (2 * length)
    (stress,) = torch.autograd.grad(psi.sum(), eps)
    return stress


def at2_peak_stress(stiffness: float, toughness: float, length: float) -> float:
    """The maximum over strain of the homogeneous AT2 stress, found numerically.

    Args:
        stiffness: Young's modulus E.
        toughness: G_c.
        length: the regularization length l.

    Returns:
        The peak stress.
    """
    scale = math.sqrt(toughness / (stiffness * length))

    def negative_stress(e: float) -> float:
        strain = torch.tensor([e], dtype=torch.float64)
        return -at2_homogeneous_stress(strain, stiffness, toughness, length).item()

    best = optimize.minimize_scalar(
        negative_stress,
        bounds=(0.0, 5.0 * scale),
        method="bounded",
        options={"xatol": 1e-12 * scale},
    )
    return -best.fun


def at2_peak_stress_exact(stiffness: float, toughness: float, length: float) -> float:
    """(3/16) sqrt(3 E G_c / l).

    The closed form of the AT2 bar's peak stress.

    Args:
        stiffness: Young's modulus E.
        toughness: G_c.
        length: the regularization length l.

    Returns:
        The peak stress.
    """
    return 3.0 / 16.0 * math.sqrt(3.0 * stiffness * toughness / length)
