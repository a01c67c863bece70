"""Dirac-GAN through gradpen: the paper's vector field, convergence claims, h_max theory."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from gradpen.studies import dirac, lr_vs_lambda
from gradpen.studies._dirac_gan import (
    PAPER_METHODS,
    DiracCritic,
    Method,
    field_jacobian,
    gan_r1,
    trajectory,
    vector_field,
)

GAN = PAPER_METHODS[0]


@pytest.mark.parametrize("point", [(0.0, 0.0), (1.0, 1.0), (0.7, -0.4), (-1.5, 0.3)])
@pytest.mark.parametrize("gamma", [0.0, 0.3])
def test_field_from_gradpen_losses_matches_the_paper(point: tuple[float, float], gamma: float):
    method = gan_r1(gamma) if gamma else GAN
    assert vector_field(method, *point) == pytest.approx(
        dirac.analytic_gan_field(*point, gamma), abs=1e-12
    )


def test_field_by_hand_at_one_point_and_f_prime_at_zero():
    # theta = 1, psi = 0: psi * theta = 0, f'(0) = 1/2, so v = (0, 1/2); with R1 the same (psi = 0).
    assert vector_field(GAN, 1.0, 0.0) == pytest.approx((0.0, 0.5), abs=1e-15)
    assert vector_field(gan_r1(1.0), 1.0, 0.0) == pytest.approx((0.0, 0.5), abs=1e-15)
    # theta = 0, psi = 2: v = (-f'(0) * 2, -gamma * 2) = (-1, -2 gamma).
    assert vector_field(gan_r1(0.3), 0.0, 2.0) == pytest.approx((-1.0, -0.6), abs=1e-15)


def test_jacobian_at_equilibrium_is_the_derived_one():
    np.testing.assert_allclose(field_jacobian(gan_r1(0.3)), [[0, -0.5], [0.5, -0.3]], atol=1e-8)


def test_r1_penalty_sees_the_single_real_point():
    # B = 1: R1 at the data point 0 is ||dD/dx||^2 = psi^2, weighted gamma / 2.
    critic = DiracCritic(3.0)
    real = torch.zeros(1, 1, dtype=torch.float64)
    term = gan_r1(0.5).make_penalty()(critic, real=real, fake=real + 1)
    assert term.item() == pytest.approx(0.5 / 2 * 9.0)


def test_r1_converges_as_the_paper_says():
    # The paper's ~1e-6 at gamma 0.3 is the simultaneous run (alternating lands at ~2e-7).
    points = trajectory(gan_r1(0.3), "simultaneous", lr=0.2, steps=500)
    assert math.hypot(*points[-1]) < 1e-3
    assert points.shape == (501, 2)


def test_unregularized_gan_does_not_converge():
    simultaneous = trajectory(GAN, "simultaneous", lr=0.2, steps=500)
    alternating = trajectory(GAN, "alternating", lr=0.2, steps=500)
    assert math.hypot(*simultaneous[-1]) > math.sqrt(2)  # spirals out
    assert math.hypot(*alternating[-1]) > 1.0  # keeps circling


def test_weight_clipping_keeps_psi_in_range():
    points = trajectory(Method("w", "wgan", clip=0.5), "simultaneous", lr=0.2, steps=50)
    assert np.abs(points[:, 1]).max() == pytest.approx(0.5)


def test_unknown_scheme_is_rejected():
    with pytest.raises(ValueError, match="valid schemes"):
        trajectory(GAN, "leapfrog", steps=1)


@pytest.mark.parametrize(
    ("gamma", "scheme", "expected"),
    [
        (0.3, "simultaneous", 0.3 / 0.25),  # complex eigenvalues: h_max = gamma / f'(0)^2
        (1.0, "simultaneous", 4.0),  # gamma = 2 f'(0): both formulas give 4
        (3.0, "simultaneous", 4 / (3 + math.sqrt(8))),
        (0.75, "alternating", 4 / (0.75 + 1.25)),
    ],
)
def test_predicted_h_max_closed_forms(gamma: float, scheme: str, expected: float):
    assert lr_vs_lambda.predicted_h_max(gamma, scheme) == pytest.approx(expected)
    spectral = lr_vs_lambda.spectral_h_max(field_jacobian(gan_r1(gamma)), scheme)
    assert spectral == pytest.approx(expected, rel=1e-6)


def test_gamma_times_h_max_tends_to_two():
    for scheme in ("simultaneous", "alternating"):
        assert 1e4 * lr_vs_lambda.predicted_h_max(1e4, scheme) == pytest.approx(2.0, rel=1e-7)


def test_dirac_run_quick_writes_report(tmp_path: Path):
    report = dirac.run(tmp_path, quick=True)
    assert report == tmp_path / "report.md" and "| GAN + R1 (gamma=1) |" in report.read_text()
    assert (tmp_path / "trajectories.png").stat().st_size > 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["settings"] == dirac.settings(quick=True)
    assert len(results["runs"]) == 12
    assert max(results["field_check_max_abs_gap"].values()) < 1e-12
    distance = {(r["method"], r["scheme"]): r["distance"] for r in results["runs"]}
    assert distance[("GAN + R1 (gamma=1)", "simultaneous")] < 1e-2
    assert distance[("GAN", "simultaneous")] > math.sqrt(2)


def test_lr_vs_lambda_quick_measures_what_theory_predicts(tmp_path: Path):
    report = lr_vs_lambda.run(tmp_path, quick=True)
    assert report.is_file() and (tmp_path / "lr_vs_lambda.png").stat().st_size > 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["settings"] == lr_vs_lambda.settings(quick=True)
    rows = results["dirac"]["rows"]
    assert [(r["gamma"], r["scheme"]) for r in rows] == [
        (0.3, "simultaneous"),
        (10.0, "simultaneous"),
    ]
    for row in rows:  # bisection resolution at quick settings is about 1%
        assert row["measured"] == pytest.approx(row["predicted"], rel=0.03)
    (toy,) = results["toy"]["rows"]
    assert toy["h_max"] == pytest.approx(1e-3) and toy["first_divergent_lr"] == pytest.approx(10.0)
