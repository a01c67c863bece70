"""Each study's settings, as its docstring states them, read from what the study records.

``settings(quick=False)`` is what a full run writes under ``"settings"`` in results.json (the
quick tests of each study check that run writes ``settings(quick=True)``); building it trains
nothing, so these tests take milliseconds.
"""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest

from gradpen import studies
from gradpen.studies._toolkit import apply_typed, engine_config, nested, run_jobs

ALL = sorted(studies.available())


def full(name: str) -> dict[str, dict[str, Any]]:
    return studies.load(name).settings()


def column(settings: dict[str, dict[str, Any]], *path: str) -> dict[str, Any]:
    """``{arm: settings[arm][path[0]][path[1]]...}``."""
    out = {}
    for arm, table in settings.items():
        for key in path:
            table = table[key]
        out[arm] = table
    return out


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("quick", [False, True])
def test_every_study_states_its_arms_settings_as_plain_data(name, quick):
    settings = studies.load(name).settings(quick=quick)
    assert settings and all(isinstance(table, dict) and table for table in settings.values())
    assert json.loads(json.dumps(settings)) == settings  # what results.json will hold


def test_typed_overrides_nest_merge_and_are_checked():
    assert nested({"a.b": 1, "a.c": 2, "d": 3}) == {"a": {"b": 1, "c": 2}, "d": 3}
    raw = {"penalty": {"name": "r1", "weight": 1.0}}
    assert apply_typed(raw, {"penalty.weight": 2.0}) == {"penalty": {"name": "r1", "weight": 2.0}}
    assert raw["penalty"]["weight"] == 1.0  # a copy
    assert engine_config({"penalty.weight": 1}, {"penalty.weight": 3.0}).penalty.weight == 3.0
    with pytest.raises(studies.UserError, match=r"penalty\.weight must be of type float"):
        engine_config({"penalty.weight": "2"})


def test_placement_gives_r1_r2_gamma_twice_the_others_weight():
    settings = full("placement")
    assert column(settings, "penalty", "weight") == {
        "r2": 2.0,
        "r1": 2.0,
        "r1r2": 2.0,
        "wgan-gp": 1.0,
        "zero-centered": 1.0,
    }
    assert set(column(settings, "penalty", "name").values()) == set(settings)
    for table in settings.values():
        assert table["data"]["name"] == "8gaussians"
        assert (table["train"]["loss"], table["train"]["lr_decay"]) == ("ns", "none")
        assert table["train"]["steps"] == 1000


def test_lambda_sweeps_wgan_gp_weight_on_the_toy_recipe():
    settings = full("lambda")
    assert list(settings) == ["0", "0.01", "0.1", "1", "10", "100", "1000"]
    assert settings["0"]["penalty"]["name"] == "none"
    for arm, table in list(settings.items())[1:]:
        assert (table["penalty"]["name"], table["penalty"]["weight"]) == ("wgan-gp", float(arm))
    for table in settings.values():
        assert table["data"]["name"] == "25gaussians" and table["train"]["steps"] == 1500
        assert table["generator"]["width"] == table["critic"]["width"] == 128


def test_activations_vary_only_the_critic_activation():
    settings = full("activations")
    assert column(settings, "critic", "activation") == {
        a: a for a in ("relu", "leaky_relu", "tanh")
    }
    assert set(column(settings, "penalty", "weight").values()) == {0.1}


def test_batchnorm_compares_critic_norms_with_the_penalty_allowed():
    settings = full("batchnorm")
    assert column(settings, "critic", "norm") == {n: n for n in ("none", "layer", "batch")}
    assert set(column(settings, "penalty", "allow_batchnorm").values()) == {True}
    assert set(column(settings, "penalty", "weight").values()) == {0.1}


def test_clip_vs_gp_uses_a_12_layer_critic_clip_001_against_lambda_10():
    settings = full("clip-vs-gp")
    assert set(column(settings, "critic", "depth").values()) == {12}
    for dataset in ("8gaussians", "25gaussians"):
        clip, gp = settings[f"{dataset}/weight clipping"], settings[f"{dataset}/gradient penalty"]
        assert (clip["penalty"]["name"], clip["train"]["clip"]) == ("none", 0.01)
        assert (gp["penalty"]["name"], gp["penalty"]["weight"], gp["train"]["clip"]) == (
            "wgan-gp",
            10.0,
            0.0,
        )


def test_one_vs_two_sided_pairs_the_variants_at_lambda_1():
    settings = full("one-vs-two-sided")
    assert column(settings, "penalty", "name") == {
        "25gaussians/two-sided": "wgan-gp",
        "25gaussians/one-sided": "one-sided",
        "8gaussians/two-sided": "wgan-gp",
        "8gaussians/one-sided": "one-sided",
    }
    assert set(column(settings, "penalty", "weight").values()) == {1.0}


def test_patel2018_is_the_papers_recipe_at_the_shipped_budget():
    settings = full("patel2018")
    assert list(settings) == [f"lambda{w}{bn}" for bn in ("", "-bn") for w in (0, 1, 10)]
    for arm, table in settings.items():
        weight = float(arm.removeprefix("lambda").removesuffix("-bn"))
        assert table["penalty"]["name"] == ("wgan-gp" if weight else "none")
        assert table["penalty"]["weight"] == weight
        assert table["critic"]["norm"] == ("batch" if arm.endswith("-bn") else "none")
        assert table["penalty"]["allow_batchnorm"] == arm.endswith("-bn")
        assert table["generator"]["norm"] == "none"
        data = {key: table["data"][key] for key in ("name", "root", "holdout", "conditional")}
        assert data == {"name": "mnist5k", "root": "", "holdout": 0.2, "conditional": True}
        assert table["generator"]["cond"] == table["critic"]["cond"] == "concat"
        train = table["train"]
        assert (train["loss"], train["n_critic"], train["n_generator"]) == ("ns", 1, 2)
        assert (train["batch_size"], train["g_lr"], train["d_lr"]) == (64, 2e-4, 2e-4)
        assert train["g_betas"] == train["d_betas"] == [0.5, 0.999]
        assert (train["steps"], table["critic"]["width"], table["generator"]["width"]) == (
            3000,
            64,
            64,
        )


def test_adamw_runs_lr_1e3_decay_01_for_2000_steps():
    settings = full("adamw")
    assert set(settings) == {"AdamW", "Adam + L2"}
    for table in settings.values():
        assert (table["lr"], table["weight_decay"], table["steps"]) == (1e-3, 0.1, 2000)


def test_gradnorm_trains_three_variants_4_epochs_3_seeds():
    settings = full("gradnorm")
    assert column(settings, "variant") == {v: v for v in ("plain", "approximate", "exact")}
    for table in settings.values():
        assert (table["epochs"], table["seeds"], table["batch_size"]) == (4, [0, 1, 2], 64)


def test_robust_sweeps_lambda_with_fgsm_and_40_step_pgd():
    settings = full("robust")
    assert column(settings, "weight") == {"lambda0": 0.0, "lambda10": 10.0, "lambda30": 30.0}
    for table in settings.values():
        assert (table["seeds"], table["epochs"]) == ([0, 1, 2], 6)
        assert table["fgsm_eps"] == [0.1, 0.2, 0.3]
        assert (table["pgd_eps"], table["pgd_steps"], table["pgd_images"]) == (0.1, 40, 300)
        assert table["holdout_fraction"] == 0.2


def test_dirac_runs_six_methods_both_schemes_sgd_02_for_500_steps():
    settings = full("dirac")
    assert len(settings) == 12
    assert {(t["penalty"], t["weight"]) for t in settings.values()} == {
        ("none", 0.0),
        ("wgan-gp", 0.35),
        ("r1", 0.3),
        ("r1", 1.0),
    }
    for table in settings.values():
        assert (table["lr"], table["start"], table["steps"], table["long_steps"]) == (
            0.2,
            [1.0, 1.0],
            500,
            5000,
        )


def test_lr_vs_lambda_bisects_both_schemes_and_the_toy_sgd_grid():
    settings = full("lr-vs-lambda")
    assert settings["dirac"]["schemes"] == ["simultaneous", "alternating"]
    toy = settings["toy"]
    assert (toy["dataset"], toy["n_critic"]) == ("25gaussians", 5)
    assert toy["lr_grid"][1] / toy["lr_grid"][0] == 2.0  # a factor-2 grid


def test_cahn_hilliard_is_pfhub_1a_to_t_1e4_on_200_squared():
    (table,) = full("cahn-hilliard").values()
    assert (table["c_alpha"], table["c_beta"], table["rho"], table["kappa"]) == (0.3, 0.7, 5.0, 2.0)
    assert (table["mobility"], table["length"], table["grid"], table["t_end"]) == (
        5.0,
        200.0,
        200,
        1e4,
    )


def test_domain_wall_benchmark7_runs_to_t_8():
    (table,) = full("domain-wall").values()
    assert table["t_end"] == 8.0 and max(table["cells"]) == 256


def test_fracture_uses_miehe_2010_material_for_at1_and_at2():
    settings = full("fracture")
    assert column(settings, "model") == {"at1": "at1", "at2": "at2"}
    for table in settings.values():
        assert (table["stiffness"], table["toughness"], table["length"]) == (210.0, 2.7e-3, 0.015)


def test_penalty_method_spans_six_decades_of_mu():
    (table,) = full("penalty-method").values()
    assert (table["mu"][0], table["mu"][-1]) == pytest.approx((0.1, 1e5))


def test_full_runs_publish_their_page_and_quick_runs_never_write_docs(
    tmp_path, capsys, monkeypatch
):
    from gradpen.cli import main

    def fake_run(out_dir, *, quick=False):
        """A study that writes a report with one figure, as every study does."""
        out_dir.mkdir(parents=True)
        (out_dir / "curve.png").write_bytes(b"png")
        report = out_dir / "report.md"
        report.write_text(
            f"# Fake {out_dir.name}\n\n| a |\n|---|\n| {quick} |\n\n![curve.png](curve.png)\n"
        )
        return report

    monkeypatch.setattr(studies, "load", lambda name: SimpleNamespace(run=fake_run))
    monkeypatch.chdir(tmp_path)
    docs = tmp_path / "docs" / "studies"  # the default --docs, from this working directory
    assert (
        main(["study", "fake", "--quick", "--out", str(tmp_path / "q"), "--docs", str(docs)]) == 0
    )
    assert (tmp_path / "q" / "report.md").is_file() and not (tmp_path / "docs").exists()
    assert main(["study", "fake", "--out", str(tmp_path / "full")]) == 0
    page = (docs / "fake.md").read_text()
    assert page.startswith("<!-- generated by `gradpen study fake`")
    assert page.endswith("| False |\n\n![curve.png](fake/curve.png)\n")
    assert (docs / "fake" / "curve.png").read_bytes() == b"png"
    assert "page: docs/studies/fake.md" in capsys.readouterr().out
    assert main(["study", "fake", "--out", str(tmp_path / "again"), "--no-docs"]) == 0
    assert (docs / "fake.md").read_text() == page


CALLS: list[int] = []


def _square_and_count(x: int) -> tuple[int, int]:
    CALLS.append(x)
    return x, x * x


def test_run_jobs_keeps_each_result_and_reuses_it_only_for_the_same_arguments(tmp_path):
    store = tmp_path / "finished"
    CALLS.clear()
    jobs = {("a", 0): (2,), ("b", 1): (3,)}
    first = run_jobs(_square_and_count, jobs, workers=1, desc="t", store=store)
    assert first == {("a", 0): [2, 4], ("b", 1): [3, 9]}  # as JSON reads it back
    assert sorted(p.name for p in store.iterdir()) == ["a-0.json", "b-1.json"]
    assert CALLS == [2, 3]
    # A rerun after a crash: the finished jobs are read back, not run again.
    again = run_jobs(_square_and_count, jobs, workers=1, desc="t", store=store)
    assert again == first and CALLS == [2, 3]
    # A job whose arguments changed runs again; a corrupt result file is run again too.
    (store / "a-0.json").write_text("{not json")
    changed = {("a", 0): (2,), ("b", 1): (5,)}
    third = run_jobs(_square_and_count, changed, workers=1, desc="t", store=store)
    assert third == {("a", 0): [2, 4], ("b", 1): [5, 25]} and CALLS == [2, 3, 2, 5]
    assert json.loads((store / "b-1.json").read_text())["result"] == [5, 25]
    # Without a store nothing is written and the results keep their own types.
    assert run_jobs(_square_and_count, {"k": (4,)}, workers=1, desc="t") == {"k": (4, 16)}
