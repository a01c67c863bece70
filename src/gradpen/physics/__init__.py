"""Phase-field physics on torch tensors: the gradient penalty as an interface energy.

Cahn-Hilliard (PFHub 1), Allen-Cahn walls and PFHub 7, AT1/AT2 fracture, and the quadratic
penalty method; variational derivatives come from autograd through the discretized energies.
"""

from gradpen.physics.allen_cahn import (
    ManufacturedAllenCahn,
    double_well,
    double_well_derivative,
    line_energy,
    relaxed_wall,
    wall_energy,
    wall_profile,
)
from gradpen.physics.cahn_hilliard import (
    CahnHilliardParams,
    SpectralCahnHilliard,
    benchmark_initial_condition,
    continuum_initial_energy,
    fastest_wavelength,
    free_energy,
    growth_rate,
    measured_growth_rates,
)
from gradpen.physics.calculus import (
    gradient_energy,
    minimize_energy,
    periodic_laplacian,
    variational_derivative,
)
from gradpen.physics.fracture import (
    at2_peak_stress,
    at2_peak_stress_exact,
    dissipated_energy,
    exact_profile,
    finite_bar_energy_ratio,
    optimal_profile,
)
from gradpen.physics.penalty_method import continuation, minimize_penalized, penalized

__all__ = [
    "CahnHilliardParams",
    "ManufacturedAllenCahn",
    "SpectralCahnHilliard",
    "at2_peak_stress",
    "at2_peak_stress_exact",
    "benchmark_initial_condition",
    "continuation",
    "continuum_initial_energy",
    "dissipated_energy",
    "double_well",
    "double_well_derivative",
    "exact_profile",
    "fastest_wavelength",
    "finite_bar_energy_ratio",
    "free_energy",
    "gradient_energy",
    "growth_rate",
    "line_energy",
    "measured_growth_rates",
    "minimize_energy",
    "minimize_penalized",
    "optimal_profile",
    "penalized",
    "periodic_laplacian",
    "relaxed_wall",
    "variational_derivative",
    "wall_energy",
    "wall_profile",
]
