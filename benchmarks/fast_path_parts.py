"""Which part of the fast path pays off on which critic: a WGAN-GP step with each part switched off.

    python benchmarks/fast_path_parts.py [--critic NAME ...] [--repeats N]

The fast path (:mod:`gradpen.fastpath`) has these parts: the ReLU / leaky ReLU twin, the
convolution twin (on convolutions of at least ``fastpath.SMALL_CONV_MACS`` multiply-accumulates;
a smaller one runs as PyTorch's own), (on CPU) the ``fold`` input gradient of convolutions from
1-3 channels where it pays (``_folds_input_grad``), the group-norm twin, the average-pooling twin
(on CPU, disjoint windows as strided slices), and,
with forward reuse, the loss's backward drawing on the penalty's input-gradient pass where the
loss's signal is a per-sample multiple of the pass's (``fastpath._loss_signal_scale``): an inner
convolution's input gradient taken from the pass, and each convolution's weight gradient for the
loss and the penalty in one kernel (``fastpath._leave_weight_grad_to_loss``).
It steps aside on a critic whose input gradient depends on its activations through an operation
without a twin (a layer norm, a smooth activation, attention:
:func:`gradpen.gradients.judge_twins`).
For each critic of ``penalty_overhead.CRITICS`` this times a WGAN-GP critic step (lambda 10,
the penalty first, one backward, Adam) with the fast path as shipped (``fast``), with the twins
forced on every critic (``twins forced``) and then each part of them switched off in turn, and
with ``fast=False``; then an R1 step with forward reuse (the loss's forward on the reals is
the penalty's) as shipped, with the loss's and the penalty's weight gradients apart, without any
reuse of the pass, and with ``fast=False``.
Each is printed as a ratio to a plain critic step (no penalty). All
configurations of one critic run interleaved in a shuffled order per round; the time is the
process's CPU time (``time.process_time``), which a busy machine disturbs less than wall time
when the run uses one thread (the default here). ``fast`` should never be above ``fast=False``;
where ``twins forced`` is above it, stepping aside is what keeps it there.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import statistics
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from penalty_overhead import CRITICS, Objective, Runner, make_problem, penalty_first, plain, reusing

import gradpen as gp
import gradpen.fastpath as fastpath
import gradpen.gradients as gradients

WEIGHT = 10.0
_TWIN = fastpath._twin
_FOLDS = fastpath._ConvGeometry._folds_input_grad
_SLICES = fastpath._PoolGeometry._by_slices
_TWINS_PAY = gradients.twins_pay
_REUSE = fastpath._loss_signal_scale
_HANDOVER = fastpath._leave_weight_grad_to_loss


def _router_without(excluded: Collection[Any]) -> Callable:
    """The twin router with the twins of the functions in ``excluded`` switched off."""

    def router(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return None if func in excluded else _TWIN(func, args, kwargs)

    return router


_without_convolutions = _router_without(fastpath._CONVOLUTIONS)
_without_activations = _router_without({*fastpath._RELUS, F.leaky_relu})
_without_group_norm = _router_without({F.group_norm})
_without_pooling = _router_without(fastpath._AVERAGE_POOLS)


def _no_twin(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return None


def _never_fold(geometry: Any, weight: torch.Tensor, grad: torch.Tensor) -> bool:
    return False


def _never_slice(geometry: Any, x: torch.Tensor) -> bool:
    return False


def _always(critic: Any) -> bool:
    return True


def _never_reuse(grad: torch.Tensor, earlier: Any) -> None:
    return None


def _never_hand_over(forward_node: Any, upstream: torch.Tensor) -> bool:
    return False


def _wgan_gp(fast: bool) -> Objective:
    return penalty_first(gp.Penalty("wgan-gp", WEIGHT, fast=fast))


def _r1_reusing(fast: bool) -> Objective:
    return reusing(gp.Penalty("r1", WEIGHT, fast=fast))


@dataclass(frozen=True)
class Variant:
    """One timed configuration: its objective, ``fast=``, and the parts replaced (None: as is)."""

    objective_of: Callable[[bool], Objective]
    fast: bool = True
    forced: bool = False  # the twins on every critic (no stepping aside)
    router: Callable | None = None  # the twin router
    fold_rule: Callable | None = None
    reuse_rule: Callable | None = None
    slice_rule: Callable | None = None
    handover_rule: Callable | None = None
    small_conv_macs: int | None = None  # fastpath.SMALL_CONV_MACS (None: as is)

    @property
    def switches(self) -> tuple[bool, Callable | None, ...]:
        """The arguments of :func:`switched` for this variant."""
        return (
            self.forced,
            self.router,
            self.fold_rule,
            self.reuse_rule,
            self.slice_rule,
            self.handover_rule,
            self.small_conv_macs,
        )


VARIANTS: dict[str, Variant] = {
    "fast": Variant(_wgan_gp),
    "fast, twins forced": Variant(_wgan_gp, forced=True),
    "twins forced, every conv twinned": Variant(_wgan_gp, forced=True, small_conv_macs=0),
    "twins forced, no fold": Variant(_wgan_gp, forced=True, fold_rule=_never_fold),
    "twins forced, no conv twin": Variant(_wgan_gp, forced=True, router=_without_convolutions),
    "twins forced, no activation twin": Variant(_wgan_gp, forced=True, router=_without_activations),
    "twins forced, no group-norm twin": Variant(_wgan_gp, forced=True, router=_without_group_norm),
    "twins forced, no pooling twin": Variant(_wgan_gp, forced=True, router=_without_pooling),
    "twins forced, pooling by PyTorch's kernels": Variant(
        _wgan_gp, forced=True, slice_rule=_never_slice
    ),
    "twins forced, no twin (the mode's own cost)": Variant(_wgan_gp, forced=True, router=_no_twin),
    "fast=False": Variant(_wgan_gp, fast=False),
    "r1 reuse: fast": Variant(_r1_reusing),
    "r1 reuse: fast, weight gradients apart": Variant(_r1_reusing, handover_rule=_never_hand_over),
    "r1 reuse: fast, pass not reused": Variant(_r1_reusing, reuse_rule=_never_reuse),
    "r1 reuse: fast=False": Variant(_r1_reusing, fast=False),
}
PLAIN = Variant(lambda fast: plain, fast=False)


@contextlib.contextmanager
def switched(
    forced: bool,
    router: Callable | None,
    fold_rule: Callable | None,
    reuse_rule: Callable | None,
    slice_rule: Callable | None = None,
    handover_rule: Callable | None = None,
    small_conv_macs: int | None = None,
) -> Iterator[None]:
    """The fast path with its verdict, twin router, fold, reuse, slice and weight hand-over
    rules and its convolution size threshold replaced (None: as is)."""
    gradients.twins_pay = _always if forced else _TWINS_PAY
    fastpath._twin = router or _TWIN
    fastpath._ConvGeometry._folds_input_grad = fold_rule or _FOLDS
    fastpath._loss_signal_scale = reuse_rule or _REUSE
    fastpath._PoolGeometry._by_slices = slice_rule or _SLICES
    fastpath._leave_weight_grad_to_loss = handover_rule or _HANDOVER
    small_conv_macs_before = fastpath.SMALL_CONV_MACS
    if small_conv_macs is not None:
        fastpath.SMALL_CONV_MACS = small_conv_macs
    try:
        yield
    finally:
        gradients.twins_pay = _TWINS_PAY
        fastpath._twin = _TWIN
        fastpath._ConvGeometry._folds_input_grad = _FOLDS
        fastpath._loss_signal_scale = _REUSE
        fastpath._PoolGeometry._by_slices = _SLICES
        fastpath._leave_weight_grad_to_loss = _HANDOVER
        fastpath.SMALL_CONV_MACS = small_conv_macs_before


def cpu_seconds_per_step(runner: Runner, real: torch.Tensor, fake: torch.Tensor) -> float:
    """One step's CPU time (process time: all threads of this process)."""
    start = time.process_time()
    runner.one_step(real, fake)
    return time.process_time() - start


def bench(name: str, repeats: int) -> dict[str, float]:
    """Median CPU time of each variant over a plain step's, on critic ``name``."""
    device = torch.device("cpu")
    runners: dict[str, tuple[Runner, Variant]] = {}
    real = fake = torch.empty(0)
    for variant, spec in (VARIANTS | {"plain": PLAIN}).items():
        critic, real, fake = make_problem(name, None, device)
        runners[variant] = (Runner(spec.objective_of(spec.fast), 1, critic), spec)
    times: dict[str, list[float]] = {variant: [] for variant in runners}
    for round_index in range(repeats + 3):  # 3 warm-up rounds
        order = list(runners)
        random.shuffle(order)
        for variant in order:
            runner, spec = runners[variant]
            with switched(*spec.switches):
                seconds = cpu_seconds_per_step(runner, real, fake)
            if round_index >= 3:
                times[variant].append(seconds)
    base = statistics.median(times["plain"])
    return {variant: statistics.median(times[variant]) / base for variant in VARIANTS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--critic", nargs="+", choices=tuple(CRITICS), default=list(CRITICS), help="critics"
    )
    parser.add_argument("--repeats", type=int, default=30, help="timed rounds (default 30)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = {name: bench(name, args.repeats) for name in args.critic}
    print(f"torch {torch.__version__}, {args.threads} thread(s), {args.repeats} rounds; "
          "WGAN-GP (or R1) step CPU time / plain step")  # fmt: skip
    print("| variant | " + " | ".join(CRITICS[name].label for name in args.critic) + " |")
    print("|---|" + "---:|" * len(args.critic))
    for variant in VARIANTS:
        cells = " | ".join(f"{results[name][variant]:.3f}" for name in args.critic)
        print(f"| {variant} | {cells} |")


if __name__ == "__main__":
    main()
