"""A penalized critic step in channels-last memory format against the default, timed.

    python benchmarks/channels_last.py [--device cpu|cuda] [--precision fp32|bf16|fp16]
        [--repeats N] [--width W]

The step is the training loop's: WGAN-GP at interpolates, then the WGAN loss on reals and fakes,
one backward, on the DCGAN-28 critic (batch 64). "channels-last" converts the critic and its
inputs with ``memory_format=torch.channels_last``. The two layouts are timed interleaved in one
process; prints the median time of each and default / channels-last (above 1: channels-last is
faster). ``train.*`` has no channels-last key: on CPU this measured slower (docs/recipes.md).
"""

from __future__ import annotations

import argparse
import statistics
import time
from contextlib import nullcontext

import torch

import gradpen as gp
from gradpen import losses
from gradpen.nets import build_critic

BATCH = 64
DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def make_step(layout: torch.memory_format, device: torch.device, precision: str, width: int):
    """A closure running one penalized critic step in ``layout``."""
    torch.manual_seed(0)
    critic = build_critic("dcgan28", width=width).to(device, memory_format=layout)
    real = torch.rand(BATCH, 1, 28, 28, device=device).to(memory_format=layout)
    fake = torch.rand(BATCH, 1, 28, 28, device=device).to(memory_format=layout)
    dtype = DTYPES[precision]
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    penalty = gp.Penalty("wgan-gp", 10.0, scaler=scaler)
    params = list(critic.parameters())

    def step() -> None:
        context = torch.autocast(device.type, dtype=dtype) if dtype else nullcontext()
        with context:
            term = penalty(critic, real=real, fake=fake)
            loss = losses.d_loss("wgan", critic(real), critic(fake)) + term
        total = scaler.scale(loss) if scaler else loss
        torch.autograd.grad(total, params)

    return step


def timed(step, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", choices=tuple(DTYPES))
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--width", type=int, default=64)
    args = parser.parse_args()
    device = torch.device(args.device)
    layouts = {"default": torch.contiguous_format, "channels-last": torch.channels_last}
    steps = {
        name: make_step(fmt, device, args.precision, args.width) for name, fmt in layouts.items()
    }
    for step in steps.values():  # warm up
        step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.repeats):
        for name, step in steps.items():
            times[name].append(timed(step, device))
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, value in medians.items():
        print(f"{name:>14}: {value * 1e3:8.2f} ms")
    ratio = medians["default"] / medians["channels-last"]
    print(
        f"default / channels-last: {ratio:.2f} ({args.device}, {args.precision}, "
        f"threads {torch.get_num_threads()})"
    )


if __name__ == "__main__":
    main()
