"""Data loaders: the toy distributions, the shipped 5k digits, IDX files, sklearn digits, splits."""

from __future__ import annotations

import gzip
import math
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from gradpen.data import (
    TOY_NAMES,
    ImageDataset,
    from_range,
    get_image_dataset,
    get_toy,
    load_mnist5k,
    load_mnist_idx,
    load_sklearn_digits,
    split_holdout,
    to_range,
)
from gradpen.errors import UserError


def test_toy_constants_match_the_official_code() -> None:
    eight = get_toy("8gaussians")
    assert eight.centers is not None and eight.std is not None
    assert torch.allclose(eight.centers.norm(dim=1), torch.full((8,), 2 / 1.414))
    assert eight.std == pytest.approx(0.02 / 1.414)
    grid = get_toy("25gaussians")
    assert grid.centers is not None and grid.centers.shape == (25, 2)
    assert grid.centers.max() == pytest.approx(4 / 2.828)
    assert grid.std == pytest.approx(0.05 / 2.828)
    assert get_toy("swissroll").centers is None


@pytest.mark.parametrize("name", TOY_NAMES)
def test_toy_samples_are_seeded_float32_pairs(name: str) -> None:
    toy = get_toy(name)
    first = toy.sample(500, generator=torch.Generator().manual_seed(3))
    again = toy.sample(500, generator=torch.Generator().manual_seed(3))
    other = toy.sample(500, generator=torch.Generator().manual_seed(4))
    assert first.shape == (500, 2) and first.dtype == torch.float32
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_mixture_samples_have_the_stated_std() -> None:
    toy = get_toy("8gaussians")
    points = toy.sample(20_000, generator=torch.Generator().manual_seed(0))
    nearest = torch.cdist(points, toy.centers).argmin(dim=1)
    residual = points - toy.centers[nearest]
    assert residual.std().item() == pytest.approx(toy.std, rel=0.03)
    assert torch.bincount(nearest, minlength=8).min() > 2200  # about 2500 per mode


def test_swissroll_is_scaled_like_the_official_code() -> None:
    points = get_toy("swissroll").sample(5000, generator=torch.Generator().manual_seed(0))
    # make_swiss_roll's radius t lies in [1.5 pi, 4.5 pi]; divided by 7.5 plus a little noise.
    radius = points.norm(dim=1)
    assert radius.max() < 4.5 * math.pi / 7.5 + 0.2 and radius.min() > 1.5 * math.pi / 7.5 - 0.2


def test_unknown_toy_lists_the_valid_names() -> None:
    with pytest.raises(UserError, match="25gaussians"):
        get_toy("9gaussians")


def test_mnist5k_has_500_digits_per_class_in_unit_range() -> None:
    digits = load_mnist5k()
    assert digits.images.shape == (5000, 1, 28, 28) and digits.images.dtype == torch.float32
    assert digits.labels.dtype == torch.int64
    assert digits.images.min() == 0.0 and digits.images.max() == 1.0
    assert torch.equal(torch.bincount(digits.labels), torch.full((10,), 500))
    assert get_image_dataset("mnist5k").images.shape == digits.images.shape


def test_split_holdout_is_stratified_disjoint_and_seeded() -> None:
    digits = load_mnist5k()
    train, heldout = split_holdout(digits, 0.2, seed=0)
    assert (len(train), len(heldout)) == (4000, 1000)
    assert torch.equal(torch.bincount(heldout.labels), torch.full((10,), 100))
    flat = {tuple(row.tolist()) for row in (heldout.images.flatten(1) * 255).round().int()[:50]}
    train_flat = {tuple(row.tolist()) for row in (train.images.flatten(1) * 255).round().int()}
    assert not flat & train_flat
    assert torch.equal(split_holdout(digits, 0.2, seed=0)[1].images, heldout.images)
    assert not torch.equal(split_holdout(digits, 0.2, seed=1)[1].images, heldout.images)
    with pytest.raises(UserError, match="between 0 and 1"):
        split_holdout(digits, 1.0)


def test_sklearn_digits_are_8x8_in_unit_range() -> None:
    digits = load_sklearn_digits()
    assert digits.images.shape == (1797, 1, 8, 8)
    assert digits.images.min() == 0.0 and digits.images.max() == 1.0
    assert set(digits.labels.tolist()) == set(range(10))


def test_output_ranges_round_trip() -> None:
    pixels = torch.tensor([0.0, 0.25, 1.0])
    assert torch.equal(to_range(pixels, "tanh"), torch.tensor([-1.0, -0.5, 1.0]))
    assert torch.equal(to_range(pixels, "sigmoid"), pixels)
    assert torch.equal(from_range(to_range(pixels, "tanh"), "tanh"), pixels)
    with pytest.raises(UserError, match="sigmoid, tanh"):
        to_range(pixels, "relu")


def _write_idx(path: Path, array: np.ndarray, magic: bytes | None = None) -> None:
    header = magic or bytes([0, 0, 0x08, array.ndim])
    payload = header + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    path.write_bytes(gzip.compress(payload) if path.suffix == ".gz" else payload)


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_round_trip(tmp_path: Path, suffix: str) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(6, 28, 28), dtype=np.uint8)
    labels = np.array([3, 1, 4, 1, 5, 9], dtype=np.uint8)
    _write_idx(tmp_path / f"t10k-images-idx3-ubyte{suffix}", images)
    _write_idx(tmp_path / f"t10k-labels-idx1-ubyte{suffix}", labels)
    loaded = load_mnist_idx(tmp_path, split="test")
    assert loaded.images.shape == (6, 1, 28, 28)
    assert torch.equal(loaded.images[:, 0], torch.from_numpy(images).float() / 255)
    assert loaded.labels.tolist() == [3, 1, 4, 1, 5, 9]
    assert torch.equal(get_image_dataset("mnist", tmp_path, "test").labels, loaded.labels)


def test_idx_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        load_mnist_idx(tmp_path / "nowhere")
    with pytest.raises(UserError, match="train-images-idx3-ubyte"):
        load_mnist_idx(tmp_path)
    _write_idx(
        tmp_path / "train-images-idx3-ubyte", np.zeros((2, 4, 4), np.uint8), b"\x00\x00\x0d\x03"
    )
    _write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(2, np.uint8))
    with pytest.raises(UserError, match="magic number"):
        load_mnist_idx(tmp_path)
    with pytest.raises(UserError, match="needs the folder"):
        get_image_dataset("mnist")
    with pytest.raises(UserError, match="digits8x8"):
        get_image_dataset("cifar10")


def test_image_dataset_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        ImageDataset(torch.zeros(3, 28, 28), torch.zeros(3, dtype=torch.int64))


@pytest.mark.parametrize(
    ("data", "generator", "critic", "message"),
    [
        ("digits8x8", "mlp", "mlp", "generator kind 'mlp' works on 2-D points: no generator kind"),
        ("digits8x8", "dcgan28", "dcgan28", "generator kind 'dcgan28' works on 28 x 28 images"),
        ("mnist5k", "dcgan28", "mlp", "critic kind 'mlp' works on 2-D points: use critic.kind"),
        ("8gaussians", "dcgan28", "mlp", "use generator.kind = 'mlp'"),
    ],
)
def test_networks_that_do_not_fit_the_data_exit_2_naming_those_that_do(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    data: str,
    generator: str,
    critic: str,
    message: str,
) -> None:
    from gradpen.cli import main

    sets = [f"data.name='{data}'", f"generator.kind='{generator}'", f"critic.kind='{critic}'"]
    args = [arg for s in [*sets, "train.steps=1"] for arg in ("--set", s)]
    assert main(["train", *args, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    if data == "digits8x8":
        assert "8 x 8 images" in err and "'mlp' (2-D points), 'dcgan28' (28 x 28 images)" in err
    assert not (tmp_path / "run").exists()
