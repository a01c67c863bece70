"""The CPU kernel choices of ``gp.penalty_forward`` for few-channel convolutions, timed.

    python benchmarks/conv_kernels.py [--repeats N]

For a 2-D convolution from C input channels (an image critic's first layer, batch 64), prints the
median time of ``convolution_backward``'s input gradient over that of a matmul plus ``fold``
(what ``gp.penalty_forward`` uses for C <= ``gradpen.fastpath.FEW_CHANNELS`` on CPU), and of
PyTorch's default-layout forward over the same forward on a channels-last copy of the input (a
candidate that lost: the forward keeps the default layout). Above 1 the alternative is faster.
All four are timed interleaved in one process; rerun this on your machine to check the choice.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

# (input channels, image side, kernel, stride, padding); 64 filters, batch 64.
SHAPES = ((1, 28, 4, 2, 1), (3, 32, 4, 2, 1), (3, 32, 3, 1, 1), (8, 28, 4, 2, 1), (16, 28, 4, 2, 1))
FILTERS = 64
BATCH = 64


def kernels(
    channels: int, side: int, kernel: int, stride: int, padding: int
) -> dict[str, Callable]:
    """The four computations for one shape: default and alternative forward and input gradient."""
    x = torch.randn(BATCH, channels, side, side)
    weight = torch.randn(FILTERS, channels, kernel, kernel)
    bias = torch.randn(FILTERS)
    out_side = (side + 2 * padding - kernel) // stride + 1
    grad = torch.randn(BATCH, FILTERS, out_side, out_side)

    def forward_channels_last() -> torch.Tensor:
        copy = torch.empty_like(x, memory_format=torch.channels_last).copy_(x)
        return F.conv2d(copy, weight, bias, stride, padding).contiguous()

    def input_grad_native() -> torch.Tensor:
        return torch.ops.aten.convolution_backward(
            grad, x, weight, None, [stride] * 2, [padding] * 2, [1, 1], False, [0, 0], 1,
            [True, False, False],
        )[0]  # fmt: skip

    def input_grad_fold() -> torch.Tensor:
        columns = torch.matmul(weight.flatten(1).t(), grad.flatten(2))
        return F.fold(columns, (side, side), kernel, padding=padding, stride=stride)

    torch.testing.assert_close(input_grad_fold(), input_grad_native(), rtol=1e-4, atol=1e-3)
    return {
        "forward": lambda: F.conv2d(x, weight, bias, stride, padding),
        "forward channels-last": forward_channels_last,
        "input grad": input_grad_native,
        "input grad fold": input_grad_fold,
    }


def median_times(functions: dict[str, Callable], repeats: int) -> dict[str, float]:
    """Median seconds of each function, run once per round in a shuffled order."""
    times: dict[str, list[float]] = {name: [] for name in functions}
    for round_index in range(repeats + 3):
        names = list(functions)
        random.shuffle(names)
        for name in names:
            start = time.perf_counter()
            functions[name]()
            if round_index >= 3:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=40, help="timed rounds (default 40)")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {BATCH}")
    print("| in channels | side | kernel | stride | forward: default / channels-last "
          "| input grad: default / fold |")  # fmt: skip
    print("|---:|---:|---:|---:|---:|---:|")
    for shape in SHAPES:
        median = median_times(kernels(*shape), args.repeats)
        forward = median["forward"] / median["forward channels-last"]
        backward = median["input grad"] / median["input grad fold"]
        channels, side, kernel, stride, _ = shape
        print(f"| {channels} | {side} | {kernel} | {stride} | {forward:.2f} | {backward:.2f} |")


if __name__ == "__main__":
    main()
