"""Fault injection: what a user can get wrong, and what must happen (exit 2, a message, an
existing run left as it was).

Two writers on one run directory, checkpoints whose bytes are not a checkpoint, values that make
no sense, sizes that do not fit in memory or on disk, signals. Runs are forked children (as in
``benchmarks/kill_resume.py``) so that they can run side by side and be killed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest
import torch

from gradpen.cli import main
from gradpen.errors import UserError
from gradpen.train import Trainer, load
from gradpen.train import samples as samples_module
from gradpen.train.config import threads_for
from gradpen.train.lock import LOCK_NAME, RunLock
from gradpen.train.samples import check_sample_request
from repo_scripts import load_script

kill_resume = load_script("benchmarks/kill_resume.py")

TINY = [
    "data.name='8gaussians'",
    "generator.width=16",
    "critic.width=16",
    "train.n_critic=1",
    "train.batch_size=32",
    "log.every=1",
    "log.checkpoint_every=2",
    "log.eval_samples=200",
    "log.progress=false",
]


def train_args(run: Path, *overrides: str) -> list[str]:
    sets = [*TINY, *overrides]
    return ["train", "--out", str(run), *[arg for s in sets for arg in ("--set", s)]]


def snapshot(run: Path) -> dict[str, bytes]:
    """Every file of a run and its bytes (but the lock file, whose holder note changes)."""
    return {
        str(p.relative_to(run)): p.read_bytes()
        for p in sorted(run.rglob("*"))
        if p.is_file() and p.name != LOCK_NAME
    }


def logged_steps(run: Path) -> list[int]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["step"] for line in lines]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("finished") / "run"
    assert main(train_args(run, "train.steps=4")) == 0
    return run


@pytest.fixture
def run_copy(finished_run, tmp_path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    return run


def error_of(capsys, argv: list[str]) -> str:
    """The stderr of ``gradpen ARGV``, which must exit 2 without a traceback."""
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "internal error" not in err
    return err


# --- one writer per run directory ----------------------------------------------------------


def test_a_resume_beside_a_running_run_exits_2_naming_the_holder(tmp_path, capsys):
    run = tmp_path / "run"
    proc = kill_resume.launch(train_args(run, "train.steps=100000"))
    deadline = time.monotonic() + 60
    while kill_resume.last_logged_step(run) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    err = error_of(capsys, ["train", "--resume", str(run)])
    assert f"pid {proc.pid}" in err and "one writer at a time" in err
    os.kill(proc.pid, signal.SIGINT)
    assert kill_resume.wait(proc, timeout=60) == 130
    steps = logged_steps(run)  # one writer: every step logged once, in order
    assert steps == list(range(1, len(steps) + 1))
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert state["step"] == steps[-1]


def test_two_runs_started_together_on_one_directory_one_runs(tmp_path):
    run = tmp_path / "run"
    argv = train_args(run, "train.steps=6")
    procs = [kill_resume.launch(argv) for _ in range(2)]
    codes = sorted(kill_resume.wait(proc, timeout=120) for proc in procs)
    assert codes == [0, 2]
    assert logged_steps(run) == [1, 2, 3, 4, 5, 6]  # the files of the one that ran
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["step"] == 6
    assert (run / "summary.json").is_file()


def _hold_lock(run: Path, seconds: float) -> None:
    with RunLock(run):
        time.sleep(seconds)


def start_holder(run: Path) -> kill_resume.BaseProcess:
    """A forked process holding the lock of ``run`` (for 30 s), once it has noted its pid."""
    holder = kill_resume.FORK.Process(target=_hold_lock, args=(run, 30.0))
    holder.start()
    lock_file, deadline = run / LOCK_NAME, time.monotonic() + 10
    while time.monotonic() < deadline:
        if lock_file.is_file() and f'"pid": {holder.pid}' in lock_file.read_text():
            return holder
        time.sleep(0.01)
    raise RuntimeError("the lock holder did not start")


def test_a_held_run_directory_is_left_untouched(run_copy, capsys):
    before = snapshot(run_copy)
    holder = start_holder(run_copy)
    try:
        assert f"pid {holder.pid}" in error_of(capsys, ["train", "--resume", str(run_copy)])
        assert f"pid {holder.pid}" in error_of(capsys, train_args(run_copy, "train.steps=8"))
    finally:
        holder.kill()
        holder.join()
    assert snapshot(run_copy) == before


def test_a_lock_left_by_a_killed_process_is_released(tmp_path):
    run = tmp_path / "run"
    holder = start_holder(run)
    with pytest.raises(UserError, match="one writer at a time"):
        RunLock(run).acquire()
    holder.kill()  # SIGKILL: no clean-up runs, the OS drops the lock
    holder.join()
    lock = RunLock(run)
    lock.acquire()
    lock.release()


def test_an_existing_run_is_not_overwritten_by_out(run_copy, capsys):
    before = snapshot(run_copy)
    assert "already holds a run" in error_of(capsys, train_args(run_copy, "train.steps=8"))
    assert snapshot(run_copy) == before


# --- checkpoints whose bytes are not a checkpoint ------------------------------------------


def _truncated(path: Path) -> bytes:
    return path.read_bytes()[: path.stat().st_size // 2]


def _saved(value: object) -> bytes:
    import io

    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


BAD_CHECKPOINTS = {
    "text": lambda path: b"hello",
    "empty": lambda path: b"",
    "truncated": _truncated,
    "zip": lambda path: b"PK\x03\x04" + b"\x00" * 64,
    "a list": lambda path: _saved([1, 2, 3]),
    "other keys": lambda path: _saved({"step": 3, "generator": {}}),
    "other networks": lambda path: _saved(
        {**torch.load(path, weights_only=True), "critic": {"w": torch.zeros(3)}}
    ),
}


@pytest.mark.parametrize("kind", list(BAD_CHECKPOINTS))
def test_every_unreadable_checkpoint_is_exit_2_with_the_path(run_copy, tmp_path, capsys, kind):
    checkpoint = run_copy / "checkpoints" / "last.pt"
    checkpoint.write_bytes(BAD_CHECKPOINTS[kind](checkpoint))
    before = snapshot(run_copy)
    for argv in (
        ["train", "--resume", str(run_copy)],
        ["sample", str(run_copy), "-n", "5", "--out", str(tmp_path / "s.npz")],
        ["eval", str(run_copy)],
        ["export", str(run_copy), "--out", str(tmp_path / "G.safetensors")],
    ):
        err = error_of(capsys, argv)
        assert str(checkpoint) in err, argv
        assert "--out" in err  # it says what to do
    assert snapshot(run_copy) == before
    assert not (tmp_path / "s.npz").exists() and not (tmp_path / "G.safetensors").exists()


# --- values that make no sense ------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["penalty.options.target=-1"], r"penalty.options.target must be a finite number >= 0"),
        (["penalty.options.target=nan"], r"penalty.options.target must be a finite number"),
        (["penalty.options.target=true"], r"penalty.options.target must be a finite number"),
        (["penalty.options.one_sided=3"], r"penalty.options.one_sided must be true or false"),
        (
            ["penalty.name='dragan'", "penalty.options.scale=-0.5"],
            r"penalty.options.scale must be a finite number >= 0",
        ),
        (
            ["penalty.name='dragan'", "penalty.options.noise='pink'"],
            r"penalty.options.noise must be 'uniform' or 'gaussian', got 'pink'",
        ),
    ],
)
def test_penalty_options_out_of_bounds_are_refused_at_config_time(overrides, message):
    with pytest.raises(UserError, match=message):
        load(None, overrides)


def test_a_bad_value_creates_no_run_directory(tmp_path, capsys):
    run = tmp_path / "run"
    assert "target" in error_of(capsys, train_args(run, "penalty.options.target=-1"))
    assert not run.exists()


# --- sizes that do not fit ----------------------------------------------------------------


def test_a_batch_too_large_for_memory_is_refused_before_training(tmp_path, capsys):
    run = tmp_path / "run"
    err = error_of(capsys, train_args(run, "train.steps=4", "train.batch_size=1000000000000"))
    assert "train.batch_size = 1000000000000 does not fit in memory" in err
    assert "Lower train.batch_size to at most about" in err
    assert not (run / "checkpoints").exists() and not (run / "metrics.jsonl").exists()


def test_out_of_memory_during_training_is_exit_2_and_keeps_the_checkpoint(
    tmp_path, capsys, monkeypatch
):
    rounds = Trainer.train_round

    def fails_at_step_3(self: Trainer):
        if self.step == 2:
            raise RuntimeError(
                "[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate "
                "memory: you tried to allocate 800000000000 bytes. Error code 12"
            )
        return rounds(self)

    monkeypatch.setattr(Trainer, "train_round", fails_at_step_3)
    run = tmp_path / "run"
    err = error_of(capsys, train_args(run, "train.steps=6"))
    assert "out of memory on cpu" in err and "an allocation of 745.1 GiB failed" in err
    assert "train.batch_size = 32" in err and "Lower train.batch_size" in err
    assert "the last good checkpoint" in err
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["step"] == 2


def test_a_sample_file_larger_than_the_disk_is_refused(run_copy, tmp_path, capsys, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(2**30, 2**30 - 2**26, 2**26))
    out = tmp_path / "s.npz"
    err = error_of(capsys, ["sample", str(run_copy), "-n", "100000000", "--out", str(out)])
    assert "-n 100000000 does not fit" in err and "762.9 MiB file" in err
    assert not out.exists()
    with pytest.raises(UserError, match=r"shape \(3, 64, 64\) make a 4\.5 TiB file"):
        check_sample_request(10**8, (3, 64, 64), False, out)


def test_a_sample_file_larger_than_memory_is_refused(tmp_path, monkeypatch):
    usage = namedtuple("usage", "total used free")
    # the disk has room for the 30.5 GiB file, whatever this machine's disk holds: only memory
    # is short
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(2**45, 0, 2**45))
    monkeypatch.setattr(samples_module, "available_bytes", lambda device: 2**30)
    with pytest.raises(UserError, match=r"does not fit in memory.*at most about 15356"):
        check_sample_request(10**6, (2, 64, 64), True, tmp_path / "s.npz")


def test_samples_are_written_atomically(run_copy, tmp_path, capsys, monkeypatch):
    out = tmp_path / "s"
    assert main(["sample", str(run_copy), "-n", "7", "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    old = out.read_bytes()
    with np.load(out) as data:  # the name given, no ".npz" appended
        assert data["x"].shape == (7, 2)

    def torn(handle, **arrays):
        handle.write(b"half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", torn)
    assert "No space left" in error_of(capsys, ["sample", str(run_copy), "--out", str(out)])
    assert out.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "s"]  # no temporary file left


# --- signals --------------------------------------------------------------------------------


def test_sigterm_mid_run_saves_a_checkpoint_and_exits_130(tmp_path):
    run = tmp_path / "run"
    proc = kill_resume.launch(train_args(run, "train.steps=100000"))
    deadline = time.monotonic() + 60
    while kill_resume.last_logged_step(run) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGTERM)
    assert kill_resume.wait(proc, timeout=60) == 130
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert state["step"] == kill_resume.last_logged_step(run) >= 2


# --- threads --------------------------------------------------------------------------------


def test_the_automatic_thread_count(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    cpus = len(os.sched_getaffinity(0))
    assert threads_for(load(None, TINY)) == 1  # MLPs: one thread
    dcgan = ["data.name='mnist5k'", "generator.kind='dcgan28'", "critic.kind='dcgan28'"]
    assert threads_for(load(None, dcgan)) == max(1, cpus // 2)
    assert threads_for(load(None, [*TINY, "train.threads=3"])) == 3  # an explicit value wins
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    assert threads_for(load(None, TINY)) is None  # torch follows the environment
    assert threads_for(load(None, [*TINY, "train.threads=3"])) == 3
