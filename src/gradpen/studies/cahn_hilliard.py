"""PFHub benchmark 1a (Cahn-Hilliard spinodal decomposition, periodic 200 x 200), gradpen.physics.

Checks the initial free energy against the benchmark's 319.04 (continuum quadrature and the periodic
grid), mass conservation, energy decay and bounds along a run to t = 1e4, the linear-stability
growth rates omega(k) and the fastest-growing wavelength, and lists F(t) beside the published
PRISMS-PF and MOOSE values. CPU budget: the full run takes about 3 minutes on the shared 2-core
machine (about 60k spectral steps of a 200 x 200 grid); ``quick=True`` takes a few seconds.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch

from gradpen.physics.cahn_hilliard import (
    CahnHilliardParams,
    SpectralCahnHilliard,
    benchmark_initial_condition,
    continuum_initial_energy,
    fastest_wavelength,
    free_energy,
    growth_rate,
    measured_growth_rates,
    radial_spectrum,
    spectrum_peak_wavelength,
)
from gradpen.physics.calculus import torch_threads
from gradpen.report import markdown_table, save_figure
from gradpen.studies._toolkit import Settings, report, sweep_settings

PUBLISHED_INITIAL_ENERGY = 319.04
PUBLISHED = {  # PFHub benchmark 1a F(t) as quoted in the issue
    "PRISMS-PF": {100.0: 115.6, 1000.0: 70.35, 10000.0: 40.81},
    "MOOSE (periodic)": {100.0: 140.6, 1000.0: 83.0, 10000.0: 34.1},
}
LENGTH = 200.0
GRID = 200  # points per side of the periodic grid
# What a quick run shrinks: the end time, the adaptive time-step schedule, the logged times.
SIZES: dict[bool, dict[str, Any]] = {
    False: {"t_end": 1e4, "dt_min": 0.002, "dt_growth": 0.002, "dt_max": 0.25, "times": 121},
    True: {"t_end": 20.0, "dt_min": 0.05, "dt_growth": 0.05, "dt_max": 0.5, "times": 25},
}


def settings(quick: bool = False) -> Settings:
    """The benchmark's parameters and the run's size, as run records them (one arm)."""
    size = SIZES[quick] | {"length": LENGTH, "grid": GRID}
    return sweep_settings(CahnHilliardParams(), {"pfhub-1a": size})


def _initial_grid(points: int, device: torch.device | str | None) -> torch.Tensor:
    """The benchmark initial condition sampled at the nodes x_i = i h of the periodic grid."""
    x = torch.arange(points, dtype=torch.float64, device=device) * (LENGTH / points)
    gx, gy = torch.meshgrid(x, x, indexing="ij")
    return benchmark_initial_condition(gx, gy)


def _initial_energy_rows(params: CahnHilliardParams, quick: bool) -> dict[str, float]:
    """F(0): continuum quadrature at two orders, and the periodic 200 x 200 grid's two values."""
    c = _initial_grid(GRID, None)
    orders = (100, 200) if quick else (200, 400)
    return {
        f"continuum, Gauss-Legendre {n}^2": continuum_initial_energy(params, LENGTH, n)
        for n in orders
    } | {
        f"periodic grid ({method} gradient)": free_energy(c, 1.0, params, method=method).item()
        for method in ("fd", "spectral")
    }


def _coarsening(params, quick, device) -> dict:
    """The benchmark run: F(t), mass, bounds, timing to t = 1000, and a halved-dt rerun."""
    points = GRID
    size = SIZES[quick]
    t_end = size["t_end"]
    schedule = {key: size[key] for key in ("dt_min", "dt_growth", "dt_max")}
    times = np.unique(np.round(np.logspace(-1, math.log10(t_end), size["times"]), 6))
    times = np.unique(np.concatenate([times, [t for t in (1, 10, 100, 1000) if t < t_end]]))
    stepper = SpectralCahnHilliard((points, points), LENGTH / points, params, 1.0, device)
    c0 = _initial_grid(points, device)
    split = 1000.0 if t_end > 1000 else t_end
    start = time.perf_counter()
    early, early_steps = stepper.run(c0, times[times <= split], progress=not quick, **schedule)
    seconds_to_split = time.perf_counter() - start
    late, late_steps = stepper.run(
        early[-1], times[times > split], t_start=split, progress=not quick, **schedule
    )
    fields = [c0, *early, *late]
    all_times = np.concatenate([[0.0], times])
    energies = np.array([free_energy(f, 1.0, params).item() for f in fields])
    means = np.array([f.mean().item() for f in fields])
    refined = dict(schedule, **{key: value / 2 for key, value in schedule.items()})
    check_times = [t for t in (1.0, 10.0, 100.0, 1000.0) if t <= split]
    refined_fields, _ = stepper.run(c0, check_times, **refined)
    return {
        "times": all_times.tolist(),
        "energies": energies.tolist(),
        "max_mass_drift": float(np.abs(means - means[0]).max()),
        "max_energy_increase": float(np.diff(energies).max()),
        "c_min": min(f.min().item() for f in fields),
        "c_max": max(f.max().item() for f in fields),
        "steps": early_steps + late_steps,
        "seconds_to_split": seconds_to_split,
        "split_time": split,
        "steps_to_split": early_steps,
        "refined": {
            t: free_energy(f, 1.0, params).item()
            for t, f in zip(check_times, refined_fields, strict=True)
        },
        "snapshots": {
            t: fields[int(np.argmin(np.abs(all_times - t)))].cpu().numpy()
            for t in (100.0, 1000.0, t_end)
            if t <= t_end
        },
        "schedule": schedule,
    }


def _linear_stability(params: CahnHilliardParams, quick: bool) -> dict:
    """Single-mode growth rates against omega(k), and the early noise pattern's peak wavelength."""
    modes = range(2, 33, 6 if quick else 1)
    k, measured = measured_growth_rates(modes, params, dt=1e-3 if quick else 2.5e-4)
    exact = growth_rate(k, params)
    significant = exact.abs() > 0.05 * exact.max()
    relative = ((measured - exact) / exact.abs())[significant].abs().max().item()
    points = 128 if quick else 200
    noise = torch.randn(
        points, points, generator=torch.Generator().manual_seed(0), dtype=torch.float64
    )
    stepper = SpectralCahnHilliard((points, points), LENGTH / points, params, stabilization=0.0)
    (pattern,), _ = stepper.run(0.5 + 1e-6 * noise, [20.0], dt_min=0.01, dt_max=0.01)
    ks, power = radial_spectrum(pattern, LENGTH / points)
    k_unstable = math.sqrt(-params.bulk_curvature(0.5) / params.kappa)
    return {
        "k": k.tolist(),
        "omega_measured": measured.tolist(),
        "omega_exact": exact.tolist(),
        "max_relative_error": relative,
        "wavelength_exact": fastest_wavelength(params),
        "wavelength_fit": spectrum_peak_wavelength(ks, power, k_unstable),
        "wavelength_argmax": 2.0 * math.pi / ks[int(np.argmax(power))],
        "spectrum": (ks.tolist(), power.tolist()),
    }


def _figures(out_dir: Path, run_data: dict, stability: dict) -> list[str]:
    """F(t) beside the published values; snapshots; growth rates; the early spectrum."""
    names = []
    fig, ax = plt.subplots(figsize=(6, 4.5))
    t, f = np.array(run_data["times"][1:]), np.array(run_data["energies"][1:])
    ax.loglog(t, f, label="gradpen (spectral, periodic)")
    for (code, values), marker in zip(PUBLISHED.items(), "os", strict=True):
        ax.loglog(list(values), list(values.values()), marker, label=code)
    ax.axhline(19.08, color="gray", ls=":", label="lamella 2 L sigma = 19.08")
    ax.set(xlabel="t", ylabel="F", title="PFHub 1a free energy")
    ax.legend()
    names.append(save_figure(fig, out_dir, "energy.png"))
    snaps = run_data["snapshots"]
    fig, axes = plt.subplots(1, len(snaps), figsize=(4 * len(snaps), 4))
    for ax, (when, field) in zip(np.atleast_1d(axes), snaps.items(), strict=True):
        ax.imshow(field.T, origin="lower", cmap="viridis", vmin=0.3, vmax=0.7)
        ax.set(title=f"c at t = {when:g}", xticks=[], yticks=[])
    names.append(save_figure(fig, out_dir, "snapshots.png"))
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(stability["k"], stability["omega_exact"], "-", label="omega(k) theory")
    left.plot(stability["k"], stability["omega_measured"], "o", ms=3, label="measured")
    left.axhline(0, color="gray", lw=0.5)
    left.set(xlabel="k", ylabel="growth rate", title="linear stability")
    left.legend()
    ks, power = stability["spectrum"]
    right.semilogy(ks, power, ".")
    right.axvline(
        2 * math.pi / stability["wavelength_exact"],
        color="r",
        ls="--",
        label=f"k_max, lambda = {stability['wavelength_exact']:.2f}",
    )
    right.set(xlabel="|k|", ylabel="ring-averaged S(k)", title="noise pattern at t = 20")
    right.legend()
    names.append(save_figure(fig, out_dir, "stability.png"))
    return names


def run(out_dir: Path, *, quick: bool = False, device: torch.device | str | None = None) -> Path:
    """Run the Cahn-Hilliard checks and write the report directory; return report.md."""
    out_dir.mkdir(parents=True, exist_ok=True)
    params = CahnHilliardParams()
    with torch_threads(1):
        initial = _initial_energy_rows(params, quick)
        run_data = _coarsening(params, quick, device)
        stability = _linear_stability(params, quick)
    energy_at = dict(zip(run_data["times"], run_data["energies"], strict=True))
    published_rows = [
        [
            f"{when:g}",
            energy_at.get(when, float("nan")),
            run_data["refined"].get(when, "-"),
            *(values.get(when, "-") for values in PUBLISHED.values()),
        ]
        for when in (1.0, 10.0, 100.0, 1000.0, 10000.0)
        if when in energy_at
    ]
    checks = [
        ["F(0) published", PUBLISHED_INITIAL_ENERGY],
        *[[f"F(0) {name}", value] for name, value in initial.items()],
        ["max abs(mean c(t) - mean c(0))", run_data["max_mass_drift"]],
        ["max F increase between outputs", run_data["max_energy_increase"]],
        ["min c / max c over the run", f"{run_data['c_min']:.4f} / {run_data['c_max']:.4f}"],
        ["lamella end state 2 L sigma", 2 * LENGTH * params.interface_energy()],
        ["growth rate max relative error (abs omega > 5% of max)", stability["max_relative_error"]],
        ["fastest wavelength, theory", stability["wavelength_exact"]],
        ["fastest wavelength, fit of early spectrum", stability["wavelength_fit"]],
        ["fastest wavelength, spectrum argmax bin", stability["wavelength_argmax"]],
        [
            f"steps / seconds to t = {run_data['split_time']:g}",
            f"{run_data['steps_to_split']} / {run_data['seconds_to_split']:.2f}",
        ],
    ]
    sections = [
        "Periodic variant: the benchmark initial condition is sampled at the grid nodes x = i h "
        "(h = 1) and the non-periodic seam is kept as a jump, which is why the grid F(0) exceeds "
        "the continuum value.",
        markdown_table(["check", "value"], checks),
        f"Time steps: {run_data['schedule']} (dt = clip(dt_growth t, dt_min, dt_max)); "
        "'halved dt' reruns with every value halved.",
        markdown_table(["t", "F gradpen", "F gradpen, halved dt", *PUBLISHED], published_rows),
    ]
    figures = _figures(out_dir, run_data, stability)
    results = {
        "initial_energy": initial,
        "run": {key: value for key, value in run_data.items() if key != "snapshots"},
        "linear_stability": {key: v for key, v in stability.items() if key != "spectrum"},
        "published": {
            code: {str(t): v for t, v in vals.items()} for code, vals in PUBLISHED.items()
        },
        "quick": quick,
    }
    results["run"]["refined"] = {str(t): v for t, v in run_data["refined"].items()}
    title = "Cahn-Hilliard: PFHub benchmark 1a"
    return report(out_dir, title, sections, figures, results, settings(quick))
