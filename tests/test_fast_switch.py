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
    for twin in (fastpath._PiecewiseLinear, fastpath._Convolution):
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
