"""The quadratic penalty method: minimize x + y on the unit circle through f + mu g^2.

With g = x^2 + y^2 - 1 the exact solution is x = y = -1/sqrt(2) with multiplier lambda* = 1/sqrt(2).
The penalized minimizer violates the constraint by g ~ lambda*/(2 mu), the restoring force
2 mu g grad g plays the multiplier (mu g -> sqrt(2)/4), and the Hessian's condition number grows
like mu: the same trade-off as the weight of a GAN gradient penalty.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

MULTIPLIER = 1.0 / math.sqrt(2.0)


def objective(point: Tensor) -> Tensor:
    """f(x, y) = x + y."""
    return point[..., 0] + point[..., 1]


def constraint(point: Tensor) -> Tensor:
    """g(x, y) = x^2 + y^2 - 1 (zero on the unit circle)."""
    return (point**2).sum(dim=-1) - 1.0


def penalized(point: Tensor, mu: float) -> Tensor:
    """f + mu g^2.

    The penalized objective of the example: f(x, y) = x + y, g = x^2 + y^2 - 1.

    Args:
        point: ``(x, y)``, shape ``(2,)``.
        mu: the penalty weight.

    Returns:
        The scalar value.
    """
    return objective(point) + mu * constraint(point) ** 2


@dataclass(frozen=True)
class PenaltySolution:
    """The penalized minimizer for one mu and what it says about the constraint.

    Attributes:
        mu: the penalty weight.
        point: the minimizer, shape ``(2,)``.
        violation: g at the minimizer.
        scaled_violation: mu times the violation: tends to lambda / 2, lambda the multiplier of
            grad f + lambda grad g = 0.
        condition_number: of the Hessian at the minimizer (grows with mu).
        newton_steps: Newton steps taken.
    """

    mu: float
    point: Tensor
    violation: float
    scaled_violation: float
    condition_number: float
    newton_steps: int


def minimize_penalized(
    mu: float, start: Tensor, tol: float = 1e-13, max_steps: int = 200
) -> PenaltySolution:
    """Damped Newton on f + mu g^2 with autograd gradient and Hessian, from ``start``.

    Args:
        mu: the penalty weight, > 0.
        start: the starting point, shape ``(2,)``.
        tol: the gradient-norm tolerance.
        max_steps: the Newton step limit.

    Returns:
        The minimizer and its diagnostics.
    """
    if mu <= 0:
        raise ValueError(f"mu must be positive, got {mu}")
    point = start.detach().clone().to(torch.float64)
    steps = 0
    while steps < max_steps:
        steps += 1
        grad = torch.func.grad(penalized)(point, mu)
        hessian = torch.func.hessian(penalized)(point, mu)
        direction = -torch.linalg.solve(hessian, grad)
        if grad @ direction >= 0:  # not a descent direction: fall back to steepest descent
            direction = -grad
        step, value = 1.0, penalized(point, mu)
        while penalized(point + step * direction, mu) > value - 1e-4 * step * -(grad @ direction):
            step *= 0.5
            if step < 1e-12:
                break
        point = point + step * direction
        if torch.linalg.norm(grad).item() < tol * max(1.0, mu):
            break
    hessian = torch.func.hessian(penalized)(point, mu)
    eigenvalues = torch.linalg.eigvalsh(hessian)
    g = constraint(point).item()
    return PenaltySolution(
        mu=mu,
        point=point,
        violation=g,
        scaled_violation=mu * g,
        condition_number=(eigenvalues.max() / eigenvalues.min()).item(),
        newton_steps=steps,
    )


def continuation(mus: list[float], start: Tensor | None = None) -> list[PenaltySolution]:
    """Solve for increasing mu, warm-starting each solve at the previous minimizer.

    Args:
        mus: increasing penalty weights.
        start: the first solve's starting point, shape ``(2,)`` (None: ``(-1, -1)``).

    Returns:
        One solution per mu.
    """
    point = torch.tensor([-1.0, -1.0], dtype=torch.float64) if start is None else start
    solutions = []
    for mu in mus:
        solution = minimize_penalized(mu, point)
        solutions.append(solution)
        point = solution.point
    return solutions


def exact_penalized_radius(mu: float) -> float:
    """The exact penalized minimizer is x = y = -s with 4 mu (2 s^2 - 1) s = 1; return s."""
    low, high = 1.0 / math.sqrt(2.0), 2.0
    for _ in range(200):
        mid = 0.5 * (low + high)
        low, high = (mid, high) if 4.0 * mu * (2.0 * mid * mid - 1.0) * mid < 1.0 else (low, mid)
    return 0.5 * (low + high)
