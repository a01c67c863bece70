"""The CPU kernel choices of ``gp.penalty_forward`` for few-channel convolutions, timed.

    python benchmarks/conv_kernels.py [--repeats N]

For a 2-D convolution from C input channels (an image critic's first layer: the DCGAN critics'
at batch 64, and the zoo's PatchGAN, multi-scale and ResNet critics' at their benchmark batch),
prints the median time of ``convolution_backward``'s input gradient over that of the fast path's
matmul plus ``fold`` (``gradpen.fastpath._ConvGeometry._input_grad_by_fold``), with the fast
path's choice (``_folds_input_grad``: C <= ``FEW_CHANNELS`` and at least ``FOLD_FILTERS`` filters
or at most ``FOLD_COLUMNS`` columns per sample, on CPU), and PyTorch's default-layout forward over
the same forward on a channels-last copy of the input (a candidate that lost: the forward keeps
the default layout). Above 1 the alternative is faster. All four are timed interleaved in one
process; rerun this on your machine to check the choices.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F

from gradpen import fastpath


class Shape(NamedTuple):
    """One first layer: ``filters`` convolutions of ``kernel`` over ``channels x side x side``."""

    channels: int
    side: int
    kernel: int
    stride: int
    padding: int
    filters: int
    batch: int

    @property
    def out_side(self) -> int:
        """The side of the convolution's output."""
        return (self.side + 2 * self.padding - self.kernel) // self.stride + 1


SHAPES = (
    Shape(1, 28, 4, 2, 1, 64, 64),  # DCGAN-28
    Shape(3, 32, 4, 2, 1, 64, 64),  # DCGAN-32
    Shape(3, 32, 3, 1, 1, 64, 64),
    Shape(8, 28, 4, 2, 1, 64, 64),
    Shape(16, 28, 4, 2, 1, 64, 64),
    Shape(3, 32, 3, 1, 1, 32, 16),  # ResNet-GN
    Shape(3, 64, 4, 2, 1, 8, 8),  # PatchGAN
    Shape(3, 64, 4, 2, 1, 4, 8),  # multi-scale, its finest scale
    Shape(3, 32, 4, 2, 1, 4, 8),  # multi-scale, its middle scale
)


def kernels(shape: Shape) -> dict[str, Callable]:
    """The four computations for one shape: default and alternative forward and input gradient."""
    channels, side, kernel, stride, padding, filters, batch = shape
    x = torch.randn(batch, channels, side, side)
    weight = torch.randn(filters, channels, kernel, kernel)
    bias = torch.randn(filters)
    grad = torch.randn(batch, filters, shape.out_side, shape.out_side)

    def forward_channels_last() -> torch.Tensor:
        copy = torch.empty_like(x, memory_format=torch.channels_last).copy_(x)
        return F.conv2d(copy, weight, bias, stride, padding).contiguous()

    def input_grad_native() -> torch.Tensor:
        return torch.ops.aten.convolution_backward(
            grad, x, weight, None, [stride] * 2, [padding] * 2, [1, 1], False, [0, 0], 1,
            [True, False, False],
        )[0]  # fmt: skip

    def input_grad_fold() -> torch.Tensor:
        return geometry(shape)._input_grad_by_fold(grad, x, weight)

    torch.testing.assert_close(input_grad_fold(), input_grad_native(), rtol=1e-4, atol=1e-3)
    return {
        "forward": lambda: F.conv2d(x, weight, bias, stride, padding),
        "forward channels-last": forward_channels_last,
        "input grad": input_grad_native,
        "input grad fold": input_grad_fold,
    }


def geometry(shape: Shape) -> fastpath._ConvGeometry:
    """The fast path's geometry of ``shape``'s convolution."""
    return fastpath._ConvGeometry(2, (shape.stride,) * 2, (shape.padding,) * 2, (1, 1), 1)


def folds(shape: Shape) -> bool:
    """Whether the fast path takes ``shape``'s input gradient by ``fold``."""
    weight = torch.empty(shape.filters, shape.channels, shape.kernel, shape.kernel)
    grad = torch.empty(1, shape.filters, shape.out_side, shape.out_side)
    return geometry(shape)._folds_input_grad(weight, grad)


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
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(
        "| in channels | side | kernel | stride | filters | batch "
        "| forward: default / channels-last | input grad: default / fold | fast path |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for shape in SHAPES:
        median = median_times(kernels(shape), args.repeats)
        forward = median["forward"] / median["forward channels-last"]
        backward = median["input grad"] / median["input grad fold"]
        choice = "fold" if folds(shape) else "oneDNN"
        channels, side, kernel, stride, _, filters, batch = shape
        print(
            f"| {channels} | {side} | {kernel} | {stride} | {filters} | {batch} | {forward:.2f} "
            f"| {backward:.2f} | {choice} |"
        )


if __name__ == "__main__":
    main()
