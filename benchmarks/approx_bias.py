"""Bias and noise of the approximate R1 (``approx-r1``) against the exact R1, on the zoo critics.

    python benchmarks/approx_bias.py [--draws N] [--sigmas 0.1 0.01 0.001]

For each critic of ``penalty_overhead.CRITICS`` (fresh, seeded, float64, its synthetic reals)
and each ``sigma``: the exact term ``Penalty("r1", 10)`` once, and ``Penalty("approx-r1", 10,
sigma=sigma)`` over ``--draws`` noise draws. Printed: the relative bias of the mean over draws,
``mean / exact - 1``, with its standard error, and the relative spread of one draw,
``std / exact``. Expected: the bias
shrinks with sigma (it is O(sigma) where the critic is smooth); the spread does not (one
Gaussian direction per sample estimates ``||g||^2`` with relative std up to sqrt(2) per sample,
averaged over the batch). A ReLU critic's finite difference can cross kinks, so its bias need
not vanish smoothly.
"""

from __future__ import annotations

import argparse
import statistics

import torch
from penalty_overhead import CRITICS, make_problem

import gradpen as gp


def measure(name: str, sigmas: list[float], draws: int) -> list[dict[str, float]]:
    """The bias and per-draw spread of approx-r1 against r1 on critic ``name``, per sigma."""
    critic, real, _ = make_problem(name, None, torch.device("cpu"))
    critic, real = critic.double(), real.double()
    exact = gp.Penalty("r1", 10.0)(critic, real=real).item()
    rows = []
    for sigma in sigmas:
        approx = gp.Penalty("approx-r1", 10.0, sigma=sigma)
        with torch.no_grad():
            values = [approx(critic, real=real).item() for _ in range(draws)]
        rows.append(
            {
                "sigma": sigma,
                "exact": exact,
                "bias": statistics.mean(values) / exact - 1,
                "draw_spread": statistics.pstdev(values) / exact,
                "standard_error": statistics.pstdev(values) / exact / draws**0.5,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=64, help="noise draws per sigma")
    parser.add_argument("--sigmas", type=float, nargs="+", default=[0.1, 0.01, 0.001])
    args = parser.parse_args()
    torch.manual_seed(0)
    print("| critic | sigma | exact R1 term | relative bias (± s.e.) | spread of one draw |")
    print("|---|---:|---:|---:|---:|")
    for name in CRITICS:
        for row in measure(name, args.sigmas, args.draws):
            print(
                f"| {CRITICS[name].label} | {row['sigma']:g} | {row['exact']:.4g} | "
                f"{row['bias']:+.3f} ± {row['standard_error']:.3f} | {row['draw_spread']:.3f} |"
            )


if __name__ == "__main__":
    main()
