"""The toy studies' quick modes write their reports with sane numbers."""

from __future__ import annotations

import json

import pytest

from gradpen import studies


@pytest.mark.parametrize(
    "name", ["lambda", "one-vs-two-sided", "activations", "placement", "batchnorm", "clip-vs-gp"]
)
def test_quick_study_writes_report(tmp_path, name):
    study = studies.load(name)
    report = study.run(tmp_path, quick=True)
    assert report == tmp_path / "report.md" and "|" in report.read_text()
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["settings"] == study.settings(quick=True)
    for figure in report.read_text().split("](")[1:]:
        assert (tmp_path / figure.split(")")[0]).stat().st_size > 0


def test_cross_terms_vanish_for_per_sample_critics_only():
    import torch

    from gradpen.nets.mlp import MLPCritic
    from gradpen.studies.batchnorm import cross_term_ratio

    torch.manual_seed(0)
    x = torch.randn(16, 2)
    assert cross_term_ratio(MLPCritic(width=16, norm="none"), x) < 1e-6
    assert cross_term_ratio(MLPCritic(width=16, norm="layer"), x) < 1e-6
    assert cross_term_ratio(MLPCritic(width=16, norm="batch"), x) > 1e-3


def test_collapse_puts_every_fake_on_one_center(tmp_path):
    import torch

    from gradpen.studies._toyrun import toy_config, toy_trainer
    from gradpen.studies.placement import collapse

    trainer = toy_trainer(toy_config(), tmp_path)
    center = torch.tensor([0.5, -0.25])
    collapse(trainer, center)
    fakes = trainer.G(trainer.G.sample_noise(32))
    assert torch.equal(fakes, center.expand(32, 2))
