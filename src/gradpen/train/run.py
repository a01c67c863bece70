"""Starting, resuming and reopening runs: what ``gradpen train|sample|eval|export`` call."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from gradpen.errors import UserError
from gradpen.train import distributed
from gradpen.train.checkpoint import load_checkpoint
from gradpen.train.config import Config, apply_overrides, from_dict, load, read_toml
from gradpen.train.loop import Trainer


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

    A run killed before its first checkpoint resumes from step 0 with its saved config. Under
    torchrun every rank calls this; the process group is destroyed on the way out.
    """
    try:
        if resume is not None:
            if config_path is not None:
                raise UserError("--resume continues a run with its saved config; drop CONFIG")
            trainer = _reopen(resume, overrides)
            if trainer.checkpoint_path.is_file():
                trainer.load_state_dict(load_checkpoint(trainer.checkpoint_path))
        else:
            config = load(config_path, list(overrides))
            run_dir = Path(out) if out is not None else _default_run_dir(config_path)
            if _holds_a_run(run_dir):
                raise UserError(
                    f"{str(run_dir)!r} already holds a run; continue it with --resume {run_dir} "
                    "or choose another --out"
                )
            trainer = Trainer(config, run_dir)
        trainer.drop_metrics_after_checkpoint()
        summary = trainer.train()
    except (KeyboardInterrupt, UserError):
        distributed.leave()  # the ranks agree on these stops: every rank is leaving too
        raise
    except BaseException:
        distributed.leave(wait_for_others=False)
        raise
    distributed.leave()
    return trainer, summary


def _reopen(run_dir: str | Path, overrides: list[str]) -> Trainer:
    """A fresh trainer with the saved config of ``run_dir`` (plus ``overrides``)."""
    run_dir = Path(run_dir)
    config_file = run_dir / "config.toml"
    if not config_file.is_file():
        raise UserError(f"{str(run_dir)!r} is not a run directory (no config.toml)")
    config: Config = from_dict(apply_overrides(read_toml(config_file), list(overrides)))
    return Trainer(config, run_dir)


def open_run(run_dir: str | Path, overrides: list[str] = ()) -> Trainer:
    """The trainer of an existing run, its networks restored from ``checkpoints/last.pt``."""
    trainer = _reopen(run_dir, overrides)
    trainer.load_state_dict(load_checkpoint(trainer.checkpoint_path))
    return trainer
