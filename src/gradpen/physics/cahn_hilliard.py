"""Cahn-Hilliard spinodal decomposition: PFHub benchmark 1 on torch tensors.

Free energy F = integral f(c) + kappa/2 |grad c|^2 with f = rho (c - c_a)^2 (c_b - c)^2, and
dc/dt = div(M grad mu), mu = dF/dc. The gradient energy is the physics twin of the GAN gradient
penalty: it makes sharp interfaces cost energy, and its competition with the double well selects
the fastest-growing wavelength 2 pi / sqrt(-f''/(2 kappa)).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from gradpen.physics.calculus import gradient_energy, wavenumbers_squared


@dataclass(frozen=True)
class CahnHilliardParams:
    """PFHub benchmark 1 parameters (defaults are the benchmark's values).

    Attributes:
        c_alpha: the first well's concentration.
        c_beta: the second well's concentration.
        rho: the double well's height.
        kappa: the gradient-energy coefficient.
        mobility: M.
    """

    c_alpha: float = 0.3
    c_beta: float = 0.7
    rho: float = 5.0
    kappa: float = 2.0
    mobility: float = 5.0

    def bulk_energy(self, c: Tensor) -> Tensor:
        """The double well f(c) = rho (c - c_alpha)^2 (c_beta - c)^2, pointwise.

        Args:
            c: the concentration, any shape.

        Returns:
            f(c), the shape of ``c``.
        """
        return self.rho * (c - self.c_alpha) ** 2 * (self.c_beta - c) ** 2

    def bulk_derivative(self, c: Tensor) -> Tensor:
        """f'(c), written out by hand (autograd of ``bulk_energy`` must agree).

        Args:
            c: the concentration, any shape.

        Returns:
            f'(c), the shape of ``c``.
        """
        a, b = c - self.c_alpha, self.c_beta - c
        return 2.0 * self.rho * a * b * (b - a)

    def bulk_curvature(self, c: float) -> float:
        """f''(c) = 2 rho [(c_b - c)^2 - 4 (c - c_a)(c_b - c) + (c - c_a)^2].

        Args:
            c: a concentration.

        Returns:
            f''(c).
        """
        a, b = c - self.c_alpha, self.c_beta - c
        return 2.0 * self.rho * (a * a - 4.0 * a * b + b * b)

    def interface_energy(self) -> float:
        """Equilibrium flat-interface energy sigma = sqrt(2 kappa rho) (c_b - c_a)^3 / 6.

        Returns:
            sigma, the energy per unit interface area.
        """
        return math.sqrt(2.0 * self.kappa * self.rho) * (self.c_beta - self.c_alpha) ** 3 / 6.0


def growth_rate(k: Tensor | float, params: CahnHilliardParams, c0: float = 0.5) -> Tensor | float:
    """Linear-stability growth rate omega(k) = -M k^2 (f''(c0) + kappa k^2).

    Args:
        k: wavenumbers, a float or a tensor of any shape.
        params: the model's parameters.
        c0: the uniform concentration perturbed.

    Returns:
        omega(k), the type and shape of ``k``.
    """
    return -params.mobility * k**2 * (params.bulk_curvature(c0) + params.kappa * k**2)


def fastest_wavelength(params: CahnHilliardParams, c0: float = 0.5) -> float:
    """The wavelength of maximal growth, 2 pi / k_max with k_max^2 = -f''(c0) / (2 kappa).

    Args:
        params: the model's parameters.
        c0: the uniform concentration perturbed (inside the spinodal, f''(c0) < 0).

    Returns:
        The wavelength.
    """
    curvature = params.bulk_curvature(c0)
    if curvature >= 0:
        raise ValueError(f"c0={c0} is not spinodal (f''={curvature:.3g} >= 0): nothing grows")
    return 2.0 * math.pi / math.sqrt(-curvature / (2.0 * params.kappa))


def benchmark_initial_condition(
    x: Tensor, y: Tensor, c0: float = 0.5, epsilon: float = 0.01
) -> Tensor:
    """PFHub benchmark 1's initial condition (not periodic on the 200 x 200 square).

    Args:
        x: x coordinates, any shape.
        y: y coordinates, the shape of ``x``.
        c0: the mean concentration.
        epsilon: the amplitude of the cosine perturbations.

    Returns:
        c at the points, the shape of ``x``.
    """
    return c0 + epsilon * (
        torch.cos(0.105 * x) * torch.cos(0.11 * y)
        + (torch.cos(0.13 * x) * torch.cos(0.087 * y)) ** 2
        + torch.cos(0.025 * x - 0.15 * y) * torch.cos(0.07 * x - 0.02 * y)
    )


def continuum_initial_energy(
    params: CahnHilliardParams, length: float = 200.0, nodes_per_axis: int = 400
) -> float:
    """F of the continuum initial condition on [0, L]^2 by tensor Gauss-Legendre quadrature.

    The gradient of the initial condition comes from autograd, so no derivative is hand-written.

    Args:
        params: the model's parameters.
        length: L, the side of the square.
        nodes_per_axis: Gauss-Legendre nodes per axis.

    Returns:
        The free energy F.
    """
    nodes, weights = np.polynomial.legendre.leggauss(nodes_per_axis)
    points = torch.tensor(0.5 * length * (nodes + 1.0), dtype=torch.float64)
    w = torch.tensor(0.5 * length * weights, dtype=torch.float64)
    x, y = torch.meshgrid(points, points, indexing="ij")
    x.requires_grad_(True)
    y.requires_grad_(True)
    c = benchmark_initial_condition(x, y)
    grad_x, grad_y = torch.autograd.grad(c.sum(), (x, y))
    density = params.bulk_energy(c) + 0.5 * params.kappa * (grad_x**2 + grad_y**2)
    return float((w[:, None] * w[None, :] * density.detach()).sum())


def free_energy(
    c: Tensor, spacing: float, params: CahnHilliardParams, ndim: int = 2, method: str = "spectral"
) -> Tensor:
    """F_h = sum_cells f(c) h^d + the discretized gradient energy, over the last ``ndim`` axes.

    Args:
        c: the concentration on a periodic grid, shape ``(..., N_1, ..., N_ndim)``.
        spacing: the grid spacing h.
        params: the model's parameters.
        ndim: the number of spatial axes (the last ones).
        method: ``"spectral"`` or ``"fd"`` gradient energy (see :func:`gradient_energy`).

    Returns:
        F_h, shape ``(...)``: one energy per field of the batch.
    """
    bulk = params.bulk_energy(c).sum(dim=tuple(range(-ndim, 0))) * spacing**ndim
    return bulk + gradient_energy(c, spacing, params.kappa, ndim, method)


class SpectralCahnHilliard:
    """Semi-implicit, linearly stabilized Fourier-spectral stepper on a periodic grid.

    c_hat' = [c_hat + dt M k^2 (A c_hat - f'(c)_hat)] / [1 + dt M k^2 (A + kappa k^2)]: the
    stiff kappa k^4 term is implicit, f' explicit, and the stabilizer A (an extra implicit A k^2
    balanced by an explicit one) damps the explicit part; the k = 0 mode never changes, so mass is
    conserved to round-off. Works on a batch: the last ``ndim`` axes are space.

    Args:
        shape: the grid's shape (``ndim = len(shape)`` spatial axes).
        spacing: the grid spacing h.
        params: the model's parameters.
        stabilization: A, >= 0.
        device: where the wavenumbers live.
    """

    def __init__(
        self,
        shape: Sequence[int],
        spacing: float,
        params: CahnHilliardParams,
        stabilization: float = 2.0,
        device: torch.device | str | None = None,
    ) -> None:
        self.shape = tuple(shape)
        self.ndim = len(self.shape)
        self.spacing = spacing
        self.params = params
        self.stabilization = stabilization
        self.k2 = wavenumbers_squared(self.shape, spacing, device=device)
        self._dims = tuple(range(-self.ndim, 0))

    def step(self, c: Tensor, dt: float) -> Tensor:
        """Advance c by one step of size dt.

        Args:
            c: the concentration, shape ``(..., *shape)``.
            dt: the step size.

        Returns:
            c after the step, the same shape.
        """
        p, a = self.params, self.stabilization
        mk2 = dt * p.mobility * self.k2
        c_hat = torch.fft.rfftn(c, dim=self._dims)
        force_hat = torch.fft.rfftn(p.bulk_derivative(c), dim=self._dims)
        new_hat = (c_hat + mk2 * (a * c_hat - force_hat)) / (1.0 + mk2 * (a + p.kappa * self.k2))
        return torch.fft.irfftn(new_hat, s=self.shape, dim=self._dims)

    def run(
        self,
        c: Tensor,
        output_times: Sequence[float],
        t_start: float = 0.0,
        dt_min: float = 0.01,
        dt_max: float = 1.0,
        dt_growth: float = 0.05,
        progress: bool = False,
    ) -> tuple[list[Tensor], int]:
        """Step from ``t_start`` to each of ``output_times`` (increasing); return fields and steps.

        The step size is dt = clip(dt_growth * t, dt_min, dt_max): small while the pattern forms,
        larger while it coarsens; it is shortened to land exactly on each output time.

        Args:
            c: the concentration at ``t_start``, shape ``(..., *shape)``.
            output_times: increasing times at which to record the field.
            t_start: the time of ``c``.
            dt_min: the smallest step.
            dt_max: the largest step.
            dt_growth: the step as a fraction of the elapsed time.
            progress: show a progress bar.

        Returns:
            The fields at ``output_times`` (each the shape of ``c``) and the number of steps taken.
        """
        t, steps, fields = t_start, 0, []
        end = float(max(output_times, default=t_start))
        bar = tqdm(total=end - t_start, disable=not progress, unit="t")
        for target in output_times:
            while t < target - 1e-12:
                dt = min(max(dt_growth * t, dt_min), dt_max, target - t)
                c = self.step(c, dt)
                t += dt
                steps += 1
                bar.update(dt)
            fields.append(c)
        bar.close()
        return fields, steps


def measured_growth_rates(
    wavenumber_indices: Sequence[int],
    params: CahnHilliardParams,
    length: float = 200.0,
    points: int = 256,
    amplitude: float = 1e-4,
    duration: float = 0.5,
    dt: float = 5e-4,
    c0: float = 0.5,
) -> tuple[Tensor, Tensor]:
    """Growth rates of single-mode perturbations c0 + a cos(k_m x), one run per mode (batched).

    omega = ln(|c_hat_m(T)| / |c_hat_m(0)|) / T; the stepper runs unstabilized so only the
    O(dt) time error of semi-implicit Euler remains.

    Args:
        wavenumber_indices: the modes m (k_m = 2 pi m / length).
        params: the model's parameters.
        length: the 1-D periodic domain's length.
        points: grid points.
        amplitude: a, the perturbation's amplitude.
        duration: T.
        dt: the time step.
        c0: the uniform concentration perturbed.

    Returns:
        The wavenumbers ``k`` and the measured ``omega``, each ``(len(wavenumber_indices),)``.
    """
    spacing = length / points
    x = torch.arange(points, dtype=torch.float64) * spacing
    m = torch.tensor(list(wavenumber_indices), dtype=torch.long)
    k = 2.0 * math.pi * m.to(torch.float64) / length
    c = c0 + amplitude * torch.cos(k[:, None] * x[None, :])
    stepper = SpectralCahnHilliard((points,), spacing, params, stabilization=0.0)
    steps = round(duration / dt)
    start = torch.fft.rfft(c, dim=-1)[torch.arange(len(m)), m].abs()
    for _ in range(steps):
        c = stepper.step(c, dt)
    end = torch.fft.rfft(c, dim=-1)[torch.arange(len(m)), m].abs()
    return k, torch.log(end / start) / (steps * dt)


def radial_spectrum(c: Tensor, spacing: float) -> tuple[np.ndarray, np.ndarray]:
    """Ring-averaged structure factor |c_hat(k)|^2 of a square 2-D field (mean removed)."""
    n = c.shape[-1]
    power = torch.fft.fft2(c - c.mean()).abs() ** 2
    freq = 2.0 * math.pi * torch.fft.fftfreq(n, d=spacing, dtype=torch.float64)
    kx, ky = torch.meshgrid(freq, freq, indexing="ij")
    k = torch.sqrt(kx**2 + ky**2).flatten().numpy()
    dk = 2.0 * math.pi / (n * spacing)
    bins = np.rint(k / dk).astype(int)
    counts = np.bincount(bins)
    sums = np.bincount(bins, weights=power.flatten().numpy())
    valid = counts > 0
    return (np.arange(len(counts)) * dk)[valid][1:], (sums[valid] / counts[valid])[1:]


def spectrum_peak_wavelength(k: np.ndarray, power: np.ndarray, k_fit_max: float) -> float:
    """Peak wavelength of a spectrum from a fit of log S = a + b k^2 + c k^4 over k < k_fit_max.

    In the linear regime log S(k, t) = log S0 + 2 omega(k) t and omega is exactly that polynomial,
    so the fit's vertex k^2 = -b / (2c) is the pattern's dominant wavenumber.
    """
    keep = (k > 0) & (k < k_fit_max)
    kk = k[keep] ** 2
    c4, c2, _ = np.polyfit(kk, np.log(power[keep]), 2)
    return 2.0 * math.pi / math.sqrt(-c2 / (2.0 * c4))
