"""Allen-Cahn domain walls: the tanh wall and its energy, and PFHub benchmark 7's convergence order.

The wall is found by minimizing the discretized 1-D energy (autograd gradient, L-BFGS-B) and
compared with 1/2 [1 - tanh(x / sqrt(2 kappa))] and sigma = sqrt(2 kappa)/6; benchmark 7 is
solved with a second-order 5-point Laplacian and RK4 (time error negligible), so the spatial L2
error at t = 8 should fall as h^2. CPU budget: the full run takes about 2 minutes on the shared
2-core machine (the 256-cell benchmark run dominates); ``quick=True`` takes a few seconds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from gradpen.physics.allen_cahn import (
    ManufacturedAllenCahn,
    relaxed_wall,
    wall_energy,
    wall_profile,
)
from gradpen.physics.calculus import torch_threads
from gradpen.report import markdown_table, save_figure
from gradpen.studies._toolkit import Settings, report, sweep_settings

KAPPA = 1.0
HALF_WIDTH = 12.0
# Grid sizes: the relaxed wall's points, benchmark 7a's cells in x and its end time.
SIZES: dict[bool, dict[str, Any]] = {
    False: {"wall_points": [241, 481, 961], "cells": [96, 128, 192, 256], "t_end": 8.0},
    True: {"wall_points": [81, 121], "cells": [32, 64], "t_end": 0.5},
}


def settings(quick: bool = False) -> Settings:
    """The wall and benchmark-7a settings, as run records them."""
    shared = {"kappa": KAPPA, "half_width": HALF_WIDTH}
    return sweep_settings(shared, {"wall+benchmark7a": SIZES[quick]})


def convergence_order(sizes: list[float], errors: list[float]) -> float:
    """Least-squares slope p of log(error) = p log(size) + b (the benchmark's definition)."""
    slope, _ = np.polyfit(np.log(sizes), np.log(errors), 1)
    return float(slope)


def run(out_dir: Path, *, quick: bool = False) -> Path:
    """Run the wall and benchmark-7 checks and write the report directory; return report.md."""
    out_dir.mkdir(parents=True, exist_ok=True)
    wall_points, cells, t_end = (SIZES[quick][k] for k in ("wall_points", "cells", "t_end"))
    with torch_threads(1):
        walls = [relaxed_wall(KAPPA, HALF_WIDTH, n) for n in wall_points]
        errors = [ManufacturedAllenCahn().l2_error(n, t_end=t_end) for n in cells]
    sigma = wall_energy(KAPPA)
    wall_rows = [
        [
            n,
            2 * HALF_WIDTH / (n - 1),
            energy,
            energy / sigma - 1.0,
            (phi - wall_profile(x, KAPPA)).abs().max().item(),
        ]
        for n, (x, phi, energy) in zip(wall_points, walls, strict=True)
    ]
    sizes = [1.0 / n for n in cells]
    in_range = [i for i, e in enumerate(errors) if 1e-4 <= e <= 5e-3] or list(range(len(cells)))
    order = convergence_order([sizes[i] for i in in_range], [errors[i] for i in in_range])
    figures = []
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    x, phi, _ = walls[-1]
    left.plot(x, wall_profile(x, KAPPA), "-", label="1/2 [1 - tanh(x / sqrt(2 kappa))]")
    left.plot(x[::20], phi[::20], "o", ms=3, label="minimized discrete energy")
    left.set(xlabel="x", ylabel="phi", title=f"wall, kappa = {KAPPA:g}")
    left.legend()
    right.loglog(sizes, errors, "o-", label=f"measured, order {order:.2f}")
    right.loglog(sizes, [errors[-1] * (s / sizes[-1]) ** 2 for s in sizes], "--", label="h^2")
    right.set(xlabel="h", ylabel=f"L2 error at t = {t_end:g}", title="PFHub benchmark 7a")
    right.legend()
    figures.append(save_figure(fig, out_dir, "domain_wall.png"))
    sections = [
        f"Wall: kappa = {KAPPA:g}, domain [-{HALF_WIDTH:g}, {HALF_WIDTH:g}], exact sigma = "
        f"sqrt(2 kappa)/6 = {sigma:.6f}.",
        markdown_table(
            ["points", "h", "sigma measured", "relative error", "max abs(phi - tanh profile)"],
            wall_rows,
        ),
        "PFHub benchmark 7a (kappa = 4e-4, A1 = 0.0075, B1 = 8 pi, A2 = 0.03, B2 = 22 pi, "
        "C2 = 0.0625 pi), 5-point Laplacian + RK4 with dt = 0.2 h^2 / kappa; order fitted over "
        "errors in [1e-4, 5e-3] (theoretical order 2).",
        markdown_table(
            ["cells in x", "h", "L2 error"],
            [[n, 1.0 / n, e] for n, e in zip(cells, errors, strict=True)],
        ),
        f"Fitted spatial order: {order:.3f} (theory 2, tolerance 0.2).",
    ]
    results = {
        "kappa": KAPPA,
        "sigma_exact": sigma,
        "walls": [
            dict(
                zip(
                    ["points", "h", "sigma", "relative_error", "max_profile_error"],
                    row,
                    strict=True,
                )
            )
            for row in wall_rows
        ],
        "benchmark7": {"cells": cells, "t_end": t_end, "l2_errors": errors, "order": order},
        "quick": quick,
    }
    return report(out_dir, "Allen-Cahn domain walls", sections, figures, results, settings(quick))
