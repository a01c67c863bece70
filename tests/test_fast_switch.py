"""The ``fast=`` switch: the fast path and plain autograd give the same penalty, every penalty,
and a fast path that fails falls back to plain autograd instead of raising."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import gradpen as gp
from gradpen import fastpath

NAMES = [name for name, spec in gp.PENALTIES.items() if spec.points]
# a small target, so that the one-sided term is not zero at these critics' norms
OPTIONS = {"one-sided": {"target": 0.01}}


def mlp_critic() -> nn.Module:
    return nn.Sequential(
        nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16), nn.LeakyReLU(0.2), nn.Linear(16, 1)
    )


def conv_critic() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, stride=2, padding=1),
        nn.LeakyReLU(0.2),
        nn.Conv2d(4, 8, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 2 * 2, 1),
    )


CRITICS = {"mlp": (mlp_critic, (12, 6)), "conv": (conv_critic, (12, 1, 8, 8))}


def term_and_grads(critic: nn.Module, name: str, real, fake, fast: bool):
    torch.manual_seed(3)  # the same interpolation / perturbation draws both ways
    penalty = gp.Penalty(name, 10.0, fast=fast, **OPTIONS.get(name, {}))
    term = penalty(critic, real=real, fake=fake)
    params = list(critic.parameters())
    grads = torch.autograd.grad(term, params, allow_unused=True)
    # A penalty does not reach the last bias: its gradient is zero (None from autograd).
    return term.detach(), [
        torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)
    ]


@pytest.mark.parametrize("critic_name", CRITICS)
@pytest.mark.parametrize("name", NAMES)
def test_fast_and_plain_agree_on_value_and_parameter_gradients(critic_name, name):
    make, shape = CRITICS[critic_name]
    torch.manual_seed(0)
    critic = make().double()
    real, fake = torch.randn(shape, dtype=torch.float64), torch.randn(shape, dtype=torch.float64)
    fast_term, fast_grads = term_and_grads(critic, name, real, fake, fast=True)
    plain_term, plain_grads = term_and_grads(critic, name, real, fake, fast=False)
    assert fast_term > 0
    torch.testing.assert_close(fast_term, plain_term, rtol=1e-12, atol=1e-14)
    for fast_grad, plain_grad in zip(fast_grads, plain_grads, strict=True):
        torch.testing.assert_close(fast_grad, plain_grad, rtol=1e-10, atol=1e-12)


def test_fast_off_runs_no_twin(monkeypatch):
    """``fast=False`` never enters the fast path; ``fast=True`` calls both twins."""
    calls = []
    twins = (fastpath._PiecewiseLinear, fastpath._Convolution, fastpath._GroupNorm)
    for twin in (*twins, fastpath._AveragePool):
        original = twin.apply
        monkeypatch.setattr(
            twin, "apply", lambda *a, _f=original, _n=twin.__name__: calls.append(_n) or _f(*a)
        )
    critic = conv_critic().double()
    x = torch.randn(4, 1, 8, 8, dtype=torch.float64)
    gp.r1(critic, x, fast=False)
    assert calls == []
    gp.r1(critic, x, fast=True)
    assert set(calls) == {"_PiecewiseLinear", "_Convolution"}


def count_twin_calls(monkeypatch) -> list[str]:
    """Every call of a twin from now on, by the twin's class name."""
    calls: list[str] = []
    twins = (fastpath._PiecewiseLinear, fastpath._Convolution, fastpath._GroupNorm)
    for twin in (*twins, fastpath._AveragePool):
        original = twin.apply
        monkeypatch.setattr(
            twin, "apply", lambda *a, _f=original, _n=twin.__name__: calls.append(_n) or _f(*a)
        )
    return calls


def layer_norm_critic() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.LayerNorm([4, 4, 4]), nn.LeakyReLU(0.2),
        nn.Flatten(), nn.Linear(4 * 4 * 4, 1),
    )  # fmt: skip


def group_norm_critic() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.GroupNorm(2, 4), nn.LeakyReLU(0.2), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(4 * 4 * 4, 1),
    )  # fmt: skip


def tanh_critic() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.Tanh(), nn.Flatten(), nn.Linear(4 * 6 * 6, 1))


def r1_term_and_grads(
    critic: nn.Module, real: torch.Tensor, reuse: bool
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """R1 and its parameter gradients, from a fresh forward or reusing the loss's (``reuse``)."""
    if not reuse:
        return term_and_grads(critic, "r1", real, None, fast=True)
    x = real.clone().requires_grad_(True)  # the loss's forward, reused by R1 (the loop's path)
    with gp.penalty_forward(True, critic=critic):
        scores = critic(x)
    term = 10.0 / 2 * gp.r1(critic, x, scores=scores).mean()
    params = list(critic.parameters())
    grads = torch.autograd.grad(term, params, allow_unused=True)
    return term, [
        torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)
    ]


@pytest.mark.parametrize(
    ("make", "twins_stay"),
    [(layer_norm_critic, False), (tanh_critic, False), (group_norm_critic, True)],
)
@pytest.mark.parametrize("reuse", [False, True])
def test_the_verdict_keeps_or_drops_the_twins_with_the_same_numbers(
    monkeypatch, make, twins_stay, reuse
):
    """A critic whose input gradient depends on its activations through an op without a twin (a
    layer norm, a smooth activation) runs through the twins once, then as plain autograd. A
    group norm's input gradient depends on its input by design; its twin reaches the forward
    graph through one fused node, so that critic keeps the twins. The numbers are the same."""
    calls = count_twin_calls(monkeypatch)
    torch.manual_seed(0)
    critic = make().double()
    real = torch.randn(6, 1, 8, 8, dtype=torch.float64)
    expected, expected_grads = term_and_grads(critic, "r1", real, None, fast=False)
    for round_index in range(2):
        calls.clear()
        term, grads = r1_term_and_grads(critic, real, reuse)
        if twins_stay:
            assert set(calls) == {"_Convolution", "_GroupNorm", "_PiecewiseLinear", "_AveragePool"}
        else:
            assert bool(calls) == (round_index == 0)  # judged on the first call
        assert gp.gradients.twins_pay(critic) == twins_stay
        torch.testing.assert_close(term.detach(), expected, rtol=1e-12, atol=1e-14)
        for grad, expected_grad in zip(grads, expected_grads, strict=True):
            torch.testing.assert_close(grad, expected_grad, rtol=1e-10, atol=1e-12)


def test_the_fast_path_stays_on_where_the_twins_cut_the_activations_loose(monkeypatch):
    calls = count_twin_calls(monkeypatch)
    critic = conv_critic().double()
    x = torch.randn(4, 1, 8, 8, dtype=torch.float64)
    for _ in range(2):
        calls.clear()
        gp.r1(critic, x)
        assert set(calls) == {"_PiecewiseLinear", "_Convolution"}
    assert gp.gradients.twins_pay(critic)
    assert gp.gradients.twins_pay(None)  # no critic named: the twins, as asked


def test_a_reused_forward_run_without_the_twins_does_not_judge_them(monkeypatch):
    """Scores from a plain forward (no penalty_forward) say nothing about the twins: a later
    penalty on the same critic still gets them."""
    calls = count_twin_calls(monkeypatch)
    critic = conv_critic().double()
    x = torch.randn(4, 1, 8, 8, dtype=torch.float64, requires_grad=True)
    gp.r1(critic, x, scores=critic(x))  # the loss's forward, reused, outside the context
    assert calls == [] and critic not in gp.gradients._VERDICTS
    gp.r1(critic, x.detach())
    assert set(calls) == {"_PiecewiseLinear", "_Convolution"} and gp.gradients.twins_pay(critic)
    assert gp.gradients._VERDICTS[critic] == (True, True)


def test_a_convolution_below_the_size_rule_runs_as_pytorchs_own(monkeypatch):
    """With the shipped :data:`~gradpen.fastpath.SMALL_CONV_MACS`, a convolution of 9.4M
    multiply-accumulates runs as the twin and one of 74k as PyTorch's own; the penalty and its
    parameter gradients are plain autograd's."""
    monkeypatch.undo()  # the shipped rule (conftest twins every convolution)
    assert 74_000 < fastpath.SMALL_CONV_MACS <= 9_400_000
    calls = count_twin_calls(monkeypatch)
    torch.manual_seed(0)
    critic = nn.Sequential(
        nn.Conv2d(8, 32, 3, padding=1), nn.ReLU(),  # 4 * 32 * 32 * 32 * 8 * 3 * 3 = 9.4M
        nn.Conv2d(32, 1, 3, stride=4, padding=1),  # 4 * 1 * 8 * 8 * 32 * 3 * 3 = 74k
        nn.Flatten(), nn.Linear(64, 1),
    ).double()  # fmt: skip
    real = torch.randn(4, 8, 32, 32, dtype=torch.float64)
    term, grads = term_and_grads(critic, "r1", real, None, fast=True)
    assert calls.count("_Convolution") == 1
    expected, expected_grads = term_and_grads(critic, "r1", real, None, fast=False)
    torch.testing.assert_close(term, expected, rtol=1e-12, atol=1e-14)
    for grad, expected_grad in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(grad, expected_grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    ("x_shape", "w_shape", "stride", "padding", "dilation", "groups"),
    [
        ((8, 3, 64, 64), (4, 3, 4, 4), 2, 2, 1, 1),  # the multi-scale critic's first conv
        ((2, 6, 17), (4, 3, 5), 3, 1, 2, 2),
        ((1, 2, 5, 6, 7), (3, 2, 2, 3, 1), (1, 2, 1), (0, 1, 2), 1, 1),
    ],
)
def test_multiply_accumulates_match_pytorchs_flop_counter(
    x_shape, w_shape, stride, padding, dilation, groups
):
    """Half of torch.utils.flop_counter's convolution FLOPs (two per multiply-accumulate)."""
    from torch.utils.flop_counter import FlopCounterMode

    dims = len(x_shape) - 2
    x, weight = torch.randn(x_shape), torch.randn(w_shape)
    geometry = fastpath._ConvGeometry(
        dims, *(fastpath._as_tuple(v, dims) for v in (stride, padding, dilation)), groups
    )
    with FlopCounterMode(display=False) as counter:
        geometry.forward(x, weight, None)
    assert geometry.multiply_accumulates(x, weight) == counter.get_total_flops() // 2
    if x_shape == (8, 3, 64, 64):
        assert geometry.multiply_accumulates(x, weight) == 8 * 4 * 33 * 33 * 3 * 4 * 4


def test_input_path_holds_the_nodes_between_x_and_the_scores_only():
    x = torch.randn(3, requires_grad=True)
    weight = torch.randn(3, requires_grad=True)
    doubled = x * 2
    shifted = doubled + weight  # the weight's own accumulator is not on x's path
    side = (weight * 3).sum()  # a branch that never touches x
    scores = shifted.sum() + side
    path = gp.gradients._input_path(scores, x)
    names = sorted(type(node).__name__ for node in path)
    assert names == ["AddBackward0", "AddBackward0", "MulBackward0", "SumBackward0"]
    assert side.grad_fn not in path and doubled.grad_fn in path
    # x made by an op (an augmented batch): the path starts after x's own node
    made = x * 1.0
    tripled = made * 3
    path = gp.gradients._input_path(tripled.sum(), made)
    assert tripled.grad_fn in path and made.grad_fn not in path and len(path) == 2


@pytest.mark.parametrize("broken", ["_PiecewiseLinear", "_Convolution"])
def test_a_failing_twin_falls_back_to_plain_autograd_with_a_warning(monkeypatch, broken):
    torch.manual_seed(0)
    critic = conv_critic().double()
    real = torch.randn(6, 1, 8, 8, dtype=torch.float64)
    expected, expected_grads = term_and_grads(critic, "r1", real, None, fast=False)

    def fail(*args, **kwargs):
        raise RuntimeError("an op the twin does not handle")

    monkeypatch.setattr(getattr(fastpath, broken), "apply", fail)
    with pytest.warns(RuntimeWarning, match="ran as plain autograd"):
        term, grads = term_and_grads(critic, "r1", real, None, fast=True)
    torch.testing.assert_close(term, expected)
    for grad, expected_grad in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(grad, expected_grad)


def test_a_failing_input_only_pass_falls_back_to_plain_autograd(monkeypatch):
    torch.manual_seed(0)
    critic = conv_critic().double()
    real = torch.randn(6, 1, 8, 8, dtype=torch.float64)
    expected, _ = term_and_grads(critic, "r1", real, None, fast=False)

    def broken_pass(nodes):
        raise RuntimeError("cannot mark the graph")

    monkeypatch.setattr(fastpath, "input_only_pass", broken_pass)
    with pytest.warns(RuntimeWarning, match="the input gradient"):
        term, _ = term_and_grads(critic, "r1", real, None, fast=True)
    torch.testing.assert_close(term, expected)


def test_a_call_that_is_wrong_in_itself_keeps_pytorchs_error():
    """A shape error is not the fast path's failure: PyTorch's own error, no fallback warning."""
    critic = conv_critic().double()
    wrong = torch.randn(3, 2, 8, 8, dtype=torch.float64)  # two channels for a 1-channel conv
    with pytest.raises(RuntimeError, match="channels"):
        gp.r1(critic, wrong)


def test_the_registry_states_what_the_loop_and_compiled_path_read():
    assert gp.PENALTIES["r1"].reuses_scores and gp.PENALTIES["r1r2"].reuses_scores
    assert not gp.PENALTIES["wgan-gp"].reuses_scores
    assert not gp.PENALTIES["dragan"].reuses_scores
    assert gp.PENALTIES["r1r2"].needs == {"real", "fake"}
    assert gp.PENALTIES["dragan"].needs == {"real"}
    assert gp.PENALTIES["one-sided"].fixed == {"one_sided": True}
    assert gp.PENALTIES["r2"].weight_factor == 0.5
