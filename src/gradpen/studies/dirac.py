"""Dirac-GAN (Mescheder et al. 2018): which training methods converge, driven through gradpen.

For each method (GAN, non-saturating GAN, WGAN with clipping, WGAN-GP, GAN + R1 at gamma 0.3
and 1) and each scheme (simultaneous, alternating gradient descent), SGD with step 0.2 from
``(theta, psi) = (1, 1)``; the distance to the equilibrium ``(0, 0)`` after 500 steps (and after
5000, to tell a trend from a snapshot), the trajectories in the ``(theta, psi)`` plane, and a
check that gradpen's losses and penalties reproduce the paper's vector field.

CPU budget of the full run: about 30 CPU seconds on the 2-core machine (12 runs of 5000 steps
of one-parameter modules); ``quick=True`` takes a few seconds.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from tqdm import tqdm

from gradpen.studies._dirac_gan import (
    F_PRIME_AT_ZERO,
    PAPER_METHODS,
    SCHEMES,
    Method,
    trajectory,
    vector_field,
)
from gradpen.studies._toolkit import Settings, sweep_settings

LR = 0.2
START = (1.0, 1.0)
STEPS = 500  # the paper's horizon
LONG_STEPS = 5000  # a longer horizon, to see whether the 500-step distance is a trend
CONVERGED = 1e-3  # a distance below this counts as converged
MOVED_AWAY = 1.1  # a distance above this times the start's counts as moving away
FIELD_CHECK_POINTS = ((0.0, 0.0), (1.0, 1.0), (0.7, -0.4), (-1.5, 0.3), (2.0, 2.0))
PAPER_EXPECTATION = {
    "GAN": "diverges (sim.), circles (alt.)",
    "NS-GAN": "does not converge",
    "WGAN (clip 1)": "does not converge",
    "WGAN-GP (lambda=0.35)": "does not converge",
    "GAN + R1 (gamma=0.3)": "converges (~1e-6)",
    "GAN + R1 (gamma=1)": "converges",
}


def _sigmoid(t: float) -> float:
    return 1.0 / (1.0 + math.exp(-t))


def analytic_gan_field(theta: float, psi: float, gamma: float = 0.0) -> tuple[float, float]:
    """The paper's field for the GAN (+ R1 with weight ``gamma``), written by hand.

    ``v = (-f'(psi theta) psi, f'(psi theta) theta - gamma psi)``
    with ``f'(t) = 1 / (1 + e^t)`` for ``f(t) = -log(1 + e^-t)``, so ``f'(0) = 1/2``.
    """
    f_prime = _sigmoid(-psi * theta)
    return -f_prime * psi, f_prime * theta - gamma * psi


def field_check() -> dict[str, float]:
    """Largest gap between gradpen's field and the analytic one (GAN, GAN + R1 0.3)."""
    gaps = {}
    for method, gamma in ((PAPER_METHODS[0], 0.0), (PAPER_METHODS[4], 0.3)):
        gaps[method.label] = max(
            float(
                np.max(np.abs(np.subtract(vector_field(method, *p), analytic_gan_field(*p, gamma))))
            )
            for p in FIELD_CHECK_POINTS
        )
    return gaps


def _verdict(distance: float) -> str:
    start = math.hypot(*START)
    if not math.isfinite(distance) or distance > MOVED_AWAY * start:
        return "moved away"
    return "converged" if distance < CONVERGED else "not converged"


def _plot(
    paths: dict[tuple[str, str], np.ndarray],
    methods: tuple[Method, ...],
    path: Path,
    arrows: int,
) -> None:
    """One panel per method, both schemes, over an ``arrows`` x ``arrows`` quiver of its field."""
    cols = 3
    rows = math.ceil(len(methods) / cols)
    fig = Figure(figsize=(4.2 * cols, 4.0 * rows))
    grid = np.linspace(-2.5, 2.5, arrows)
    for index, method in enumerate(methods):
        ax = fig.add_subplot(rows, cols, index + 1)
        field = np.array([[vector_field(method, t, p) for t in grid] for p in grid])
        ax.quiver(grid, grid, field[..., 0], field[..., 1], color="0.75", width=0.004)
        for scheme, color in zip(SCHEMES, ("tab:red", "tab:blue"), strict=True):
            points = paths[(method.label, scheme)]
            ax.plot(points[:, 0], points[:, 1], color=color, lw=0.8, label=scheme)
            ax.plot(*points[-1], "o", color=color, ms=4)
        ax.plot(*START, "k^", ms=6, label="start")
        ax.plot(0, 0, "k*", ms=9, label="equilibrium")
        ax.set(title=method.label, xlabel="theta", ylabel="psi", xlim=(-2.6, 2.6))
        ax.set(ylim=(-2.6, 2.6), aspect="equal")
        if index == 0:
            ax.legend(loc="lower left", fontsize=7)
    fig.suptitle(f"Dirac-GAN trajectories, SGD step {LR}, {STEPS} steps (dots: end points)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


SIZES = {False: (STEPS, LONG_STEPS, 11), True: (100, 150, 5)}  # steps, long steps, arrows


def settings(quick: bool = False) -> Settings:
    """Each (method, scheme) arm's settings, named ``LABEL/SCHEME``, as run records them."""
    steps, long_steps, _ = SIZES[quick]
    shared = {"lr": LR, "start": list(START), "steps": steps, "long_steps": long_steps}
    arms = {
        f"{method.label}/{scheme}": dataclasses.asdict(method) | {"scheme": scheme}
        for method in PAPER_METHODS
        for scheme in SCHEMES
    }
    return sweep_settings(shared, arms)


def run(out_dir: Path, *, quick: bool = False) -> Path:
    """Run every method under both schemes; write report.md, results.json, trajectories.png."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    steps, long_steps, arrows = SIZES[quick]
    paths: dict[tuple[str, str], np.ndarray] = {}
    rows = []
    jobs = [(m, s) for m in PAPER_METHODS for s in SCHEMES]
    for method, scheme in tqdm(jobs, desc="dirac", leave=False):
        points = trajectory(method, scheme, lr=LR, steps=long_steps, start=START)
        paths[(method.label, scheme)] = points[: steps + 1]
        rows.append(
            {
                "method": method.label,
                "loss": method.loss,
                "penalty": method.penalty,
                "weight": method.weight,
                "clip": method.clip,
                "scheme": scheme,
                "theta": float(points[steps, 0]),
                "psi": float(points[steps, 1]),
                "distance": float(math.hypot(*points[steps])),
                "distance_long": float(math.hypot(*points[long_steps])),
            }
        )
    figure = out_dir / "trajectories.png"
    _plot(paths, PAPER_METHODS, figure, arrows)
    gaps = field_check()
    results = {
        "settings": settings(quick),
        "lr": LR,
        "start": list(START),
        "steps": steps,
        "long_steps": long_steps,
        "f_prime_at_zero": F_PRIME_AT_ZERO,
        "field_check_max_abs_gap": gaps,
        "runs": rows,
    }
    (out_dir / "results.json").write_text(json.dumps(results, indent=2))
    report = out_dir / "report.md"
    report.write_text(_report(rows, gaps, steps, long_steps, figure.name))
    return report


def _report(
    rows: list[dict], gaps: dict[str, float], steps: int, long_steps: int, figure: str
) -> str:
    by_key = {(r["method"], r["scheme"]): r for r in rows}
    lines = [
        "# Dirac-GAN: distance to equilibrium",
        "",
        f"SGD, step {LR}, start (theta, psi) = {START}, data at 0, critic D(x) = psi * x as a "
        "one-parameter module trained on gradpen's losses and penalties.",
        "",
        f"| method | sim., {steps} steps | alt., {steps} steps | sim., {long_steps} | "
        f"alt., {long_steps} | verdict at {steps} (sim. / alt.) | paper |",
        "|---|---|---|---|---|---|---|",
    ]
    for method in PAPER_METHODS:
        sim, alt = (by_key[(method.label, s)] for s in SCHEMES)
        lines.append(
            f"| {method.label} | {sim['distance']:.3g} | {alt['distance']:.3g} | "
            f"{sim['distance_long']:.3g} | {alt['distance_long']:.3g} | "
            f"{_verdict(sim['distance'])} / {_verdict(alt['distance'])} | "
            f"{PAPER_EXPECTATION[method.label]} |"
        )
    lines += [
        "",
        f"Verdicts: converged = distance < {CONVERGED:g}; moved away = more than "
        f"{MOVED_AWAY:g} times the start's distance ({math.hypot(*START):.3g}).",
        "",
        "Vector field check: largest |gradpen field - analytic field| over "
        f"{len(FIELD_CHECK_POINTS)} points: "
        + ", ".join(f"{label}: {gap:.1e}" for label, gap in gaps.items())
        + ".",
        "",
        f"![trajectories]({figure})",
        "",
    ]
    return "\n".join(lines)
