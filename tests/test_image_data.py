"""Your own images: folder and .npz loading, the cache, bad inputs, and a run from the CLI."""

from __future__ import annotations

import json
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gradpen.cli import main
from gradpen.data import SkippedImagesWarning, fit_image, load_image_array, load_image_folder
from gradpen.data import images as images_module
from gradpen.errors import UserError
from gradpen.export import load_generator
from gradpen.train.config import load
from gradpen.train.run import train

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TINY = [
    "generator.width=4",
    "critic.width=4",
    "train.steps=2",
    "train.n_critic=1",
    "train.batch_size=8",
    "log.every=1",
    "log.checkpoint_every=2",
    "log.progress=false",
]
MODES = ["RGB", "L", "RGBA", "P"]


def luma(r: int, g: int, b: int) -> int:
    """ITU-R 601-2 luma, as Pillow's "L" conversion rounds it."""
    return round(r * 0.299 + g * 0.587 + b * 0.114)


def make_folder(root: Path, count: int = 36, seed: int = 0) -> list[Path]:
    """``count`` random images of mixed sizes, modes and formats in two class folders."""
    rng = np.random.default_rng(seed)
    paths = []
    for index in range(count):
        width, height = (int(v) for v in rng.integers(12, 80, 2))
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        mode = MODES[index % len(MODES)]
        suffix = ".jpg" if mode in ("RGB", "L") and index % 2 == 0 else ".png"
        path = root / ("cats" if index % 3 else "dogs/young") / f"image{index}{suffix}"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).convert(mode).save(path)
        paths.append(path)
    return paths


def listing(root: Path, leave_out: str = "cache") -> dict[str, int]:
    """Each path under ``root`` (but ``leave_out``) with its modification time."""
    return {
        str(p.relative_to(root)): p.stat().st_mtime_ns
        for p in sorted(root.rglob("*"))
        if p.relative_to(root).parts[0] != leave_out
    }


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("GRADPEN_CACHE", str(folder))
    return folder


# --- one image -------------------------------------------------------------------------------


def test_fit_keeps_the_center_square_of_a_wide_image() -> None:
    # 4 x 2 (W x H): the shorter side is already 2, so the result is columns 1 and 2, unchanged.
    pixels = np.zeros((2, 4, 3), np.uint8)
    pixels[:, :, 0] = [[10, 20, 30, 40], [50, 60, 70, 80]]
    fitted = fit_image(Image.fromarray(pixels), 2, 3)
    assert fitted.shape == (3, 2, 2) and fitted.dtype == np.uint8
    np.testing.assert_array_equal(fitted[0], [[20, 30], [60, 70]])
    np.testing.assert_array_equal(fitted[1:], 0)


def test_fit_converts_gray_rgba_and_palette() -> None:
    rgb = Image.new("RGB", (3, 3), (200, 100, 50))
    np.testing.assert_array_equal(fit_image(rgb, 3, 1), luma(200, 100, 50))
    np.testing.assert_array_equal(fit_image(Image.new("L", (3, 3), 77), 3, 3), 77)
    rgba = Image.new("RGBA", (3, 3), (10, 20, 30, 0))  # alpha is dropped
    np.testing.assert_array_equal(fit_image(rgba, 3, 3)[:, 1, 1], [10, 20, 30])
    palette = Image.new("P", (3, 3), 1)
    palette.putpalette([0, 0, 0, 250, 5, 9] + [0] * 762)
    np.testing.assert_array_equal(fit_image(palette, 3, 3)[:, 2, 0], [250, 5, 9])


def test_fit_downscales_with_antialiasing() -> None:
    # A one-pixel checkerboard halved: an antialiased filter averages it to mid-gray; sampling
    # without a low-pass filter would keep 0s and 255s.
    board = (np.indices((64, 96)).sum(0) % 2 * 255).astype(np.uint8)
    fitted = fit_image(Image.fromarray(board), 32, 1)
    assert fitted.shape == (1, 32, 32)
    inner = fitted[0, 2:-2, 2:-2].astype(int)
    assert abs(inner - 127.5).max() <= 8
    constant = fit_image(Image.new("RGB", (50, 20), (9, 99, 199)), 32, 3)
    np.testing.assert_array_equal(
        constant, np.array([9, 99, 199])[:, None, None] * np.ones((32, 32))
    )


# --- folders -----------------------------------------------------------------------------------


def test_folder_is_loaded_labeled_and_cached_outside_it(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "images"
    make_folder(root, count=12)
    before = listing(root)
    data = load_image_folder(root, 16, 3, conditional=True)
    assert data.images.shape == (12, 3, 16, 16) and data.class_names == ("cats", "dogs")
    assert data.images.min() >= 0 and data.images.max() <= 1
    # sorted relative paths: cats/image1, 10, 11, 2, 4, ... then dogs/young/...
    assert data.labels.tolist() == [0] * 8 + [1] * 4
    assert listing(root) == before  # nothing written into the data folder
    (cache_file,) = (cache / "images").iterdir()

    # a second load reads the cache: decoding is not called again
    def no_decoding(*args: object) -> None:
        raise AssertionError("decoded although the cache is fresh")

    with monkeypatch.context() as patch:
        patch.setattr(images_module, "_decode", no_decoding)
        again = load_image_folder(root, 16, 3, conditional=True)
        unconditional = load_image_folder(root, 16, 3)
    assert (again.images == data.images).all()
    assert unconditional.labels.tolist() == [0] * 12 and unconditional.class_names == ()

    # a changed file rebuilds the same cache file; another resolution or channel count has its own
    Image.new("RGB", (20, 30), (255, 0, 0)).save(root / "cats" / "image1.png")
    changed = load_image_folder(root, 16, 3, conditional=True)
    assert changed.images[0, 0].eq(1.0).all() and changed.images[0, 1:].eq(0.0).all()
    assert not (changed.images[0] == data.images[0]).all()
    assert [p.name for p in (cache / "images").iterdir()] == [cache_file.name]
    gray = load_image_folder(root, 8, 1)
    assert gray.images.shape == (12, 1, 8, 8) and len(list((cache / "images").iterdir())) == 2


def test_corrupt_files_are_skipped_with_a_warning(tmp_path: Path, cache: Path) -> None:
    root = tmp_path / "images"
    make_folder(root, count=4)
    (root / "cats" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (root / "notes.txt").write_text("not an image, ignored without a word")
    for _ in range(2):  # the cached load warns too
        with pytest.warns(SkippedImagesWarning, match=r"skipped 1 of 5 files.*cats/broken\.jpg"):
            assert len(load_image_folder(root, 8, 3)) == 4


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda root: None, "holds no image: searched recursively"),
        (lambda root: (root / "a.png").write_bytes(b"junk"), "none that Pillow can read"),
        (lambda root: (root / "x.txt").write_text("x"), "holds no image"),
    ],
)
def test_folders_without_images_are_refused(
    tmp_path: Path, cache: Path, make, message: str
) -> None:
    root = tmp_path / "images"
    root.mkdir()
    make(root)
    with pytest.raises(UserError, match=message), warnings.catch_warnings():
        warnings.simplefilter("ignore", SkippedImagesWarning)  # the unreadable file's warning
        load_image_folder(root)


@pytest.mark.parametrize("pixels", [300, 600])  # over the limit (a warning), over twice (an error)
def test_decompression_bombs_are_refused(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch, pixels: int
) -> None:
    root = tmp_path / "images"
    root.mkdir()
    Image.new("L", (pixels, 1)).save(root / "big.png")
    Image.new("L", (8, 8)).save(root / "small.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 250)
    with pytest.raises(UserError, match=r"big\.png is refused as a decompression bomb.*= 250"):
        load_image_folder(root, 8, 1)
    assert not cache.exists()


def test_the_cache_may_not_lie_in_the_data_folder(tmp_path: Path) -> None:
    make_folder(tmp_path, count=2)
    with pytest.raises(UserError, match="never writes into your data folder"):
        load_image_folder(tmp_path, 8, 3, cache=tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


def test_conditional_folders_need_class_subfolders(tmp_path: Path, cache: Path) -> None:
    make_folder(tmp_path / "images", count=3)
    Image.new("RGB", (8, 8)).save(tmp_path / "images" / "loose.png")
    with pytest.raises(UserError, match=r"1 image\(s\) lie directly in it \(e\.g\. 'loose\.png'\)"):
        load_image_folder(tmp_path / "images", 8, 3, conditional=True)


# --- arrays ------------------------------------------------------------------------------------


def test_arrays_uint8_and_float_gray_and_rgb(tmp_path: Path) -> None:
    gray = np.arange(2 * 4 * 4, dtype=np.uint8).reshape(2, 4, 4)
    np.savez(tmp_path / "gray.npz", x=gray, y=np.array([3, 1]))
    data = load_image_array(tmp_path / "gray.npz", 4, 1, conditional=True)
    assert data.images.shape == (2, 1, 4, 4) and data.labels.tolist() == [3, 1]
    np.testing.assert_allclose(data.images[:, 0].numpy(), gray / 255.0)
    rgb = np.zeros((2, 4, 4, 3), np.float32)
    rgb[..., 0], rgb[..., 2] = 1.0, 0.5
    np.savez(tmp_path / "rgb.npz", x=rgb)
    as_rgb = load_image_array(tmp_path / "rgb.npz", 4, 3)
    assert as_rgb.images.shape == (2, 3, 4, 4) and as_rgb.labels.tolist() == [0, 0]
    np.testing.assert_allclose(as_rgb.images[0, :, 1, 1].numpy(), [1.0, 0.0, 128 / 255])
    as_gray = load_image_array(tmp_path / "rgb.npz", 2, 1)  # converted and resized
    np.testing.assert_array_equal(as_gray.images.numpy() * 255, luma(255, 0, 128))


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x": np.zeros((2, 3, 8, 8), np.uint8)}, r"shape \(2, 3, 8, 8\) \(channels first\?"),
        ({"x": np.zeros((2, 8), np.uint8)}, r"'x' has shape \(2, 8\)"),
        ({"x": np.zeros((2, 8, 8), np.int32)}, "dtype int32"),
        ({"x": np.full((2, 8, 8), 2.0)}, r"floats in \[2\.0, 2\.0\]"),
        ({"x": np.zeros((0, 8, 8), np.uint8)}, "holds no image"),
        ({"x": np.zeros((2, 8, 8), np.uint8), "y": np.array([0.5, 1.0])}, "'y' has shape"),
        ({"images": np.zeros((2, 8, 8), np.uint8)}, r"no array 'x' \(arrays: images\)"),
    ],
)
def test_bad_arrays_are_refused(tmp_path: Path, arrays: dict, message: str) -> None:
    np.savez(tmp_path / "data.npz", **arrays)
    with pytest.raises(UserError, match=message) as error:
        load_image_array(tmp_path / "data.npz", 8, 3)
    assert "(N, H, W) or (N, H, W, C)" in str(error.value)


def test_conditional_arrays_need_labels(tmp_path: Path) -> None:
    np.savez(tmp_path / "data.npz", x=np.zeros((2, 8, 8), np.uint8))
    with pytest.raises(UserError, match="needs the labels 'y'"):
        load_image_array(tmp_path / "data.npz", 8, 1, conditional=True)
    (tmp_path / "text.npz").write_text("no zip")
    with pytest.raises(UserError, match=r"not a readable \.npz file"):
        load_image_array(tmp_path / "text.npz")


# --- recipes and runs --------------------------------------------------------------------------


def test_recipes_load_with_a_root() -> None:
    folder = load(CONFIGS / "folder" / "dcgan32.toml", ["data.root='images'"])
    assert (folder.data.name, folder.data.resolution, folder.data.channels) == ("folder", 32, 3)
    assert folder.generator.kind == folder.critic.kind == "dcgan32"
    cifar = load(CONFIGS / "cifar10" / "wgangp-resnet.toml", ["data.root='cifar.npz'"])
    t = cifar.train
    # WGAN-GP, Appendix F: Adam 2e-4, betas (0, 0.9), linear decay to 0 over 100k generator
    # steps, 5 critic steps, lambda 10, batch 64; the ResNet with no norm in the critic
    assert (t.g_lr, t.d_lr, t.g_betas, t.d_betas) == (2e-4, 2e-4, [0.0, 0.9], [0.0, 0.9])
    assert (t.lr_decay, t.steps, t.n_critic, t.batch_size, t.loss) == (
        "linear",
        100_000,
        5,
        64,
        "wgan",
    )
    assert (cifar.penalty.name, cifar.penalty.weight) == ("wgan-gp", 10.0)
    assert cifar.generator.kind == cifar.critic.kind == "resnet32"
    assert cifar.critic.options["norm"] == "none" and cifar.generator.options["width"] == 128
    with pytest.raises(UserError, match=r"needs data\.root: an \.npz file"):
        load(CONFIGS / "cifar10" / "wgangp-resnet.toml")


def test_a_folder_of_mixed_images_trains_samples_and_evaluates_from_the_cli(
    tmp_path: Path, cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "images"
    make_folder(root)
    run = tmp_path / "run"
    sets = [*TINY, f"data.root='{root}'", "data.conditional=true"]
    args = [arg for s in sets for arg in ("--set", s)]
    assert main(["train", str(CONFIGS / "folder" / "dcgan32.toml"), *args, "--out", str(run)]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["step"] == 2 and "data 'folder' holds 3 x 32 x 32" in summary["metrics_skipped"]
    assert json.loads((run / "classes.json").read_text()) == ["cats", "dogs"]
    assert main(["sample", str(run), "-n", "5", "--out", str(tmp_path / "s.npz")]) == 0
    with np.load(tmp_path / "s.npz") as samples:
        assert samples["x"].shape == (5, 3, 32, 32) and samples["y"].tolist() == [0, 1, 0, 1, 0]
        assert samples["x"].min() >= 0 and samples["x"].max() <= 1
    assert main(["export", str(run), "--out", str(tmp_path / "g.safetensors")]) == 0
    exported = load_generator(tmp_path / "g.safetensors")
    assert exported(exported.sample_noise(1), torch.ones(1, dtype=torch.long)).shape == (
        1,
        3,
        32,
        32,
    )
    assert main(["eval", str(run)]) == 0
    assert "metrics_skipped" in json.loads((run / "eval.json").read_text())
    capsys.readouterr()


def test_an_rgb_array_file_trains_grayscale_dcgan64(tmp_path: Path) -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (10, 48, 40, 3), dtype=np.uint8)
    np.savez(tmp_path / "data.npz", x=rgb)
    kinds = ["generator.kind='dcgan64'", "critic.kind='dcgan64'", "data.holdout=0.2"]
    sets = [*TINY, "data.name='npz'", f"data.root='{tmp_path / 'data.npz'}'", *kinds]
    trainer, summary = train(
        None, [*sets, "data.channels=1", "data.resolution=64"], out=tmp_path / "run"
    )
    assert trainer.data.train_set.images.shape == (8, 1, 64, 64)
    assert trainer.samples01(2)[0].shape == (2, 1, 64, 64) and summary["step"] == 2


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_folder(root: Path) -> None:
    """Two images and a 57-byte PNG that claims 100000 x 100000 pixels."""
    make_folder(root, count=2)
    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
    (root / "huge.png").write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(b""))
        + png_chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    ("prepare", "sets", "message"),
    [
        (lambda root: root.mkdir(), [], "holds no image"),
        (lambda root: make_folder(root, 2), ["data.resolution=48"], "set data.resolution to a"),
        (lambda root: make_folder(root, 6), [], "fewer than one batch of train.batch_size = 8"),
        (bomb_folder, [], "decompression bomb"),
        (
            lambda root: np.savez(root, x=np.zeros((20, 3, 32, 32), np.uint8)),
            ["data.name='npz'"],
            "channels first",
        ),
    ],
)
def test_bad_inputs_exit_2_and_write_nothing(
    tmp_path: Path, cache: Path, capsys: pytest.CaptureFixture[str], prepare, sets, message: str
) -> None:
    root = tmp_path / "data.npz" if "data.name='npz'" in sets else tmp_path / "images"
    prepare(root)
    before = listing(tmp_path)
    args = [arg for s in [*TINY, f"data.root='{root}'", *sets] for arg in ("--set", s)]
    run = tmp_path / "run"
    assert main(["train", str(CONFIGS / "folder" / "dcgan32.toml"), *args, "--out", str(run)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert listing(tmp_path) == before and not run.exists()
