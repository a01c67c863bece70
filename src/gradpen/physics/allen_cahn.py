"""Allen-Cahn / Ginzburg-Landau domain walls and PFHub benchmark 7 (manufactured solution).

Energy F = integral W(phi) + kappa/2 |grad phi|^2 with W = phi^2 (1 - phi)^2. The flat wall is
phi = 1/2 [1 - tanh(x / sqrt(2 kappa))] with energy sigma = sqrt(2 kappa) / 6: the width and the
cost of the interface both come from the balance between the well and the gradient penalty.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from gradpen.physics.calculus import minimize_energy


def double_well(phi: Tensor) -> Tensor:
    """W(phi) = phi^2 (1 - phi)^2, pointwise.

    Args:
        phi: the phase field, any shape.

    Returns:
        W at every point, the shape of ``phi``.
    """
    return phi**2 * (1.0 - phi) ** 2


def double_well_derivative(phi: Tensor) -> Tensor:
    """W'(phi) = 2 phi (1 - phi)(1 - 2 phi) = 4 phi (phi - 1)(phi - 1/2), written by hand.

    Args:
        phi: the phase field, any shape.

    Returns:
        W' at every point, the shape of ``phi``.
    """
    return 2.0 * phi * (1.0 - phi) * (1.0 - 2.0 * phi)


def wall_profile(x: Tensor, kappa: float) -> Tensor:
    """The exact flat wall 1/2 [1 - tanh(x / sqrt(2 kappa))].

    Args:
        x: positions across the wall, any shape.
        kappa: the gradient-energy coefficient, > 0.

    Returns:
        The phase field at ``x``, the shape of ``x``.
    """
    return 0.5 * (1.0 - torch.tanh(x / math.sqrt(2.0 * kappa)))


def wall_energy(kappa: float) -> float:
    """The exact wall energy sigma = sqrt(2 kappa) / 6.

    Args:
        kappa: the gradient-energy coefficient, > 0.

    Returns:
        sigma, the energy per unit wall area.
    """
    return math.sqrt(2.0 * kappa) / 6.0


def line_energy(phi: Tensor, spacing: float, kappa: float) -> Tensor:
    """1-D discretized energy: trapezoidal W at the nodes plus kappa/2 (forward difference)^2 h.

    Args:
        phi: the field at equally spaced nodes, shape ``(N,)``.
        spacing: the node spacing h.
        kappa: the gradient-energy coefficient.

    Returns:
        The energy, a scalar tensor (differentiable in ``phi``).
    """
    well = double_well(phi)
    bulk = (well.sum() - 0.5 * (well[0] + well[-1])) * spacing
    return bulk + 0.5 * kappa * (torch.diff(phi) ** 2).sum() / spacing


def relaxed_wall(kappa: float, half_width: float, points: int) -> tuple[Tensor, Tensor, float]:
    """Minimize the discretized wall energy on [-L, L] with phi = 1, 1/2, 0 at -L, 0, L.

    Pinning the centre removes the translation mode. The energy equals the wall energy sigma
    because W vanishes in both bulk phases.

    Args:
        kappa: the gradient-energy coefficient, > 0.
        half_width: L, the half-length of the domain.
        points: the number of nodes, odd (x = 0 is a node).

    Returns:
        The nodes ``x`` and the relaxed ``phi``, each ``(points,)`` float64, and the energy.
    """
    if points % 2 == 0:
        raise ValueError(f"points must be odd so that x = 0 is a node, got {points}")
    x = torch.linspace(-half_width, half_width, points, dtype=torch.float64)
    spacing = 2.0 * half_width / (points - 1)
    start = (x < 0).to(torch.float64)
    start[points // 2] = 0.5
    free = torch.ones(points, dtype=torch.bool)
    free[[0, points // 2, -1]] = False
    phi = minimize_energy(lambda p: line_energy(p, spacing, kappa), start, free)
    return x, phi, line_energy(phi, spacing, kappa).item()


@dataclass(frozen=True)
class ManufacturedAllenCahn:
    """PFHub benchmark 7 (part a): d eta/dt = -(W'(eta) - kappa lap eta) + S on [0,1] x [0,1/2].

    The interface sits at y = alpha(x, t); periodic in x, the exact solution on the y boundaries.

    Attributes:
        kappa: the gradient-energy coefficient.
        a1: amplitude of the interface's growing sine mode.
        b1: wavenumber of that mode.
        a2: amplitude of the travelling sine mode.
        b2: wavenumber of that mode.
        c2: its angular speed.
    """

    kappa: float = 4e-4
    a1: float = 0.0075
    b1: float = 8.0 * math.pi
    a2: float = 0.03
    b2: float = 22.0 * math.pi
    c2: float = 0.0625 * math.pi

    def solution(self, x: Tensor, y: Tensor, t: Tensor | float) -> Tensor:
        """The manufactured solution eta(x, y, t).

        Args:
            x: x coordinates, any shape.
            y: y coordinates, broadcastable with ``x``.
            t: the time (a float or a tensor broadcastable with ``x``).

        Returns:
            eta at the points, their broadcast shape.
        """
        alpha = (
            0.25
            + self.a1 * t * torch.sin(self.b1 * x)
            + self.a2 * torch.sin(self.b2 * x + self.c2 * t)
        )
        return 0.5 * (1.0 - torch.tanh((y - alpha) / math.sqrt(2.0 * self.kappa)))

    def source(self, x: Tensor, y: Tensor, t: float) -> Tensor:
        """S = eta_t + W'(eta) - kappa lap eta for the manufactured eta, derivatives by autograd.

        Args:
            x: x coordinates, any shape.
            y: y coordinates, the shape of ``x``.
            t: the time.

        Returns:
            S at the points, the shape of ``x`` (detached).
        """
        x = x.detach().clone().requires_grad_(True)
        y = y.detach().clone().requires_grad_(True)
        time = torch.full_like(x, t).requires_grad_(True)
        eta = self.solution(x, y, time)
        eta_x, eta_y, eta_t = torch.autograd.grad(eta.sum(), (x, y, time), create_graph=True)
        (eta_xx,) = torch.autograd.grad(eta_x.sum(), x, retain_graph=True)
        (eta_yy,) = torch.autograd.grad(eta_y.sum(), y)
        residual = eta_t + double_well_derivative(eta) - self.kappa * (eta_xx + eta_yy)
        return residual.detach()

    def source_analytic(self, x: Tensor, y: Tensor, t: float) -> Tensor:
        """The benchmark's published closed form of S (to check the autograd source against).

        Args:
            x: x coordinates, any shape.
            y: y coordinates, broadcastable with ``x``.
            t: the time.

        Returns:
            S at the points, their broadcast shape.
        """
        alpha = (
            0.25
            + self.a1 * t * torch.sin(self.b1 * x)
            + self.a2 * torch.sin(self.b2 * x + self.c2 * t)
        )
        alpha_x = self.a1 * self.b1 * t * torch.cos(self.b1 * x) + self.a2 * self.b2 * torch.cos(
            self.b2 * x + self.c2 * t
        )
        alpha_xx = -self.a1 * self.b1**2 * t * torch.sin(
            self.b1 * x
        ) - self.a2 * self.b2**2 * torch.sin(self.b2 * x + self.c2 * t)
        alpha_t = self.a1 * torch.sin(self.b1 * x) + self.a2 * self.c2 * torch.cos(
            self.b2 * x + self.c2 * t
        )
        root = math.sqrt(self.kappa)
        z = (y - alpha) / math.sqrt(2.0 * self.kappa)
        sech2 = 1.0 / torch.cosh(z) ** 2
        return (
            sech2
            / (4.0 * root)
            * (
                -2.0 * root * torch.tanh(z) * alpha_x**2
                + math.sqrt(2.0) * (alpha_t - self.kappa * alpha_xx)
            )
        )

    def solve(
        self, cells_x: int, t_end: float, dt: float, device: torch.device | str | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """RK4 in time, 5-point Laplacian in space (second order), cells_x x cells_x/2 cells.

        Nodes x_i = i h (periodic), y_j = j h for j = 0..cells_x/2 with the exact solution imposed
        on j = 0 and the last row.

        Args:
            cells_x: cells along x (even); the grid is ``cells_x x (cells_x / 2 + 1)`` nodes.
            t_end: the final time.
            dt: the time step (rounded so that a whole number of steps reaches ``t_end``).
            device: where to compute.

        Returns:
            The node coordinates ``x``, ``y`` and ``eta`` at ``t_end``, each of shape
            ``(cells_x, cells_x // 2 + 1)``, float64.
        """
        spacing = 1.0 / cells_x
        xs = torch.arange(cells_x, dtype=torch.float64, device=device) * spacing
        ys = torch.arange(cells_x // 2 + 1, dtype=torch.float64, device=device) * spacing
        x, y = torch.meshgrid(xs, ys, indexing="ij")

        def rate(eta: Tensor, t: float) -> Tensor:
            lap = torch.zeros_like(eta)
            inner = eta[:, 1:-1]
            lap[:, 1:-1] = (
                torch.roll(inner, 1, 0)
                + torch.roll(inner, -1, 0)
                + eta[:, :-2]
                + eta[:, 2:]
                - 4 * inner
            ) / spacing**2
            change = -(double_well_derivative(eta) - self.kappa * lap) + self.source_analytic(
                x, y, t
            )
            change[:, [0, -1]] = 0.0
            return change

        steps = max(1, round(t_end / dt))
        dt = t_end / steps
        eta = self.solution(x, y, 0.0)
        for n in range(steps):
            eta = _rk4_step(rate, eta, n * dt, dt)
            eta[:, [0, -1]] = self.solution(x, y, (n + 1) * dt)[:, [0, -1]]
        return x, y, eta

    def l2_error(self, cells_x: int, t_end: float = 8.0, dt: float | None = None) -> float:
        """The benchmark's discrete L2 error sqrt(sum (eta - eta_sol)^2 dx dy) at t_end.

        Args:
            cells_x: cells along x.
            t_end: the final time.
            dt: the time step (default ``0.2 h^2 / kappa``).

        Returns:
            The L2 error.
        """
        spacing = 1.0 / cells_x
        step = dt if dt is not None else 0.2 * spacing**2 / self.kappa
        x, y, eta = self.solve(cells_x, t_end, step)
        error = eta - self.solution(x, y, t_end)
        return math.sqrt(float((error**2).sum()) * spacing**2)


def _rk4_step(rate: Callable[[Tensor, float], Tensor], u: Tensor, t: float, dt: float) -> Tensor:
    """One classic fourth-order Runge-Kutta step of du/dt = rate(u, t)."""
    k1 = rate(u, t)
    k2 = rate(u + 0.5 * dt * k1, t + 0.5 * dt)
    k3 = rate(u + 0.5 * dt * k2, t + 0.5 * dt)
    k4 = rate(u + dt * k3, t + dt)
    return u + dt / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)
