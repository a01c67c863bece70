"""Starting, resuming and reopening runs: what ``gradpen train|sample|eval|export`` call."""

from __future__ import annotations

import sys
import time
import tomllib
from pathlib import Path
from typing import Any

from gradpen.errors import UserError
from gradpen.train import distributed
from gradpen.train.checkpoint import load_checkpoint
from gradpen.train.config import Config, apply_overrides, from_dict, load, read_toml
from gradpen.train.lock import RunLock
from gradpen.train.loop import Trainer
from gradpen.train.memory import check_step_memory, is_out_of_memory, out_of_memory_error


def _default_run_dir(config_path: str | None) -> Path:
    stem = Path(config_path).stem if config_path else "run"
    return Path("runs") / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"


def _holds_a_run(run_dir: Path) -> bool:
    """Whether ``run_dir`` has trained before (a checkpoint or logged metrics).

    ``config.toml`` alone does not count: under torchrun, rank 0 may write it before another
    rank gets here, and every rank must reach the same answer.
    """
    metrics = run_dir / "metrics.jsonl"
    return (run_dir / "checkpoints").exists() or (metrics.exists() and metrics.stat().st_size > 0)


def train(
    config_path: str | None = None,
    overrides: list[str] = (),
    out: str | Path | None = None,
    resume: str | Path | None = None,
) -> tuple[Trainer, dict[str, Any]]:
    """Train a new run (from a config) or continue one (``resume``); returns the summary.

    The run directory is locked for the whole call (:class:`RunLock`): a second writer stops
    with a UserError. A run killed before its first checkpoint resumes from step 0 with its saved
    config. Running out of memory stops with a UserError naming the sizes to lower; the last good
    checkpoint is kept. Under torchrun every rank calls this (rank 0 alone takes the lock); the
    process group is destroyed on the way out.
    """
    lock: RunLock | None = None
    config: Config | None = None
    run_dir = Path(resume if resume is not None else out or _default_run_dir(config_path))
    try:
        if resume is not None:
            if config_path is not None:
                raise UserError("--resume continues a run with its saved config; drop CONFIG")
            config = _saved_config(run_dir, overrides)
            lock = _lock(run_dir)
            trainer = Trainer(config, run_dir)
            if trainer.checkpoint_path.is_file():
                state = restore(trainer, trainer.checkpoint_path)
                saved_steps = tomllib.loads(state["config_toml"])["train"]["steps"]
                t = trainer.config.train
                note = schedule_change(saved_steps, t.steps, trainer.step, t.lr_decay)
                if note is not None and trainer.dist.is_main:
                    print(f"gradpen train: {note}", file=sys.stderr)
        else:
            config = load(config_path, list(overrides))
            # The trainer checks data and networks and writes nothing: a run refused here
            # leaves no directory behind.
            trainer = Trainer(config, run_dir)
            lock = _lock(run_dir)  # before the check: a run started beside us sees the lock
            if _holds_a_run(run_dir):
                raise UserError(
                    f"{str(run_dir)!r} already holds a run; continue it with --resume {run_dir} "
                    "or choose another --out"
                )
        check_step_memory(trainer)
        trainer.drop_metrics_after_checkpoint()
        summary = trainer.train()
    except (KeyboardInterrupt, UserError):
        distributed.leave()  # the ranks agree on these stops: every rank is leaving too
        raise
    except BaseException as error:
        distributed.leave(wait_for_others=False)
        if config is not None and is_out_of_memory(error):
            raise out_of_memory_error(error, config, run_dir) from None
        raise
    finally:
        if lock is not None:
            lock.release()
    distributed.leave()
    return trainer, summary


def schedule_change(old_steps: int, new_steps: int, step: int, lr_decay: str) -> str | None:
    """How the schedule continues when a resume changes ``train.steps``; None if unchanged.

    The linear decay is ``1 - s / train.steps`` of the base learning rates at generator step
    ``s``, computed from the current config: a new length re-times the rest of the run, so the
    rates jump at the resumed step from the old schedule's value to the new one's.

    Args:
        old_steps: ``train.steps`` of the checkpointed run.
        new_steps: ``train.steps`` of the resumed run.
        step: the generator step the run resumes at.
        lr_decay: ``"linear"`` or ``"none"``.

    Returns:
        One sentence for the user, or None when the length did not change.
    """
    if new_steps == old_steps:
        return None
    head = f"train.steps changed from {old_steps} to {new_steps} on resume at step {step}"
    if new_steps <= step:
        return f"{head}: the run has already reached {new_steps} steps and stops here."
    if lr_decay != "linear":
        return f"{head}: the run continues to step {new_steps} at its constant learning rates."
    before, after = (max(0.0, 1.0 - step / n) for n in (old_steps, new_steps))
    return (
        f"{head}: the linear learning-rate decay is re-timed to the new length, so the learning "
        f"rates go from {before:.3g} to {after:.3g} x their base values now and fall linearly "
        f"to 0 at step {new_steps}."
    )


def _lock(run_dir: Path) -> RunLock | None:
    """The writer lock of ``run_dir``, taken by the process that writes (rank 0 under torchrun)."""
    if not distributed.env_from().is_main:
        return None
    lock = RunLock(run_dir)
    lock.acquire()
    return lock


def _saved_config(run_dir: Path, overrides: list[str]) -> Config:
    """The config saved in ``run_dir`` (plus ``overrides``)."""
    config_file = run_dir / "config.toml"
    if not config_file.is_file():
        raise UserError(f"{str(run_dir)!r} is not a run directory (no config.toml)")
    return from_dict(apply_overrides(read_toml(config_file), list(overrides)))


def open_run(run_dir: str | Path, overrides: list[str] = ()) -> Trainer:
    """The trainer of an existing run, its networks restored from ``checkpoints/last.pt``."""
    run_dir = Path(run_dir)
    trainer = Trainer(_saved_config(run_dir, list(overrides)), run_dir)
    restore(trainer, trainer.checkpoint_path)
    return trainer


def restore(trainer: Trainer, path: Path) -> dict[str, Any]:
    """Load the checkpoint at ``path`` into ``trainer`` and return it; a file that is not a
    checkpoint of this run (unreadable, or made for other networks) is a UserError saying what
    to do."""
    state = load_checkpoint(path)
    try:
        trainer.load_state_dict(state)
    except UserError:
        raise
    except Exception as error:  # a mismatch of a loaded file is the file's fault
        raise UserError(
            f"checkpoint {str(path)!r} does not fit this run ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else 'no details'}). It was not written "
            f"for the networks in {str(trainer.run_dir / 'config.toml')!r}: put back the "
            "checkpoint of this run, or start a new run with another --out"
        ) from None
    return state
