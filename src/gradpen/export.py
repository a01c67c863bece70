"""Export a run's generator as safetensors, for use outside gradpen.

``gradpen export RUN_DIR --out G.safetensors`` writes the generator's weights (the EMA copy when
the run keeps one) read from ``checkpoints/last.pt``, with the metadata needed to rebuild it:
the generator kind and options, the run's full config, the step, and whether it is the EMA.
Safetensors holds tensors only, so loading the file can never run code.
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from gradpen.errors import UserError
from gradpen.nets import build_generator
from gradpen.train import open_run
from gradpen.train.config import to_toml

FORMAT = "gradpen-generator-1"


def export_generator(run_dir: str | Path, out: str | Path) -> Path:
    """Write the generator of the run in ``run_dir`` to the safetensors file ``out``."""
    trainer = open_run(run_dir)
    metadata = {
        "format": FORMAT,
        "kind": trainer.config.generator.kind,
        "options": json.dumps(trainer.generator_options),
        "ema": json.dumps(trainer.ema is not None),
        "step": str(trainer.step),
        "config_toml": to_toml(trainer.config),
    }
    tensors = {k: v.detach().cpu().contiguous() for k, v in trainer.sampler.state_dict().items()}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out), metadata=metadata)
    return out


def load_generator(path: str | Path) -> nn.Module:
    """The generator saved by :func:`export_generator`, rebuilt and in eval mode."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no exported generator at {str(path)!r}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    except Exception as error:
        raise UserError(f"{str(path)!r} is not a readable safetensors file: {error}") from None
    if metadata.get("format") != FORMAT:
        raise UserError(f"{str(path)!r} was not written by gradpen export (no gradpen metadata)")
    net = build_generator(metadata["kind"], **json.loads(metadata["options"]))
    net.load_state_dict(tensors)
    return net.eval()
