"""Never lose a run: SIGKILL and resume, Ctrl-C, unwritable or full disks, safe loading, export.

The kill driver is ``benchmarks/kill_resume.py`` (which does the full count); here a few kills.
Training runs in forked children so that they can be killed without re-importing torch.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections import namedtuple
from pathlib import Path

import pytest
import torch

from gradpen.cli import main
from gradpen.errors import UserError
from gradpen.export import load_generator
from gradpen.train import Trainer, load, open_run, train
from gradpen.train.checkpoint import load_checkpoint
from repo_scripts import load_script

kill_resume = load_script("benchmarks/kill_resume.py")


def test_sigkill_at_random_moments_and_inside_writes_loses_nothing(tmp_path):
    kills, differences = kill_resume.kill_and_resume(tmp_path, kills=4, steps=60, seed=1)
    assert [kill.problem for kill in kills] == [""] * 4
    assert sum(kill.in_write for kill in kills) >= 2  # kills 2 and 4 aim at checkpoint writes
    assert differences == []


def test_ctrl_c_writes_a_checkpoint_before_exiting(tmp_path):
    run = tmp_path / "run"
    proc = kill_resume.launch(kill_resume.train_argv(run, steps=100_000))
    deadline = time.monotonic() + 60
    while kill_resume.last_logged_step(run) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc.pid is not None
    os.kill(proc.pid, signal.SIGINT)
    assert kill_resume.wait(proc, timeout=60) == 130  # the CLI's "interrupted" status
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert state["step"] == kill_resume.last_logged_step(run) >= 3


TINY = [
    "data.name='8gaussians'",
    "generator.width=16",
    "critic.width=16",
    "train.n_critic=1",
    "train.batch_size=32",
    "log.every=5",
    "log.checkpoint_every=5",
    "log.eval_samples=200",
    "log.progress=false",
]


def assert_nothing_trained(run: Path) -> None:
    assert not (run / "metrics.jsonl").exists()
    assert not (run / "checkpoints").exists()


def test_unwritable_run_directory_is_reported_before_training(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(UserError, match="cannot write to the run directory"):
        train(None, [*TINY, "train.steps=5"], out=blocker / "run")
    if os.geteuid() != 0:  # root writes anywhere: only the file-in-the-way case applies
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(UserError, match="cannot write to the run directory"):
            train(None, [*TINY, "train.steps=5"], out=locked / "run")


def test_full_disk_is_reported_before_training(tmp_path, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(2**30, 2**30 - 2**20, 2**20))
    trainer = Trainer(load(None, [*TINY, "train.steps=5"]), tmp_path / "run")
    with pytest.raises(UserError, match=r"not enough free disk space.*1\.0 MiB free"):
        trainer.train()
    assert trainer.step == 0
    assert_nothing_trained(tmp_path / "run")


@pytest.fixture(scope="module")
def ema_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("ema") / "run"
    train(None, [*TINY, "train.steps=10", "train.ema=0.9"], out=run)
    return run


class RunsCode:
    """Unpickling this calls os.system (here a harmless ``touch``): what a hostile file does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_checkpoint_that_would_run_code_is_refused(ema_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(ema_run, run)
    marker = tmp_path / "code-ran"
    torch.save({"step": 10, "generator": RunsCode(marker)}, run / "checkpoints" / "last.pt")
    with pytest.raises(UserError, match=r"refusing to load .*weights_only"):
        open_run(run)
    assert main(["sample", str(run), "--out", str(tmp_path / "s.npz")]) == 2
    assert "refusing to load" in capsys.readouterr().err
    assert not marker.exists()


def test_export_writes_the_ema_generator_as_safetensors(ema_run, tmp_path):
    out = tmp_path / "G.safetensors"
    assert main(["export", str(ema_run), "--out", str(out)]) == 0
    exported = load_generator(out)
    trainer = open_run(ema_run)
    z = torch.randn(5, exported.noise_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(exported(z), trainer.ema.module(z), rtol=0, atol=0)
        assert not torch.equal(exported(z), trainer.G(z))  # the EMA copy, not the raw generator
    with pytest.raises(UserError, match="no exported generator"):
        load_generator(tmp_path / "missing.safetensors")
