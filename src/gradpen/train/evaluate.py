"""Evaluation, samples and plots of a run; shared by the loop and ``gradpen eval|sample``.

Each function takes what it reads (a sampler, the batch source, the run's seed), not the
trainer. Evaluation draws its noise and reference samples from its own generators seeded from
the run's seed, so it gives the same numbers whenever it runs and never perturbs training.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from gradpen.data.mnist import ImageDataset, from_range
from gradpen.data.stacked import StackedDigits
from gradpen.errors import UserError
from gradpen.plots import plot_critic_surface, plot_curves, save_image_grid
from gradpen.train.config import USER_IMAGE_DATA
from gradpen.train.data import BatchSource

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


def _eval_seed(seed: int) -> int:
    return seed + EVAL_SEED_OFFSET


def sample_images01(
    sampler: nn.Module, data: BatchSource, n: int, *, seed: int, device: torch.device
) -> tuple[Tensor, Tensor | None]:
    """Generator samples as the CLI exports them: points as they are, images in [0, 1].

    Args:
        sampler: the generator (the EMA copy when the run keeps one).
        data: the run's batch source (toy or images, conditional or not, output range).
        n: the number of samples.
        seed: the run's seed (the evaluation stream is derived from it).
        device: where the generator runs.

    Returns:
        ``x`` on the CPU, ``(n, 2)`` points or ``(n, C, H, W)`` images in [0, 1], and the
        labels ``(n,)`` of a conditional run (else None).
    """
    x, y = draw_samples(
        sampler,
        n,
        num_classes=data.num_classes if data.conditional else 0,
        seed=_eval_seed(seed),
        device=device,
    )
    if data.toy is None:
        x = from_range(x, data.output_range).clamp(0, 1)
    return x.float(), y


def evaluate(
    sampler: nn.Module,
    data: BatchSource,
    *,
    n: int,
    seed: int,
    device: torch.device,
    inception: str | Path | None = None,
) -> dict[str, Any]:
    """The run's quality metrics from ``n`` samples.

    Toys: coverage, quality and W1. Digits: FD, KID, precision, recall and classes in the shipped
    classifier's feature space. Stacked MNIST: modes covered, the mode KL, each channel's class
    KL and FD. Each with the real-data floor at the same sample size (``floor_*``). Images the
    shipped classifier does not score (the user's images, other shapes) get only
    ``metrics_skipped``, saying why. With an ``inception`` TorchScript file, images also get
    ``inception_fid``, ``inception_kid_mean`` and ``inception_kid_std`` against ``n`` held-out
    images (all of them for a smaller set). Other arguments as in :func:`sample_images01`.
    """
    samples, labels = sample_images01(sampler, data, n, seed=seed, device=device)
    if data.toy is not None:
        if inception:
            raise UserError("Inception scores images; this run's data are 2-D points")
        from gradpen.metrics.toy import toy_metrics

        real = data.toy.sample(n, generator=torch.Generator().manual_seed(_eval_seed(seed) + 1))
        return toy_metrics(samples, data.toy, real)
    from gradpen.metrics.classifier import IMAGE_SIDE

    heldout, train_set = data.heldout, data.train_set
    if isinstance(train_set, StackedDigits) and isinstance(heldout, StackedDigits):
        result = _evaluate_stacked(samples, train_set, heldout, seed)
        reference = heldout.sample(n, torch.Generator().manual_seed(_eval_seed(seed) + 1))[0]
    else:
        assert isinstance(heldout, ImageDataset) and isinstance(train_set, ImageDataset)
        shape = tuple(train_set.images.shape[1:])
        if data.name in USER_IMAGE_DATA or shape != (1, IMAGE_SIDE, IMAGE_SIDE):
            result = {
                "metrics_skipped": f"the shipped classifier scores MNIST digits (1 x 28 x 28); "
                f"data {data.name!r} holds {' x '.join(map(str, shape))} images"
            }
        else:
            result = _evaluate_digits(samples, labels, train_set, heldout, seed)
        reference = heldout.images[:n]
    if inception:
        from gradpen.metrics.images import inception_metrics

        scores = inception_metrics(samples, reference, inception, device)
        result |= {f"inception_{k}": v for k, v in scores.items()}
    return result


def _evaluate_digits(
    samples: Tensor,
    labels: Tensor | None,
    train_set: ImageDataset,
    heldout: ImageDataset,
    seed: int,
) -> dict[str, Any]:
    """Digit metrics of ``samples`` (see :func:`gradpen.metrics.images.image_metrics`) against
    the held-out digits; the floor: as many training digits, scored alike."""
    from gradpen.metrics.classifier import load_classifier
    from gradpen.metrics.images import image_metrics

    classifier = load_classifier()  # one load for both scorings below
    result = image_metrics(samples, heldout.images, fake_labels=labels, classifier=classifier)
    # The floor: real training digits in place of the fakes, same count, same reference set, so
    # that it is what a perfect generator would score at this sample size.
    pick = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(_eval_seed(seed)))
    floor = image_metrics(
        train_set.images[pick[: len(samples)]], heldout.images, classifier=classifier
    )
    result |= {f"floor_{k}": floor[k] for k in ("fd", "kid_mean", "kid_std", "precision", "recall")}
    return result


def _evaluate_stacked(
    samples: Tensor, train_set: StackedDigits, heldout: StackedDigits, seed: int
) -> dict[str, Any]:
    """Stacked MNIST metrics of ``samples`` (see :func:`gradpen.metrics.stacked.coverage`) and
    their FD to as many held-out stacked images; the floor: as many training ones, scored alike."""
    from gradpen.metrics.classifier import load_classifier
    from gradpen.metrics.stacked import score_draws, score_images, stacked_statistics

    rng = torch.Generator().manual_seed(_eval_seed(seed))
    n = len(samples)
    classifier = load_classifier()
    reference = score_draws(heldout, torch.randint(len(heldout), (n,), generator=rng), classifier)
    floor_draws = score_draws(
        train_set, torch.randint(len(train_set), (n,), generator=rng), classifier
    )
    result = stacked_statistics(score_images(samples, classifier), reference)
    floor = stacked_statistics(floor_draws, reference)
    return result | {f"floor_{k}": floor[k] for k in ("modes_covered", "mode_kl", "fd")}


def save_sample_picture(
    sampler: nn.Module,
    critic: nn.Module,
    data: BatchSource,
    path: Path,
    *,
    seed: int,
    device: torch.device,
    title: str = "",
) -> Path:
    """The critic's value surface under real and generated points (2-D), or a grid of images.

    Arguments as in :func:`sample_images01`; ``critic`` draws the surface; returns ``path``.
    """
    if data.toy is not None:
        real = data.toy.sample(1000, generator=torch.Generator().manual_seed(_eval_seed(seed) + 2))
        fake, _ = sample_images01(sampler, data, 1000, seed=seed, device=device)
        return plot_critic_surface(critic, real, fake, path, title=title)
    images, _ = sample_images01(sampler, data, GRID_IMAGES, seed=seed, device=device)
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


def plot_curves_of(run_dir: Path) -> Path:
    """The training curves of ``run_dir``'s ``metrics.jsonl``, as ``curves.png`` beside it."""
    return plot_curves(read_metrics(run_dir), CURVE_KEYS, run_dir / "curves.png", title="training")
