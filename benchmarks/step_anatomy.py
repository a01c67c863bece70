"""Where a penalized critic step's time goes, kernel by kernel, against a plain critic step.

    python benchmarks/step_anatomy.py [--critic NAME] [--config NAME] [--repeats N]
                                      [--threads T] [--top K]

A rough count of the work says an exact WGAN-GP step should cost about 1.6-1.7x a plain step
on the DCGAN critics; measured, it costs more. This splits the difference. The plain step and
a penalized one (``--config``, a name from ``penalty_overhead.CONFIGS``; default ``gradpen
wgan-gp``) run interleaved, one profiled step of each per round in a shuffled order, each with
its own copy of the critic and its own Adam. Every operator call is keyed by its name, input
shapes and scalar arguments (so a convolution backward that computes only the input gradient
is told apart from one that computes all three), and its self time (``torch.profiler``, CPU)
is summed per key and step; the report takes medians over the rounds. Printed:

- per key: calls per step and milliseconds per call in each step, heaviest first, and its extra
  time: the penalized step's time on it (shared calls priced at the plain step's time per call)
  minus the plain step's, as a share of the plain step;
- ``measured``: the penalized step's total self time over the plain step's;
- ``at the plain step's speed``: the same, with every key that also runs in the plain step
  charged at the plain step's time per call (the work of the penalized step, priced by the
  plain step's kernels); the keys only the penalized step runs keep their own time.

The gap between the two is the slowdown of the same kernels inside the penalized step (a
larger working set, cache and allocator effects); what remains above 1 in the second is the
extra work. Self time counts the operators only, not the Python between them, so on a small
network (the toy MLP) its ratios run well below those of ``penalty_overhead.py``; on the conv
critics, where the kernels are most of the step, they come close.
"""

from __future__ import annotations

import argparse
import copy
import random
import statistics
from collections import defaultdict
from typing import Any

import torch
from penalty_overhead import CONFIGS, CRITICS, Runner
from torch.profiler import ProfilerActivity, profile

Key = tuple[str, str, str]  # operator name, input shapes, scalar arguments


def _key(event: Any) -> Key:
    concrete = [c for c in getattr(event, "concrete_inputs", None) or [] if c not in (None, [])]
    return event.name, str(event.input_shapes), str(concrete)


def profiled_step(runner: Runner, real: torch.Tensor, fake: torch.Tensor) -> dict[Key, list]:
    """One step under the profiler: per key, ``[calls, self microseconds]``."""
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        runner.one_step(real, fake)
    totals: dict[Key, list] = defaultdict(lambda: [0, 0.0])
    for event in prof.events():
        entry = totals[_key(event)]
        entry[0] += 1
        entry[1] += event.self_cpu_time_total
    return totals


def anatomy(critic: str, config: str, repeats: int, seed: int = 0) -> dict[str, Any]:
    """Profile ``repeats`` interleaved rounds of the plain and the ``config`` step.

    Args:
        critic: a name from ``penalty_overhead.CRITICS``.
        config: a name from ``penalty_overhead.CONFIGS``.
        repeats: profiled rounds (after two warm-up rounds).
        seed: seeds the critic, the batch and the shuffled order.

    Returns:
        ``{"keys": {key: {"plain": (calls, us_per_call), config: ...}}, "measured": ratio,
        "at_plain_speed": ratio}`` with per-step medians over the rounds.
    """
    torch.manual_seed(seed)
    order = random.Random(seed)
    problem = CRITICS[critic]
    real, fake = problem.data(problem.batch)
    base = problem.make()
    runners = {name: Runner(CONFIGS[name][0], 1, copy.deepcopy(base)) for name in ("plain", config)}
    for _ in range(2):
        for runner in runners.values():
            runner.one_step(real, fake)
    rounds: dict[str, list[dict[Key, list]]] = {name: [] for name in runners}
    for _ in range(repeats):
        names = list(runners)
        order.shuffle(names)
        for name in names:
            rounds[name].append(profiled_step(runners[name], real, fake))

    def per_step(name: str) -> dict[Key, tuple[float, float]]:
        keys = {key for step in rounds[name] for key in step}
        table = {}
        for key in keys:
            calls = statistics.median(step.get(key, [0, 0.0])[0] for step in rounds[name])
            micros = statistics.median(step.get(key, [0, 0.0])[1] for step in rounds[name])
            table[key] = (calls, micros)
        return table

    plain, penalized = per_step("plain"), per_step(config)
    plain_total = statistics.median(sum(v[1] for v in step.values()) for step in rounds["plain"])
    penalized_total = statistics.median(sum(v[1] for v in step.values()) for step in rounds[config])
    return {
        "plain": plain,
        "penalized": penalized,
        "measured": penalized_total / plain_total,
        "at_plain_speed": reprice(plain, penalized) / plain_total,
        "plain_us": plain_total,
    }


def reprice(
    plain: dict[Key, tuple[float, float]], penalized: dict[Key, tuple[float, float]]
) -> float:
    """The penalized step's self time with each key it shares with the plain step charged at
    the plain step's time per call; keys of its own keep their time.

    Args:
        plain: per key, (calls, self microseconds) of the plain step.
        penalized: the same for the penalized step.

    Returns:
        Microseconds.
    """
    return sum(
        calls * plain[key][1] / plain[key][0] if plain.get(key, (0, 0))[0] and calls else micros
        for key, (calls, micros) in penalized.items()
    )


def extra_work(
    key: Key, plain: dict[Key, tuple[float, float]], penalized: dict[Key, tuple[float, float]]
) -> float:
    """Microseconds the penalized step spends on ``key`` beyond the plain step, its shared calls
    priced at the plain step's time per call (as :func:`reprice`)."""
    plain_calls, plain_micros = plain.get(key, (0, 0.0))
    calls, micros = penalized.get(key, (0, 0.0))
    if plain_calls and calls:
        micros = calls * plain_micros / plain_calls
    return micros - plain_micros


def _per_call(entry: tuple[float, float] | None) -> str:
    if entry is None or not entry[0]:
        return "—"
    calls, micros = entry
    return f"{calls:g} x {micros / calls / 1000:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--critic", default="dcgan", choices=sorted(CRITICS))
    parser.add_argument("--config", default="gradpen wgan-gp", choices=sorted(CONFIGS))
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--top", type=int, default=15, help="keys to list (heaviest first)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result = anatomy(args.critic, args.config, args.repeats)
    plain, penalized = result["plain"], result["penalized"]
    print(
        f"{CRITICS[args.critic].label}, {args.config} against plain, {args.threads} thread(s), "
        f"median of {args.repeats} interleaved profiled rounds"
    )
    print(
        f"{'operator (input shapes)':66s} {'plain: calls x ms':>18s} {'penalized':>14s} "
        f"{'extra / plain step':>18s}"
    )
    heaviest = sorted(
        set(plain) | set(penalized), key=lambda k: -penalized.get(k, plain.get(k, (0, 0)))[1]
    )
    for key in heaviest[: args.top]:
        name, shapes, _ = key
        extra = extra_work(key, plain, penalized) / result["plain_us"]
        print(
            f"{(name + ' ' + shapes)[:66]:66s} {_per_call(plain.get(key)):>18s} "
            f"{_per_call(penalized.get(key)):>14s} {extra:>18.3f}"
        )
    print(f"measured: {result['measured']:.2f}x the plain step's self time")
    print(f"at the plain step's speed: {result['at_plain_speed']:.2f}x")


if __name__ == "__main__":
    main()
