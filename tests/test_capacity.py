"""The capacity study: its spectrum and perturbation helpers on hand-solvable inputs, its settings
as the docstring states them, and its quick run."""

from __future__ import annotations

import json
import math
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from gradpen.studies import capacity
from gradpen.studies._toolkit import apply_typed
from gradpen.train.config import from_dict, to_dict

SIDE = 28


def wave(kx: int, ky: int, amplitude: float = 1.0) -> torch.Tensor:
    """``amplitude * cos(2 pi (kx j + ky i) / 28)`` as a (1, 1, 28, 28) image."""
    grid = torch.arange(SIDE, dtype=torch.float64)
    i, j = torch.meshgrid(grid, grid, indexing="ij")
    phase = 2 * math.pi * (kx * j + ky * i) / SIDE
    return (amplitude * torch.cos(phase)).view(1, 1, SIDE, SIDE)


def test_radial_frequency_is_the_dft_layout_in_cycles_per_pixel():
    rho = capacity.radial_frequency(4)  # fftfreq(4) = [0, 1/4, -1/2, -1/4]
    assert rho[0, 0] == 0 and rho[0, 1] == rho[1, 0] == rho[0, 3] == 0.25
    assert rho[0, 2] == 0.5 and rho[1, 1] == pytest.approx(math.sqrt(2) / 4)


@pytest.mark.parametrize(("kx", "ky", "ring"), [(3, 0, 3), (0, 7, 7), (10, 0, 10), (3, 4, 5)])
def test_a_sinusoid_puts_its_energy_in_its_ring(kx, ky, ring):
    spectrum = capacity.radial_power_spectrum(wave(kx, ky))[0]
    assert spectrum.shape == (round(SIDE / math.sqrt(2)) + 1,)
    expected = torch.zeros_like(spectrum)
    expected[ring] = SIDE * SIDE / 2  # ||cos||^2 over the 28 x 28 grid
    torch.testing.assert_close(spectrum, expected, atol=1e-9, rtol=0)


def test_a_constant_image_has_only_the_constant_coefficient():
    spectrum = capacity.radial_power_spectrum(torch.full((2, 1, SIDE, SIDE), 2.0))
    assert spectrum[:, 0].tolist() == pytest.approx([4.0 * SIDE * SIDE] * 2)
    assert spectrum[:, 1:].abs().max() < 1e-9
    constant = torch.full((1, 1, SIDE, SIDE), 2.0)
    assert capacity.energy_fraction_above(constant, 0.0).item() == pytest.approx(0.0, abs=1e-15)


def test_spectra_sum_to_the_squared_norm_over_channels():
    images = torch.randn(3, 2, SIDE, SIDE)
    spectrum = capacity.radial_power_spectrum(images)
    squared = images.double().pow(2).sum(dim=(1, 2, 3))
    torch.testing.assert_close(spectrum.sum(dim=1), squared)


def test_fine_fraction_of_a_mixture_is_its_share_of_energy():
    # rho = 3/28 < 1/4 and 10/28 > 1/4: the fine share is b^2 / (a^2 + b^2).
    mixture = wave(3, 0, amplitude=2.0) + wave(10, 0, amplitude=1.0)
    fraction = capacity.energy_fraction_above(mixture, 0.25).item()
    assert fraction == pytest.approx(1.0 / 5.0)
    assert capacity.energy_fraction_above(wave(3, 0), 0.25).item() == pytest.approx(0.0, abs=1e-12)
    assert capacity.energy_fraction_above(wave(10, 0), 0.25).item() == pytest.approx(1.0)
    assert capacity.energy_fraction_above(torch.zeros(1, 1, SIDE, SIDE), 0.25).item() == 0


def test_the_stride_lattice_holds_the_checkerboards_of_period_2_and_4():
    lattice = capacity.stride_lattice(SIDE)
    assert lattice.sum() == 15 and not lattice[0, 0]
    assert lattice[0, 7] and lattice[14, 14] and lattice[21, 7] and not lattice[0, 3]
    checkerboard = wave(14, 14)  # (-1)^(i + j): fx = fy = 1/2
    assert capacity.energy_fraction(checkerboard, lattice).item() == pytest.approx(1.0)
    assert capacity.radial_power_spectrum(checkerboard)[0].argmax() == 20  # 28 / sqrt(2)
    stripes = wave(7, 0) + wave(3, 0)  # period 4 on the lattice, period 28/3 off it
    assert capacity.energy_fraction(stripes, lattice).item() == pytest.approx(0.5)
    with pytest.raises(ValueError, match="multiple of the period"):
        capacity.stride_lattice(30)


def test_responses_split_a_quadratic_into_slope_and_curvature():
    """D(x) = <a, x> + ||x||^2 / 2 at x = 0: slope |<a, d>|, curvature ||d||^2 / 2."""
    a = torch.tensor([[3.0, -1.0]])
    critic = lambda x: (x * a).sum(dim=1) + x.pow(2).sum(dim=1) / 2  # noqa: E731
    delta = torch.tensor([[1.0, 1.0], [0.0, 2.0]])
    measured = capacity.responses(critic, torch.zeros(2, 2), {"d": delta})
    assert measured["odd"]["d"] == pytest.approx((2.0 + 2.0) / 2)
    assert measured["even"]["d"] == pytest.approx((1.0 + 2.0) / 2)


def test_shift_one_pixel_moves_a_dot_and_fills_zeros():
    dot = torch.zeros(1, 1, 5, 5)
    dot[0, 0, 2, 2] = 1.0
    right = capacity.shift_one_pixel(dot, 1, 0)
    up = capacity.shift_one_pixel(dot, 0, -1)
    assert right[0, 0, 2, 3] == 1 and right.sum() == 1
    assert up[0, 0, 1, 2] == 1 and up.sum() == 1
    edge = torch.zeros(1, 1, 5, 5)
    edge[..., 4] = 1.0
    assert capacity.shift_one_pixel(edge, 1, 0).sum() == 0  # moved out, zeros moved in
    with pytest.raises(ValueError, match="at most one pixel"):
        capacity.shift_one_pixel(dot, 2, 0)


def test_band_noise_has_no_energy_outside_its_band_by_numpy_fft():
    generator = torch.Generator().manual_seed(0)
    noise = capacity.band_noise((4, 1, SIDE, SIDE), 0.25, math.inf, generator)
    assert noise.dtype == torch.float32 and noise.abs().max() > 0
    power = np.abs(np.fft.fft2(noise.numpy().astype(np.float64))) ** 2
    f = np.fft.fftfreq(SIDE)
    rho = np.sqrt(f[None, :] ** 2 + f[:, None] ** 2)
    assert power[..., rho <= 0.25].max() < 1e-9 * power.max()
    assert power[..., rho > 0.25].min() > 0


def test_matched_perturbations_have_equal_norms_and_the_right_content():
    images = torch.zeros(2, 1, SIDE, SIDE)
    images[0, 0, 10, 10] = 1.0
    images[1, 0, 5:20, 12:15] = 1.0  # a vertical bar 3 wide, 15 tall
    bases, deltas = capacity.matched_perturbations(
        images,
        shift_fraction=0.25,
        fine_above=0.25,
        coarse_up_to=0.125,
        generator=torch.Generator().manual_seed(1),
    )
    assert bases.shape == (8, 1, SIDE, SIDE) and torch.equal(bases[2:4], images)
    # Direction-major: rows 0-1 shift right. The dot: -1/4 where it was, +1/4 one pixel right.
    translation = deltas["translation"]
    assert translation[0, 0, 10, 10] == -0.25 and translation[0, 0, 10, 11] == 0.25
    assert translation[0].abs().sum() == 0.5
    # The bar moved right: its left column loses 1/4, the column after it gains 1/4 (15 px each).
    dot, sideways, lengthwise = (0.25 * math.sqrt(n) for n in (2, 30, 6))
    # Rows: (dot, bar) shifted right, left, down, up. Down/up changes only the bar's two ends.
    expected_norms = torch.tensor([dot, sideways, dot, sideways, dot, lengthwise, dot, lengthwise])
    for name in ("translation", "fine", "coarse"):
        norms = deltas[name].flatten(1).norm(dim=1)
        torch.testing.assert_close(norms, expected_norms, msg=name)
    assert capacity.energy_fraction_above(deltas["fine"], 0.25).min() > 1 - 1e-6
    assert capacity.energy_fraction_above(deltas["coarse"], 0.125).max() < 1e-6


def test_measure_reads_a_linear_critic_exactly():
    """D(x) = <w, x>: the gradient is w everywhere, each response is |<w, delta>|."""

    class Linear(nn.Module):
        def __init__(self, weight: torch.Tensor) -> None:
            super().__init__()
            self.weight = nn.Parameter(weight)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return (x * self.weight).flatten(1).sum(dim=1)

    weight = (wave(3, 0, amplitude=1.0) + wave(0, 10, amplitude=0.5)).float()
    critic = Linear(weight)
    generator = torch.Generator().manual_seed(2)
    reals, fakes = torch.rand(4, 1, SIDE, SIDE, generator=generator), torch.zeros(4, 1, SIDE, SIDE)
    bases, deltas = capacity.matched_perturbations(
        reals, shift_fraction=0.25, fine_above=0.25, coarse_up_to=0.125, generator=generator
    )
    measured = capacity.measure(critic, reals, fakes, bases, deltas, capacity.QUICK)
    w = weight.double().flatten()
    assert measured["fine"] == pytest.approx(0.25 / 1.25)  # 0.5^2 of (1 + 0.5^2)
    assert measured["coarse"] == pytest.approx(1.0 / 1.25)  # rho = 3/28 <= 1/8
    assert measured["grad_norm"] == pytest.approx(float(w.norm()), rel=1e-6)
    assert measured["gap"] == pytest.approx(float((reals.double().flatten(1) @ w).mean()), rel=1e-5)
    for name, delta in deltas.items():
        exact = (delta.double().flatten(1) @ w).abs().mean()
        assert measured["response"]["odd"][name] == pytest.approx(float(exact), rel=1e-4)
        assert measured["response"]["even"][name] < 1e-4 * float(exact)  # no curvature
    odd = measured["response"]["odd"]
    assert measured["fine/translation"] == pytest.approx(odd["fine"] / odd["translation"])
    assert measured["fine/coarse"] == pytest.approx(odd["fine"] / odd["coarse"])
    assert measured["lattice"] == pytest.approx(0.0, abs=1e-12)  # rho 3/28 and 10/28: off-grid
    assert sum(measured["spectrum"]) == pytest.approx(1.0)
    assert measured["spectrum"][3] == pytest.approx(1 / 1.25)
    assert measured["spectrum"][10] == pytest.approx(0.25 / 1.25)


def test_verdict_needs_all_three_monotone_and_beyond_the_seeds_spread():
    falls = {"monotone": "falls", "beyond_seed_noise": True}
    rises = {"monotone": "rises", "beyond_seed_noise": True}
    assert capacity.verdict({"a": falls, "b": falls, "c": falls}) == "supported"
    assert capacity.verdict({"a": rises, "b": rises, "c": rises}) == "contradicted"
    assert capacity.verdict({"a": falls, "b": rises, "c": falls}) == "mixed"
    noisy = falls | {"beyond_seed_noise": False}
    assert capacity.verdict({"a": falls, "b": noisy, "c": falls}) == "mixed"


def test_trend_compares_the_end_points_with_the_seeds_spread():
    runs = {
        "lambda0.1": [{"x": 0.9}, {"x": 0.8}],
        "lambda1": [{"x": 0.7}, {"x": 0.6}],
        "lambda10": [{"x": 0.3}, {"x": 0.2}],
    }
    trend = capacity._trend(runs, "x")
    assert trend["monotone"] == "falls" and trend["beyond_seed_noise"]
    assert trend["ratio_largest_to_smallest_lambda"] == pytest.approx(0.25 / 0.85)
    runs["lambda10"] = [{"x": 0.95}, {"x": 0.5}]  # the end point's spread swallows the change
    trend = capacity._trend(runs, "x")
    assert trend["monotone"] == "not monotone" and not trend["beyond_seed_noise"]
    single = {arm: values[:1] for arm, values in runs.items()}  # one seed: no spread to beat
    assert not capacity._trend(single, "x")["beyond_seed_noise"]


def test_settings_are_the_docstrings():
    settings = capacity.settings()
    assert list(settings) == ["lambda0.1", "lambda1", "lambda10", "lambda100"]
    for arm, table in settings.items():
        assert table["weight"] == float(arm.removeprefix("lambda"))
        assert table["seeds"] == [0, 1, 2]
        assert (table["critic_width"], table["critic_steps"], table["batch_size"]) == (32, 1000, 64)
        assert (table["lr"], table["betas"]) == (1e-4, [0.5, 0.9])
        assert (table["fake_pool"], table["probe_images"]) == (4000, 256)
        assert (table["fine_above"], table["coarse_up_to"], table["shift_fraction"]) == (
            0.25,
            0.125,
            0.25,
        )
        generator = table["fake_generator"]
        assert generator["data"]["name"] == "mnist5k" and generator["data"]["holdout"] == 0.2
        assert (generator["penalty"]["name"], generator["penalty"]["weight"]) == ("wgan-gp", 10.0)
        assert (generator["train"]["loss"], generator["train"]["n_critic"]) == ("wgan", 5)
        assert generator["train"]["steps"] == 200
        assert generator["generator"]["kind"] == generator["critic"]["kind"] == "dcgan28"
        assert generator["generator"]["width"] == generator["critic"]["width"] == 32


def test_the_fake_generator_is_the_wgangp_recipe_at_the_studys_size():
    recipe = Path(__file__).resolve().parents[1] / "configs" / "mnist" / "wgangp.toml"
    size = {
        "generator.width": 32,
        "critic.width": 32,
        "train.steps": 200,
        "train.threads": 1,
        "log.every": 20,
        "log.checkpoint_every": 200,
        "log.eval_samples": 100,
        "log.progress": False,
    }
    expected = from_dict(apply_typed(tomllib.loads(recipe.read_text()), size))
    assert to_dict(capacity.generator_config(capacity.CapacityConfig())) == to_dict(expected)


def test_quick_run_writes_report_figures_and_its_settings(tmp_path):
    report = capacity.run(tmp_path, quick=True)
    text = report.read_text()
    assert "**Verdict: " in text and "| λ = 0.1 |" in text and "| λ = 100 |" in text
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["settings"] == capacity.settings(quick=True)
    assert results["verdict"] in ("supported", "contradicted", "mixed")
    for measured in [*results["runs"]["lambda0.1"], *results["untrained"]]:
        assert 0 <= measured["coarse"] <= 1 - measured["fine"] + 1e-9
        assert measured["grad_norm"] > 0 and min(measured["response"]["odd"].values()) > 0
    for figure in text.split("](")[1:]:
        assert (tmp_path / figure.split(")")[0]).stat().st_size > 0
    assert not (tmp_path / "docs").exists()
