"""Do two runs started together on one machine take much longer than one run alone?

Each repeat times one ``gradpen train`` alone, then two started at the same moment (until both
have finished), for every setting compared; the settings alternate within a repeat so that a
burst of load from elsewhere hits them alike. It prints the median wall times and the ratio
(pair / alone): 1.0 when the two runs found a core each, 2.0 when they only took turns, more
when their threads fought over the cores. On a machine busy with other work the wall times
swing with that work; the CPU seconds per run (user + system, of the runs themselves) do not: they
stay near the alone value when the runs do not oversubscribe, and grow when idle threads spin.

    python benchmarks/concurrent_runs.py --repeats 3
    python benchmarks/concurrent_runs.py --config configs/mnist/wgangp.toml --steps 20

The default compares the automatic thread count (``train.threads = 0``) with
``train.threads = 2`` (torch's own default on a 2-core machine, the old behaviour).
"""

from __future__ import annotations

import argparse
import os
import resource
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


def timed(commands: list[list[str]]) -> tuple[float, float]:
    """Seconds from starting ``commands`` together until the last one has finished, and the CPU
    seconds (user + system) they used, per command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    procs = [subprocess.Popen(c, stdout=subprocess.DEVNULL, cwd=ROOT) for c in commands]
    codes = [p.wait() for p in procs]
    wall = time.perf_counter() - start
    if any(codes):
        raise RuntimeError(f"a run failed (exit codes {codes}): {commands[0]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return wall, cpu / len(commands)


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
    keys = ("alone", "pair", "alone cpu", "pair cpu")
    times: dict[str, dict[str, list[float]]] = {s: {k: [] for k in keys} for s in args.settings}
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
                run = times[setting]
                for name, commands in (("alone", alone), ("pair", pair)):
                    wall, cpu = timed(commands)
                    run[name].append(wall)
                    run[f"{name} cpu"].append(cpu)
                ratio = run["pair"][-1] / run["alone"][-1]
                print(
                    f"repeat {repeat + 1} {setting:<18} alone {run['alone'][-1]:6.1f} s"
                    f"  pair {run['pair'][-1]:6.1f} s  ratio {ratio:.2f}"
                    f"  (load {os.getloadavg()[0]:.1f})",
                    flush=True,
                )
    print(
        f"\n{'setting':<20}{'alone s':>10}{'pair s':>10}{'pair/alone':>12}"
        f"{'cpu s/run alone':>17}{'cpu s/run pair':>16}  (medians; the ratio of each repeat's"
        " side-by-side pair)"
    )
    for setting, run in times.items():
        med = {k: statistics.median(v) for k, v in run.items()}
        ratio = statistics.median(p / a for p, a in zip(run["pair"], run["alone"], strict=True))
        print(
            f"{setting:<20}{med['alone']:>10.1f}{med['pair']:>10.1f}{ratio:>12.2f}"
            f"{med['alone cpu']:>17.1f}{med['pair cpu']:>16.1f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
