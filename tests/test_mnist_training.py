"""MNIST through the engine: the paper's configs, a short conditional run, sampling, the study."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from gradpen.cli import main
from gradpen.studies import patel2018
from gradpen.studies._toolkit import mean_std
from gradpen.train.config import from_dict, load, to_dict
from gradpen.train.run import train

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "mnist"
TINY = [
    "generator.width=4",
    "critic.width=4",
    "train.steps=3",
    "log.every=1",
    "log.checkpoint_every=3",
    "log.eval_samples=100",
    "data.holdout=0.04",  # 200 held-out digits: a cheap evaluation
    "log.progress=false",
]


@pytest.mark.parametrize("weight", [0, 1, 10])
@pytest.mark.parametrize("conditional", [True, False])
def test_configs_hold_the_papers_recipe(weight, conditional):
    stem = "patel2018" if conditional else "patel2018-unconditional"
    config = load(CONFIGS / f"{stem}-lambda{weight}.toml")
    assert to_dict(config) == to_dict(
        from_dict(patel2018.paper_config(weight, conditional=conditional))
    )
    t = config.train
    assert (t.loss, t.n_critic, t.n_generator, t.batch_size) == ("ns", 1, 2, 64)
    assert (t.g_lr, t.d_lr, t.g_betas, t.d_betas) == (2e-4, 2e-4, [0.5, 0.999], [0.5, 0.999])
    assert config.generator.options["noise"] == "uniform"
    assert config.generator.options["out"] == "sigmoid"
    assert config.generator.options["norm"] == config.critic.options["norm"] == "none"
    assert config.data.conditional is conditional
    assert config.penalty.name == ("none" if weight == 0 else "wgan-gp")
    assert config.penalty.weight == weight


def test_wgangp_config_has_the_algorithms_defaults():
    config = load(CONFIGS / "wgangp.toml")
    t = config.train
    assert (t.loss, t.n_critic, t.batch_size, t.g_lr, t.d_betas) == (
        "wgan",
        5,
        64,
        1e-4,
        [0.5, 0.9],
    )
    assert (config.penalty.name, config.penalty.weight) == ("wgan-gp", 10.0)
    assert config.critic.options["norm"] == "none"


@pytest.fixture(scope="module")
def conditional_run(tmp_path_factory) -> tuple[Path, dict]:
    run_dir = tmp_path_factory.mktemp("mnist") / "run"
    _, summary = train(str(CONFIGS / "patel2018-lambda10.toml"), TINY, out=run_dir)
    return run_dir, summary


def test_few_step_conditional_run_trains_and_evaluates(conditional_run):
    run_dir, summary = conditional_run
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3]
    assert [r["critic_steps"] for r in records] == [1, 2, 3]  # n_critic = 1
    assert all(r["penalty"] > 0 and math.isfinite(r["d_loss"]) for r in records)
    assert summary["step"] == 3
    assert 0 <= summary["cond_accuracy"] <= 1
    assert 1 <= summary["classes_covered"] <= 10
    assert summary["fd"] >= 0 and summary["floor_fd"] >= 0
    assert (run_dir / "checkpoints" / "last.pt").is_file()
    assert (run_dir / "samples.png").is_file()


def test_sample_writes_images_in_unit_range_with_labels(conditional_run, tmp_path):
    run_dir, _ = conditional_run
    out = tmp_path / "samples.npz"
    assert main(["sample", str(run_dir), "-n", "23", "--out", str(out)]) == 0
    with np.load(out) as arrays:
        x, y = arrays["x"], arrays["y"]
    assert x.shape == (23, 1, 28, 28) and x.dtype == np.float32
    assert x.min() >= 0 and x.max() <= 1
    np.testing.assert_array_equal(y, np.arange(23) % 10)


def test_late_d_loss_uses_the_second_half():
    records = [{"d_loss": v} for v in (5.0, 1.0, 2.0, 4.0)]
    stats = patel2018.late_d_loss(records)
    assert stats["d_loss_late_mean"] == pytest.approx(3.0)
    assert stats["d_loss_late_std"] == pytest.approx(math.sqrt(2.0))


def test_mean_std_over_seeds():
    assert mean_std([1.0, 3.0]) == pytest.approx((2.0, math.sqrt(2.0)))
    assert mean_std([4.0]) == (4.0, 0.0)


def test_quick_study_writes_its_report(tmp_path):
    report = patel2018.run(tmp_path, quick=True)
    text = report.read_text()
    assert "real floor" in text and "lambda10-bn" in text
    for name in ["d_loss_no_batchnorm.png", "d_loss_batchnorm.png", "samples_lambda0.png"]:
        assert (tmp_path / name).is_file() and f"]({name})" in text
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["settings"] == patel2018.settings(quick=True)
    arms = results["aggregate"]
    assert set(arms) == {
        "lambda0",
        "lambda1",
        "lambda10",
        "lambda0-bn",
        "lambda1-bn",
        "lambda10-bn",
        "real_floor",
    }
    # one seed per arm: no difference can count, so every claim is "not shown"
    assert set(results["verdicts"]) == {"lambda1", "lambda10", "lambda1-bn", "lambda10-bn"}
    for claims in results["verdicts"].values():
        assert {claim["verdict"] for claim in claims.values()} == {"not shown"}
    assert "supported (" not in text and "not shown (fd same" in text
    for arm, runs in results["runs"].items():
        assert len(runs) == 1, arm
        run = runs[0]
        if not run["diverged"]:
            assert run["fd"] >= 0 and 0 <= run["precision"] <= 1 and 0 <= run["recall"] <= 1
            assert 0 <= run["cond_accuracy"] <= 1


@pytest.mark.parametrize(("loss", "penalty"), [("ns", "r1"), ("hinge", "wgan-gp")])
def test_a_patchgan_critic_trains_end_to_end(tmp_path, loss, penalty):
    """critic.kind = 'patch': (B, 1, H', W') scores, a loss per patch, a penalty of their mean."""
    overrides = [
        *TINY,
        "critic.kind='patch'",
        "critic.options={width=4, n_layers=2}",
        f"train.loss='{loss}'",
        f"penalty.name='{penalty}'",
        "penalty.reduce='mean'",
    ]
    _, summary = train(str(CONFIGS / "wgangp.toml"), overrides, out=tmp_path / "run")
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert summary["step"] == 3
    assert all(math.isfinite(r["d_loss"]) and r["penalty"] > 0 for r in records)


def test_compare_counts_a_difference_beyond_twice_the_combined_spread():
    # means 2 and 5, stds 1 and 1: the gap 3 is beyond 2 * sqrt(2) = 2.83, a gap of 2 is not
    assert patel2018.compare([4.0, 5.0, 6.0], [1.0, 2.0, 3.0], +1) == "better"
    assert patel2018.compare([4.0, 5.0, 6.0], [1.0, 2.0, 3.0], -1) == "worse"
    assert patel2018.compare([3.0, 4.0, 5.0], [1.0, 2.0, 3.0], +1) == "same"
    assert patel2018.compare([9.0], [1.0, 2.0, 3.0], +1) == "same"  # one seed: nothing counts


@pytest.mark.parametrize(
    ("outcomes", "verdict"),
    [
        (["better", "same"], "supported"),
        (["worse", "same"], "contradicted"),
        (["better", "worse"], "mixed"),
        (["same", "same"], "not shown"),
    ],
)
def test_judge_combines_a_claims_metrics(outcomes, verdict):
    assert patel2018.judge(outcomes) == verdict


def test_verdicts_compare_each_penalized_arm_with_lambda0_of_its_norm():
    def run(fd, recall, spread, diverged=False):
        metrics = {"fd": fd, "kid_mean": 0.01, "precision": 0.5, "recall": recall}
        return metrics | {"classes_covered": 10, "d_loss_late_std": spread, "diverged": diverged}

    results = {
        "lambda0": [run(10, 0.5, 0.3), run(11, 0.5, 0.3), run(12, 0.5, 0.3)],
        "lambda10": [run(5, 0.2, 0.1), run(6, 0.21, 0.1), run(7, 0.22, 0.1)],
        "lambda0-bn": [run(5, 0.5, 0.3), run(6, 0.5, 0.3), run(7, 0.5, 0.3)],
        # the diverged run's numbers are left out: without it the arm equals lambda0-bn
        "lambda10-bn": [run(5, 0.5, 0.3), run(6, 0.5, 0.3), run(7, 0.5, 0.3), run(99, 0, 9, True)],
    }
    judged = patel2018.verdicts(results)
    assert set(judged) == {"lambda10", "lambda10-bn"}
    assert judged["lambda10"]["cleaner digits"] == {
        "verdict": "supported",
        "metrics": {"fd": "better", "kid_mean": "same", "precision": "same"},
    }
    assert judged["lambda10"]["more varied digits"]["verdict"] == "contradicted"
    assert judged["lambda10"]["steadier discriminator loss"]["verdict"] == "supported"
    assert {c["verdict"] for c in judged["lambda10-bn"].values()} == {"not shown"}
