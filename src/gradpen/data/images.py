"""Your own images: a folder of PNG/JPEG/WebP files, or an array file (.npz).

Both loaders return an :class:`~gradpen.data.mnist.ImageDataset` of float32 images
(N, C, R, R) in [0, 1], C = ``channels`` (1: grayscale, 3: RGB), R = ``resolution``.

Every image goes through the same steps (:func:`fit_image`): its EXIF orientation applied, its
mode converted to ``L`` or ``RGB`` by Pillow (palette, grayscale, RGB, RGBA and CMYK inputs all
convert; an alpha channel is dropped, as torchvision's loader does), then resized so that its
shorter side is R (Pillow's bicubic filter, antialiased when it shrinks) and center-cropped to
R x R.

A folder is decoded once into a uint8 array in the cache folder (:func:`cache_dir`: the config's
``data.cache``, else ``$GRADPEN_CACHE``, else ``$XDG_CACHE_HOME/gradpen``, else
``~/.cache/gradpen``), never inside the data folder. There is one cache file per (folder,
resolution, channels); it records the name, size and modification time of every image, and
any change of them rebuilds it. A file that Pillow cannot decode is skipped with a
:class:`SkippedImagesWarning`; an image over Pillow's decompression-bomb limit
(``PIL.Image.MAX_IMAGE_PIXELS``) stops the load with a UserError.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from tqdm import tqdm

from gradpen.data.mnist import ImageDataset
from gradpen.errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
CHANNEL_MODES = {1: "L", 3: "RGB"}
# What an array file's last axis may hold: grayscale, grayscale, RGB, RGBA.
ARRAY_MODES = {1: "L", 3: "RGB", 4: "RGBA"}
CACHE_ENV = "GRADPEN_CACHE"
CACHE_FORMAT = 1  # bump when the decoding changes, so that old cache files are rebuilt


class SkippedImagesWarning(UserWarning):
    """Some files of an image folder could not be decoded and were left out."""


def _check_channels(channels: int) -> str:
    if channels not in CHANNEL_MODES:
        raise UserError(f"data.channels = {channels} is not allowed; choose 1 (gray) or 3 (RGB)")
    return CHANNEL_MODES[channels]


def _check_size(resolution: int, channels: int) -> None:
    if resolution < 1:
        raise UserError(f"data.resolution must be >= 1, got {resolution}")
    _check_channels(channels)


def fit_image(image: Image.Image, resolution: int, channels: int) -> np.ndarray:
    """One image as the loaders store it: oriented, converted, resized, center-cropped.

    Args:
        image: a decoded Pillow image of any mode and size.
        resolution: the side R of the square result.
        channels: 1 (grayscale, Pillow's ITU-R 601-2 luma) or 3 (RGB).

    Returns:
        uint8 array (C, R, R).
    """
    mode = _check_channels(channels)
    image = ImageOps.exif_transpose(image).convert(mode)
    fitted = ImageOps.fit(image, (resolution, resolution), Image.Resampling.BICUBIC)
    pixels = np.asarray(fitted, dtype=np.uint8)
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


def cache_dir(configured: str | Path = "") -> Path:
    """The folder of the decoded-image cache.

    Args:
        configured: the config's ``data.cache``; empty for the default.

    Returns:
        ``configured`` if given, else ``$GRADPEN_CACHE``, else ``$XDG_CACHE_HOME/gradpen``,
        else ``~/.cache/gradpen``.
    """
    if str(configured):
        return Path(configured).expanduser()
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "gradpen"


def list_images(root: Path) -> list[Path]:
    """The PNG/JPEG/WebP files under ``root`` (recursive, by suffix, any case), sorted."""
    return sorted(
        path for path in root.rglob("*") if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()
    )


def _decode(path: Path, resolution: int, channels: int) -> np.ndarray:
    """``path`` through :func:`fit_image`; Pillow's bomb warning is raised as an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(path) as image:
            return fit_image(image, resolution, channels)


def _bomb_error(path: Path, error: Exception) -> UserError:
    return UserError(
        f"{path} is refused as a decompression bomb ({error}). Images may hold at most "
        f"Image.MAX_IMAGE_PIXELS = {Image.MAX_IMAGE_PIXELS} pixels (Pillow's limit, kept on "
        "purpose): shrink or remove that file; nothing was written"
    )


def _decode_all(
    root: Path, files: list[Path], resolution: int, channels: int
) -> tuple[np.ndarray, list[str], list[str]]:
    """Decode ``files``; returns uint8 (N, C, R, R), the kept and the skipped relative names."""
    kept: list[np.ndarray] = []
    names: list[str] = []
    skipped: list[str] = []
    for path in tqdm(files, desc="decoding images", unit="img", disable=None, dynamic_ncols=True):
        name = path.relative_to(root).as_posix()
        try:
            kept.append(_decode(path, resolution, channels))
            names.append(name)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
            raise _bomb_error(path, error) from None
        except (OSError, SyntaxError, ValueError, EOFError) as error:  # Pillow on bad data
            skipped.append(f"{name} ({type(error).__name__}: {error})")
    shape = (0, channels, resolution, resolution)
    return (np.stack(kept) if kept else np.zeros(shape, np.uint8)), names, skipped


def _fingerprint(root: Path, files: list[Path]) -> str:
    """A digest of the relative names, sizes and modification times of ``files``."""
    digest = hashlib.sha256()
    for path in files:
        stat = path.stat()
        digest.update(
            f"{path.relative_to(root).as_posix()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode()
        )
    return digest.hexdigest()


def _cache_file(cache: Path, root: Path, resolution: int, channels: int) -> Path:
    key = json.dumps([CACHE_FORMAT, str(root), resolution, channels])
    return cache / "images" / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.npz"


def _read_cache(path: Path, fingerprint: str) -> tuple[np.ndarray, list[str], list[str]] | None:
    """The cached (pixels, kept names, skipped names), or None if absent, stale or unreadable."""
    try:
        with np.load(path, allow_pickle=False) as cached:
            if str(cached["fingerprint"]) != fingerprint:
                return None
            return cached["x"], list(cached["names"]), list(cached["skipped"])
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return None


def _write_cache(
    path: Path, fingerprint: str, x: np.ndarray, names: list[str], skipped: list[str]
) -> None:
    """Store the decoded folder; a cache that cannot be written is a warning, not an error."""
    from gradpen.train.checkpoint import replace_atomically  # here: gradpen.train imports data

    arrays = {
        "fingerprint": np.array(fingerprint),
        "x": x,
        "names": np.array(names, dtype=str),
        "skipped": np.array(skipped, dtype=str),
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        replace_atomically(path, lambda handle: np.savez(handle, **arrays))
    except OSError as error:
        warnings.warn(f"could not write the image cache {path}: {error}", stacklevel=3)


def _labels_from_folders(names: list[str], root: Path) -> tuple[np.ndarray, tuple[str, ...]]:
    """Labels (N,) from each image's first-level subfolder, and the sorted class names."""
    loose = [name for name in names if "/" not in name]
    if loose:
        raise UserError(
            f"data.conditional = true takes each image's label from its class subfolder of "
            f"{root}, but {len(loose)} image(s) lie directly in it (e.g. {loose[0]!r}): move them "
            "into class folders, or set data.conditional = false"
        )
    folders = [name.split("/", 1)[0] for name in names]
    classes = tuple(sorted(set(folders)))
    index = {name: label for label, name in enumerate(classes)}
    return np.array([index[folder] for folder in folders], dtype=np.int64), classes


def load_image_folder(
    root: str | Path,
    resolution: int = 32,
    channels: int = 3,
    *,
    conditional: bool = False,
    cache: str | Path = "",
) -> ImageDataset:
    """The images under ``root``, decoded once and cached (see the module's docstring).

    Args:
        root: a folder of PNG/JPEG/WebP files, searched recursively.
        resolution: the side R of the square images.
        channels: 1 (grayscale) or 3 (RGB).
        conditional: label each image by its first-level subfolder (class names sorted, label
            i is the i-th name, recorded in ``class_names``); else every label is 0.
        cache: the cache folder; empty for :func:`cache_dir`'s default.

    Returns:
        An ImageDataset, images float32 (N, C, R, R) in [0, 1], labels int64 (N,).

    Raises:
        UserError: no such folder, no image file in it, none readable, a decompression bomb,
            a cache folder inside ``root``, or loose images when ``conditional``.
    """
    root = Path(root).expanduser().resolve()
    _check_size(resolution, channels)
    if not root.is_dir():
        raise UserError(f"data.root {str(root)!r} is not a folder; data.name = 'folder' needs one")
    folder = cache_dir(cache).expanduser().resolve()
    if folder == root or root in folder.parents:
        raise UserError(
            f"the image cache {folder} lies inside data.root {root}; gradpen never writes into "
            f"your data folder: set data.cache or ${CACHE_ENV} to a folder outside it"
        )
    files = list_images(root)
    if not files:
        raise UserError(
            f"data.root {str(root)!r} holds no image: searched recursively for files ending in "
            f"{', '.join(IMAGE_SUFFIXES)} (any case)"
        )
    fingerprint = _fingerprint(root, files)
    path = _cache_file(folder, root, resolution, channels)
    cached = _read_cache(path, fingerprint)
    if cached is None:
        x, names, skipped = _decode_all(root, files, resolution, channels)
        if names:
            _write_cache(path, fingerprint, x, names, skipped)
    else:
        x, names, skipped = cached
    if skipped:
        warnings.warn(
            f"skipped {len(skipped)} of {len(files)} files of {root} that Pillow cannot "
            f"decode: {'; '.join(skipped[:5])}{' ...' if len(skipped) > 5 else ''}",
            SkippedImagesWarning,
            stacklevel=2,
        )
    if not names:
        raise UserError(
            f"data.root {str(root)!r} holds {len(files)} image file(s) but none that Pillow can "
            f"read (first: {skipped[0]}); allowed are readable PNG, JPEG and WebP files"
        )
    if conditional:
        labels, classes = _labels_from_folders(names, root)
    else:
        labels, classes = np.zeros(len(names), dtype=np.int64), ()
    images = torch.from_numpy(x).float().div_(255.0)
    return ImageDataset(images, torch.from_numpy(labels), class_names=classes)


def _array_error(path: Path, what: str) -> UserError:
    return UserError(
        f"{path}: {what}. data.name = 'npz' takes an .npz file whose array 'x' has shape "
        "(N, H, W) or (N, H, W, C) with C = 1, 3 or 4 (channels last), uint8 or floats in "
        "[0, 1], and an optional integer array 'y' of shape (N,) with labels >= 0"
    )


def _read_array_file(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    if not path.is_file():
        raise UserError(f"data.root {str(path)!r} is not a file; data.name = 'npz' needs one")
    try:
        with np.load(path, allow_pickle=False) as arrays:
            if "x" not in arrays.files:
                raise _array_error(path, f"no array 'x' (arrays: {', '.join(arrays.files)})")
            return arrays["x"], (arrays["y"] if "y" in arrays.files else None)
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise _array_error(path, f"not a readable .npz file ({error})") from None


def _as_uint8(x: np.ndarray, path: Path) -> np.ndarray:
    """Pixels as uint8 (N, H, W, C): uint8 as is, floats in [0, 1] times 255, rounded."""
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in ARRAY_MODES:
        hint = " (channels first? transpose to (N, H, W, C))" if x.ndim == 4 else ""
        raise _array_error(path, f"'x' has shape {x.shape}{hint}")
    if x.shape[0] == 0:
        raise _array_error(path, "'x' holds no image")
    if x.dtype == np.uint8:
        return x
    if not np.issubdtype(x.dtype, np.floating):
        raise _array_error(path, f"'x' has dtype {x.dtype}")
    if not np.isfinite(x).all() or x.min() < 0 or x.max() > 1:
        raise _array_error(path, f"'x' holds floats in [{x.min()}, {x.max()}]")
    return np.rint(x * 255.0).astype(np.uint8)


def _check_labels(y: np.ndarray, n: int, path: Path) -> np.ndarray:
    if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer) or (n and y.min() < 0):
        raise _array_error(path, f"'y' has shape {y.shape} and dtype {y.dtype} for {n} images")
    return y.astype(np.int64)


def load_image_array(
    path: str | Path,
    resolution: int = 32,
    channels: int = 3,
    *,
    conditional: bool = False,
) -> ImageDataset:
    """The images of an .npz file's ``x`` (and labels ``y``), fitted as :func:`fit_image` does.

    Images of side ``resolution`` with the right channel count are taken as they are; others
    go through :func:`fit_image` one by one (resized and center-cropped, channels converted).

    Args:
        path: the .npz file; ``x`` is (N, H, W) or (N, H, W, C), C in 1, 3, 4, uint8 or floats
            in [0, 1]; ``y`` (optional) int (N,), labels >= 0.
        resolution: the side R of the square images.
        channels: 1 (grayscale) or 3 (RGB).
        conditional: use ``y`` as labels (then it is required); else every label is 0.

    Returns:
        An ImageDataset, images float32 (N, C, R, R) in [0, 1], labels int64 (N,).

    Raises:
        UserError: a missing or unreadable file, or arrays of the wrong shape, dtype or range.
    """
    path = Path(path).expanduser()
    _check_size(resolution, channels)
    x, y = _read_array_file(path)
    pixels = _as_uint8(x, path)
    labels = _check_labels(y, len(pixels), path) if y is not None else None
    if conditional and labels is None:
        raise _array_error(path, "data.conditional = true needs the labels 'y'; there are none")
    n, height, width, depth = pixels.shape
    if (height, width) == (resolution, resolution) and depth == channels:
        fitted = pixels.transpose(0, 3, 1, 2)
    else:
        mode = ARRAY_MODES[depth]
        fitted = np.stack(
            [
                fit_image(
                    Image.fromarray(image.squeeze(-1) if depth == 1 else image, mode),
                    resolution,
                    channels,
                )
                for image in tqdm(pixels, desc="fitting images", unit="img", disable=None)
            ]
        )
    images = torch.from_numpy(np.ascontiguousarray(fitted)).float().div_(255.0)
    kept = labels if conditional and labels is not None else np.zeros(n, dtype=np.int64)
    return ImageDataset(images, torch.from_numpy(kept))
