"""Shared machinery of the toy studies: short engine runs on 2-D data, read back as numbers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from gradpen.metrics.gradnorm import gradient_norm_stats
from gradpen.penalties import interpolate
from gradpen.train.config import load
from gradpen.train.evaluate import read_metrics
from gradpen.train.loop import Trainer

# A small, quick recipe (seconds to a minute per run on one core); studies override parts.
BASE = [
    "data.name='25gaussians'",
    "generator.width=128",
    "critic.width=128",
    "train.steps=1500",
    "train.n_critic=5",
    "train.batch_size=256",
    "train.g_lr=1e-3",
    "train.d_lr=1e-3",
    "train.lr_decay='linear'",
    "penalty.name='wgan-gp'",
    "penalty.weight=0.1",
    "log.every=50",
    "log.checkpoint_every=100000",
    "log.eval_samples=2500",
    "log.progress=false",
]
VANISHING = 1e-3  # an input-gradient norm below this counts as vanished


def toy_trainer(overrides: list[str], run_dir: Path, *, seed: int = 0) -> Trainer:
    """A trainer for ``BASE`` with ``overrides`` applied (later entries win)."""
    return Trainer(load(None, [*BASE, f"seed={seed}", *overrides]), run_dir)


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


def run_toy(overrides: list[str], run_dir: Path, *, seed: int = 0) -> dict[str, Any]:
    """Train, evaluate, and return the summary, the gradient profile and the metric records."""
    trainer = toy_trainer(overrides, run_dir, seed=seed)
    summary = trainer.train()
    summary.pop("plots", None)
    summary |= gradient_profile(trainer)
    summary["records"] = read_metrics(run_dir)
    return summary


def quick_overrides(quick: bool) -> list[str]:
    """The seconds-long setting the tests use."""
    return ["train.steps=30", "log.every=10", "log.eval_samples=300"] if quick else []
