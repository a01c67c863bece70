"""Where do more CPU threads start to pay for a training step? One process, alone, per net size.

For each case (a network kind, its size, a batch size) it times training rounds (``n_critic``
critic steps and a generator step of the loop) at 1, 2, ... threads, interleaved and repeated,
and prints the median seconds per round and the speedup of each thread count over one thread.
A speedup near 1 means the extra threads only burn a core that another run on the machine
could have used: that is where ``train.threads = 0`` (auto) picks one thread.

    python benchmarks/thread_crossover.py --repeats 5

Measure on an idle machine: with other processes busy, the extra threads find no free core.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from gradpen.train import Trainer, load

ROOT = Path(__file__).resolve().parents[1]
LOG = ["log.progress=false", "log.eval_samples=100"]
CASES: dict[str, tuple[str, list[str]]] = {
    "mlp 128/256, batch 256 (8gaussians)": ("configs/toy/8gaussians.toml", []),
    "mlp 512, batch 1024": (
        "configs/toy/8gaussians.toml",
        ["generator.width=512", "critic.width=512", "train.batch_size=1024"],
    ),
    "dcgan28, batch 16": ("configs/mnist/wgangp.toml", ["train.batch_size=16"]),
    "dcgan28, batch 64 (wgangp)": ("configs/mnist/wgangp.toml", []),
    "dcgan28, batch 256": ("configs/mnist/wgangp.toml", ["train.batch_size=256"]),
}


def seconds_per_round(trainer: Trainer, threads: int, rounds: int) -> float:
    """Mean wall time of ``rounds`` training rounds at ``threads`` threads (after one warm-up)."""
    torch.set_num_threads(threads)
    trainer.train_round()
    start = time.perf_counter()
    for _ in range(rounds):
        trainer.train_round()
    return (time.perf_counter() - start) / rounds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=5, help="rounds per timing")
    parser.add_argument("--max-threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    counts = list(range(1, args.max_threads + 1))
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    print(f"{'case':<38}" + "".join(f"{f'{n} thr s/round':>16}" for n in counts) + "  speedup")
    for name, (config, overrides) in CASES.items():
        trainer = Trainer(load(ROOT / config, [*overrides, *LOG, "train.threads=1"]), ROOT / "x")
        times: dict[int, list[float]] = {n: [] for n in counts}
        for _ in range(args.repeats):
            for n in counts:  # interleaved: a burst of load hits every count alike
                times[n].append(seconds_per_round(trainer, n, args.rounds))
        medians = {n: statistics.median(times[n]) for n in counts}
        speedups = ", ".join(f"{n}: {medians[1] / medians[n]:.2f}x" for n in counts[1:])
        print(f"{name:<38}" + "".join(f"{medians[n]:>16.4f}" for n in counts) + f"  {speedups}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
