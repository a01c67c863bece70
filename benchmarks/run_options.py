"""The training loop's round under each run option, timed side by side.

    python benchmarks/run_options.py [--device cpu|cuda] [--repeats N] [--n-critic K]
        [--variants fp32 channels-last bf16 fp16 bf16-channels-last ...]

One ``Trainer`` per variant on the DCGAN-28 networks and the shipped MNIST digits (batch 64,
WGAN-GP, ``n_critic`` critic steps and one generator step per round, one CPU thread). After a
warm-up round each, the variants' rounds are timed interleaved; prints each variant's median
round time over that of ``fp32`` (above 1: slower than fp32). A variant is a precision
(``fp32``, ``bf16``, ``fp16``), optionally followed by ``-channels-last``; the bare name
``channels-last`` is fp32 in channels-last. Run it on the machine you train on: on a CPU
without 16-bit instructions the 16-bit variants are emulated and slow.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from gradpen.train import Trainer, load

BASE = [
    "data.name='mnist5k'",
    "generator.kind='dcgan28'",
    "critic.kind='dcgan28'",
    "train.batch_size=64",
    "train.threads=1",
    "log.progress=false",
]


def overrides_of(variant: str) -> list[str]:
    """The ``--set`` overrides of a variant name such as ``bf16-channels-last``."""
    precision, _, layout = variant.partition("-")
    if precision == "channels":
        precision, layout = "fp32", "channels-last"
    if precision not in ("fp32", "bf16", "fp16") or layout not in ("", "channels-last"):
        raise SystemExit(f"unknown variant {variant!r}")
    return [f"train.precision={precision!r}", f"train.channels_last={bool(layout)}".lower()]


def timed_round(trainer: Trainer) -> float:
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    trainer.train_round()
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n-critic", type=int, default=5)
    parser.add_argument("--variants", nargs="+", default=["fp32", "channels-last", "bf16", "fp16"])
    args = parser.parse_args()
    variants = ["fp32", *(v for v in args.variants if v != "fp32")]
    common = [*BASE, f"train.device={args.device!r}", f"train.n_critic={args.n_critic}"]
    with tempfile.TemporaryDirectory() as scratch:
        trainers = {
            name: Trainer(load(None, [*common, *overrides_of(name)]), Path(scratch) / name)
            for name in variants
        }
        for trainer in trainers.values():
            timed_round(trainer)  # warm-up
        times: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.repeats):
            for name, trainer in trainers.items():
                times[name].append(timed_round(trainer))
    medians = {name: statistics.median(values) for name, values in times.items()}
    print(f"round time / fp32 round time ({args.device}, {args.repeats} repeats, interleaved):")
    for name, median in medians.items():
        print(f"  {name:>20}: {median / medians['fp32']:.2f}")


if __name__ == "__main__":
    main()
