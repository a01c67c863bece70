"""Evaluation, samples and plots of a run; shared by the loop and ``gradpen eval|sample``.

Evaluation draws its noise and reference samples from its own seeded generators, so it gives the
same numbers whenever it runs and never perturbs training.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from gradpen.data.mnist import from_range
from gradpen.plots import plot_critic_surface, plot_curves, save_image_grid

if TYPE_CHECKING:
    from gradpen.train.loop import Trainer

EVAL_SEED_OFFSET = 104729
GRID_IMAGES = 100
CURVE_KEYS = ["d_loss", "g_loss", "penalty", "wasserstein", "gnorm_interp_mean", "gnorm_real_mean"]


@torch.no_grad()
def draw_samples(
    generator: nn.Module,
    n: int,
    *,
    num_classes: int,
    seed: int,
    device: torch.device,
    batch_size: int = 1000,
) -> tuple[Tensor, Tensor | None]:
    """``n`` samples on the CPU (labels cycling 0..C-1 when conditional), from a seeded RNG."""
    rng = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % num_classes if num_classes else None
    was_training = generator.training
    generator.eval()
    chunks = []
    for start in range(0, n, batch_size):
        count = min(batch_size, n - start)
        z = generator.sample_noise(count, generator=rng, device=device)
        if labels is None:
            chunks.append(generator(z).cpu())
        else:
            chunks.append(generator(z, labels[start : start + count].to(device)).cpu())
    generator.train(was_training)
    return torch.cat(chunks), labels


def _eval_seed(trainer: Trainer) -> int:
    return trainer.config.seed + EVAL_SEED_OFFSET


def sample_images01(trainer: Trainer, n: int) -> tuple[Tensor, Tensor | None]:
    """Generator samples as the CLI exports them: points as they are, images in [0, 1]."""
    x, y = draw_samples(
        trainer.sampler,
        n,
        num_classes=trainer.data.num_classes if trainer.data.conditional else 0,
        seed=_eval_seed(trainer),
        device=trainer.device,
    )
    if not trainer.is_toy:
        x = from_range(x, trainer.data.output_range).clamp(0, 1)
    return x.float(), y


def evaluate(trainer: Trainer) -> dict[str, Any]:
    """The run's quality metrics: toy coverage, quality and W1; or image FD, KID, precision,
    recall and classes, with the real-data floor at the same sample size (``floor_*``)."""
    n = trainer.config.log.eval_samples
    samples, labels = sample_images01(trainer, n)
    if trainer.is_toy:
        from gradpen.metrics.toy import toy_metrics

        toy = trainer.data.toy
        assert toy is not None
        real = toy.sample(n, generator=torch.Generator().manual_seed(_eval_seed(trainer) + 1))
        return toy_metrics(samples, toy, real)
    from gradpen.metrics.classifier import load_classifier
    from gradpen.metrics.images import image_metrics

    heldout, train_set = trainer.data.heldout, trainer.data.train_set
    assert heldout is not None and train_set is not None
    classifier = load_classifier()  # one load for both scorings below
    result = image_metrics(samples, heldout.images, fake_labels=labels, classifier=classifier)
    # The floor: real training digits in place of the fakes, same count, same reference set, so
    # that it is what a perfect generator would score at this sample size.
    pick = torch.randperm(
        len(train_set), generator=torch.Generator().manual_seed(_eval_seed(trainer))
    )
    floor = image_metrics(train_set.images[pick[:n]], heldout.images, classifier=classifier)
    result |= {f"floor_{k}": floor[k] for k in ("fd", "kid_mean", "kid_std", "precision", "recall")}
    return result


def save_sample_picture(trainer: Trainer, path: Path) -> Path:
    """The critic's value surface under real and generated points, or a grid of digits."""
    if trainer.is_toy:
        toy = trainer.data.toy
        assert toy is not None
        real = toy.sample(1000, generator=torch.Generator().manual_seed(_eval_seed(trainer) + 2))
        fake, _ = sample_images01(trainer, 1000)
        return plot_critic_surface(trainer.D, real, fake, path, title=f"step {trainer.step}")
    images, _ = sample_images01(trainer, GRID_IMAGES)
    return save_image_grid(images, path, nrow=10)


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The records of ``metrics.jsonl`` (a line torn by a crash is skipped)."""
    path = run_dir / "metrics.jsonl"
    records = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def write_plots(trainer: Trainer) -> list[Path]:
    """The end-of-run pictures: curves, and the final surface or sample grid."""
    run_dir = trainer.run_dir
    paths = [
        plot_curves(read_metrics(run_dir), CURVE_KEYS, run_dir / "curves.png", title="training"),
        save_sample_picture(
            trainer, run_dir / ("surface.png" if trainer.is_toy else "samples.png")
        ),
    ]
    return paths


def save_npz(path: Path, x: Tensor, y: Tensor | None) -> Path:
    """Samples as ``x`` (float32) and, for conditional runs, ``y`` (int64) in an .npz file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"x": x.numpy().astype(np.float32)}
    if y is not None:
        arrays["y"] = y.numpy().astype(np.int64)
    np.savez(path, **arrays)
    return path
