"""Stacked MNIST scores: modes covered and the KL of the mode histogram to uniform.

Each channel of a (N, 3, 28, 28) image is classified by the shipped MNIST classifier; the three
predicted digits, read as one number, are the image's mode (of 1000). As in VEEGAN (Srivastava
et al. 2017) and PacGAN (Lin et al. 2018, Table 2, 26000 samples): a mode is covered when at
least one sample falls in it, and the KL is KL(p_model || uniform) of the mode histogram. The
KL of the joint histogram is about the sum of the channels' class-histogram KLs (``channel_kl``)
plus a sampling floor near (1000 - 1) / (2 N), 0.019 at N = 26000.

The Frechet distance is taken in the classifier's feature space of a stacked image: the
penultimate features of its channels, concatenated (C x 128), so that it sees each channel's
digits and the dependence between channels. Real stacked images are scored by classifying each
of their source digits once and looking the triples up (:func:`score_draws`): exact, and as
cheap for 26000 draws as for one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from gradpen.data.stacked import DIGIT_CLASSES, StackedDigits, mode_index
from gradpen.metrics.classifier import MnistClassifier, load_classifier
from gradpen.metrics.frechet import frechet_distance
from gradpen.metrics.images import _check_images, kl_to_uniform

PACGAN_SAMPLES = 26000  # the sample count of PacGAN's Table 2 (and VEEGAN's)
BATCH = 1000


@dataclass
class StackedScores:
    """The classifier's reading of N stacked images.

    Attributes:
        digits: int64 ``(N, C)``, the predicted digit of each channel.
        features: float32 ``(N, C * 128)``, each channel's penultimate features, joined.
    """

    digits: Tensor
    features: Tensor


@torch.no_grad()
def score_images(
    images: Tensor, classifier: MnistClassifier, device: str | torch.device = "cpu"
) -> StackedScores:
    """Classify every channel of every image, one classifier pass per digit.

    Args:
        images: ``(N, C, 28, 28)`` in [0, 1] (C = 1: plain digits).
        classifier: the MNIST classifier (in eval mode).
        device: where it runs.

    Returns:
        The scores, on the CPU.
    """
    n, channels = images.shape[:2]
    classifier = classifier.to(device).eval()
    digits, features = [], []
    for batch in images.reshape(n * channels, 1, *images.shape[2:]).split(BATCH):
        hidden = classifier.body(batch.to(device))
        digits.append(classifier.head(hidden).argmax(dim=1).cpu())
        features.append((hidden / classifier.feature_scale).cpu())
    return StackedScores(torch.cat(digits).reshape(n, channels), torch.cat(features).reshape(n, -1))


def score_draws(
    dataset: StackedDigits,
    index: Tensor,
    classifier: MnistClassifier,
    device: str | torch.device = "cpu",
) -> StackedScores:
    """The scores of ``dataset[index]``, equal to :func:`score_images` of those images.

    Args:
        dataset: the stacked digits.
        index: int64 ``(N,)`` indices into ``dataset``.
        classifier: the MNIST classifier.
        device: where it runs.

    Returns:
        The scores of the N images, from one classification of each digit they use.
    """
    used, picks = dataset.digit_indices(index).unique(return_inverse=True)  # picks: (N, C)
    per_digit = score_images(dataset.digits.images[used], classifier, device)
    return StackedScores(
        per_digit.digits[picks, 0], per_digit.features[picks].reshape(len(index), -1)
    )


def mode_statistics(modes: Tensor, num_modes: int) -> dict[str, float | int]:
    """Modes covered (at least one sample) and the KL of the mode histogram to uniform.

    Args:
        modes: int64 ``(N,)`` in ``[0, num_modes)``.
        num_modes: the number of modes (1000 for three stacked digits).

    Returns:
        ``modes_covered`` (0..num_modes) and ``mode_kl`` (nats, 0 to log num_modes).
    """
    counts = torch.bincount(modes, minlength=num_modes)
    return {"modes_covered": int((counts > 0).sum()), "mode_kl": kl_to_uniform(counts)}


def coverage(scores: StackedScores) -> dict[str, float | int | list[float]]:
    """``modes_covered`` and ``mode_kl`` (see :func:`mode_statistics`), and ``channel_kl``: each
    channel's class-histogram KL to uniform (C values)."""
    channels = scores.digits.shape[1]
    result: dict[str, float | int | list[float]] = dict(
        mode_statistics(mode_index(scores.digits), DIGIT_CLASSES**channels)
    )
    result["channel_kl"] = [
        kl_to_uniform(torch.bincount(scores.digits[:, c], minlength=DIGIT_CLASSES))
        for c in range(channels)
    ]
    return result


def stacked_statistics(
    fake: StackedScores, real: StackedScores
) -> dict[str, float | int | list[float]]:
    """:func:`coverage` of ``fake``, and ``fd``: the Frechet distance of its features to
    ``real``'s."""
    return coverage(fake) | {"fd": frechet_distance(fake.features, real.features)}


def stacked_metrics(
    fake_images: Tensor,
    real_images: Tensor,
    classifier: MnistClassifier | None = None,
    device: str | torch.device = "cpu",
    channels: int = 3,
) -> dict[str, float | int | list[float]]:
    """Mode coverage of generated stacked digits, and their distance to real ones.

    Args:
        fake_images: generated ``(N, C, 28, 28)`` in [0, 1]; PacGAN counts modes on 26000.
        real_images: reference stacked images ``(M, C, 28, 28)`` in [0, 1] (held out).
        classifier: the MNIST classifier (the shipped one when None).
        device: where the classifier runs.
        channels: C, the digits stacked per image.

    Returns:
        ``modes_covered`` (of 10^C), ``mode_kl``, ``channel_kl`` and ``fd`` (see
        :func:`stacked_statistics`).
    """
    fake = _check_images("fake_images", fake_images, channels)
    real = _check_images("real_images", real_images, channels)
    classifier = classifier or load_classifier()
    return stacked_statistics(
        score_images(fake, classifier, device), score_images(real, classifier, device)
    )
