"""The physics studies' quick versions write their report directories with sane numbers."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import ModuleType

import pytest

from gradpen.studies import cahn_hilliard, domain_wall, fracture, penalty_method


def _results(study: ModuleType, out: Path) -> dict:
    """Run ``study`` quick into ``out``; its results.json, once the report and settings check."""
    report = study.run(out, quick=True)
    assert report.name == "report.md" and report.read_text().startswith("# ")
    assert list(report.parent.glob("*.png"))
    results = json.loads((report.parent / "results.json").read_text())
    assert results["settings"] == study.settings(quick=True)
    return results


def test_cahn_hilliard_quick(tmp_path: Path) -> None:
    results = _results(cahn_hilliard, tmp_path)
    assert results["initial_energy"]["continuum, Gauss-Legendre 200^2"] == pytest.approx(
        319.04, abs=0.01
    )
    assert results["run"]["max_mass_drift"] < 1e-12
    assert results["run"]["max_energy_increase"] <= 0.0
    assert 0.0 < results["run"]["c_min"] < results["run"]["c_max"] < 1.0
    assert results["linear_stability"]["max_relative_error"] < 0.01


def test_domain_wall_quick(tmp_path: Path) -> None:
    results = _results(domain_wall, tmp_path)
    assert abs(results["walls"][-1]["relative_error"]) < 1e-3
    assert results["benchmark7"]["order"] == pytest.approx(2.0, abs=0.3)


def test_fracture_quick(tmp_path: Path) -> None:
    results = _results(fracture, tmp_path)
    assert all(abs(row["energy_over_gc"] - 1) < 0.01 for row in results["profiles"])
    assert results["peak_stress"] == pytest.approx(results["peak_stress_exact"], rel=1e-6)


def test_penalty_method_quick(tmp_path: Path) -> None:
    results = _results(penalty_method, tmp_path)
    last = results["rows"][-1]
    assert last["mu g"] == pytest.approx(math.sqrt(2) / 4, rel=1e-3)
