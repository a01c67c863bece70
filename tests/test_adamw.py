"""The adamw study: AdamW's exact geometric shrink, Adam + L2's size-blind steps, the quick run."""

from __future__ import annotations

import itertools
import json

import pytest

from gradpen.studies.adamw import QUICK, history_experiment, run, settings, zero_loss_experiment


def test_zero_loss_adamw_shrinks_geometrically_and_adam_l2_moves_by_lr():
    zero = zero_loss_experiment(QUICK)
    predicted = (1 - QUICK.lr * QUICK.weight_decay) ** QUICK.steps
    assert zero["predicted_shrink_factor"] == pytest.approx(predicted, rel=1e-15)
    assert zero["adamw_max_relative_error"] < 1e-12
    # AdamW's first move is lr * wd * w0 (so / lr = wd * w0); Adam + L2's is lr whatever w0.
    assert zero["adamw_first_move_over_lr"] == pytest.approx([0.001, 0.01, 0.1, 1.0], rel=1e-9)
    assert zero["adam_l2_first_move_over_lr"] == pytest.approx([1.0] * 4, rel=1e-4)
    # After 200 steps of about lr each, w0 = 10 has moved by about 0.2.
    assert zero["adam_l2_final"][-1] == pytest.approx(10 - 0.2, abs=0.01)


def test_adam_l2_decays_weights_with_large_gradient_history_less():
    history = history_experiment(QUICK)
    adam_l2 = history["Adam + L2"]
    assert all(a <= b + 1e-12 for a, b in itertools.pairwise(adam_l2))
    assert adam_l2[-1] - adam_l2[0] > 0.1
    assert max(history["AdamW"]) - min(history["AdamW"]) < 0.01


def test_quick_run_writes_the_report(tmp_path):
    report = run(tmp_path, quick=True)
    assert report == tmp_path / "report.md"
    assert "| w0 |" in report.read_text()
    assert (tmp_path / "adamw.png").stat().st_size > 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["settings"] == settings(quick=True)
    assert results["settings"]["AdamW"]["steps"] == QUICK.steps
