"""The training engine: learning, resume, the NaN guard, config errors, the CLI commands."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from gradpen.cli import main
from gradpen.errors import UserError
from gradpen.train import Trainer, TrainingDiverged, load, open_run, train
from gradpen.train.checkpoint import load_checkpoint
from gradpen.train.config import from_dict, to_toml
from gradpen.train.run import schedule_change

TINY = [
    "data.name='8gaussians'",
    "generator.width=32",
    "critic.width=32",
    "train.n_critic=2",
    "train.batch_size=64",
    "train.g_lr=1e-3",
    "train.d_lr=1e-3",
    "penalty.weight=0.1",
    "log.every=10",
    "log.checkpoint_every=20",
    "log.eval_samples=500",
    "log.progress=false",
]


def tiny(*extra: str) -> list[str]:
    return [*TINY, *extra]


def test_a_short_toy_run_lowers_w1(tmp_path):
    config = load(None, tiny("train.steps=200"))
    trainer = Trainer(config, tmp_path / "run")
    before = trainer.evaluate()["w1"]
    summary = trainer.train()
    assert summary["w1"] < 0.5 * before
    for name in ["config.toml", "metrics.jsonl", "summary.json", "curves.png", "surface.png"]:
        assert (tmp_path / "run" / name).is_file(), name
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert [r["step"] for r in records] == list(range(10, 201, 10))
    assert {"d_loss", "g_loss", "penalty", "wasserstein", "gnorm_interp_mean", "step_time"} <= set(
        records[-1]
    )


def test_resume_reaches_the_same_numbers_as_an_uninterrupted_run(tmp_path):
    _, straight = train(
        None, tiny("train.steps=40", "penalty.name='r1'", "train.ema=0.9"), out=tmp_path / "a"
    )
    train(None, tiny("train.steps=20", "penalty.name='r1'", "train.ema=0.9"), out=tmp_path / "b")
    _, resumed = train(resume=tmp_path / "b", overrides=["train.steps=40"])
    for key in ("w1", "high_quality", "modes_covered"):
        assert resumed[key] == straight[key]
    a = load_checkpoint(tmp_path / "a" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")
    for name, tensor in a["critic"].items():
        assert torch.equal(tensor, b["critic"][name]), name
    steps = [json.loads(x)["step"] for x in (tmp_path / "b" / "metrics.jsonl").open()]
    assert steps == [10, 20, 30, 40]


def test_a_resume_that_changes_the_length_says_how_the_schedule_continues(tmp_path, capsys):
    short = ["train.steps=4", "train.lr_decay='linear'", "log.every=2", "log.checkpoint_every=2"]
    train(None, tiny(*short), out=tmp_path / "run")
    capsys.readouterr()
    trainer, _ = train(resume=tmp_path / "run", overrides=["train.steps=8"])
    err = capsys.readouterr().err
    assert "train.steps changed from 4 to 8 on resume at step 4" in err
    assert "go from 0 to 0.5 x their base values now and fall linearly to 0 at step 8" in err
    # What the message says is what happens: the decay runs on the new length.
    assert trainer.schedulers[1].lr_lambdas[0](6) == pytest.approx(1 - 6 / 8)
    assert trainer.opt_D.param_groups[0]["lr"] == pytest.approx(0.0)


def test_schedule_change_explains_each_case():
    assert schedule_change(20, 20, 20, "linear") is None
    assert "continues to step 40 at its constant learning rates" in schedule_change(
        20, 40, 20, "none"
    )
    assert "already reached 10 steps and stops here" in schedule_change(40, 10, 20, "linear")
    assert "go from 0.5 to 0.75 x" in schedule_change(40, 80, 20, "linear")


def test_nan_guard_names_the_term_and_keeps_the_last_good_checkpoint(tmp_path):
    trainer = Trainer(load(None, tiny("train.steps=40")), tmp_path / "run")
    trainer.config.train.steps = 20
    trainer.train()
    good = load_checkpoint(trainer.checkpoint_path)
    trainer.config.train.steps = 40
    with torch.no_grad():
        next(trainer.D.parameters()).fill_(float("nan"))
    with pytest.raises(TrainingDiverged, match=r"critic loss became nan at generator step 21"):
        trainer.train()
    kept = load_checkpoint(trainer.checkpoint_path)
    assert kept["step"] == good["step"] == 20
    for name, tensor in good["critic"].items():
        assert torch.equal(tensor, kept["critic"][name])


@pytest.mark.parametrize(("net", "name"), [("D", "critic"), ("G", "generator")])
@pytest.mark.parametrize("bad", [float("inf"), float("nan")])
def test_a_non_finite_gradient_behind_a_finite_loss_stops_training(tmp_path, net, name, bad):
    trainer = Trainer(load(None, tiny("train.steps=5")), tmp_path / "run")
    parameter = list(getattr(trainer, net).parameters())[-2]
    parameter.register_hook(lambda grad: grad.index_fill(0, torch.tensor([0]), bad))
    with pytest.raises(TrainingDiverged, match=rf"the {name} gradient became {bad} at generator"):
        trainer.train_round()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["train.stpes=3"], r"unknown config key 'train.stpes' \(did you mean 'steps'\?\)"),
        (["penalty.name='wgangp'"], r"penalty.name = 'wgangp' is not allowed.*wgan-gp"),
        (["train.loss='lsgan'"], r"choose one of: wgan, ns, minimax, hinge, relativistic"),
        (["train.n_critic=0"], r"train.n_critic must be > 0"),
        (["train.d_lr='fast'"], r"train.d_lr must be of type float"),
        (["train.d_betas=[0.5, 1.5]"], r"train.d_betas must be two numbers in \[0, 1\)"),
        (["data.name='mnist'"], r"needs data.root"),
        (["data.conditional=true"], r"needs labels"),
        (["sede=1"], r"unknown config key 'sede' \(did you mean 'seed'\?\)"),
    ],
)
def test_config_errors_name_the_key_and_the_allowed_values(overrides, message):
    with pytest.raises(UserError, match=message):
        load(None, overrides)


def test_config_round_trips_through_toml(tmp_path):
    config = load(None, tiny("critic.depth=2", "penalty.options.target=0.5"))
    path = tmp_path / "c.toml"
    path.write_text(to_toml(config))
    assert load(path) == config
    assert from_dict({}) == load(None)


def test_cli_train_sample_eval_and_errors(tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", "--out", str(run)]
    for override in tiny("train.steps=20"):
        args += ["--set", override]
    assert main(args) == 0
    assert main(["sample", str(run), "-n", "7", "--out", str(tmp_path / "s.npz")]) == 0
    with np.load(tmp_path / "s.npz") as data:
        assert data["x"].shape == (7, 2) and data["x"].dtype == np.float32
        assert "y" not in data
    assert main(["eval", str(run)]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert json.loads((run / "eval.json").read_text())["w1"] == pytest.approx(summary["w1"])
    capsys.readouterr()
    assert main(args) == 2  # the run directory exists
    assert "--resume" in capsys.readouterr().err
    assert main(["train", str(tmp_path / "missing.toml")]) == 2
    assert main(["sample", str(tmp_path), "--out", "x.npz"]) == 2
    if not torch.cuda.is_available():
        assert main(["train", "--set", "train.device='cuda'", "--out", str(tmp_path / "c")]) == 2


def test_lazy_penalty_corrects_the_critic_adam(tmp_path):
    trainer = Trainer(load(None, tiny("penalty.name='r1'", "penalty.every=4")), tmp_path)
    group = trainer.opt_D.param_groups[0]
    assert group["lr"] == pytest.approx(1e-3 * 4 / 5)
    assert group["betas"][1] == pytest.approx(0.9 ** (4 / 5))


def test_open_run_restores_the_generator(tmp_path):
    trainer, _ = train(None, tiny("train.steps=10"), out=tmp_path / "r")
    reopened = open_run(Path(tmp_path / "r"))
    for name, tensor in trainer.G.state_dict().items():
        assert torch.equal(tensor, reopened.G.state_dict()[name])


def test_lazy_penalty_takes_a_separate_optimizer_step_every_k_critic_steps(tmp_path):
    trainer = Trainer(load(None, tiny("penalty.name='r1'", "penalty.every=4")), tmp_path)
    for _ in range(4):
        trainer.train_round()  # 2 critic steps each: 8 loss steps, penalty at steps 0 and 4
    weight = next(trainer.D.parameters())
    assert trainer.d_step == 8
    assert int(trainer.opt_D.state[weight]["step"]) == 8 + 2
    every_step = Trainer(load(None, tiny("penalty.name='r1'")), tmp_path / "b")
    every_step.train_round()
    weight = next(every_step.D.parameters())
    assert int(every_step.opt_D.state[weight]["step"]) == 2
