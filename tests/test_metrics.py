"""Metrics pinned on cases solvable by hand, and the shipped MNIST classifier's accuracy."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor

from gradpen.data import get_toy
from gradpen.errors import UserError
from gradpen.metrics.classifier import (
    WEIGHTS_NAME,
    accuracy,
    default_assets_dir,
    load_classifier,
    load_classifier_info,
    mnist5k_split,
)
from gradpen.metrics.frechet import frechet_distance, frechet_from_moments, kid, precision_recall
from gradpen.metrics.gradnorm import grad_norm_stats
from gradpen.metrics.images import (
    class_statistics,
    image_metrics,
    inception_extractor,
    inception_input,
    inception_metrics,
    real_floor,
)
from gradpen.metrics.toy import toy_metrics, wasserstein1

PERFECT_HIGH_QUALITY = 1 - math.exp(-4.5)  # mass of a 2-D Gaussian within 3 std


@pytest.mark.parametrize("name, modes", [("8gaussians", 8), ("25gaussians", 25)])
def test_exact_draws_cover_every_mode(name: str, modes: int) -> None:
    toy = get_toy(name)
    samples = toy.sample(20_000, generator=torch.Generator().manual_seed(0))
    metrics = toy_metrics(samples, toy)
    assert metrics["modes_covered"] == modes
    assert metrics["high_quality"] == pytest.approx(PERFECT_HIGH_QUALITY, abs=0.003)
    assert "w1" not in metrics


def test_one_center_covers_one_mode_and_three_std_is_the_border() -> None:
    toy = get_toy("25gaussians")
    center, std = toy.centers[7], toy.std
    inside = center + torch.tensor([2.9 * std, 0.0])
    outside = center + torch.tensor([0.0, 3.1 * std])
    metrics = toy_metrics(torch.stack([center, center, inside, outside]), toy)
    assert metrics["modes_covered"] == 1
    assert metrics["high_quality"] == pytest.approx(0.75)


def test_swissroll_gets_only_w1() -> None:
    toy = get_toy("swissroll")
    samples = toy.sample(300, generator=torch.Generator().manual_seed(0))
    assert set(toy_metrics(samples, toy, real=samples)) == {"w1"}


def test_w1_is_zero_to_itself_and_the_shift_length_when_shifted() -> None:
    points = torch.randn(300, 2, generator=torch.Generator().manual_seed(0))
    assert wasserstein1(points, points) == pytest.approx(0.0, abs=1e-9)
    shifted = points + torch.tensor([0.3, 0.4])
    metrics = toy_metrics(shifted, get_toy("8gaussians"), real=points)
    assert metrics["w1"] == pytest.approx(0.5, abs=1e-6)


def test_w1_with_unequal_sizes() -> None:
    two = torch.tensor([[0.0, 0.0], [2.0, 0.0]])
    assert wasserstein1(two, torch.tensor([[1.0, 0.0]])) == pytest.approx(1.0)


def test_frechet_closed_forms() -> None:
    # 1-D: (0 - 3)^2 + 1 + 4 - 2 * sqrt(1 * 4) = 10
    assert frechet_from_moments([0.0], [[1.0]], [3.0], [[4.0]]) == pytest.approx(10.0)
    # diagonal: |(1, 2)|^2 + (1 + 9 - 2 * 3) + (4 + 16 - 2 * 8) = 5 + 4 + 4
    diag = frechet_from_moments([0.0, 0.0], [[1, 0], [0, 4]], [1.0, 2.0], [[9, 0], [0, 16]])
    assert diag == pytest.approx(13.0)
    # non-diagonal S1 with S2 = I: tr S1 + 2 - 2 tr sqrt(S1), eigenvalues of S1 are 3 and 1
    mixed = frechet_from_moments([0.0, 0.0], [[2, 1], [1, 2]], [0.0, 0.0], [[1, 0], [0, 1]])
    assert mixed == pytest.approx(4.0 - 2.0 * (math.sqrt(3.0) + 1.0) + 2.0)


def test_frechet_distance_of_samples() -> None:
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(20_000, 2, generator=generator, dtype=torch.float64)
    b = 2.0 * torch.randn(20_000, 2, generator=generator, dtype=torch.float64) + 1.0
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    # N(0, I) vs N(1, 4 I) in 2-D: |mu|^2 = 2, per axis 1 + 4 - 2 * 2 = 1
    assert frechet_distance(a, b) == pytest.approx(4.0, abs=0.15)
    with pytest.raises(ValueError, match="dimensions differ"):
        frechet_distance(a, b[:, :1])


def test_kid_by_hand_and_near_zero_for_one_distribution() -> None:
    # k(x, y) = (x y + 1)^3 in 1-D: within {0, 1} and {0, 2}: 1 each; across: (1 + 1 + 1 + 27) / 4
    mean, std = kid(torch.tensor([[0.0], [1.0]]), torch.tensor([[0.0], [2.0]]), 1, 2)
    assert (mean, std) == (pytest.approx(1.0 + 1.0 - 2.0 * 7.5), 0.0)
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 1000, 8, generator=generator)
    same_mean, _ = kid(a, b, subsets=20, subset_size=500)
    shifted_mean, _ = kid(a, b + 1.0, subsets=20, subset_size=500)
    assert abs(same_mean) < 0.01 and shifted_mean > 0.5


def test_precision_recall_by_hand() -> None:
    points = torch.randn(100, 4, generator=torch.Generator().manual_seed(0))
    assert precision_recall(points, points) == (1.0, 1.0)
    # k = 1 radii: reals {0, 1, 2, 10} -> 1, 1, 1, 8; fakes {0.5, 5, 20} -> 4.5, 4.5, 15.
    real = torch.tensor([[0.0], [1.0], [2.0], [10.0]])
    fake = torch.tensor([[0.5], [5.0], [20.0]])
    precision, recall = precision_recall(real, fake, k=1)
    assert precision == pytest.approx(2 / 3) and recall == 1.0


def test_grad_norm_stats() -> None:
    stats = grad_norm_stats(torch.tensor([0.5, 1.0, 1.5, 3.0]))
    assert stats == {"mean": 1.5, "std": pytest.approx(math.sqrt(3.5 / 4)), "frac_below": 0.25}
    with pytest.raises(ValueError, match="non-empty"):
        grad_norm_stats(torch.zeros(2, 2))


def test_class_statistics_by_hand() -> None:
    stats = class_statistics(torch.tensor([0, 0, 1, 1]), labels=torch.tensor([0, 1, 1, 1]))
    assert stats == {
        "classes_covered": 2,
        "class_kl": pytest.approx(math.log(5)),
        "cond_accuracy": 0.75,
    }


def test_shipped_classifier_reaches_its_documented_accuracy() -> None:
    assert (default_assets_dir() / WEIGHTS_NAME).stat().st_size < 1_000_000
    _, heldout = mnist5k_split()
    documented = load_classifier_info()["heldout_accuracy"]
    assert accuracy(load_classifier(), heldout) == pytest.approx(documented, abs=0.002)
    assert documented > 0.97


def test_image_metrics_on_real_and_collapsed_digits() -> None:
    train, heldout = mnist5k_split()
    classifier = load_classifier()
    fake, fake_labels, reference = heldout.images[::2], heldout.labels[::2], train.images[::16]
    real = image_metrics(fake, reference, fake_labels, classifier=classifier)
    assert real["classes_covered"] == 10 and real["class_kl"] < 0.01
    assert real["cond_accuracy"] > 0.97 and min(real["precision"], real["recall"]) > 0.6
    one_digit = heldout.images[heldout.labels == 1][:1].expand(200, -1, -1, -1)
    collapsed = image_metrics(one_digit, reference, classifier=classifier)
    assert collapsed["classes_covered"] == 1
    assert collapsed["class_kl"] == pytest.approx(math.log(10))
    assert collapsed["fd"] > 5 * real["fd"] and collapsed["recall"] == 0.0
    floor = real_floor(fake)
    assert 0 < floor["fd"] < real["fd"] * 3 and set(floor) == {"fd", "kid_mean", "kid_std"}


def test_image_metrics_rejects_tanh_range() -> None:
    images = torch.rand(4, 1, 28, 28) * 2 - 1
    with pytest.raises(UserError, match="from_range"):
        image_metrics(images, images.abs())


class _MeanPool(torch.nn.Module):
    """Stands in for Inception: same call signature, features = per-channel means."""

    def forward(self, img: Tensor, return_features: bool = False) -> Tensor:
        return img.float().mean(dim=(2, 3))


def test_inception_extractor_contract(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not found"):
        inception_extractor(tmp_path / "inception-2015-12-05.pt")
    path = tmp_path / "fake_inception.pt"
    torch.jit.script(_MeanPool()).save(str(path))
    features = inception_extractor(path)(torch.full((2, 1, 28, 28), 0.2))
    torch.testing.assert_close(features, torch.full((2, 3), 51.0))


@pytest.mark.parametrize("shape", [(2, 3, 32, 32), (1, 1, 64, 48), (1, 3, 600, 400)])
def test_inception_input_is_pil_bicubic_of_the_uint8_image(shape: tuple[int, ...]) -> None:
    images = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    fed = inception_input(images)
    assert fed.shape == (shape[0], 3, 299, 299) and fed.dtype == torch.float32
    # clean-fid's resize: uint8 first, then PIL's bicubic per channel on the float values
    pixels = (images.numpy() * 255).round().astype(np.float32)
    for n in range(shape[0]):
        for c in range(3):
            plane = Image.fromarray(pixels[n, c % shape[1]], mode="F")
            expected = np.asarray(plane.resize((299, 299), resample=Image.BICUBIC))
            np.testing.assert_allclose(fed[n, c].numpy(), expected, atol=0.01)


def test_inception_refuses_two_channels_and_metrics_use_its_features(tmp_path: Path) -> None:
    path = tmp_path / "fake_inception.pt"
    torch.jit.script(_MeanPool()).save(str(path))
    with pytest.raises(UserError, match=r"\(N, 3, H, W\)"):
        inception_input(torch.rand(2, 2, 8, 8))
    # constant images: features are the (quantized) values; FID of two point masses is the
    # squared distance of the means, 3 channels x (51 - 102)^2 with variances 0
    fake = torch.full((4, 1, 16, 16), 0.2)
    real = torch.full((5, 3, 40, 40), 0.4)
    scores = inception_metrics(fake, real, path)
    assert scores["fid"] == pytest.approx(3 * (102.0 - 51.0) ** 2, rel=1e-5)
    with pytest.raises(UserError, match=r"in \[0, 1\]"):
        inception_metrics(fake + 1, real, path)
