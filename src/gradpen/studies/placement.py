"""``gradpen study placement``: where the penalty sits decides how fast a collapse heals.

Start from a fully collapsed generator (its output layer zeroed, so every fake lies on one mode
of 8gaussians) and train with the non-saturating loss and a penalty at fakes (R2), at reals (R1),
at both (R1+R2), or at interpolates (WGAN-GP with target 1, and the zero-centered 0-GP), all
with the same coefficient on the squared norm: 1 x E||g||^2 (R1/R2 use gamma/2, so
penalty.weight = gamma = 2 for r1, r2 and r1r2, and 1 for the others). Recorded: modes covered
every 50 generator steps. The claim under test: penalizing at fakes pulls a collapsed generator
harder than at reals. CPU budget: 5 penalties x 3 seeds x 1000 steps, about 80 CPU seconds
each measured on the busy 2-core machine (100 steps: 8.3 s), 20 CPU minutes in all, two runs at a
time (``workers``).
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import torch

from gradpen.data.toys import get_toy
from gradpen.metrics.toy import toy_metrics
from gradpen.plots import plot_overlaid
from gradpen.report import markdown_table
from gradpen.studies._toolkit import Settings, config_settings, report, run_jobs
from gradpen.studies._toyrun import toy_config, toy_trainer
from gradpen.train.config import Config
from gradpen.train.loop import Trainer

PENALTIES = ("r2", "r1", "r1r2", "wgan-gp", "zero-centered")
SEEDS = (0, 1, 2)
STEPS = 1000
EVERY = 50
DATASET = "8gaussians"
QUICK_STEPS, QUICK_EVERY = 20, 10
COEFFICIENT = 1.0  # on E||g||^2, for every penalty
# penalty.weight giving that coefficient: R1/R2 terms are weight / 2 * E||g||^2 (weight = gamma).
WEIGHTS = {"r2": 2 * COEFFICIENT, "r1": 2 * COEFFICIENT, "r1r2": 2 * COEFFICIENT}


def collapse(trainer: Trainer, center: torch.Tensor) -> None:
    """Make every generated sample exactly ``center``: zero output weights, bias = center."""
    head = trainer.G.trunk.head
    with torch.no_grad():
        head.weight.zero_()
        head.bias.copy_(center)


def arm_configs(quick: bool = False) -> dict[str, Config]:
    """Each penalty's config (seed 0): what every run of that arm trains with, but its seed.

    Args:
        quick: the seconds-long version the tests run.

    Returns:
        The resolved config per penalty name.
    """
    steps = QUICK_STEPS if quick else STEPS
    common = {
        "data.name": DATASET,
        "train.loss": "ns",
        "train.lr_decay": "none",
        "train.steps": steps,
    }
    return {
        penalty: toy_config(
            common, {"penalty.name": penalty, "penalty.weight": WEIGHTS.get(penalty, COEFFICIENT)}
        )
        for penalty in PENALTIES
    }


def modes_over_time(config: Config, seed: int, every: int, out: Path) -> list[int]:
    """Modes covered after 0, every, 2*every, ... generator steps from a collapsed start."""
    trainer = toy_trainer(config, out, seed=seed)
    toy = get_toy(DATASET)
    assert toy.centers is not None
    collapse(trainer, toy.centers[0])
    counts = []
    steps = config.train.steps
    for step in range(steps + 1):
        if step % every == 0:
            samples, _ = trainer.samples01(1000)
            counts.append(int(toy_metrics(samples, toy)["modes_covered"]))
        if step < steps:
            trainer.train_round()
    return counts


def _first_full(counts: list[int], every: int) -> int | None:
    for index, count in enumerate(counts):
        if count == 8:
            return index * every
    return None


def _table_indices(length: int) -> list[int]:
    """The curve points shown in the table: a quarter, half way, and the end."""
    return [length // 4, length // 2, length - 1]


def run(out_dir: Path, *, quick: bool = False, workers: int = 2) -> Path:
    """Modes-covered curves per penalty (mean over seeds) and the step where all 8 return.

    Args:
        out_dir: the report directory.
        quick: the seconds-long version the tests run (in this process).
        workers: runs at a time, each in its own one-thread process.

    Returns:
        The path of ``report.md``.
    """
    every = QUICK_EVERY if quick else EVERY
    seeds = SEEDS[:1] if quick else SEEDS
    configs = arm_configs(quick)
    steps = configs[PENALTIES[0]].train.steps
    jobs = {
        (penalty, seed): (config, seed, every, out_dir / "runs" / f"{penalty}-seed{seed}")
        for penalty, config in configs.items()
        for seed in seeds
    }
    curves_by_run = run_jobs(
        modes_over_time,
        jobs,
        workers=1 if quick else workers,
        desc="placement runs",
        store=out_dir / "finished",
    )
    results: dict[str, Any] = {}
    curves = {}
    rows = []
    for penalty in configs:
        runs = [curves_by_run[penalty, seed] for seed in seeds]
        results[penalty] = runs
        mean_curve = [statistics.mean(c[i] for c in runs) for i in range(len(runs[0]))]
        curves[penalty] = ([i * every for i in range(len(mean_curve))], mean_curve)
        firsts = [_first_full(c, every) for c in runs]
        reached = [f for f in firsts if f is not None]
        rows.append(
            [
                penalty,
                *[f"{mean_curve[i]:.3g}" for i in _table_indices(len(mean_curve))],
                f"{len(reached)}/{len(runs)}",
                f"{statistics.median(reached):g}" if reached else "never",
            ]
        )
    plot_overlaid(
        curves,
        out_dir / "modes_over_time.png",
        xlabel="generator step",
        ylabel="modes covered (of 8)",
        title="Recovery from a collapsed generator",
    )
    shown = _table_indices(steps // every + 1)
    header = ["penalty", *[f"modes at step {i * every}" for i in shown]]
    header += ["runs reaching 8/8", "median step to 8/8"]
    sections = [
        f"Non-saturating loss, coefficient {COEFFICIENT:g} on the squared norm for every penalty "
        f"(penalty.weight = γ = {2 * COEFFICIENT:g} for R1/R2), {DATASET}, generator collapsed "
        f"onto one mode at step 0; means over {len(seeds)} seed(s). Command: "
        f"`gradpen study placement{' --quick' if quick else ''}`.",
        markdown_table(header, rows),
    ]
    return report(
        out_dir,
        "Study: penalty placement and mode recovery",
        sections,
        ["modes_over_time.png"],
        {"seeds": list(seeds), "modes_covered": results},
        config_settings(configs),
    )


def settings(quick: bool = False) -> Settings:
    """Each arm's fully resolved config, as run writes it under ``"settings"``."""
    return config_settings(arm_configs(quick))
