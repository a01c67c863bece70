"""Quadratic penalty method on min x + y s.t. x^2 + y^2 = 1: violation, multiplier, conditioning.

For mu over six decades the penalized problem f + mu g^2 is solved by Newton (autograd Hessian)
with continuation; the table shows g ~ lambda*/(2 mu), mu g -> sqrt(2)/4 and cond(H) ~ 4 sqrt(2) mu.
CPU budget: a few seconds, full or quick.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from gradpen.physics.penalty_method import (
    MULTIPLIER,
    constraint,
    continuation,
    exact_penalized_radius,
    penalized,
)
from gradpen.report import markdown_table, save_figure
from gradpen.studies._toolkit import Settings, report, sweep_settings


def _restoring_force_figure(out_dir: Path, mu: float, path: list[tuple[float, float]]) -> str:
    """Contours of f + mu g^2 with the penalty force -grad(mu g^2) and the minimizer path."""
    grid = torch.linspace(-1.6, 1.6, 161, dtype=torch.float64)
    gx, gy = torch.meshgrid(grid, grid, indexing="ij")
    points = torch.stack([gx, gy], dim=-1)
    values = penalized(points, mu)
    arrows = torch.linspace(-1.5, 1.5, 15, dtype=torch.float64)
    ax_, ay_ = torch.meshgrid(arrows, arrows, indexing="ij")
    sample = torch.stack([ax_, ay_], dim=-1).requires_grad_(True)
    (force,) = torch.autograd.grad(-(mu * constraint(sample) ** 2).sum(), sample)
    force = force / (1.0 + force.norm(dim=-1, keepdim=True))  # compress lengths for display
    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    ax.contour(gx, gy, values, levels=30, cmap="viridis", linewidths=0.7)
    ax.quiver(ax_, ay_, force[..., 0], force[..., 1], color="tab:red", width=0.003)
    circle = np.linspace(0, 2 * np.pi, 200)
    ax.plot(np.cos(circle), np.sin(circle), "k-", lw=1, label="g = 0")
    ax.plot(*zip(*path, strict=True), "o-", color="tab:blue", ms=3, label="minimizer as mu grows")
    ax.plot([-MULTIPLIER], [-MULTIPLIER], "k*", ms=10, label="constrained optimum")
    ax.set(aspect="equal", title=f"f + mu g^2 (mu = {mu:g}); arrows: -grad(mu g^2)")
    ax.legend(loc="upper right", fontsize=8)
    return save_figure(fig, out_dir, "restoring_force.png")


def penalty_weights(quick: bool = False) -> list[float]:
    """The continuation's increasing mu: 13 (quick: 9) log-spaced from 0.1 to 1e5 (quick: 1e3)."""
    return [float(m) for m in np.logspace(-1, 3 if quick else 5, 9 if quick else 13)]


def settings(quick: bool = False) -> Settings:
    """The sweep's settings, as run records them (one arm)."""
    return sweep_settings(
        {"multiplier": MULTIPLIER}, {"continuation": {"mu": penalty_weights(quick)}}
    )


def run(out_dir: Path, *, quick: bool = False) -> Path:
    """Run the penalty-method sweep and write the report directory; return report.md."""
    out_dir.mkdir(parents=True, exist_ok=True)
    mus = penalty_weights(quick)
    solutions = continuation(mus)
    rows = []
    for s in solutions:
        exact_s = exact_penalized_radius(s.mu)
        rows.append(
            [
                s.mu,
                s.violation,
                MULTIPLIER / (2 * s.mu),
                s.scaled_violation,
                s.condition_number,
                s.condition_number / s.mu,
                abs(s.point + exact_s).max().item(),
                s.newton_steps,
            ]
        )
    header = [
        "mu",
        "g",
        "lambda*/(2 mu)",
        "mu g",
        "cond(H)",
        "cond(H)/mu",
        "error vs exact",
        "Newton steps",
    ]
    figures = []
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    mu_arr = np.array(mus)
    left.loglog(mu_arr, [r[1] for r in rows], "o", label="violation g")
    left.loglog(mu_arr, MULTIPLIER / (2 * mu_arr), "--", label="lambda*/(2 mu)")
    left.loglog(mu_arr, [r[4] for r in rows], "s", label="cond(H)")
    left.loglog(mu_arr, 4 * math.sqrt(2) * mu_arr, ":", label="4 sqrt(2) mu")
    left.set(xlabel="mu", title="violation falls, conditioning grows")
    left.legend(fontsize=8)
    right.semilogx(mu_arr, [r[3] for r in rows], "o-", label="mu g")
    right.axhline(math.sqrt(2) / 4, color="gray", ls="--", label="sqrt(2)/4 = 0.353553")
    right.set(xlabel="mu", title="mu g tends to lambda*/2")
    right.legend()
    figures.append(save_figure(fig, out_dir, "penalty_limits.png"))
    path = [tuple(s.point.tolist()) for s in solutions]
    figures.append(_restoring_force_figure(out_dir, 1.0, path))
    sections = [
        "Newton with autograd gradient and Hessian, warm-started along increasing mu; "
        "'error vs exact' is the distance to the exact penalized minimizer x = y = -s, "
        "4 mu (2 s^2 - 1) s = 1.",
        markdown_table(header, rows),
    ]
    results = {
        "rows": [dict(zip(header, row, strict=True)) for row in rows],
        "limit_mu_g": math.sqrt(2) / 4,
        "multiplier": MULTIPLIER,
        "quick": quick,
    }
    title = "The quadratic penalty method"
    return report(out_dir, title, sections, figures, results, settings(quick))
