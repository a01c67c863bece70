"""Scores for generated digits without Inception: features and predictions of the MNIST classifier.

`image_metrics` compares generated with real images by FD, KID and precision/recall in a feature
space (the shipped classifier's penultimate layer by default, or any `FeatureExtractor`, e.g.
`inception_extractor` for the standard FID), and reads the classifier's predictions for class
coverage, the KL of the predicted class histogram to uniform, and conditional accuracy.
`real_floor` is the same FD/KID between two disjoint halves of the real set: the value a perfect
generator would reach at that sample size, to print next to every result.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import torch
from torch import Tensor, nn

from gradpen.errors import UserError
from gradpen.metrics.classifier import IMAGE_SIDE, MnistClassifier, load_classifier, predict
from gradpen.metrics.frechet import frechet_distance, kid, precision_recall

INCEPTION_SIDE = 299
INCEPTION_CHANNELS = (1, 3)
KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000
MIN_CLASS_SHARE = 0.01


class FeatureExtractor(Protocol):
    """Maps images (N, C, H, W) in [0, 1] to features (N, D); the classifier's take
    (N, 1, 28, 28), Inception's any size with C = 1 or 3."""

    def __call__(self, images: Tensor) -> Tensor: ...


@torch.no_grad()
def _batched(
    function: Callable[[Tensor], Tensor], images: Tensor, batch_size: int, device: torch.device
) -> Tensor:
    """Apply function batch by batch on device, gathering the results on the CPU."""
    return torch.cat([function(batch.to(device)).cpu() for batch in images.split(batch_size)])


def classifier_extractor(
    model: MnistClassifier | None = None, device: str | torch.device = "cpu", batch_size: int = 500
) -> FeatureExtractor:
    """Penultimate features of the (shipped) MNIST classifier."""
    model = (model or load_classifier()).to(device).eval()
    return lambda images: _batched(model.features, images, batch_size, torch.device(device))


def inception_extractor(
    path: str | Path, device: str | torch.device = "cpu", batch_size: int = 100
) -> FeatureExtractor:
    """Pool features (2048) of a local TorchScript Inception, such as StyleGAN2-ADA's and
    clean-fid's `inception-2015-12-05.pt`, called as `model(images, return_features=True)`.

    Takes images (N, C, H, W) in [0, 1] of any size, C = 1 (grayscale, repeated to 3 channels)
    or 3. As clean-fid (Parmar et al. 2022) argues, they are first quantized to uint8 (what a
    saved image holds), then resized to 299 x 299 by an antialiased bicubic filter (PIL's, to
    within 0.003 of 255: the tests compare them), and the model gets those float values in
    [0, 255] (unclamped, unquantized, as clean-fid passes them). Nothing is downloaded: the file
    must already be on disk.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"Inception weights {path} not found; give the path of a TorchScript file")
    model = torch.jit.load(str(path), map_location=device).eval()

    def to_inception(images: Tensor) -> Tensor:
        return model(inception_input(images), return_features=True)

    return lambda images: _batched(to_inception, images, batch_size, torch.device(device))


def inception_input(images: Tensor) -> Tensor:
    """What :func:`inception_extractor` feeds the model: (N, 3, 299, 299) floats in about [0, 255].

    Args:
        images: (N, C, H, W) in [0, 1], C = 1 or 3, any H and W.

    Returns:
        The uint8-quantized images, resized antialiased-bicubic, grayscale repeated to 3 channels.
    """
    if images.ndim != 4 or images.shape[1] not in INCEPTION_CHANNELS:
        raise UserError(
            f"Inception takes images (N, 1, H, W) (grayscale, repeated to RGB) or (N, 3, H, W), "
            f"got {tuple(images.shape)}"
        )
    pixels = (images.float().clamp(0, 1) * 255).round()
    resized = nn.functional.interpolate(
        pixels,
        size=(INCEPTION_SIDE, INCEPTION_SIDE),
        mode="bicubic",
        antialias=True,
        align_corners=False,
    )
    return resized.expand(-1, 3, -1, -1) if resized.shape[1] == 1 else resized


def _check_images(name: str, images: Tensor, channels: int = 1) -> Tensor:
    """``images`` as float32 on the CPU after checking: (N, channels, 28, 28), N >= 2, [0, 1]."""
    if images.ndim != 4 or images.shape[1:] != (channels, IMAGE_SIDE, IMAGE_SIDE):
        raise UserError(f"{name} must be (N, {channels}, 28, 28), got {tuple(images.shape)}")
    if images.shape[0] < 2:
        raise UserError(f"{name} needs at least 2 images, got {images.shape[0]}")
    low, high = float(images.min()), float(images.max())
    if low < -1e-6 or high > 1 + 1e-6:
        raise UserError(
            f"{name} must be in [0, 1] (got [{low:.3g}, {high:.3g}]); "
            "map tanh outputs back with gradpen.data.from_range"
        )
    return images.detach().float().cpu()


def kl_to_uniform(counts: Tensor) -> float:
    """KL(p || uniform) of the histogram ``counts`` (K,): sum of p log(K p), from 0 to log K.

    Args:
        counts: how many samples fell in each of the K bins (empty bins count: K is its length).

    Returns:
        The KL divergence in nats (empty bins contribute 0).
    """
    share = counts.double() / counts.sum()
    present = share > 0
    return float((share[present] * (share[present] * len(counts)).log()).sum())


def class_statistics(
    predicted: Tensor, labels: Tensor | None = None, num_classes: int = 10
) -> dict[str, float | int]:
    """classes_covered (classes predicted for at least MIN_CLASS_SHARE of the images), class_kl
    (KL of the predicted class histogram to uniform, 0 to log 10), and cond_accuracy with labels."""
    counts = torch.bincount(predicted, minlength=num_classes)
    share = counts.double() / len(predicted)
    stats: dict[str, float | int] = {
        "classes_covered": int((share >= MIN_CLASS_SHARE).sum()),
        "class_kl": kl_to_uniform(counts),
    }
    if labels is not None:
        if labels.shape != predicted.shape:
            raise UserError(f"labels must be ({len(predicted)},), got {tuple(labels.shape)}")
        stats["cond_accuracy"] = float((predicted == labels.cpu()).double().mean())
    return stats


def _feature_distances(feat_a: Tensor, feat_b: Tensor) -> dict[str, float]:
    kid_mean, kid_std = kid(feat_a, feat_b, KID_SUBSETS, KID_SUBSET_SIZE)
    return {"fd": frechet_distance(feat_a, feat_b), "kid_mean": kid_mean, "kid_std": kid_std}


def image_metrics(
    fake_images: Tensor,
    real_images: Tensor,
    fake_labels: Tensor | None = None,
    extractor: FeatureExtractor | None = None,
    classifier: MnistClassifier | None = None,
    device: str | torch.device = "cpu",
) -> dict[str, float | int]:
    """fd, kid_mean, kid_std, precision, recall (k = 3) in the extractor's feature space, plus
    classes_covered, class_kl and (with fake_labels) cond_accuracy from the classifier."""
    fake = _check_images("fake_images", fake_images)
    real = _check_images("real_images", real_images)
    classifier = (classifier or load_classifier()).to(device).eval()
    extractor = extractor or classifier_extractor(classifier, device)
    fake_features, real_features = extractor(fake), extractor(real)
    result = _feature_distances(fake_features, real_features)
    result["precision"], result["recall"] = precision_recall(real_features, fake_features)
    predicted = predict(classifier, fake.to(device)).cpu()
    result.update(class_statistics(predicted, fake_labels))
    return result


def inception_metrics(
    fake_images: Tensor,
    real_images: Tensor,
    inception: str | Path,
    device: str | torch.device = "cpu",
) -> dict[str, float]:
    """FID and KID in the pool features of a local TorchScript Inception (see
    :func:`inception_extractor`), for images of any size and 1 or 3 channels.

    Args:
        fake_images: generated (N, C, H, W) in [0, 1].
        real_images: reference (M, C', H', W') in [0, 1].
        inception: the TorchScript file.
        device: where the model runs.

    Returns:
        ``fid``, ``kid_mean`` and ``kid_std``.
    """
    for name, images in (("fake_images", fake_images), ("real_images", real_images)):
        low, high = float(images.min()), float(images.max())
        if len(images) < 2 or low < -1e-6 or high > 1 + 1e-6:
            raise UserError(
                f"{name} must hold at least 2 images in [0, 1], got {len(images)} in "
                f"[{low:.3g}, {high:.3g}]"
            )
    extractor = inception_extractor(inception, device)
    distances = _feature_distances(extractor(fake_images), extractor(real_images))
    return {"fid": distances.pop("fd"), **distances}


def real_floor(
    real_images: Tensor, extractor: FeatureExtractor | None = None, seed: int = 0
) -> dict[str, float]:
    """FD and KID between two disjoint random halves of the real images (the noise floor)."""
    real = _check_images("real_images", real_images)
    if len(real) < 4:
        raise UserError(f"real_floor needs at least 4 images, got {len(real)}")
    extractor = extractor or classifier_extractor()
    order = torch.randperm(len(real), generator=torch.Generator().manual_seed(seed))
    half = len(real) // 2
    features = extractor(real)
    return _feature_distances(features[order[:half]], features[order[half : 2 * half]])
