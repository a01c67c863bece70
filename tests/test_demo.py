"""``gradpen demo``: the short 25-gaussians run and its run-directory choice."""

from __future__ import annotations

import pytest

from gradpen.demo import fresh_run_dir, run_demo
from gradpen.errors import UserError


def test_fresh_run_dir_skips_directories_holding_a_run(tmp_path):
    base = tmp_path / "demo"
    assert fresh_run_dir(base) == base
    base.mkdir()
    assert fresh_run_dir(base) == base  # an empty folder holds no run
    (base / "config.toml").write_text("seed = 0\n")
    assert fresh_run_dir(base) == tmp_path / "demo-1"
    (tmp_path / "demo-1" / "checkpoints").mkdir(parents=True)
    assert fresh_run_dir(base) == tmp_path / "demo-2"


def test_demo_runs_and_prints_the_metrics(tmp_path):
    report = run_demo(seed=0, out=tmp_path / "demo", steps=3, progress=False)
    assert "3 generator steps" in report
    assert "modes covered:" in report and "/25" in report
    assert "high quality:" in report and "W1:" in report
    plots = [
        line.removeprefix("plot: ") for line in report.splitlines() if line.startswith("plot:")
    ]
    assert plots and all((tmp_path / "demo" / p.rsplit("/", 1)[-1]).exists() for p in plots)
    assert f"run directory: {tmp_path / 'demo'}" in report


def test_demo_rejects_a_non_positive_step_count(tmp_path):
    with pytest.raises(UserError, match="--steps must be >= 1"):
        run_demo(out=tmp_path / "demo", steps=0)
