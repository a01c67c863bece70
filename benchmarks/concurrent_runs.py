"""Do two runs started together on one machine take much longer than one run alone?

Each repeat times one ``gradpen train`` alone, then two started at the same moment (until both
have finished), for every setting compared; the settings alternate within a repeat so that a
burst of load from elsewhere hits them alike. It prints the median wall times and the ratio
(pair / alone): 1.0 when the two runs found a core each, 2.0 when they only took turns, more
when their threads fought over the cores.

    python benchmarks/concurrent_runs.py --repeats 3
    python benchmarks/concurrent_runs.py --config configs/mnist/wgangp.toml --steps 20

The default compares the automatic thread count (``train.threads = 0``) with
``train.threads = 2`` (torch's own default on a 2-core machine, the old behaviour).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def train_command(config: str, steps: int, out: Path, extra: list[str]) -> list[str]:
    """``gradpen train`` of ``config`` for ``steps`` steps into ``out``, quietly."""
    sets = [f"train.steps={steps}", "log.progress=false", *extra]
    return [
        sys.executable,
        "-m",
        "gradpen",
        "train",
        config,
        "--out",
        str(out),
        *[arg for s in sets for arg in ("--set", s)],
    ]


def wall_time(commands: list[list[str]]) -> float:
    """Seconds from starting ``commands`` together until the last one has finished."""
    start = time.perf_counter()
    procs = [subprocess.Popen(c, stdout=subprocess.DEVNULL, cwd=ROOT) for c in commands]
    codes = [p.wait() for p in procs]
    if any(codes):
        raise RuntimeError(f"a run failed (exit codes {codes}): {commands[0]}")
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/toy/8gaussians.toml")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--settings",
        nargs="+",
        default=["train.threads=0", "train.threads=2"],
        help="one --set value per setting compared",
    )
    args = parser.parse_args()
    times: dict[str, dict[str, list[float]]] = {s: {"alone": [], "pair": []} for s in args.settings}
    print(f"{args.config}, {args.steps} steps, {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for i, setting in enumerate(args.settings):
                base = Path(tmp) / f"r{repeat}-s{i}"
                alone = [train_command(args.config, args.steps, base / "alone", [setting])]
                pair = [
                    train_command(args.config, args.steps, base / f"pair{k}", [setting])
                    for k in (0, 1)
                ]
                times[setting]["alone"].append(wall_time(alone))
                times[setting]["pair"].append(wall_time(pair))
                ratio = times[setting]["pair"][-1] / times[setting]["alone"][-1]
                print(
                    f"repeat {repeat + 1} {setting:<18} alone {times[setting]['alone'][-1]:6.1f} s"
                    f"  pair {times[setting]['pair'][-1]:6.1f} s  ratio {ratio:.2f}",
                    flush=True,
                )
    print(f"\n{'setting':<20}{'alone s':>10}{'pair s':>10}{'pair/alone':>12}  (medians)")
    for setting, runs in times.items():
        alone, pair = statistics.median(runs["alone"]), statistics.median(runs["pair"])
        print(f"{setting:<20}{alone:>10.1f}{pair:>10.1f}{pair / alone:>12.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
