"""When the fast path's twins pay: a WGAN-GP step on conv blocks of growing size, with and
without a group norm, twins forced on against plain autograd.

    python benchmarks/fast_path_sizes.py [--repeats N] [--threads T]

The critic is ``conv(C, C, 4, stride 2) [-> GroupNorm(1, C)] -> leaky ReLU``, twice, then a 3x3
conv to one channel, on ``C x S x S`` inputs of batch ``B`` (the rows). Without the norm the
twins keep the double backward off the forward graph; with it the input gradient depends on
the activations by design, and the group-norm twin reaches back through one fused node
(:class:`gradpen.fastpath._GroupNormInputGrad`); the fast path keeps the twins on both
(:func:`gradpen.gradients.judge_twins`), and the tiny sizes of the first rows are where they
do not pay (the fast path runs a convolution below ``fastpath.SMALL_CONV_MACS`` as PyTorch's
own; here every convolution runs as the twin). Each row times, interleaved in a shuffled order per
round, a step (penalty first, one backward, Adam) with the twins forced on and with
``fast=False``, and prints the median CPU time (``time.process_time``) of the first over the
second: below 1 the twins pay. The first conv's multiply-accumulates locate the break-even.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import torch
from penalty_overhead import Runner, penalty_first
from torch import nn

import gradpen as gp
import gradpen.fastpath as fastpath
import gradpen.gradients as gradients

# (channels C, side S, batch B): the conv work grows about 500-fold from the first to the last
SIZES = ((8, 16, 8), (8, 32, 8), (16, 32, 8), (32, 32, 16), (64, 32, 16), (64, 64, 16))
WARMUP = 2


def block_critic(channels: int, norm: bool) -> nn.Sequential:
    """Two strided 4x4 convs (each optionally followed by GroupNorm(1, C)) with leaky ReLU."""
    layers: list[nn.Module] = []
    for _ in range(2):
        layers.append(nn.Conv2d(channels, channels, 4, stride=2, padding=2))
        if norm:
            layers.append(nn.GroupNorm(1, channels))
        layers.append(nn.LeakyReLU(0.2))
    layers.append(nn.Conv2d(channels, 1, 3, padding=1))
    return nn.Sequential(*layers)


def first_conv_macs(channels: int, side: int, batch: int) -> int:
    """Multiply-accumulates of the first conv's forward (4x4 kernel, stride 2, padding 2)."""
    out_side = (side + 2 * 2 - 4) // 2 + 1
    return batch * channels * channels * 16 * out_side**2


def ratio(channels: int, side: int, batch: int, norm: bool, repeats: int) -> float:
    """Median CPU time of a step with the twins forced over one with ``fast=False``."""
    real = torch.randn(batch, channels, side, side)
    fake = torch.randn(batch, channels, side, side)
    runners = {}
    for fast in (True, False):
        torch.manual_seed(0)
        objective = penalty_first(gp.Penalty("wgan-gp", 10.0, fast=fast))
        runners[fast] = Runner(objective, 1, block_critic(channels, norm))
    times: dict[bool, list[float]] = {True: [], False: []}
    judged, small_conv_macs = gradients.twins_pay, fastpath.SMALL_CONV_MACS
    gradients.twins_pay = lambda critic: True  # the twins forced, even where they step aside,
    fastpath.SMALL_CONV_MACS = 0  # and on every convolution, however small
    try:
        for round_index in range(repeats + WARMUP):
            order = [True, False]
            random.shuffle(order)
            for fast in order:
                start = time.process_time()
                runners[fast].one_step(real, fake)
                if round_index >= WARMUP:
                    times[fast].append(time.process_time() - start)
    finally:
        gradients.twins_pay, fastpath.SMALL_CONV_MACS = judged, small_conv_macs
    return statistics.median(times[True]) / statistics.median(times[False])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15, help="timed rounds (default 15)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), {args.repeats} rounds; "
          "WGAN-GP step CPU time, twins forced / fast=False")  # fmt: skip
    print("| C | S | B | first conv MACs | no norm | GroupNorm |")
    print("|---:|---:|---:|---:|---:|---:|")
    for channels, side, batch in SIZES:
        cells = [
            f"{ratio(channels, side, batch, norm, args.repeats):.3f}" for norm in (False, True)
        ]
        macs = first_conv_macs(channels, side, batch) / 1e6
        print(f"| {channels} | {side} | {batch} | {macs:.1f}M | {' | '.join(cells)} |", flush=True)


if __name__ == "__main__":
    main()
