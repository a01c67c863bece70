"""Starting, resuming and reopening runs: what ``gradpen train|sample|eval`` call."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from gradpen.errors import UserError
from gradpen.train.checkpoint import load_checkpoint
from gradpen.train.config import Config, apply_overrides, from_dict, load, read_toml
from gradpen.train.loop import Trainer


def _default_run_dir(config_path: str | None) -> Path:
    stem = Path(config_path).stem if config_path else "run"
    return Path("runs") / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"


def train(
    config_path: str | None = None,
    overrides: list[str] = (),
    out: str | Path | None = None,
    resume: str | Path | None = None,
) -> tuple[Trainer, dict[str, Any]]:
    """Train a new run (from a config) or continue one (``resume``); returns the summary."""
    if resume is not None:
        if config_path is not None:
            raise UserError("--resume continues a run with its saved config; drop CONFIG")
        trainer = open_run(resume, overrides)
        trainer.drop_metrics_after_checkpoint()
    else:
        config = load(config_path, list(overrides))
        run_dir = Path(out) if out is not None else _default_run_dir(config_path)
        if (run_dir / "checkpoints").exists():
            raise UserError(
                f"{str(run_dir)!r} already holds a run; continue it with --resume {run_dir} "
                "or choose another --out"
            )
        trainer = Trainer(config, run_dir)
    return trainer, trainer.train()


def open_run(run_dir: str | Path, overrides: list[str] = ()) -> Trainer:
    """The trainer of an existing run, its networks restored from ``checkpoints/last.pt``."""
    run_dir = Path(run_dir)
    config_file = run_dir / "config.toml"
    if not config_file.is_file():
        raise UserError(f"{str(run_dir)!r} is not a run directory (no config.toml)")
    config: Config = from_dict(apply_overrides(read_toml(config_file), list(overrides)))
    trainer = Trainer(config, run_dir)
    trainer.load_state_dict(load_checkpoint(trainer.checkpoint_path))
    return trainer
