"""gradpen.physics pinned on hand-solvable cases: autograd derivatives, rates, walls, cracks."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from gradpen.physics import (
    CahnHilliardParams,
    ManufacturedAllenCahn,
    SpectralCahnHilliard,
    at2_peak_stress,
    at2_peak_stress_exact,
    continuum_initial_energy,
    double_well,
    double_well_derivative,
    exact_profile,
    fastest_wavelength,
    free_energy,
    growth_rate,
    measured_growth_rates,
    minimize_penalized,
    optimal_profile,
    periodic_laplacian,
    relaxed_wall,
    variational_derivative,
    wall_energy,
    wall_profile,
)
from gradpen.physics.calculus import wavenumbers_squared
from gradpen.physics.penalty_method import MULTIPLIER

PARAMS = CahnHilliardParams()


def _noisy_field(points: int = 32) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return 0.5 + 0.1 * torch.randn(points, points, generator=generator, dtype=torch.float64)


def test_autograd_variational_derivative_fd_is_bulk_minus_kappa_laplacian() -> None:
    c, h = _noisy_field(), 0.7
    mu = variational_derivative(lambda f: free_energy(f, h, PARAMS, method="fd"), c, h**2)
    expected = PARAMS.bulk_derivative(c) - PARAMS.kappa * periodic_laplacian(c, h, 2)
    torch.testing.assert_close(mu, expected, rtol=1e-10, atol=1e-12)


def test_autograd_variational_derivative_spectral_uses_spectral_laplacian() -> None:
    c, h = _noisy_field(), 1.0
    mu = variational_derivative(lambda f: free_energy(f, h, PARAMS), c, h**2)
    k2 = wavenumbers_squared(c.shape, h)
    laplacian = torch.fft.irfftn(-k2 * torch.fft.rfftn(c), s=c.shape)
    expected = PARAMS.bulk_derivative(c) - PARAMS.kappa * laplacian
    torch.testing.assert_close(mu, expected, rtol=1e-10, atol=1e-12)


def test_double_wells_match_autograd_and_hand_values() -> None:
    c = torch.linspace(0.1, 0.9, 17, dtype=torch.float64).requires_grad_(True)
    (grad,) = torch.autograd.grad(PARAMS.bulk_energy(c).sum(), c)
    torch.testing.assert_close(grad, PARAMS.bulk_derivative(c.detach()))
    (grad,) = torch.autograd.grad(double_well(c).sum(), c)
    torch.testing.assert_close(grad, double_well_derivative(c.detach()))
    assert PARAMS.bulk_curvature(0.5) == pytest.approx(-0.8)
    assert fastest_wavelength(PARAMS) == pytest.approx(2 * math.pi / math.sqrt(0.2))
    assert fastest_wavelength(PARAMS) == pytest.approx(14.05, abs=5e-3)
    assert 2 * 200 * PARAMS.interface_energy() == pytest.approx(19.08, abs=5e-3)


def test_continuum_initial_energy_is_the_published_value() -> None:
    assert continuum_initial_energy(PARAMS, nodes_per_axis=100) == pytest.approx(319.04, abs=0.01)


def test_single_mode_growth_rates_match_linear_stability() -> None:
    k, measured = measured_growth_rates([4, 14, 20, 26], PARAMS, points=64, dt=1e-3)
    exact = growth_rate(k, PARAMS)
    assert ((measured - exact) / exact.abs()).abs().max() < 0.01


def test_spectral_step_conserves_mass_and_lowers_energy() -> None:
    c = _noisy_field(64) * 0.1 + 0.45
    stepper = SpectralCahnHilliard((64, 64), 1.0, PARAMS)
    energies, start_mass = [free_energy(c, 1.0, PARAMS).item()], c.mean().item()
    for _ in range(20):
        c = stepper.step(c, 0.5)
        energies.append(free_energy(c, 1.0, PARAMS).item())
    assert abs(c.mean().item() - start_mass) < 1e-14
    assert all(b <= a for a, b in itertools.pairwise(energies))


def test_relaxed_wall_is_tanh_with_energy_sqrt_2kappa_over_6() -> None:
    x, phi, energy = relaxed_wall(kappa=0.5, half_width=10.0, points=121)
    assert energy / wall_energy(0.5) - 1 == pytest.approx(0.0, abs=1e-3)
    assert (phi - wall_profile(x, 0.5)).abs().max() < 1e-3
    assert wall_energy(2.0) == pytest.approx(1.0 / 3.0)


def test_manufactured_source_autograd_matches_published_formula() -> None:
    problem = ManufacturedAllenCahn()
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(200, generator=generator, dtype=torch.float64)
    y = 0.5 * torch.rand(200, generator=generator, dtype=torch.float64)
    torch.testing.assert_close(problem.source(x, y, 2.5), problem.source_analytic(x, y, 2.5))


def test_manufactured_solution_converges_at_second_order() -> None:
    problem = ManufacturedAllenCahn()
    coarse, fine = problem.l2_error(48, t_end=0.25), problem.l2_error(96, t_end=0.25)
    assert math.log2(coarse / fine) == pytest.approx(2.0, abs=0.5)


@pytest.mark.parametrize("model", ["at1", "at2"])
def test_optimal_crack_profile_dissipates_gc(model: str) -> None:
    x, alpha, energy = optimal_profile(model, length=1.0, half_length=8.0, points=161)
    assert energy == pytest.approx(1.0, rel=0.01)
    assert (alpha - exact_profile(model, x, 1.0)).abs().max() < 1e-3


def test_finite_bar_and_peak_stress() -> None:
    _, _, energy = optimal_profile("at2", length=1.0, half_length=1.0, points=81)
    assert energy == pytest.approx(math.tanh(1.0), rel=1e-3)
    assert at2_peak_stress_exact(1.0, 1.0, 1.0) == pytest.approx(3 * math.sqrt(3) / 16)
    assert at2_peak_stress(210.0, 2.7e-3, 0.015) == pytest.approx(
        at2_peak_stress_exact(210.0, 2.7e-3, 0.015), rel=1e-8
    )


def test_penalty_method_limits() -> None:
    mu = 1e4
    solution = minimize_penalized(mu, torch.tensor([-0.7, -0.7], dtype=torch.float64))
    assert solution.violation == pytest.approx(MULTIPLIER / (2 * mu), rel=1e-3)
    assert solution.scaled_violation == pytest.approx(math.sqrt(2) / 4, abs=1e-5)
    assert solution.condition_number / mu == pytest.approx(4 * math.sqrt(2), rel=1e-3)
    with pytest.raises(ValueError, match="mu must be positive"):
        minimize_penalized(0.0, torch.zeros(2))
