"""The manifold and optimal-critic studies: their geometry on hand-solvable cases, their
settings against their docstrings, and their quick runs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from gradpen import studies
from gradpen.metrics.toy import wasserstein1
from gradpen.studies import manifold, optimal_critic
from gradpen.studies._geometry import (
    SPIRAL_SCALE,
    SPIRAL_TURNS,
    Curve,
    cosine,
    euclidean_coupling,
    split_gradient,
    transport_along_curve,
)


def test_split_on_the_unit_circle():
    circle = Curve("circle")
    # (1, 0) lies on the circle, tangent (0, 1); (0, 2) projects to (0, 1), tangent (-1, 0)
    points = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 2.0], [1.0, 0.0]])
    gradients = torch.tensor([[0.0, 3.0], [2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    arc, tangent, distance = circle.project(points)
    assert arc.tolist() == pytest.approx([0.0, 0.0, 0.25, 0.0], abs=1e-12)
    assert distance.tolist() == pytest.approx([0.0, 0.0, 1.0, 0.0], abs=1e-12)
    assert tangent[2].tolist() == pytest.approx([-1.0, 0.0], abs=1e-12)
    tangential, normal = split_gradient(gradients, tangent)
    assert tangential.tolist() == pytest.approx([9.0, 0.0, 0.0, 1.0], abs=1e-12)
    assert normal.tolist() == pytest.approx([0.0, 4.0, 1.0, 1.0], abs=1e-12)


def test_embedded_circle_out_of_plane_directions_are_normal():
    circle = Curve("circle", dim=10, seed=1)
    plane = circle.plane
    assert torch.allclose(plane.T @ plane, torch.eye(2, dtype=torch.float64), atol=1e-12)
    off = torch.randn(10, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    off = off - plane @ (plane.T @ off)  # Gram-Schmidt against the plane, by hand
    off = off / off.norm()
    # the point at angle pi/2 (s = 1/4), pushed 0.3 out of the plane
    point = plane @ torch.tensor([0.0, 1.0], dtype=torch.float64) + 0.3 * off
    arc, tangent, distance = circle.project(point[None])
    assert arc.item() == pytest.approx(0.25, abs=1e-12)
    assert distance.item() == pytest.approx(0.3, abs=1e-12)
    expected_tangent = plane @ torch.tensor([-1.0, 0.0], dtype=torch.float64)
    assert torch.allclose(tangent[0], expected_tangent, atol=1e-12)
    tangential, normal = split_gradient(torch.stack([off, expected_tangent]), tangent.expand(2, 10))
    assert tangential.tolist() == pytest.approx([0.0, 1.0], abs=1e-12)
    assert normal.tolist() == pytest.approx([1.0, 0.0], abs=1e-12)


def test_spiral_is_parametrized_by_arc_length():
    spiral = Curve("spiral")
    # an independent reference: the polyline length of a dense sampling of the spiral
    t = np.linspace(*SPIRAL_TURNS, 400_001)
    xy = np.stack([t * np.cos(t), t * np.sin(t)], 1) / SPIRAL_SCALE
    cumulative = np.concatenate([[0], np.cumsum(np.linalg.norm(np.diff(xy, axis=0), axis=1))])
    assert spiral.length == pytest.approx(cumulative[-1], rel=1e-8)
    fractions = torch.tensor([0.0, 0.25, 0.5, 0.9, 1.0], dtype=torch.float64)
    points, tangents = spiral.point_and_tangent(fractions)
    for s, point in zip(fractions.tolist(), points, strict=True):
        index = np.searchsorted(cumulative, s * cumulative[-1])
        assert point.numpy() == pytest.approx(xy[min(index, len(t) - 1)], abs=1e-4)
    ahead = spiral.point_and_tangent(fractions[:-1] + 1e-7)[0]  # a forward difference
    secant = torch.nn.functional.normalize(ahead - points[:-1])
    assert torch.allclose(tangents[:-1], secant, atol=1e-5)


def test_projection_recovers_the_arc_of_sampled_points_in_10d():
    spiral = Curve("spiral", dim=10, seed=2)
    points, arc = spiral.sample(50, torch.Generator().manual_seed(0))
    found, _, distance = spiral.project(points.double())
    assert torch.allclose(found, arc, atol=1e-6) and float(distance.max()) < 1e-6


def test_coupling_of_two_small_clouds_is_the_hand_solved_assignment():
    # crossing the pairs costs 2 sqrt(5) > 4: (0,0) goes to (2,0), (0,1) to (2,1)
    x = torch.tensor([[0.0, 0.0], [0.0, 1.0]])
    y = torch.tensor([[2.0, 1.0], [2.0, 0.0]])
    assert euclidean_coupling(x, y).tolist() == [1, 0]
    # on a line the monotone matching is optimal: 0 -> 0.5, 1 -> 1.5, 2 -> 2.5, W1 = 0.5
    x = torch.tensor([[0.0], [1.0], [2.0]])
    y = torch.tensor([[2.5], [0.5], [1.5]])
    assert euclidean_coupling(x, y).tolist() == [1, 2, 0]
    assert wasserstein1(x, y) == pytest.approx(0.5)


def test_transport_along_the_curve_goes_the_short_way_round_a_loop():
    fake, real = torch.tensor([0.1]), torch.tensor([0.8])
    assert transport_along_curve(fake, real, closed=True).tolist() == pytest.approx([-0.3])
    assert transport_along_curve(fake, real, closed=False).tolist() == pytest.approx([0.7])
    offsets = transport_along_curve(torch.tensor([0.1, 0.6]), torch.tensor([0.65, 0.2]), False)
    assert offsets.tolist() == pytest.approx([0.1, 0.05])


def test_cosine_coverage_and_agreement_on_hand_cases():
    a = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    b = torch.tensor([[2.0, 0.0], [-1.0, 0.0], [1.0, 0.0]])
    assert cosine(a, b).tolist() == pytest.approx([1.0, -1 / math.sqrt(2), 0.0])
    even = (torch.arange(100, dtype=torch.float64) + 0.5) / 100
    assert manifold.coverage(even, 20) == {"tv": pytest.approx(0.0, abs=1e-12), "covered": 1.0}
    lumped = torch.full((100,), 0.33, dtype=torch.float64)
    assert manifold.coverage(lumped, 20) == {"tv": pytest.approx(0.95), "covered": 0.05}
    along = torch.tensor([0.5, -0.2, 0.1, 3.0])
    offsets = torch.tensor([0.2, 0.3, -0.01, 0.4])  # the third need not move
    assert manifold.tangential_agreement(along, offsets, 0.025) == (pytest.approx(2 / 3), 3)
    assert math.isnan(manifold.tangential_agreement(along, offsets * 0, 0.025)[0])


def test_verdicts_follow_their_stated_rules():
    assert manifold.judge(0.05, 10, 0.55) == "supported"
    assert manifold.judge(0.05, 10, 0.75) == "refuted"  # the tangential part is informative
    assert manifold.judge(0.3, 2, 0.5) == "supported"  # below the isotropic 1/2
    assert manifold.judge(0.6, 2, 0.5) == "refuted"  # above it: not normal-dominated
    assert manifold.judge(0.01, 2, float("nan")) == "no data"
    assert optimal_critic.judge(1.05, 0.95) == "holds"
    assert optimal_critic.judge(0.5, 0.95) == "direction only"
    assert optimal_critic.judge(0.95, 0.2) == "norm only"
    assert optimal_critic.judge(3.0, 0.2) == "fails"


def test_manifold_settings_match_its_docstring():
    settings = manifold.settings()
    assert list(settings) == [
        f"{c}/{m}" for c in ("circle-2d", "circle-10d", "spiral-10d") for m in ("wgan-gp", "r1")
    ]
    dims = {"circle-2d": 2, "circle-10d": 10, "spiral-10d": 10}
    for arm, table in settings.items():
        curve_name, method = arm.split("/")
        assert table["curve"]["dim"] == dims[curve_name]
        assert table["curve"]["kind"] == curve_name.split("-")[0]
        assert (table["loss"], table["penalty"], table["weight"]) == {
            "wgan-gp": ("wgan", "wgan-gp", 10.0),
            "r1": ("ns", "r1", 1.0),
        }[method]
        assert (table["width"], table["depth"], table["noise_dim"]) == (64, 3, 2)
        assert (table["lr"], table["betas"], table["n_critic"]) == (1e-3, [0.5, 0.9], 5)
        assert (table["batch_size"], table["steps"], table["seeds"]) == (128, 800, [0, 1])
        assert (table["measure_every"], table["measure_points"], table["bins"]) == (100, 500, 20)
        assert (table["probe_steps"], table["collapsed_arc"]) == (500, 0.5)


def test_optimal_critic_settings_match_its_docstring():
    settings = optimal_critic.settings()
    assert len(settings) == 2 * 7
    grid = {(t["cloud_name"], t["weight"], t["width"]) for t in settings.values()}
    for cloud in ("8gaussians-2d", "8gaussians-16d"):
        lambdas = {(cloud, w, 128) for w in (0.1, 1.0, 10.0, 100.0)}
        widths = {(cloud, 10.0, n) for n in (16, 64, 256)}
        assert {g for g in grid if g[0] == cloud} == lambdas | widths
    for table in settings.values():
        assert table["cloud"]["noise_std"] == 1.0
        assert table["cloud"]["dim"] == (16 if table["cloud_name"].endswith("16d") else 2)
        assert (table["points"], table["steps"], table["lr"]) == (256, 1500, 1e-3)
        assert (table["betas"], table["depth"]) == ([0.5, 0.9], 3)
        assert table["ts"] == [0.1, 0.3, 0.5, 0.7, 0.9]


def test_the_fakes_are_independent_reals_plus_unit_noise():
    real, fake = optimal_critic.Cloud("8gaussians").draw(4000, seed=0)
    assert real.shape == fake.shape == (4000, 2)
    noise = fake - real  # independent draws: the difference is noise plus a real-real gap
    assert float(noise.var(dim=0).min()) > 1.0
    real16, fake16 = optimal_critic.Cloud("8gaussians", dim=16, rotation_seed=3).draw(4000, 0)
    assert torch.linalg.matrix_rank(real16 - real16.mean(0)).item() == 2
    assert float((fake16 - fake16.mean(0)).var(dim=0).min()) > 0.9


@pytest.mark.parametrize("name", ["manifold", "optimal-critic"])
def test_quick_run_writes_its_report(tmp_path, name):
    study = studies.load(name)
    report = study.run(tmp_path, quick=True)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["settings"] == study.settings(quick=True)
    assert set(results["verdicts"]) == set(results["settings"])
    text = report.read_text()
    assert "Verdict" in text and f"`gradpen study {name} --quick`" in text
    for figure in text.split("](")[1:]:
        assert (tmp_path / figure.split(")")[0]).stat().st_size > 0
    if name == "manifold":
        for runs in results["runs"].values():
            for key, values in runs[0]["curves"].items():
                if key.startswith("tangent_share"):
                    assert all(0.0 <= v <= 1.0 for v in values)
            assert 0.0 <= runs[0]["probe"]["tangent_share_fake"] <= 1.0
    else:
        assert results["coupling_gap"] < 1e-6  # the coupling's cost is ot.emd2's W1


def test_collapsed_fakes_lie_on_the_first_part_of_the_arc_only():
    circle = Curve("circle")
    fakes = manifold.collapsed_fakes(circle, 200, 0.5, torch.Generator().manual_seed(0))
    arc, _, distance = circle.project(fakes)
    assert float(arc.max()) < 0.5 and float(distance.max()) < 1e-6
    assert bool((fakes[:, 1] >= -1e-6).all())  # arc [0, 1/2) of the unit circle: y >= 0
