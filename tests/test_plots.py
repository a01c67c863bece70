"""Plots: grid geometry pinned by hand, every figure writes a readable PNG in a new folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gradpen.nets import MLPCritic
from gradpen.plots import (
    make_image_grid,
    plot_critic_surface,
    plot_curves,
    plot_overlaid,
    plot_samples_2d,
    save_image_grid,
)


def assert_png(path: Path) -> tuple[int, int]:
    assert path.is_file() and path.stat().st_size > 0
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


def test_grid_geometry_and_pixels() -> None:
    # image i is the constant i/9: tile centres read round(255 * i / 9), padding stays black.
    images = torch.arange(10.0).div(9).view(10, 1, 1, 1).expand(10, 1, 28, 28)
    grid = make_image_grid(images, nrow=5, padding=2)
    assert grid.shape == (2 * 30 + 2, 5 * 30 + 2)  # rows*(H+pad)+pad, cols*(W+pad)+pad
    assert grid[0].max() == 0 and grid[:, 0].max() == 0 and grid[30:32, :].max() == 0
    for i in range(10):
        top, left = 2 + (i // 5) * 30, 2 + (i % 5) * 30
        assert (grid[top : top + 28, left : left + 28] == round(255 * i / 9)).all()


def test_save_image_grid_writes_png_of_known_size(tmp_path: Path) -> None:
    path = save_image_grid(torch.rand(10, 1, 28, 28), tmp_path / "new" / "grid.png", nrow=5)
    assert assert_png(path) == (152, 62)
    rgb = save_image_grid(np.ones((3, 3, 4, 4)), tmp_path / "rgb.png", nrow=10, padding=0)
    with Image.open(rgb) as image:
        assert image.mode == "RGB" and image.size == (12, 4)


def test_grid_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        make_image_grid(torch.rand(10, 28, 28))
    with pytest.raises(ValueError, match="C in"):
        make_image_grid(torch.rand(2, 2, 4, 4))


def test_critic_surface_keeps_the_critic_state(tmp_path: Path) -> None:
    critic = MLPCritic(width=8, depth=2, norm="batch")
    running_mean = critic.trunk.norms[0].running_mean.clone()
    real, fake = torch.randn(50, 2), torch.randn(50, 2) + 1
    path = plot_critic_surface(critic, real, fake, tmp_path / "a" / "surface.png", resolution=16)
    assert_png(path)
    assert critic.training and torch.equal(critic.trunk.norms[0].running_mean, running_mean)
    assert_png(
        plot_critic_surface(
            MLPCritic(width=8, depth=1),
            real,
            fake,
            tmp_path / "s.png",
            lim=3.0,
            resolution=8,
            title="fixed limits",
        )
    )


def test_curves_skip_missing_keys(tmp_path: Path) -> None:
    records = [{"step": s, "loss_d": -1.0 / (s + 1), "gp": 10.0 / (s + 1)} for s in range(20)]
    records.append({"step": 20, "loss_d": float("nan")})
    path = plot_curves(
        records,
        ["loss_d", "gp", "absent"],
        tmp_path / "c" / "curves.png",
        logy_keys=["gp", "loss_d"],
        title="run",
    )
    assert_png(path)
    assert_png(plot_curves(records, ["absent"], tmp_path / "empty.png"))


def test_overlaid_and_sample_panels(tmp_path: Path) -> None:
    steps = np.arange(10)
    curves = {"lambda=0": (steps, steps + 1.0), "lambda=10": (torch.tensor(steps), steps**2 + 1)}
    assert_png(
        plot_overlaid(
            curves,
            tmp_path / "o" / "overlay.png",
            xlabel="step",
            ylabel="D loss",
            title="compare",
            logy=True,
        )
    )
    real = torch.randn(100, 2)
    samples = {name: torch.randn(100, 2) * scale for name, scale in [("a", 1), ("b", 2), ("c", 3)]}
    assert_png(plot_samples_2d(samples, real, tmp_path / "p" / "panels.png"))
    with pytest.raises(ValueError, match="empty"):
        plot_samples_2d({}, real, tmp_path / "none.png")
