"""Shared machinery of the toy studies: short engine runs on 2-D data, read back as numbers."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from gradpen.metrics.gradnorm import gradient_norm_stats
from gradpen.penalties import interpolate
from gradpen.studies._toolkit import Overrides, engine_config
from gradpen.train.config import Config
from gradpen.train.evaluate import read_metrics
from gradpen.train.loop import Trainer

# A small, quick recipe (seconds to a minute per run on one core); studies override parts.
BASE: dict[str, Any] = {
    "data.name": "25gaussians",
    "generator.width": 128,
    "critic.width": 128,
    "train.steps": 1500,
    "train.n_critic": 5,
    "train.batch_size": 256,
    "train.g_lr": 1e-3,
    "train.d_lr": 1e-3,
    "train.lr_decay": "linear",
    "penalty.name": "wgan-gp",
    "penalty.weight": 0.1,
    "log.every": 50,
    "log.checkpoint_every": 100000,
    "log.eval_samples": 2500,
    "log.progress": False,
}
QUICK: dict[str, Any] = {"train.steps": 30, "log.every": 10, "log.eval_samples": 300}
VANISHING = 1e-3  # an input-gradient norm below this counts as vanished


def toy_config(*layers: Overrides, quick: bool = False) -> Config:
    """``BASE`` with ``layers`` of overrides applied (later ones win), and ``QUICK`` if asked.

    Args:
        layers: typed dotted-key overrides (``{"penalty.weight": 2.0}``).
        quick: shrink to the seconds-long setting the tests use.

    Returns:
        The resolved config (seed 0 unless a layer sets ``seed``).
    """
    return engine_config(BASE, *layers, QUICK if quick else {})


def toy_trainer(config: Config, run_dir: Path, *, seed: int = 0) -> Trainer:
    """A trainer for ``config`` with its seed replaced by ``seed``."""
    return Trainer(dataclasses.replace(config, seed=seed), run_dir)


def gradient_profile(trainer: Trainer, n: int = 1000, seed: int = 0) -> dict[str, float]:
    """Mean input-gradient norm and the vanishing fraction at reals, fakes and interpolates."""
    rng = torch.Generator().manual_seed(seed)
    toy = trainer.data.toy
    assert toy is not None
    real = toy.sample(n, generator=rng).to(trainer.device)
    with torch.no_grad():
        fake = trainer.sampler(
            trainer.sampler.sample_noise(n, generator=rng, device=trainer.device)
        )
    points = {"real": real, "fake": fake, "interp": interpolate(real, fake, generator=rng)}
    stats = {}
    for name, values in gradient_norm_stats(trainer.D, points, below=VANISHING).items():
        stats[f"gnorm_{name}"] = values["mean"]
        stats[f"vanishing_{name}"] = values["frac_below"]
    return stats


def run_toy(config: Config, run_dir: Path, *, seed: int = 0) -> dict[str, Any]:
    """Train, evaluate, and return the summary, the gradient profile and the metric records."""
    trainer = toy_trainer(config, run_dir, seed=seed)
    summary = trainer.train()
    summary.pop("plots", None)
    summary |= gradient_profile(trainer)
    summary["records"] = read_metrics(run_dir)
    return summary
