"""The toy studies' quick modes write their reports with sane numbers."""

from __future__ import annotations

import json

import pytest

from gradpen import studies


@pytest.mark.parametrize("name", ["lambda", "one-vs-two-sided", "activations"])
def test_quick_study_writes_report(tmp_path, name):
    report = studies.load(name).run(tmp_path, quick=True)
    assert report == tmp_path / "report.md" and "|" in report.read_text()
    results = json.loads((tmp_path / "results.json").read_text())
    assert results
    for figure in report.read_text().split("](")[1:]:
        assert (tmp_path / figure.split(")")[0]).stat().st_size > 0
