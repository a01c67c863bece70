"""The group-norm and average-pooling twins of the fast path: exact values and derivatives."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import gradpen as gp
from autograd_helpers import NoGradient
from gradpen import fastpath
from gradpen.gradients import graph_nodes


def group_norm_input_grad(groups: int, eps: float, bias: torch.Tensor | None = None):
    """The twin's input-gradient node as a function of (grad, x, weight); the statistics are
    taken from ``x`` on each call, so that gradcheck perturbs them with ``x``."""

    def function(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        _, mean, rstd = torch.ops.aten.native_group_norm(
            x.detach(), weight.detach(), bias, x.shape[0], x.shape[1], x[0, 0].numel(), groups, eps
        )
        return fastpath._GroupNormInputGrad.apply(grad, x, weight, mean, rstd, groups, eps)

    return function


@pytest.mark.parametrize("groups", [1, 2])
def test_group_norm_input_grad_node_passes_gradcheck_and_gradgradcheck(groups):
    torch.manual_seed(0)
    inputs = [torch.randn(2, 4, 3, 3, dtype=torch.float64) for _ in range(2)]
    weight = torch.randn(4, dtype=torch.float64)
    args = tuple(t.requires_grad_(True) for t in (*inputs, weight))
    function = group_norm_input_grad(groups, 1e-3)
    assert torch.autograd.gradcheck(function, args)
    assert torch.autograd.gradgradcheck(function, args)


@pytest.mark.parametrize("shape", [(3, 6, 4, 5), (5, 6)])
def test_group_norm_input_grad_node_equals_pytorchs_double_backward(shape):
    """The fused backward against PyTorch's composite one (an independent formula)."""
    torch.manual_seed(1)
    grad, x = (torch.randn(shape, dtype=torch.float64, requires_grad=True) for _ in "gx")
    weight = torch.randn(6, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(shape, dtype=torch.float64)

    def plain(grad, x, weight):
        return torch.autograd.grad(F.group_norm(x, 3, weight), x, grad, create_graph=True)[0]

    results = []
    for function in (group_norm_input_grad(3, 1e-5), plain):
        value = function(grad, x, weight)
        results.append((value, *torch.autograd.grad((value * upstream).sum(), (grad, x, weight))))
    for got, expected in zip(*results, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


def test_group_norm_backward_aligns_a_channels_last_input_with_its_grad():
    """PyTorch's kernel reads grad in x's memory format; unaligned, it returns wrong values."""
    torch.manual_seed(2)
    x, grad = (
        torch.randn(2, 4, 3, 3, dtype=torch.float64),
        torch.randn(2, 4, 3, 3, dtype=torch.float64),
    )
    _, mean, rstd = torch.ops.aten.native_group_norm(x, None, None, 2, 4, 9, 2, 1e-5)
    expected = fastpath._native_group_norm_backward(
        grad, x, mean, rstd, None, 2, (True, False, False)
    )
    channels_last = x.contiguous(memory_format=torch.channels_last)
    got = fastpath._native_group_norm_backward(
        grad, channels_last, mean, rstd, None, 2, (True, False, False)
    )
    # the channels-last kernel sums in another order; unaligned, the values were off by ~4
    torch.testing.assert_close(got[0], expected[0], rtol=1e-12, atol=1e-12)
    assert got[1] is None and got[2] is None


def twin_kinds(y: torch.Tensor) -> set[str | None]:
    return {fastpath.twin_kind(node) for node in graph_nodes(y)}


@pytest.mark.parametrize(
    "call",
    [
        lambda x, w: F.group_norm(x.bfloat16(), 2, w.bfloat16()),  # low precision: PyTorch's
        lambda x, w: F.group_norm(x, 2, w * 2),  # a computed weight
        lambda x, w: F.group_norm(x[:, :, :1, :1], 4),  # one value per group: PyTorch's error
    ],
)
def test_group_norm_calls_the_twin_does_not_take_run_as_pytorchs(call):
    x, weight = torch.randn(2, 4, 3, 3), nn.Parameter(torch.randn(4))
    try:
        expected = call(x, weight)
    except ValueError as error:  # PyTorch refuses it: so it does inside the context
        with gp.penalty_forward(), pytest.raises(ValueError, match=str(error)):
            call(x, weight)
        return
    with gp.penalty_forward():
        got = call(x, weight)
    assert "group norm" not in twin_kinds(got)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_group_norm_under_autocast_runs_as_pytorchs():
    x, weight = torch.randn(2, 4, 3, 3), nn.Parameter(torch.randn(4))
    with torch.autocast("cpu", dtype=torch.bfloat16), gp.penalty_forward():
        y = F.group_norm(x, 2, weight)
    assert "group norm" not in twin_kinds(y)


POOLS = [
    ((3, 4, 8, 8), dict(kernel_size=2)),
    ((2, 3, 9, 7), dict(kernel_size=2, stride=2)),  # a row and a column left over
    ((2, 3, 12, 12), dict(kernel_size=3, divisor_override=5)),
    ((2, 3, 8, 8), dict(kernel_size=(2, 4))),
    ((2, 2, 4, 6, 8), dict(kernel_size=2)),  # 3-d
    ((2, 3, 9, 9), dict(kernel_size=3, stride=2, padding=1, count_include_pad=False)),
    ((2, 3, 9, 9), dict(kernel_size=2, ceil_mode=True)),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("shape", "options"), POOLS)
def test_average_pool_twin_gives_pytorchs_values_bit_for_bit(dtype, shape, options):
    """Forward and input gradient, by strided slices or by PyTorch's kernels, equal PyTorch's."""
    torch.manual_seed(3)
    pool = F.avg_pool2d if len(shape) == 4 else F.avg_pool3d
    x = (torch.randn(shape, dtype=dtype) * 1e3).requires_grad_(True)
    expected = pool(x, **options)
    upstream = torch.randn_like(expected)
    (expected_grad,) = torch.autograd.grad(expected, x, upstream)
    with gp.penalty_forward():
        got = pool(x, **options)
    assert "average pool" in twin_kinds(got)
    (got_grad,) = torch.autograd.grad(got, x, upstream)
    assert torch.equal(got, expected) and torch.equal(got_grad, expected_grad)


def test_average_pool_twin_by_hand():
    """A 2x2 window of 1, 2, 3, 4: the mean 2.5; an upstream 8 spreads as 2 to each input; the
    input gradient's own backward averages its upstream, and has no edge to the input."""
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]], dtype=torch.float64, requires_grad=True)
    with gp.penalty_forward():
        y = F.avg_pool2d(x * 1.0, 2)
    assert y.item() == 2.5
    signal = torch.full_like(y, 8.0, requires_grad=True)
    (grad,) = torch.autograd.grad(y, x, signal, create_graph=True)
    assert torch.equal(grad, torch.full_like(x, 2.0))
    assert x.grad_fn is None and all(
        getattr(node, "variable", None) is not x for node in graph_nodes(grad)
    )
    v = torch.tensor([[[[1.0, 3.0], [5.0, 7.0]]]], dtype=torch.float64)
    (second,) = torch.autograd.grad(grad, signal, v)
    assert second.item() == 4.0


def test_average_pool_twin_passes_gradgradcheck():
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64, requires_grad=True)

    def function(x: torch.Tensor) -> torch.Tensor:
        with gp.penalty_forward():
            return F.avg_pool2d(x * x, 2) + F.avg_pool2d(x.tanh(), 3, stride=2, padding=1)

    assert torch.autograd.gradcheck(function, (x,))
    assert torch.autograd.gradgradcheck(function, (x,))


def conv_critic() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Conv2d(3, 2, 3), nn.ReLU(), nn.Flatten(),
        nn.Linear(2 * 4 * 4, 1),
    )  # fmt: skip


def test_only_a_reused_forward_keeps_the_input_only_pass(monkeypatch):
    """A penalty's own forward feeds only the penalty: its convolutions keep nothing for the
    loss's backward; the loss's forward reused by R1 keeps every convolution's pass."""
    kept: list[object] = []
    original = fastpath._InputOnlyPass.keep
    monkeypatch.setattr(fastpath._InputOnlyPass, "keep", lambda *a: kept.append(a) or original(*a))
    critic = conv_critic()
    real = torch.randn(4, 1, 8, 8)
    gp.r1(critic, real).mean().backward()
    assert kept == []
    x = real.clone().requires_grad_(True)
    with gp.penalty_forward(critic=critic):
        scores = critic(x)
    gp.r1(critic, x, scores=scores).mean().backward()
    # both convolutions keep it: for the weight gradient; only the second for its input gradient
    # (the first one's input is the leaf)
    assert [input_grad is None for _, input_grad in kept] == [False, True]


def test_a_group_norm_critic_stops_keeping_the_pass_after_its_first_call(monkeypatch):
    """Below a group norm the penalty's double backward reaches the forward graph, so the loss's
    signal there is no multiple of the pass's. On the first call every convolution keeps its
    pass: the two below the norm fail their check (the first one's penalty weight gradient is
    computed apart), the one above reuses. The verdict then keeps no pass on this critic (the
    twins stay on); the gradients equal plain autograd's."""
    kept: list[object] = []
    checked: list[bool] = []
    keep, check = fastpath._InputOnlyPass.keep, fastpath._loss_signal_scale
    monkeypatch.setattr(fastpath._InputOnlyPass, "keep", lambda *a: kept.append(a) or keep(*a))
    monkeypatch.setattr(
        fastpath,
        "_loss_signal_scale",
        lambda *a: checked.append((result := check(*a)) is not None) or result,
    )
    torch.manual_seed(0)
    critic = nn.Sequential(
        nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Conv2d(3, 3, 3), nn.GroupNorm(1, 3), nn.ReLU(),
        nn.Conv2d(3, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 4 * 4, 1),
    ).double()  # fmt: skip
    real = torch.randn(4, 1, 10, 10, dtype=torch.float64)

    def gradients(fast: bool) -> tuple[torch.Tensor | None, ...]:
        x = real.clone().requires_grad_(True)
        with gp.penalty_forward(fast, critic=critic):
            scores = critic(x)
        loss = F.softplus(-scores).mean() + 5.0 * gp.r1(critic, x, scores=scores, fast=fast).mean()
        return torch.autograd.grad(loss, list(critic.parameters()), allow_unused=True)

    expected = gradients(False)
    for round_index in range(2):
        kept.clear()
        checked.clear()
        got = gradients(True)
        first = (3, [False, False, True])
        assert (len(kept), sorted(checked)) == (first if round_index == 0 else (0, []))
        for grad, expected_grad in zip(got, expected, strict=True):
            torch.testing.assert_close(grad, expected_grad, rtol=1e-10, atol=1e-12)
    assert gp.gradients.twins_pay(critic) and not gp.gradients.input_grad_reuse_pays(critic)


@pytest.mark.parametrize(
    "layout",
    [
        lambda x: x[:, :, ::2],  # strided
        lambda x: x.transpose(2, 3),
        lambda x: x.contiguous(memory_format=torch.channels_last),
    ],
)
def test_group_norm_twin_takes_any_layout_without_falling_back(layout):
    """A strided or channels-last input runs through the twin (no warning) with PyTorch's
    values and input gradient."""
    torch.manual_seed(4)
    x = layout(torch.randn(2, 4, 6, 6, dtype=torch.float64)).requires_grad_(True)
    weight = nn.Parameter(torch.randn(4, dtype=torch.float64))
    expected = F.group_norm(x, 2, weight)
    (expected_grad,) = torch.autograd.grad(expected.pow(2).sum(), x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with gp.penalty_forward():
            got = F.group_norm(x, 2, weight)
        (got_grad,) = torch.autograd.grad(got.pow(2).sum(), x)
    assert "group norm" in twin_kinds(got)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got_grad, expected_grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    "call",
    [
        lambda x: F.avg_pool2d(x, 2, divisor_override=0),
        lambda x: F.avg_pool2d(x[:, :, :1, :1], 2),  # a window larger than the input
        lambda x: F.avg_pool2d(x, (4, 2)),
    ],
)
def test_average_pool_calls_pytorch_refuses_are_refused_inside_the_context(call):
    x = torch.randn(1, 2, 3, 5)
    with pytest.raises(RuntimeError) as plain:
        call(x)
    with gp.penalty_forward(), pytest.raises(RuntimeError) as inside:
        call(x)
    assert str(inside.value) == str(plain.value)


@pytest.mark.parametrize("kind", ["conv", "group norm", "average pool", "leaky ReLU"])
def test_a_twin_that_gets_no_gradient_passes_none_on(kind):
    """A twin whose output gets no gradient (a node above it sent none, as PyTorch's own
    convolution double backward does into the forward graph) passes none on without computing:
    PyTorch would hand a custom Function zeros, and its backward would compute with them."""
    x = torch.randn(2, 4, 6, 6, requires_grad=True)
    weight, scale = nn.Parameter(torch.randn(4, 4, 3, 3)), nn.Parameter(torch.ones(4))
    layers = {
        "conv": lambda t: F.conv2d(t, weight),
        "group norm": lambda t: F.group_norm(t, 2, scale),
        "average pool": lambda t: F.avg_pool2d(t, 2),
        "leaky ReLU": lambda t: F.leaky_relu(t, 0.2),
    }
    with gp.penalty_forward():
        out = layers[kind](x)
    assert fastpath.twin_kind(out.grad_fn) == kind
    grads = torch.autograd.grad(NoGradient.apply(out).sum(), [x, weight, scale], allow_unused=True)
    assert grads == (None, None, None)


@pytest.mark.parametrize(
    ("weight_shape", "output", "folds"),
    [
        ((64, 1, 4, 4), (14, 14), True),  # the DCGAN-28 critic's first layer
        ((8, 3, 4, 4), (32, 32), False),  # 8 filters, 48 x 1024 = 49152 columns per sample
        ((64, 3, 4, 4), (32, 32), True),  # as many columns, 64 filters
        ((32, 3, 3, 3), (32, 32), True),  # the ResNet critic's: 27648 columns, 32 filters
        ((4, 3, 4, 4), (16, 16), True),  # 48 x 256 = 12288 columns
        ((4, 2, 4, 4), (32, 32), True),  # 32 x 1024 = 32768 columns: the bound itself
        ((4, 2, 4, 4), (32, 33), False),  # 32 x 1056 columns: past it
        ((64, 8, 4, 4), (14, 14), False),  # 8 input channels: oneDNN's input gradient
    ],
)
def test_the_fold_input_gradient_goes_with_many_filters_or_few_columns(weight_shape, output, folds):
    geometry = fastpath._ConvGeometry(2, (2, 2), (1, 1), (1, 1), 1)
    weight, grad = torch.empty(weight_shape), torch.empty(2, weight_shape[0], *output)
    assert geometry._folds_input_grad(weight, grad) == folds


def test_an_empty_batch_through_a_few_channel_convolution_twin_gets_its_empty_gradient():
    """The fold rule reads sizes from shapes, so a batch of 0 (whose signal has no first row)
    passes through the twin's backward as through PyTorch's."""
    conv = nn.Conv2d(3, 4, 3)
    x = torch.randn(0, 3, 8, 8, requires_grad=True)
    with gp.penalty_forward():
        out = conv(x)
    assert fastpath.twin_kind(out.grad_fn) == "conv"
    out.sum().backward()
    assert x.grad.shape == (0, 3, 8, 8) and torch.equal(conv.weight.grad, torch.zeros(4, 3, 3, 3))
