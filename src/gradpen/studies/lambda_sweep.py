"""``gradpen study lambda``: the penalty weight's trade-off on the 25-Gaussian grid.

WGAN-GP with lambda in {0, 0.01, 0.1, 1, 10, 100, 1000}, two seeds each, the shared quick toy
recipe (128-wide MLPs, 1500 generator steps). Too small a lambda lets the critic's gradients
grow without bound; too large a lambda flattens the critic to norm-1 everywhere and the
generator loses the detail. Measured: modes covered, % high quality, W1, and input-gradient
norms at reals and interpolates. CPU budget: about 14 runs of ~30 s on an idle 2-core machine
(~7 minutes).
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

from gradpen.data.toys import get_toy
from gradpen.plots import plot_overlaid, plot_samples_2d
from gradpen.report import markdown_table
from gradpen.studies._toolkit import Settings, config_settings, mean_std_cell, report
from gradpen.studies._toyrun import run_toy, toy_config
from gradpen.train.config import Config
from gradpen.train.loop import TrainingDiverged
from gradpen.train.run import open_run

STUDY_NAME = "lambda"
LAMBDAS = (0.0, 0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)
SEEDS = (0, 1)
METRICS = ("modes_covered", "high_quality", "w1", "gnorm_real", "gnorm_interp")


def arm_configs(quick: bool = False) -> dict[str, Config]:
    """Each lambda's config, named by ``f"{lambda:g}"`` (lambda 0 is ``penalty.name = "none"``)."""
    return {
        f"{weight:g}": toy_config(
            {"penalty.name": "none"} if weight == 0 else {"penalty.weight": weight}, quick=quick
        )
        for weight in ((0.1, 10.0) if quick else LAMBDAS)
    }


def _mean(values: list[float]) -> float:
    return statistics.mean(values) if values else math.nan


def run(out_dir: Path, *, quick: bool = False) -> Path:
    """Train every (lambda, seed), tabulate the metrics, plot the trade-off and samples."""
    seeds = SEEDS[:1] if quick else SEEDS
    configs = arm_configs(quick)
    results: dict[str, Any] = {}
    samples = {}
    for weight, config in configs.items():
        per_seed = []
        for seed in seeds:
            run_dir = out_dir / "runs" / f"lambda{weight}-seed{seed}"
            try:
                summary = run_toy(config, run_dir, seed=seed)
                summary.pop("records")
            except TrainingDiverged as error:
                summary = {"diverged": str(error)}
            per_seed.append(summary)
        results[weight] = per_seed
        last = per_seed[0]
        if "diverged" not in last:
            trainer = open_run(out_dir / "runs" / f"lambda{weight}-seed{seeds[0]}")
            samples[f"λ = {weight}"] = trainer.samples01(1000)[0]

    rows = []
    for weight, per_seed in results.items():
        ok = [s for s in per_seed if "diverged" not in s]
        row = [weight, f"{len(per_seed) - len(ok)}/{len(per_seed)}"]
        row += [mean_std_cell([float(s[m]) for s in ok], 4) for m in METRICS]
        rows.append(row)
    header = [
        "λ",
        "diverged",
        "modes (of 25)",
        "high quality",
        "W1",
        "‖∇D‖ at reals",
        "‖∇D‖ at interpolates",
    ]
    figures = []
    weights = [w for w in results if w != "0"]
    xs = [math.log10(float(w)) for w in weights]
    for metric, label, logy in [
        ("high_quality", "% high quality", False),
        ("w1", "W1", True),
        ("gnorm_interp", "mean ‖∇D‖ at interpolates", True),
    ]:
        ys = [_mean([float(s[metric]) for s in results[w] if metric in s]) for w in weights]
        name = f"{metric}_vs_lambda.png"
        plot_overlaid(
            {metric: (xs, ys)},
            out_dir / name,
            xlabel="log10 λ",
            ylabel=label,
            title=f"{label} vs λ",
            logy=logy,
        )
        figures.append(name)
    if samples:
        real = get_toy("25gaussians").sample(1000)
        plot_samples_2d(samples, real, out_dir / "samples.png")
        figures.append("samples.png")
    sections = [
        "WGAN-GP on 25gaussians, one row per λ (mean ± std over seeds).",
        markdown_table(header, rows),
    ]
    return report(
        out_dir, "Study: the penalty weight λ", sections, figures, results, config_settings(configs)
    )


def settings(quick: bool = False) -> Settings:
    """Each arm's fully resolved config, as run writes it under ``"settings"``."""
    return config_settings(arm_configs(quick))
