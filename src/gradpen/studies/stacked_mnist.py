"""``gradpen study stacked-mnist``: does a gradient penalty keep a GAN from dropping modes?

Stacked MNIST (three random digits of the shipped 5000 as the channels of a 3 x 28 x 28
image) has 1000 modes, the digit triples: the field's standard test of mode collapse. Three
arms, each the shipped recipe of ``configs/stackedmnist/`` (:func:`recipe`, kept equal to the
TOML files by a test) shortened to ``STEPS`` generator steps: the standard non-saturating GAN
without a penalty (``gan``), WGAN-GP (``wgan-gp``: Wasserstein loss, 5 critic steps per
generator step, lambda 10) and the non-saturating GAN with R1 + R2 (``r1r2``, gamma 10). The
networks are the same DCGAN-28 pair (width 32, no batch norm in the critic) in every arm.
Measured per run by the engine's final evaluation on 26000 samples (PacGAN's Table 2 count):
modes covered (of 1000), the KL of the mode histogram to uniform, each channel's class KL, and
the FD in the classifier's stacked feature space; during training, the modes covered by 10000
samples every ``EVERY`` steps. The report sets them beside PacGAN's Table 2.

CPU budget, measured single-threaded on the busy 2-core machine (10-30 rounds after one
warm-up round): 0.60 CPU s per generator step for ``wgan-gp``, 0.12 for ``gan``, 0.20 for
``r1r2``; with about 1.5 CPU minutes of evaluation per run (4 curve points of 10000 samples and
the final 26000), about 14, 4 and 6 CPU minutes per run, 72 CPU minutes for 3 arms x 3 seeds:
about 40 minutes of wall time with two worker processes on an idle 2-core machine, 60-75 when
it is busy. ``quick=True`` (tiny networks, a few steps, one seed, in-process) takes seconds and
is what the tests run.
"""

from __future__ import annotations

import dataclasses
import statistics
from pathlib import Path
from typing import Any

import torch

from gradpen.data.stacked import DIGIT_CLASSES, STACKED_CHANNELS, mode_index
from gradpen.metrics.classifier import load_classifier
from gradpen.metrics.stacked import PACGAN_SAMPLES, mode_statistics, score_images
from gradpen.plots import plot_overlaid, save_image_grid
from gradpen.report import markdown_table
from gradpen.studies._toolkit import (
    Overrides,
    Settings,
    config_settings,
    engine_config,
    mean_std_cell,
    report,
    run_jobs,
)
from gradpen.train.config import Config
from gradpen.train.loop import Trainer, TrainingDiverged

SEEDS = (0, 1, 2)
STEPS = 1200  # generator steps per study run (the recipes train 2000, WGAN-GP 5000)
EVERY = 300  # generator steps between points of the modes-over-training curve
CURVE_SAMPLES = 10000
GRID_IMAGES = 100
NUM_MODES = DIGIT_CLASSES**STACKED_CHANNELS
QUICK: dict[str, Any] = {
    "train.steps": 4,
    "generator.width": 4,
    "critic.width": 4,
    "log.eval_samples": 200,
}
QUICK_EVERY, QUICK_CURVE_SAMPLES = 2, 100

# The shipped recipes configs/stackedmnist/{gan,wgangp,r1r2}.toml, as typed overrides.
COMMON: dict[str, Any] = {
    "seed": 0,
    "data.name": "stacked-mnist",
    "data.conditional": False,
    "data.holdout": 0.2,
    "generator.kind": "dcgan28",
    "generator.norm": "batch",
    "generator.out": "tanh",
    "generator.noise": "gaussian",
    "generator.z_dim": 100,
    "generator.width": 32,
    "critic.kind": "dcgan28",
    "critic.norm": "none",
    "critic.width": 32,
    "train.steps": 2000,
    "train.n_generator": 1,
    "train.batch_size": 64,
    "log.every": 50,
    "log.checkpoint_every": 500,
    "log.eval_samples": PACGAN_SAMPLES,
}
NON_SATURATING: dict[str, Any] = {
    "train.loss": "ns",
    "train.n_critic": 1,
    "train.g_lr": 2e-4,
    "train.d_lr": 2e-4,
    "train.g_betas": [0.5, 0.999],
    "train.d_betas": [0.5, 0.999],
}
ARMS: dict[str, dict[str, Any]] = {
    "gan": NON_SATURATING | {"penalty.name": "none", "penalty.weight": 0.0},
    "wgan-gp": {
        "train.steps": 5000,
        "train.loss": "wgan",
        "train.n_critic": 5,
        "train.g_lr": 1e-4,
        "train.d_lr": 1e-4,
        "train.g_betas": [0.5, 0.9],
        "train.d_betas": [0.5, 0.9],
        "penalty.name": "wgan-gp",
        "penalty.weight": 10.0,
    },
    "r1r2": NON_SATURATING | {"penalty.name": "r1r2", "penalty.weight": 10.0},
}
RECIPE_FILES = {"gan": "gan.toml", "wgan-gp": "wgangp.toml", "r1r2": "r1r2.toml"}
# Lin et al. 2018, "PacGAN: the power of two samples in generative adversarial networks",
# Table 2 (the VEEGAN setting; DCGAN and VEEGAN as reported by Srivastava et al. 2017):
# modes covered (of 1000) and KL to uniform, on 26000 samples.
PACGAN_TABLE = {"DCGAN": (99, 3.40), "VEEGAN": (150, 2.95), "PacDCGAN2": (1000, 0.06)}


def recipe(arm: str, *layers: Overrides) -> Config:
    """The shipped recipe of ``arm`` with ``layers`` of typed overrides applied.

    Args:
        arm: ``"gan"``, ``"wgan-gp"`` or ``"r1r2"``.
        layers: dotted-key overrides, later ones winning.

    Returns:
        The resolved config.
    """
    return engine_config(COMMON, ARMS[arm], *layers)


def arm_configs(quick: bool = False) -> dict[str, Config]:
    """Each arm's config (seed 0): its recipe shortened to the study's length.

    Args:
        quick: the seconds-long version the tests run.

    Returns:
        The resolved config per arm.
    """
    study = {
        "train.steps": STEPS,
        "log.checkpoint_every": STEPS,
        "log.progress": False,
    }
    return {arm: recipe(arm, study, QUICK if quick else {}) for arm in ARMS}


def settings(quick: bool = False) -> Settings:
    """Each arm's fully resolved config, as run writes it under ``"settings"``."""
    return config_settings(arm_configs(quick))


def modes_of(trainer: Trainer, n: int) -> tuple[int, list[int]]:
    """Modes covered by ``n`` samples of the trainer's generator, and its sorted mode counts."""
    modes = mode_index(score_images(trainer.samples01(n)[0], load_classifier()).digits)
    counts = torch.bincount(modes, minlength=NUM_MODES)
    covered = int(mode_statistics(modes, NUM_MODES)["modes_covered"])
    return covered, counts.sort(descending=True).values.tolist()


def run_arm(
    config: Config, seed: int, run_dir: Path, every: int, curve_samples: int, grid: Path | None
) -> dict[str, Any]:
    """Train one run through the engine, counting modes along the way; then evaluate it.

    Args:
        config: the arm's config (its seed is replaced by ``seed``).
        seed: the run's seed.
        run_dir: the run directory (its ``config.toml`` and a final checkpoint).
        every: generator steps between curve points.
        curve_samples: samples per curve point.
        grid: where to draw 100 of its samples (None: nowhere).

    Returns:
        The engine's evaluation (or ``diverged``), the curve ``[[step, modes], ...]`` and the
        sorted mode counts of the last curve point.
    """
    trainer = Trainer(dataclasses.replace(config, seed=seed), run_dir)
    trainer.prepare_run_dir()
    curve: list[list[int]] = []
    counts: list[int] = []
    try:
        while trainer.step < config.train.steps:
            trainer.train_round()
            if trainer.step % every == 0 or trainer.step == config.train.steps:
                modes, counts = modes_of(trainer, curve_samples)
                curve.append([trainer.step, modes])
        trainer.save_checkpoint()
        result = trainer.evaluate() | {"diverged": False}
    except TrainingDiverged as error:
        result = {"diverged": True, "error": str(error)}
    if grid is not None:
        save_image_grid(trainer.samples01(GRID_IMAGES)[0], grid, nrow=10)
    return result | {"curve": curve, "sorted_counts": counts}


def _row(arm: str, runs: list[dict[str, Any]]) -> list[str]:
    done = [r for r in runs if not r["diverged"]]

    def cell(key: str, digits: int = 3) -> str:
        return mean_std_cell([float(r[key]) for r in done], digits)

    worst_channel = mean_std_cell([max(r["channel_kl"]) for r in done])
    diverged = len(runs) - len(done)
    return [
        arm,
        f"{len(runs)} ({diverged})",
        cell("modes_covered", 4),
        cell("mode_kl"),
        worst_channel,
        cell("fd"),
    ]


def run(out_dir: Path, *, quick: bool = False, workers: int = 2) -> Path:
    """Train every arm for every seed and report modes, KL and FD against PacGAN's table.

    Args:
        out_dir: the report directory.
        quick: the seconds-long version the tests run (in this process).
        workers: runs at a time, each in its own one-thread process.

    Returns:
        The path of ``report.md``.
    """
    every = QUICK_EVERY if quick else EVERY
    curve_samples = QUICK_CURVE_SAMPLES if quick else CURVE_SAMPLES
    seeds = SEEDS[:1] if quick else SEEDS
    configs = arm_configs(quick)
    jobs = {
        (arm, seed): (
            config,
            seed,
            out_dir / "runs" / f"{arm}-seed{seed}",
            every,
            curve_samples,
            out_dir / f"samples_{arm}.png" if seed == seeds[0] else None,
        )
        for arm, config in configs.items()
        for seed in seeds
    }
    done = run_jobs(
        run_arm,
        jobs,
        workers=1 if quick else workers,
        desc="stacked-mnist runs",
        store=out_dir / "finished",
    )
    by_arm = {arm: [done[arm, seed] for seed in seeds] for arm in configs}
    rows = [_row(arm, runs) for arm, runs in by_arm.items()]
    floor = by_arm["wgan-gp"][0]
    if not floor["diverged"]:
        rows.append(
            [
                "real digits (the floor)",
                "—",
                str(floor["floor_modes_covered"]),
                f"{floor['floor_mode_kl']:.3g}",
                "—",
                f"{floor['floor_fd']:.3g}",
            ]
        )
    rows += [
        [f"PacGAN Table 2: {name}", "—", str(modes), f"{kl:.2f}", "—", "—"]
        for name, (modes, kl) in PACGAN_TABLE.items()
    ]
    header = ["arm", "runs (diverged)", f"modes (of {NUM_MODES})", "KL", "worst channel KL", "FD"]
    curves = {}
    histograms = {}
    for arm, runs in by_arm.items():
        finished = [r for r in runs if r["curve"]]
        if finished:
            length = min(len(r["curve"]) for r in finished)
            steps = [finished[0]["curve"][i][0] for i in range(length)]
            means = [statistics.fmean(r["curve"][i][1] for r in finished) for i in range(length)]
            curves[arm] = (steps, means)
        if runs[0]["sorted_counts"]:
            histograms[f"{arm} (seed {seeds[0]})"] = (
                list(range(1, NUM_MODES + 1)),
                runs[0]["sorted_counts"],
            )
    plot_overlaid(
        curves,
        out_dir / "modes_over_training.png",
        xlabel="generator step",
        ylabel=f"modes covered by {curve_samples} samples",
        title="Stacked MNIST: modes over training (mean over seeds)",
    )
    plot_overlaid(
        histograms,
        out_dir / "mode_histogram.png",
        xlabel="mode rank",
        ylabel=f"samples (of {curve_samples})",
        title="Stacked MNIST: mode counts at the end, sorted",
    )
    steps = configs["gan"].train.steps
    sections = [
        f"Each arm is its recipe in `configs/stackedmnist/` shortened to {steps} generator "
        f"steps (the recipes train {COMMON['train.steps']}, WGAN-GP "
        f"{ARMS['wgan-gp']['train.steps']}), on {len(seeds)} seed(s); the "
        f"numbers are means ± std over seeds of the engine's final evaluation on "
        f"{configs['gan'].log.eval_samples} samples. The floor is real training images scored "
        "the same way (what a perfect generator reaches with this classifier and sample count). "
        "PacGAN's rows are copied from Lin et al. 2018 (PacGAN), Table 2, 26000 samples, with "
        "their networks (the VEEGAN setting), not these. Command: "
        f"`gradpen study stacked-mnist{' --quick' if quick else ''}`.",
        markdown_table(header, rows),
        f"Figures: the modes covered by {curve_samples} samples over training (mean over "
        "seeds), the mode counts at the end sorted (seed 0), and samples of each arm (seed 0; "
        "the three channels are the three digits).",
    ]
    figures = ["modes_over_training.png", "mode_histogram.png"]
    figures += [f"samples_{arm}.png" for arm in configs]
    results = {
        "seeds": list(seeds),
        "pacgan_table2": {k: list(v) for k, v in PACGAN_TABLE.items()},
        "runs": {arm: runs for arm, runs in by_arm.items()},
    }
    return report(
        out_dir,
        "Study: Stacked MNIST, mode coverage with and without a gradient penalty",
        sections,
        figures,
        results,
        config_settings(configs),
    )
