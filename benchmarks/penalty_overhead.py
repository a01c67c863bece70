"""Cost of one critic step with each gradient penalty, as a ratio to a plain critic step.

    python benchmarks/penalty_overhead.py [--repeats N] [--quick] [--json] [--net dcgan|mlp]

For the DCGAN-28 critic (batch 64) and the toy MLP critic (batch 256): every configuration has
its own copy of the same critic and its own Adam (lr 1e-4, betas (0.5, 0.9)); one critic step is
zero_grad, the forwards, one backward, optimizer.step, on a WGAN loss. The backward is
``loss.backward(inputs=parameters)``, as in the training loop: a batch that requires grad for a
penalty gets no gradient of its own. The configurations are timed interleaved (one step of each,
in a shuffled order, per round) and each is reported as the median of its step times divided by
the median plain step; "noise" is the plain step's interquartile range over its median. Lazy R1
is timed in blocks of 16 steps (amortized); a block runs its steps back to back, not
interleaved, and its ratio has come out slightly below 1.

Peak memory: torch.profiler's allocator events (``total_allocated``) over one step give the peak
of CPU tensor bytes above those live at the step's start; the reported peak adds the tensors
live at the start (parameters, gradients, Adam state, the batch), so it is the step's peak
tensor memory. It does not count allocator caching or the process's other memory.

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
import statistics
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.profiler import ProfilerActivity, profile

import gradpen as gp
from gradpen.approx import sub_batch, wgan_gp_finite_difference
from gradpen.losses import d_loss
from gradpen.nets import DCGANCritic28, MLPCritic

WEIGHT = 10.0
LAZY_EVERY = 16
Objective = Callable[[nn.Module, Tensor, Tensor, int], Tensor]


def wgan_loss(critic: nn.Module, real: Tensor, fake: Tensor) -> Tensor:
    return d_loss("wgan", critic(real), critic(fake))


def plain(critic: nn.Module, real: Tensor, fake: Tensor, step: int) -> Tensor:
    return wgan_loss(critic, real, fake)


def naive_wgan_gp(critic: nn.Module, real: Tensor, fake: Tensor, step: int) -> Tensor:
    """The style of the reference code: loss forwards, then a separate penalty forward."""
    loss = wgan_loss(critic, real, fake)
    eps = torch.rand(real.shape[0], *([1] * (real.dim() - 1)))
    x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)
    scores = critic(x_hat)
    (g,) = torch.autograd.grad(
        scores, x_hat, torch.ones_like(scores), create_graph=True, retain_graph=True
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
    ``gp.penalty_forward`` (unless the penalty has ``fast=False``); the other batch, and both on
    a lazy penalty's off steps, run plain.
    """

    def objective(critic: nn.Module, real: Tensor, fake: Tensor, step: int) -> Tensor:
        needs = penalty.needs if penalty.active(step) else frozenset()
        real = real.detach().requires_grad_("real" in needs)
        fake = fake.detach().requires_grad_("fake" in needs)
        with gp.penalty_forward(penalty.fast and "real" in needs):
            real_scores = critic(real)
        with gp.penalty_forward(penalty.fast and "fake" in needs):
            fake_scores = critic(fake)
        term = penalty(
            critic,
            real=real,
            fake=fake,
            step=step,
            real_scores=real_scores,
            fake_scores=fake_scores,
        )
        return d_loss("wgan", real_scores, fake_scores) + term

    return objective


def bf16(objective: Objective) -> Objective:
    def wrapped(critic: nn.Module, real: Tensor, fake: Tensor, step: int) -> Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
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
    f"lazy r1 every {LAZY_EVERY}, amortized": (
        reusing(gp.Penalty("r1", WEIGHT, every=LAZY_EVERY)),
        LAZY_EVERY,
    ),
    "bf16 plain": (bf16(plain), 1),
    "bf16 gradpen wgan-gp": (bf16(penalty_first(gp.Penalty("wgan-gp", WEIGHT))), 1),
    "approx: wgan-gp on 1/4 sub-batch": (sub_batch_wgan_gp, 1),
    "approx: wgan-gp finite difference": (finite_difference_wgan_gp, 1),
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

    def __post_init__(self) -> None:
        self.optimizer = torch.optim.Adam(self.critic.parameters(), lr=1e-4, betas=(0.5, 0.9))

    def one_step(self, real: Tensor, fake: Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.objective(self.critic, real, fake, self.step)
        loss.backward(inputs=list(self.critic.parameters()))
        self.optimizer.step()
        self.step += 1

    def sample(self, real: Tensor, fake: Tensor) -> None:
        start = time.perf_counter()
        for _ in range(self.steps_per_sample):
            self.one_step(real, fake)
        self.times.append((time.perf_counter() - start) / self.steps_per_sample)

    def peak_bytes(self, real: Tensor, fake: Tensor) -> int:
        """Peak tensor bytes of one step (lazy: of its active step): live at start + transient."""
        self.step = 0
        live = sum(t.numel() * t.element_size() for t in self._live_tensors(real, fake))
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
        return live + max(0, *(fields.total_allocated - start for _, fields in events))

    def _live_tensors(self, real: Tensor, fake: Tensor) -> list[Tensor]:
        state = [v for s in self.optimizer.state.values() for v in s.values()]
        params = list(self.critic.parameters())
        grads = [p.grad for p in params if p.grad is not None]
        return [t for t in [*params, *grads, *state, real, fake] if isinstance(t, Tensor)]


def make_problem(net: str) -> tuple[nn.Module, Tensor, Tensor]:
    """A fresh critic and a synthetic batch (uniform images vs noise; 8 Gaussians vs N(0, 1))."""
    torch.manual_seed(0)
    if net == "dcgan":
        return DCGANCritic28(), torch.rand(64, 1, 28, 28), 0.5 + 0.3 * torch.randn(64, 1, 28, 28)
    angles = torch.randint(0, 8, (256,)) * (2 * torch.pi / 8)
    centres = 2 * torch.stack([angles.cos(), angles.sin()], dim=1)
    return MLPCritic(), centres + 0.02 * torch.randn(256, 2), torch.randn(256, 2)


def wgan_gp_values(critic: nn.Module, real: Tensor, fake: Tensor, seed: int, dtype: str) -> Tensor:
    context = torch.autocast("cpu", dtype=torch.bfloat16) if dtype == "bf16" else nullcontext()
    with context:
        generator = torch.Generator().manual_seed(seed)
        return gp.wgan_gp(critic, real, fake, generator=generator).detach().float()


def accuracy(critic: nn.Module, real: Tensor, fake: Tensor, draws: int) -> dict[str, float]:
    """bf16 error and approximation bias/noise of the batch-mean penalty, over ``draws`` seeds."""
    exact, low, sub, fd = [], [], [], []
    for seed in range(draws):
        exact.append(wgan_gp_values(critic, real, fake, seed, "fp32").mean().item())
        low.append(wgan_gp_values(critic, real, fake, seed, "bf16").mean().item())
        generator = torch.Generator().manual_seed(seed)
        real_part, fake_part = sub_batch(0.25, real, fake, generator=generator)
        sub.append(wgan_gp_values(critic, real_part, fake_part, seed, "fp32").mean().item())
        generator = torch.Generator().manual_seed(seed)
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


def bench(net: str, repeats: int, warmup: int) -> dict:
    critic, real, fake = make_problem(net)
    runners = {
        name: Runner(objective, steps, copy.deepcopy(critic))
        for name, (objective, steps) in CONFIGS.items()
    }
    order = list(runners)
    for round_index in range(warmup + repeats):
        random.Random(round_index).shuffle(order)
        for name in order:
            runners[name].sample(real, fake)
    medians = {name: statistics.median(r.times[warmup:]) for name, r in runners.items()}
    plain_times = runners["plain"].times[warmup:]
    quartiles = statistics.quantiles(plain_times, n=4)
    peaks = {name: r.peak_bytes(real, fake) for name, r in runners.items()}
    rows = [
        {
            "config": name,
            "time_ratio": medians[name] / medians["plain"],
            "peak_memory_ratio": peaks[name] / peaks["plain"],
            "peak_mib": peaks[name] / 2**20,
        }
        for name in runners
    ]
    trained = runners["gradpen wgan-gp"].critic
    return {
        "net": net,
        "batch": real.shape[0],
        "repeats": repeats,
        "plain_noise_iqr_over_median": (quartiles[2] - quartiles[0]) / medians["plain"],
        "rows": rows,
        "accuracy": accuracy(trained, real, fake, draws=8 if repeats < 20 else 32),
    }


def print_table(result: dict) -> None:
    print(
        f"\n{result['net']} critic, batch {result['batch']}, {result['repeats']} interleaved "
        f"rounds; plain-step noise (IQR/median) {result['plain_noise_iqr_over_median']:.2f}"
    )
    print(f"| {'configuration':<42} | time / plain | peak mem / plain | peak MiB |")
    print(f"|{'-' * 44}|-------------:|-----------------:|---------:|")
    for row in result["rows"]:
        print(
            f"| {row['config']:<42} | {row['time_ratio']:>12.2f} | "
            f"{row['peak_memory_ratio']:>16.2f} | {row['peak_mib']:>8.1f} |"
        )
    acc = result["accuracy"]
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
    parser.add_argument("--net", choices=("dcgan", "mlp", "both"), default="both")
    args = parser.parse_args()
    repeats, warmup = (3, 1) if args.quick else (args.repeats, 3)
    nets = ("dcgan", "mlp") if args.net == "both" else (args.net,)
    results = [bench(net, repeats, warmup) for net in nets]
    if args.json:
        print(json.dumps({"torch": torch.__version__, "results": results}, indent=2))
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for result in results:
        print_table(result)


if __name__ == "__main__":
    main()
