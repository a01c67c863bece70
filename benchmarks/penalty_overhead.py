"""Cost of one critic step with each gradient penalty, as a ratio to a plain critic step.

    python benchmarks/penalty_overhead.py [--repeats N] [--quick] [--json] [--critic NAME]
                                          [--batch B] [--device cpu|cuda]
                                          [--allocator default|keep]

Critics (``--critic``, alias ``--net``; see CRITICS for batch and sizes): the DCGAN-28 critic
(batch 64) and the toy MLP critic (batch 256), the default pair ``both``; ``dcgan32``, the
3-conv DCGAN critic for 32 px RGB (batch 64); and zoo critics
(:mod:`gradpen.nets.zoo`) ``resnet-gn`` (32 px), ``patchgan`` (64 px), ``vit`` (32 px,
attention) and ``multiscale`` (64 px, 3 scales), sized for a CPU (``--batch`` overrides);
``all`` runs every one.

Every configuration has its own copy of the same critic and its own Adam (lr 1e-4, betas
(0.5, 0.9)); one critic step is zero_grad, the forwards, one backward, optimizer.step, on a
WGAN loss. The backward is ``loss.backward(inputs=parameters)``, as in the training loop: a
batch that requires grad for a penalty gets no gradient of its own. The configurations are
timed interleaved (one step of each, in a shuffled order, per round) and each is reported as
the median of its step times divided by the median plain step, with a 95% bootstrap interval
(the rounds resampled with replacement, each round's times kept together:
:func:`ratio_interval`); "noise" is the plain step's interquartile range over its median.
Below the table, each penalty's step with the fast path over the same step with ``fast=False``
(its "fast off" row), with its interval: an interval that holds 1 is a difference the run
cannot tell from noise. Lazy R1 is timed in blocks of 16 steps (amortized); a block runs its
steps back to back, not interleaved, and its ratio has come out slightly below 1.

A configuration that raises on its first step (an exact penalty through an op without a double
backward) is reported as failing, with the error, and not timed.

Devices (``--device``): on ``cpu`` steps are timed with ``time.perf_counter``; on ``cuda`` with
CUDA events, with ``torch.backends.cudnn.benchmark = True`` (the warm-up rounds let it choose
its kernels), and peak memory is ``torch.cuda.max_memory_allocated`` over one step above what
was allocated at its start, plus the configuration's live tensors, as on the CPU.

Peak memory (CPU): torch.profiler's allocator events (``total_allocated``) over one step give
the peak of CPU tensor bytes above those live at the step's start; the reported peak adds the
tensors live at the start (parameters, gradients, Adam state, the batch), so it is the step's
peak tensor memory. It does not count allocator caching or the process's other memory.

Page faults: the median over the timed rounds of the process's minor page faults per step.
With glibc's default settings a penalized step's larger blocks go back to the kernel when freed
and fault in again, zero-filled, on the next step; ``--allocator keep`` calls
:func:`gradpen.keep_freed_memory` first (as ``gradpen train`` does), which keeps them.

"fast off" rows run the same penalty with ``fast=False`` (plain autograd, no
:mod:`gradpen.fastpath` twins): the fast path's own contribution.

Also reported: the relative error of the bf16-autocast penalty against float32 on the same
points, and the bias of the approximations in ``gradpen.approx`` against the exact penalty on
the critic the WGAN-GP configuration trained during the timing.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import resource
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.profiler import ProfilerActivity, profile

import gradpen as gp
from gradpen.approx import sub_batch, wgan_gp_finite_difference
from gradpen.losses import d_loss
from gradpen.nets import DCGANCritic28, DCGANCritic32, MLPCritic
from gradpen.nets.zoo import MultiScaleCritic, PatchGANCritic, ResNetGNCritic, ViTCritic
from gradpen.outputs import scores

WEIGHT = 10.0
LAZY_EVERY = 16
Objective = Callable[[nn.Module, Tensor, Tensor, int], Tensor]


def wgan_loss(critic: nn.Module, real: Tensor, fake: Tensor) -> Tensor:
    return wgan_loss_of(critic(real), critic(fake), real.shape[0])


def wgan_loss_of(real_out: Any, fake_out: Any, batch: int) -> Tensor:
    """The WGAN loss on a critic's outputs of any form (patch maps: the mean over patches)."""
    return d_loss("wgan", scores(real_out, batch, "mean"), scores(fake_out, batch, "mean"))


def plain(critic: nn.Module, real: Tensor, fake: Tensor, step: int) -> Tensor:
    return wgan_loss(critic, real, fake)


def naive_wgan_gp(critic: nn.Module, real: Tensor, fake: Tensor, step: int) -> Tensor:
    """The style of the reference code: loss forwards, then a separate penalty forward."""
    loss = wgan_loss(critic, real, fake)
    eps = torch.rand(real.shape[0], *([1] * (real.dim() - 1)), device=real.device)
    x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)
    per_sample = scores(critic(x_hat), real.shape[0])
    (g,) = torch.autograd.grad(
        per_sample, x_hat, torch.ones_like(per_sample), create_graph=True, retain_graph=True
    )
    return loss + WEIGHT * ((g.flatten(1).norm(2, dim=1) - 1) ** 2).mean()


def penalty_first(penalty: gp.Penalty) -> Objective:
    """gradpen's recommended order: the penalty, then the loss forwards, one backward."""

    def objective(critic: nn.Module, real: Tensor, fake: Tensor, step: int) -> Tensor:
        term = penalty(critic, real=real, fake=fake, step=step)
        return wgan_loss(critic, real, fake) + term

    return objective


def penalty_after_loss(critic: nn.Module, real: Tensor, fake: Tensor, step: int) -> Tensor:
    loss = wgan_loss(critic, real, fake)
    return loss + gp.Penalty("wgan-gp", WEIGHT)(critic, real=real, fake=fake)


def reusing(penalty: gp.Penalty) -> Objective:
    """R1 / R2 from the loss's own forward, as the training loop runs it.

    On active steps the penalized batch requires grad and its forward runs under
    ``gp.penalty_forward`` (with the twins unless the penalty has ``fast=False`` or they do not
    pay on this critic); the other
    batch, and both on a lazy penalty's off steps, run plain.
    """

    def objective(critic: nn.Module, real: Tensor, fake: Tensor, step: int) -> Tensor:
        needs = penalty.needs if penalty.active(step) else frozenset()
        real = real.detach().requires_grad_("real" in needs)
        fake = fake.detach().requires_grad_("fake" in needs)
        with gp.penalty_forward(penalty.fast, critic=critic) if "real" in needs else nullcontext():
            real_scores = critic(real)
        with gp.penalty_forward(penalty.fast, critic=critic) if "fake" in needs else nullcontext():
            fake_scores = critic(fake)
        term = penalty(
            critic,
            real=real,
            fake=fake,
            step=step,
            real_scores=real_scores,
            fake_scores=fake_scores,
        )
        return wgan_loss_of(real_scores, fake_scores, real.shape[0]) + term

    return objective


def bf16(objective: Objective) -> Objective:
    def wrapped(critic: nn.Module, real: Tensor, fake: Tensor, step: int) -> Tensor:
        with torch.autocast(real.device.type, dtype=torch.bfloat16):
            return objective(critic, real, fake, step)

    return wrapped


def sub_batch_wgan_gp(critic: nn.Module, real: Tensor, fake: Tensor, step: int) -> Tensor:
    real_part, fake_part = sub_batch(0.25, real, fake)
    term = gp.Penalty("wgan-gp", WEIGHT)(critic, real=real_part, fake=fake_part)
    return wgan_loss(critic, real, fake) + term


def finite_difference_wgan_gp(critic: nn.Module, real: Tensor, fake: Tensor, step: int) -> Tensor:
    term = WEIGHT * wgan_gp_finite_difference(critic, real, fake).mean()
    return wgan_loss(critic, real, fake) + term


CONFIGS: dict[str, tuple[Objective, int]] = {
    "plain": (plain, 1),
    "naive wgan-gp": (naive_wgan_gp, 1),
    "gradpen wgan-gp": (penalty_first(gp.Penalty("wgan-gp", WEIGHT)), 1),
    "gradpen wgan-gp, fast off": (penalty_first(gp.Penalty("wgan-gp", WEIGHT, fast=False)), 1),
    "gradpen wgan-gp, penalty after loss fwd": (penalty_after_loss, 1),
    "r1, fresh forward": (penalty_first(gp.Penalty("r1", WEIGHT)), 1),
    "r1, forward reuse": (reusing(gp.Penalty("r1", WEIGHT)), 1),
    "r1, forward reuse, fast off": (reusing(gp.Penalty("r1", WEIGHT, fast=False)), 1),
    "r1r2, forward reuse": (reusing(gp.Penalty("r1r2", WEIGHT)), 1),
    # The official WGAN-div setting, k = 2 and p = 6 (p given, so the row is that setting).
    "wgan-div, forward reuse": (reusing(gp.Penalty("wgan-div", 2.0, p=6.0)), 1),
    "max-gp": (penalty_first(gp.Penalty("max-gp", WEIGHT)), 1),
    f"lazy r1 every {LAZY_EVERY}, amortized": (
        reusing(gp.Penalty("r1", WEIGHT, every=LAZY_EVERY)),
        LAZY_EVERY,
    ),
    "bf16 plain": (bf16(plain), 1),
    "bf16 gradpen wgan-gp": (bf16(penalty_first(gp.Penalty("wgan-gp", WEIGHT))), 1),
    "approx: wgan-gp on 1/4 sub-batch": (sub_batch_wgan_gp, 1),
    "approx: wgan-gp finite difference": (finite_difference_wgan_gp, 1),
    "approx: r1 by noise (approx-r1)": (penalty_first(gp.Penalty("approx-r1", WEIGHT)), 1),
}


@dataclass
class Runner:
    """One configuration: its own critic copy, optimizer, step counter and step times."""

    objective: Objective
    steps_per_sample: int
    critic: nn.Module
    optimizer: torch.optim.Optimizer = field(init=False)
    step: int = 0
    times: list[float] = field(default_factory=list)
    faults: list[float] = field(default_factory=list)
    error: str | None = None

    def __post_init__(self) -> None:
        self.optimizer = torch.optim.Adam(self.critic.parameters(), lr=1e-4, betas=(0.5, 0.9))

    def one_step(self, real: Tensor, fake: Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.objective(self.critic, real, fake, self.step)
        loss.backward(inputs=list(self.critic.parameters()))
        self.optimizer.step()
        self.step += 1

    def try_step(self, real: Tensor, fake: Tensor) -> bool:
        """One untimed step; on a RuntimeError keep its first line in :attr:`error`."""
        try:
            self.one_step(real, fake)
        except RuntimeError as exc:
            self.error = str(exc).strip().splitlines()[0]
        return self.error is None

    def sample(self, real: Tensor, fake: Tensor) -> None:
        """Time ``steps_per_sample`` steps; append the seconds per step to :attr:`times` and the
        process's minor page faults per step to :attr:`faults`."""
        faults_before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        if real.device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(self.steps_per_sample):
                self.one_step(real, fake)
            end.record()
            end.synchronize()
            seconds = start.elapsed_time(end) / 1000
        else:
            begin = time.perf_counter()
            for _ in range(self.steps_per_sample):
                self.one_step(real, fake)
            seconds = time.perf_counter() - begin
        self.times.append(seconds / self.steps_per_sample)
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults_before
        self.faults.append(faults / self.steps_per_sample)

    def peak_bytes(self, real: Tensor, fake: Tensor) -> int:
        """Peak tensor bytes of one step (lazy: of its active step): live at start + transient."""
        self.step = 0
        live = sum(t.numel() * t.element_size() for t in self._live_tensors(real, fake))
        if real.device.type == "cuda":
            return live + self._transient_cuda(real, fake)
        return live + self._transient_cpu(real, fake)

    def _transient_cuda(self, real: Tensor, fake: Tensor) -> int:
        """The allocator's peak during one step above what was allocated at its start."""
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        self.one_step(real, fake)
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base

    def _transient_cpu(self, real: Tensor, fake: Tensor) -> int:
        """The profiler's allocation events during one step: the peak above the start."""
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            self.one_step(real, fake)
        events = []
        stack = list(prof.profiler.kineto_results.experimental_event_tree())
        while stack:
            event = stack.pop()
            if event.typed[0].name == "Allocation":
                events.append((event.start_time_ns, event.typed[1]))
            stack.extend(event.children)
        events.sort(key=lambda item: item[0])
        # total_allocated is the allocator's running total; start from the one before the step.
        start = events[0][1].total_allocated - events[0][1].alloc_size
        return max(0, *(fields.total_allocated - start for _, fields in events))

    def _live_tensors(self, real: Tensor, fake: Tensor) -> list[Tensor]:
        state = [v for s in self.optimizer.state.values() for v in s.values()]
        params = list(self.critic.parameters())
        grads = [p.grad for p in params if p.grad is not None]
        return [t for t in [*params, *grads, *state, real, fake] if isinstance(t, Tensor)]


def image_batches(*shape: int) -> Callable[[int], tuple[Tensor, Tensor]]:
    """Synthetic images ``(B, *shape)``: uniform reals against Gaussian-noise fakes."""
    return lambda batch: (torch.rand(batch, *shape), 0.5 + 0.3 * torch.randn(batch, *shape))


def eight_gaussians(batch: int) -> tuple[Tensor, Tensor]:
    """The toy problem: reals near 8 points on a circle of radius 2, fakes N(0, I)."""
    angles = torch.randint(0, 8, (batch,)) * (2 * torch.pi / 8)
    centres = 2 * torch.stack([angles.cos(), angles.sin()], dim=1)
    return centres + 0.02 * torch.randn(batch, 2), torch.randn(batch, 2)


@dataclass(frozen=True)
class CriticProblem:
    """A critic to benchmark: how to build it, its default batch, and its synthetic data."""

    make: Callable[[], nn.Module]
    batch: int
    data: Callable[[int], tuple[Tensor, Tensor]]
    label: str


# The zoo critics are sized so that a --quick run takes minutes on a small CPU; a GPU run
# would rather use the published widths and a larger --batch.
CRITICS: dict[str, CriticProblem] = {
    "dcgan": CriticProblem(DCGANCritic28, 64, image_batches(1, 28, 28), "DCGAN-28"),
    "dcgan32": CriticProblem(
        lambda: DCGANCritic32(in_channels=3), 64, image_batches(3, 32, 32), "DCGAN-32 (3 convs)"
    ),
    "mlp": CriticProblem(MLPCritic, 256, eight_gaussians, "toy MLP"),
    "resnet-gn": CriticProblem(
        lambda: ResNetGNCritic(3, width=32, groups=8),
        16,
        image_batches(3, 32, 32),
        "ResNet-GroupNorm 32 px (width 32)",
    ),
    "patchgan": CriticProblem(
        lambda: PatchGANCritic(3, width=8),
        8,
        image_batches(3, 64, 64),
        "PatchGAN 64 px (width 8)",
    ),
    "vit": CriticProblem(
        lambda: ViTCritic(3, 32, patch=4, dim=32, depth=2, heads=4),
        16,
        image_batches(3, 32, 32),
        "ViT 32 px (patch 4, dim 32, depth 2, 4 heads)",
    ),
    "multiscale": CriticProblem(
        lambda: MultiScaleCritic(3, width=4, scales=3),
        8,
        image_batches(3, 64, 64),
        "multi-scale PatchGAN 64 px (3 scales, width 4)",
    ),
}
CRITIC_GROUPS = {"both": ("dcgan", "mlp"), "all": tuple(CRITICS)}


def make_problem(
    name: str, batch: int | None, device: torch.device
) -> tuple[nn.Module, Tensor, Tensor]:
    """A fresh seeded critic of ``CRITICS[name]`` and its synthetic batch, on ``device``."""
    problem = CRITICS[name]
    torch.manual_seed(0)
    real, fake = problem.data(batch or problem.batch)
    return problem.make().to(device), real.to(device), fake.to(device)


def wgan_gp_values(critic: nn.Module, real: Tensor, fake: Tensor, seed: int, dtype: str) -> Tensor:
    device = real.device
    context = (
        torch.autocast(device.type, dtype=torch.bfloat16) if dtype == "bf16" else nullcontext()
    )
    with context:
        generator = torch.Generator(device).manual_seed(seed)
        return gp.wgan_gp(critic, real, fake, generator=generator).detach().float()


def accuracy(critic: nn.Module, real: Tensor, fake: Tensor, draws: int) -> dict[str, float]:
    """bf16 error and approximation bias/noise of the batch-mean penalty, over ``draws`` seeds."""
    exact, low, sub, fd = [], [], [], []
    for seed in range(draws):
        exact.append(wgan_gp_values(critic, real, fake, seed, "fp32").mean().item())
        low.append(wgan_gp_values(critic, real, fake, seed, "bf16").mean().item())
        generator = torch.Generator().manual_seed(seed)  # sub_batch draws its rows on the CPU
        real_part, fake_part = sub_batch(0.25, real, fake, generator=generator)
        sub.append(wgan_gp_values(critic, real_part, fake_part, seed, "fp32").mean().item())
        generator = torch.Generator(real.device).manual_seed(seed)
        fd.append(wgan_gp_finite_difference(critic, real, fake, generator=generator).mean().item())
    reference = statistics.mean(exact)

    def relative(values: list[float]) -> tuple[float, float]:
        errors = [v / e - 1 for v, e in zip(values, exact, strict=True)]
        return statistics.mean(errors), statistics.pstdev(errors)

    bf16_mean, _ = relative(low)
    _, sub_noise = relative(sub)
    fd_bias, fd_noise = relative(fd)
    return {
        "exact_penalty_mean": reference,
        "bf16_rel_error_mean": bf16_mean,
        "bf16_rel_error_max": max(abs(v / e - 1) for v, e in zip(low, exact, strict=True)),
        "subbatch_bias": (statistics.mean(sub) - reference) / reference,
        "subbatch_rel_noise": sub_noise,
        "fd_bias": fd_bias,
        "fd_rel_noise": fd_noise,
    }


def ratio_interval(
    numerator: list[float], denominator: list[float], *, draws: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """A 95% bootstrap interval of ``median(numerator) / median(denominator)``.

    The rounds are resampled with replacement, ``numerator[i]`` and ``denominator[i]`` together
    (both were timed in round ``i``, under the same machine load); the interval runs from the
    2.5% to the 97.5% quantile of the resampled ratios.

    Args:
        numerator: step times, one per round.
        denominator: step times of the same rounds, as long as ``numerator``.
        draws: resamples.
        seed: seeds the resampling (the same times give the same interval).

    Returns:
        ``(low, high)``.
    """
    if len(numerator) != len(denominator) or not numerator:
        raise ValueError(
            f"need one time per round in each, got {len(numerator)} and {len(denominator)}"
        )
    rounds = np.random.default_rng(seed).integers(0, len(numerator), (draws, len(numerator)))
    ratios = np.median(np.asarray(numerator)[rounds], axis=1) / np.median(
        np.asarray(denominator)[rounds], axis=1
    )
    low, high = np.quantile(ratios, [0.025, 0.975])
    return float(low), float(high)


def bench(name: str, repeats: int, warmup: int, batch: int | None, device: torch.device) -> dict:
    critic, real, fake = make_problem(name, batch, device)
    runners = {
        config: Runner(objective, steps, copy.deepcopy(critic))
        for config, (objective, steps) in CONFIGS.items()
    }
    failed = {config: r.error for config, r in runners.items() if not r.try_step(real, fake)}
    if "plain" in failed:
        raise RuntimeError(f"a plain critic step fails on {name}: {failed['plain']}")
    timed = {config: r for config, r in runners.items() if config not in failed}
    order = list(timed)
    for round_index in range(warmup + repeats):
        random.Random(round_index).shuffle(order)
        for config in order:
            timed[config].sample(real, fake)
    times = {config: r.times[warmup:] for config, r in timed.items()}
    medians = {config: statistics.median(t) for config, t in times.items()}
    plain_times = times["plain"]
    quartiles = statistics.quantiles(plain_times, n=4)
    peaks = {config: r.peak_bytes(real, fake) for config, r in timed.items()}
    rows = [
        {
            "config": config,
            "time_ratio": medians[config] / medians["plain"] if config in timed else None,
            "time_ratio_95": ratio_interval(times[config], plain_times)
            if config in timed
            else None,
            "peak_memory_ratio": peaks[config] / peaks["plain"] if config in timed else None,
            "peak_mib": peaks[config] / 2**20 if config in timed else None,
            "page_faults_per_step": statistics.median(timed[config].faults[warmup:])
            if config in timed
            else None,
            "error": failed.get(config),
        }
        for config in runners
    ]
    trained = timed.get("gradpen wgan-gp")
    return {
        "net": name,
        "critic": CRITICS[name].label,
        "device": str(device),
        "batch": real.shape[0],
        "repeats": repeats,
        "plain_noise_iqr_over_median": (quartiles[2] - quartiles[0]) / medians["plain"],
        "rows": rows,
        "fast_over_fast_off": [
            {
                "config": config,
                "ratio": medians[config] / medians[f"{config}, fast off"],
                "ratio_95": ratio_interval(times[config], times[f"{config}, fast off"]),
            }
            for config in timed
            if f"{config}, fast off" in timed
        ],
        "accuracy": None
        if trained is None
        else accuracy(trained.critic, real, fake, draws=8 if repeats < 20 else 32),
    }


def _with_interval(ratio: float, interval: tuple[float, float]) -> str:
    return f"{ratio:>10.2f} ({interval[0]:.2f}-{interval[1]:.2f})"


def print_table(result: dict) -> None:
    print(
        f"\n{result['critic']} critic on {result['device']}, batch {result['batch']}, "
        f"{result['repeats']} interleaved rounds; plain-step noise (IQR/median) "
        f"{result['plain_noise_iqr_over_median']:.2f}"
    )
    print(
        f"| {'configuration':<42} | {'time / plain (95%)':>22} | peak mem / plain | peak MiB "
        "| page faults |"
    )
    print(f"|{'-' * 44}|{'-' * 23}:|-----------------:|---------:|------------:|")
    for row in result["rows"]:
        if row["error"] is not None:
            print(f"| {row['config']:<42} | fails: {row['error'][:100]} |")
            continue
        print(
            f"| {row['config']:<42} | {_with_interval(row['time_ratio'], row['time_ratio_95'])} | "
            f"{row['peak_memory_ratio']:>16.2f} | {row['peak_mib']:>8.1f} | "
            f"{row['page_faults_per_step']:>11.0f} |"
        )
    for pair in result["fast_over_fast_off"]:
        print(
            f"{pair['config']} / its fast-off row: "
            f"{_with_interval(pair['ratio'], pair['ratio_95']).strip()}"
        )
    acc = result["accuracy"]
    if acc is None:
        print("accuracy: not measured (the exact WGAN-GP step fails on this critic)")
        return
    print(
        f"bf16 penalty relative error vs fp32: mean {acc['bf16_rel_error_mean']:+.2e}, "
        f"max {acc['bf16_rel_error_max']:.2e} (exact penalty mean {acc['exact_penalty_mean']:.3g})"
    )
    print(
        f"approx relative bias vs exact: 1/4 sub-batch {acc['subbatch_bias']:+.3f} "
        f"(per-draw noise {acc['subbatch_rel_noise']:.3f}); finite difference "
        f"{acc['fd_bias']:+.3f} (noise {acc['fd_rel_noise']:.3f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=40, help="timed rounds (default 40)")
    parser.add_argument("--quick", action="store_true", help="3 rounds, a smoke test")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument(
        "--critic",
        "--net",
        dest="critic",
        choices=(*CRITICS, *CRITIC_GROUPS),
        default="both",
        help="the critic to time (--net is the old name): dcgan, dcgan32, mlp, the zoo's "
        "resnet-gn, patchgan, vit, multiscale; 'both' (default) = dcgan and mlp; 'all' = every one",
    )
    parser.add_argument(
        "--batch", type=int, default=None, help="batch size (default: the critic's, see CRITICS)"
    )
    parser.add_argument(
        "--device", choices=("cpu", "cuda"), default="cpu", help="where to run (default cpu)"
    )
    parser.add_argument(
        "--allocator",
        choices=("default", "keep"),
        default="default",
        help="'keep': call gradpen.keep_freed_memory() first, as gradpen train does (glibc keeps "
        "freed blocks); 'default' (default): the C library's own settings, as a user's loop has",
    )
    args = parser.parse_args()
    if args.allocator == "keep" and not gp.keep_freed_memory():
        print("penalty_overhead: --allocator keep needs Linux with glibc", file=sys.stderr)
        sys.exit(2)
    if args.device == "cuda":
        if not torch.cuda.is_available():
            print(
                "penalty_overhead: --device cuda needs a CUDA GPU and a CUDA build of PyTorch; "
                f"this PyTorch ({torch.__version__}) sees none. Use --device cpu.",
                file=sys.stderr,
            )
            sys.exit(2)
        torch.backends.cudnn.benchmark = True
    device = torch.device(args.device)
    repeats, warmup = (3, 1) if args.quick else (args.repeats, 3)
    names = CRITIC_GROUPS.get(args.critic, (args.critic,))
    results = [bench(name, repeats, warmup, args.batch, device) for name in names]
    if args.json:
        report = {"torch": torch.__version__, "allocator": args.allocator, "results": results}
        print(json.dumps(report, indent=2))
        return
    where = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    print(
        f"torch {torch.__version__}, {where}, {torch.get_num_threads()} threads, "
        f"allocator: {args.allocator}"
    )
    for result in results:
        print_table(result)


if __name__ == "__main__":
    main()
