"""Kill a training run with SIGKILL again and again, resume it each time, and count the survivals.

Each launch is a forked child running ``gradpen train`` (``--out`` the first time, ``--resume``
after); the parent kills it at a random moment (a random number of steps into the launch, plus
a random fraction of a step), or, on every second kill, inside the 1st, 2nd or
3rd checkpoint write of the launch (the child then pauses inside each write, between the temporary
file and the replace: ``GRADPEN_CHECKPOINT_PAUSE``). After each kill it checks that the
checkpoint loads and that at most one checkpoint interval of work is lost; at the end the resumed
run must equal an uninterrupted one: the same weights, the same metrics, the same summary.

    python benchmarks/kill_resume.py --kills 20

prints one line per kill and ``survived K/N kills``; exit status 0 when every kill was survived
and the final run equals the uninterrupted one. ``tests/test_crash.py`` runs a few kills.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from pathlib import Path

import torch

# imported once here rather than again in every forked launch (evaluation and plots need them)
import gradpen.metrics.toy
import gradpen.plots  # noqa: F401
from gradpen.cli import main
from gradpen.errors import UserError
from gradpen.train.checkpoint import PAUSE_VARIABLE, load_checkpoint

FORK = multiprocessing.get_context("fork")
CHECKPOINT_EVERY = 5
TINY = [
    "data.name='8gaussians'",
    "generator.width=32",
    "critic.width=32",
    "train.n_critic=2",
    "train.batch_size=64",
    "train.g_lr=1e-3",
    "train.d_lr=1e-3",
    "train.ema=0.9",
    "penalty.name='r1'",
    "penalty.every=2",
    "log.every=1",
    f"log.checkpoint_every={CHECKPOINT_EVERY}",
    "log.eval_samples=300",
    "log.progress=false",
]
LAUNCH_TIMEOUT = 300.0


def _child(argv: list[str], pause: float) -> None:
    """A launch: ``gradpen ARGV`` with its stdout silenced."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.environ[PAUSE_VARIABLE] = str(pause)
    torch.set_num_threads(1)
    raise SystemExit(main(argv))


def launch(argv: list[str], *, pause: float = 0.0) -> BaseProcess:
    """Start ``gradpen ARGV`` in a forked child (checkpoint writes pause ``pause`` seconds)."""
    proc = FORK.Process(target=_child, args=(argv, pause))
    proc.start()
    return proc


def wait(proc: BaseProcess, timeout: float = LAUNCH_TIMEOUT) -> int:
    """The exit code of ``proc`` (killed, and an error, if it outlives ``timeout``)."""
    proc.join(timeout)
    if proc.is_alive():
        proc.kill()
        proc.join()
        raise RuntimeError(f"a launch ran longer than {timeout} s")
    assert proc.exitcode is not None
    return proc.exitcode


def train_argv(run_dir: Path, steps: int) -> list[str]:
    """A fresh run when ``run_dir`` has no config yet, else a resume."""
    if (run_dir / "config.toml").is_file():
        return ["train", "--resume", str(run_dir)]
    sets = [*TINY, f"train.steps={steps}", f"log.samples_every={steps}"]
    return ["train", "--out", str(run_dir), *[arg for s in sets for arg in ("--set", s)]]


def last_logged_step(run_dir: Path) -> int:
    """The last step in ``metrics.jsonl`` (log.every = 1: the steps completed)."""
    path = run_dir / "metrics.jsonl"
    step = 0
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                step = int(json.loads(line)["step"])
            except (ValueError, KeyError):
                continue  # the torn last line of a killed write
    return step


def checkpoint_temporaries(run_dir: Path) -> set[Path]:
    """The temporary files of checkpoint writes: under way, or left by a killed one."""
    return set((run_dir / "checkpoints").glob(".last.pt.*.tmp"))


@dataclass
class Kill:
    """One kill: where the run was, what the checkpoint held, whether it was survived."""

    in_write: bool
    progress: int  # steps completed when killed
    checkpoint_step: int  # step of the checkpoint left behind (0: none yet)
    problem: str  # empty when survived

    @property
    def survived(self) -> bool:
        return not self.problem


def kill_once(run_dir: Path, steps: int, *, write: int, ahead: int, jitter: float) -> Kill:
    """Launch, kill, and check. The kill lands inside the launch's ``write``-th checkpoint
    write, or (``write`` = 0) ``jitter`` seconds after the run logs the step ``ahead`` steps
    past the last one logged before the launch (so that each kill falls on new work)."""
    stale = checkpoint_temporaries(run_dir)  # left by an earlier kill; the launch removes them
    target = last_logged_step(run_dir) + ahead
    proc = launch(train_argv(run_dir, steps), pause=0.05 if write else 0.0)
    deadline = time.monotonic() + LAUNCH_TIMEOUT
    seen: set[Path] = set()  # each write has a temporary file of its own name
    while proc.is_alive() and time.monotonic() < deadline:
        seen |= checkpoint_temporaries(run_dir) - stale
        if (write and len(seen) >= write) or (not write and last_logged_step(run_dir) >= target):
            break
        time.sleep(0.001)
    time.sleep(0 if write else jitter)
    if not proc.is_alive():
        raise RuntimeError("the run ended before the kill: give it more steps")
    assert proc.pid is not None
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    in_write = bool(checkpoint_temporaries(run_dir) - stale)
    progress = last_logged_step(run_dir)
    path = run_dir / "checkpoints" / "last.pt"
    checkpoint_step, problem = 0, ""
    try:
        if path.exists():
            checkpoint_step = int(load_checkpoint(path)["step"])
    except UserError as error:
        problem = f"checkpoint does not load: {error}"
    if not problem and progress - checkpoint_step > CHECKPOINT_EVERY:
        problem = f"lost {progress - checkpoint_step} steps (> {CHECKPOINT_EVERY})"
    return Kill(in_write, progress, checkpoint_step, problem)


def differences(straight: Path, resumed: Path) -> list[str]:
    """What differs between two finished runs: weights, metrics (but timings), summary."""
    found = []
    a, b = (load_checkpoint(run / "checkpoints" / "last.pt") for run in (straight, resumed))
    for part in ("generator", "critic", "ema"):
        for name, value in a[part].items():
            if not torch.equal(value, b[part][name]):
                found.append(f"{part}.{name}")
    records = []
    for run in (straight, resumed):
        lines = (run / "metrics.jsonl").read_text().splitlines()
        records.append(
            [{k: v for k, v in json.loads(x).items() if k != "step_time"} for x in lines]
        )
    if records[0] != records[1]:
        found.append("metrics.jsonl")
    if (straight / "summary.json").read_text() != (resumed / "summary.json").read_text():
        found.append("summary.json")
    return found


def kill_and_resume(
    work: Path, *, kills: int, steps: int, seed: int, max_jitter: float = 0.05
) -> tuple[list[Kill], list[str]]:
    """``kills`` kills of one run, then its completion; returns the kills and the differences
    from an uninterrupted run of the same config."""
    rng = random.Random(seed)
    straight, resumed = work / "straight", work / "resumed"
    if wait(launch(train_argv(straight, steps))) != 0:
        raise RuntimeError("the uninterrupted run failed")
    record = [  # every second kill aims at the 1st, 2nd or 3rd checkpoint write of its launch
        kill_once(
            resumed,
            steps,
            write=rng.randint(1, 3) if i % 2 else 0,
            ahead=rng.randint(1, 2 * CHECKPOINT_EVERY),
            jitter=rng.uniform(0, max_jitter),
        )
        for i in range(kills)
    ]
    if wait(launch(train_argv(resumed, steps))) != 0:
        raise RuntimeError("the final resume failed")
    return record, differences(straight, resumed)


def main_cli() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--steps", type=int, default=400, help="generator steps of the run")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        kills, diff = kill_and_resume(Path(tmp), kills=args.kills, steps=args.steps, seed=args.seed)
    print(f"{'kill':>4} {'in write':>8} {'progress':>8} {'checkpoint':>10}  result")
    for i, kill in enumerate(kills, 1):
        result = "survived" if kill.survived else kill.problem
        print(
            f"{i:>4} {kill.in_write!s:>8} {kill.progress:>8} {kill.checkpoint_step:>10}  {result}"
        )
    survived = sum(kill.survived for kill in kills)
    print(f"kills inside a checkpoint write: {sum(k.in_write for k in kills)}")
    print(
        f"final run equals the uninterrupted run: {not diff}"
        + (f" (differs: {diff})" if diff else "")
    )
    print(f"survived {survived}/{len(kills)} kills")
    return 0 if survived == len(kills) and not diff else 1


if __name__ == "__main__":
    sys.exit(main_cli())
