"""Figures for runs and studies: sample grids, critic value surfaces, metric curves.

Every function creates the parent folder of ``path``, writes a PNG and returns ``path``.
Figures are built with matplotlib's object API (``Figure``, rendered by Agg on save), never
registered with pyplot: no display or backend switch is needed and no figure stays open.
Image grids use Pillow and numpy only.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from PIL import Image

from gradpen.nets._common import module_device

REAL_COLOR = "tab:orange"
FAKE_COLOR = "tab:green"
SURFACE_CHUNK = 8192  # grid points per critic call, to bound memory on large resolutions


def _as_numpy(values: Any) -> np.ndarray:
    """A float numpy array from a tensor (any device, with or without grad), array or list."""
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().float().numpy()
    return np.asarray(values, dtype=float)


def _prepare(path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _save(fig: Figure, path: str | Path) -> Path:
    path = _prepare(path)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path


def make_image_grid(images: Any, nrow: int = 10, padding: int = 2) -> np.ndarray:
    """Tile images (N, C, H, W) in [0, 1] into one uint8 array (H', W') or (H', W', 3).

    ``nrow`` images per row (as torchvision's make_grid), ``padding`` black pixels around and
    between them: width = cols * (W + padding) + padding, height = rows * (H + padding) + padding.
    """
    array = _as_numpy(images)
    if array.ndim != 4 or array.shape[1] not in (1, 3) or array.shape[0] == 0:
        raise ValueError(
            f"images must have shape (N, C, H, W) with N >= 1, C in {{1, 3}}; "
            f"got {tuple(array.shape)}"
        )
    if nrow < 1 or padding < 0:
        raise ValueError(f"need nrow >= 1 and padding >= 0, got nrow={nrow}, padding={padding}")
    n, channels, height, width = array.shape
    cols = min(nrow, n)
    rows = math.ceil(n / cols)
    pixels = np.round(np.clip(np.nan_to_num(array), 0.0, 1.0) * 255).astype(np.uint8)
    grid = np.zeros(
        (rows * (height + padding) + padding, cols * (width + padding) + padding, channels),
        dtype=np.uint8,
    )
    for index, image in enumerate(pixels):
        top = padding + (index // cols) * (height + padding)
        left = padding + (index % cols) * (width + padding)
        grid[top : top + height, left : left + width] = image.transpose(1, 2, 0)
    return grid[:, :, 0] if channels == 1 else grid


def save_image_grid(images: Any, path: str | Path, nrow: int = 10, padding: int = 2) -> Path:
    """Write images (N, C, H, W) in [0, 1] as one PNG grid (see ``make_image_grid``)."""
    path = _prepare(path)
    Image.fromarray(make_image_grid(images, nrow=nrow, padding=padding)).save(path)
    return path


def _auto_limit(*point_sets: np.ndarray) -> float:
    """Half-width of a square view holding every finite point, with a 15% margin."""
    finite = np.concatenate([np.abs(p[np.isfinite(p)]) for p in point_sets])
    return 1.15 * float(finite.max()) if finite.size and finite.max() > 0 else 1.0


def plot_critic_surface(
    critic: torch.nn.Module,
    real: Any,
    fake: Any,
    path: str | Path,
    *,
    lim: float | None = None,
    resolution: int = 128,
    title: str = "",
) -> Path:
    """The classic WGAN-GP figure: filled contours of a 2-D critic, real and fake points on top.

    The grid is [-lim, lim]^2 (``lim`` from the points when None), evaluated without gradients
    on the critic's device and in eval mode (so batch-norm statistics are not updated), then the
    critic's train/eval mode is restored.
    """
    real_np, fake_np = _as_numpy(real), _as_numpy(fake)
    lim = _auto_limit(real_np, fake_np) if lim is None else float(lim)
    axis = np.linspace(-lim, lim, resolution)
    grid_x, grid_y = np.meshgrid(axis, axis)
    points = torch.as_tensor(
        np.stack([grid_x.ravel(), grid_y.ravel()], axis=1), dtype=torch.float32
    )
    device = module_device(critic)
    was_training = critic.training
    critic.eval()
    try:
        with torch.no_grad():
            values = torch.cat(
                [critic(chunk.to(device)).cpu() for chunk in points.split(SURFACE_CHUNK)]
            )
    finally:
        critic.train(was_training)
    fig = Figure(figsize=(6, 5))
    ax = fig.subplots()
    surface = ax.contourf(
        grid_x, grid_y, values.reshape(resolution, resolution).numpy(), levels=30, cmap="viridis"
    )
    fig.colorbar(surface, ax=ax, label="critic value")
    ax.scatter(real_np[:, 0], real_np[:, 1], s=6, c=REAL_COLOR, marker="+", label="real")
    ax.scatter(fake_np[:, 0], fake_np[:, 1], s=6, c=FAKE_COLOR, marker="+", label="generated")
    ax.set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal", title=title)
    ax.legend(loc="upper right", markerscale=3)
    return _save(fig, path)


def _series(records: Sequence[Mapping[str, Any]], key: str, x: str) -> tuple[list, list]:
    """(x, value) pairs of the records that hold a finite number under ``key``."""
    xs, ys = [], []
    for index, record in enumerate(records):
        value = record.get(key)
        if isinstance(value, int | float) and math.isfinite(value):
            xs.append(record.get(x, index))
            ys.append(value)
    return xs, ys


def _log_scale(ax: Axes, values: Iterable[float]) -> None:
    """Log y axis, or symmetric log when some values are not positive."""
    ax.set_yscale("log" if min(values) > 0 else "symlog")


def plot_curves(
    records: Sequence[Mapping[str, Any]],
    keys: Sequence[str],
    path: str | Path,
    *,
    x: str = "step",
    logy_keys: Iterable[str] = (),
    title: str = "",
) -> Path:
    """One line plot per key of metrics.jsonl records against ``x``; keys with no data skipped.

    A record without ``x`` is placed at its index. When no key has data, the figure says so.
    """
    logy_keys = set(logy_keys)
    present = [(key, *_series(records, key, x)) for key in keys]
    present = [(key, xs, ys) for key, xs, ys in present if ys]
    cols = min(3, max(1, len(present)))
    rows = max(1, math.ceil(len(present) / cols))
    fig = Figure(figsize=(4.5 * cols, 3.2 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat[len(present) :]:
        ax.axis("off")
    if not present:
        axes[0, 0].text(0.5, 0.5, f"no data for {', '.join(keys)}", ha="center", va="center")
    for ax, (key, xs, ys) in zip(axes.flat, present, strict=False):
        ax.plot(xs, ys, lw=1)
        if key in logy_keys:
            _log_scale(ax, ys)
        ax.set(title=key, xlabel=x)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def plot_overlaid(
    curves: Mapping[str, tuple[Any, Any]],
    path: str | Path,
    *,
    xlabel: str,
    ylabel: str,
    title: str,
    logy: bool = False,
) -> Path:
    """Several named (x, y) curves on one axis, to compare runs."""
    fig = Figure(figsize=(6.5, 4))
    ax = fig.subplots()
    for name, (xs, ys) in curves.items():
        ax.plot(_as_numpy(xs), _as_numpy(ys), lw=1, label=name)
    all_y = [float(v) for _, ys in curves.values() for v in _as_numpy(ys).ravel() if np.isfinite(v)]
    if logy and all_y:
        _log_scale(ax, all_y)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    if curves:
        ax.legend()
    return _save(fig, path)


def plot_samples_2d(
    samples_by_name: Mapping[str, Any],
    real: Any,
    path: str | Path,
    *,
    lim: float | None = None,
    ncols: int = 4,
) -> Path:
    """One scatter panel per named set of 2-D samples, each over the same real points."""
    if not samples_by_name:
        raise ValueError("samples_by_name is empty: give at least one named set of samples")
    real_np = _as_numpy(real)
    sets = {name: _as_numpy(samples) for name, samples in samples_by_name.items()}
    lim = _auto_limit(real_np, *sets.values()) if lim is None else float(lim)
    cols = min(ncols, len(sets))
    rows = math.ceil(len(sets) / cols)
    fig = Figure(figsize=(3.2 * cols, 3.2 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat[len(sets) :]:
        ax.axis("off")
    for ax, (name, samples) in zip(axes.flat, sets.items(), strict=False):
        ax.scatter(real_np[:, 0], real_np[:, 1], s=3, c=REAL_COLOR, alpha=0.5, label="real")
        ax.scatter(samples[:, 0], samples[:, 1], s=3, c=FAKE_COLOR, alpha=0.5, label="generated")
        ax.set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal", title=name)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0, 0].legend(loc="upper right", markerscale=3, fontsize="small")
    fig.tight_layout()
    return _save(fig, path)
