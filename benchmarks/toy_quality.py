"""Run a toy recipe over several seeds and check the quality target on each.

One ``python -m gradpen train`` subprocess per seed, limited to ``--threads`` threads
(OMP_NUM_THREADS / MKL_NUM_THREADS). Each child's CPU time (user + sys, from ``os.wait4``) is the
proxy for wall time on an idle machine: on a shared machine wall time is inflated by the other
processes, CPU time much less. Both are printed. A seed passes when it covers every mode with
enough high-quality samples and its CPU time is within ``--budget`` seconds.

    python benchmarks/toy_quality.py --config configs/toy/25gaussians.toml --seeds 5
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path

# (modes, minimum high-quality fraction) each dataset must reach; swissroll has no modes.
TARGETS: dict[str, tuple[int, float]] = {"25gaussians": (25, 0.95), "8gaussians": (8, 0.97)}


@dataclass
class SeedResult:
    """One seed's final metrics and cost."""

    seed: int
    modes_covered: int | None
    high_quality: float | None
    w1: float
    wall_s: float
    cpu_s: float
    passed: bool | None  # None: the dataset has no target
    run_dir: str


def dataset_of(config: Path, overrides: list[str]) -> str:
    """The data set a config (with its overrides) trains on."""
    name = tomllib.loads(config.read_text()).get("data", {}).get("name", "25gaussians")
    for text in overrides:
        key, _, value = text.partition("=")
        if key.strip() == "data.name":
            name = value.strip().strip("'\"")
    return name


def start_seed(
    config: Path, seed: int, overrides: list[str], out_root: Path, threads: int
) -> tuple[subprocess.Popen, Path, float]:
    """Launch one training subprocess; returns it, its run directory and its start time."""
    run_dir = out_root / f"seed{seed}"
    command = [sys.executable, "-m", "gradpen", "train", str(config), "--out", str(run_dir)]
    for text in [f"seed={seed}", "log.progress=false", *overrides]:
        command += ["--set", text]
    env = os.environ | {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    log = (out_root / f"seed{seed}.log").open("wb")
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    return process, run_dir, time.perf_counter()


def finish_seed(
    seed: int,
    process: subprocess.Popen,
    run_dir: Path,
    started: float,
    dataset: str,
    budget: float,
) -> SeedResult:
    """Wait for one subprocess; read its summary and its CPU time."""
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        log = (run_dir.parent / f"seed{seed}.log").read_text()
        raise RuntimeError(f"seed {seed} failed (exit {process.returncode}):\n{log[-2000:]}")
    summary = json.loads((run_dir / "summary.json").read_text())
    cpu = usage.ru_utime + usage.ru_stime
    modes, quality = summary.get("modes_covered"), summary.get("high_quality")
    passed = None
    if dataset in TARGETS:
        need_modes, need_quality = TARGETS[dataset]
        passed = modes == need_modes and quality >= need_quality and cpu <= budget
    return SeedResult(seed, modes, quality, summary["w1"], wall, cpu, passed, str(run_dir))


def run_seeds(
    config: Path,
    seeds: list[int],
    overrides: list[str],
    out_root: Path,
    threads: int,
    jobs: int,
    budget: float,
) -> list[SeedResult]:
    """All seeds, at most ``jobs`` at a time, in seed order."""
    dataset = dataset_of(config, overrides)
    results, pending = [], list(seeds)
    running: list[tuple[int, subprocess.Popen, Path, float]] = []
    while pending or running:
        while pending and len(running) < jobs:
            seed = pending.pop(0)
            running.append((seed, *start_seed(config, seed, overrides, out_root, threads)))
        seed, process, run_dir, started = running.pop(0)
        results.append(finish_seed(seed, process, run_dir, started, dataset, budget))
    return results


def format_table(results: list[SeedResult], budget: float) -> str:
    """A markdown table, one row per seed, and the count passing."""
    rows = [
        "| seed | modes | % HQ | W1 | wall s | CPU s | pass |",
        "|---:|---:|---:|---:|---:|---:|:---:|",
    ]
    for r in results:
        quality = "-" if r.high_quality is None else f"{100 * r.high_quality:.1f}"
        modes = "-" if r.modes_covered is None else str(r.modes_covered)
        verdict = "-" if r.passed is None else ("pass" if r.passed else "FAIL")
        rows.append(
            f"| {r.seed} | {modes} | {quality} | {r.w1:.4f} | {r.wall_s:.0f} | {r.cpu_s:.0f} "
            f"| {verdict} |"
        )
    judged = [r for r in results if r.passed is not None]
    if judged:
        passing = sum(r.passed for r in judged)
        rows.append(f"\n{passing}/{len(judged)} seeds pass (CPU budget {budget:.0f} s)")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, required=True, help="a TOML recipe")
    parser.add_argument("--seeds", type=int, default=5, help="number of seeds (default 5)")
    parser.add_argument("--first-seed", type=int, default=0, help="first seed (default 0)")
    parser.add_argument("--set", action="append", default=[], help="config override k=v")
    parser.add_argument("--threads", type=int, default=1, help="threads per run (default 1)")
    parser.add_argument("--jobs", type=int, default=1, help="seeds run at once (default 1)")
    parser.add_argument("--budget", type=float, default=180.0, help="CPU s allowed (180)")
    parser.add_argument("--out", type=Path, help="folder of the run directories (default: temp)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    if args.seeds < 1 or args.threads < 1 or args.jobs < 1:
        parser.error("--seeds, --threads and --jobs must be >= 1")
    out_root = args.out or Path(tempfile.mkdtemp(prefix="toy_quality_"))
    out_root.mkdir(parents=True, exist_ok=True)
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    results = run_seeds(
        args.config, seeds, args.set, out_root, args.threads, args.jobs, args.budget
    )
    if args.json:
        print(json.dumps([asdict(r) for r in results], indent=2))
    else:
        print(format_table(results, args.budget))


if __name__ == "__main__":
    main()
