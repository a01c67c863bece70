"""Exactness of the fast path and of the mixed-precision paths against float32/float64.

Tolerances: the fast path (constant-mask ReLU backward) equals plain autograd to float64
rounding; bf16 autocast on CPU is within 5% of float32 for the penalty; float16 autocast with
GradScaler within 2% for the penalty and 5% (in norm) for the parameter gradients.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import gradpen as gp


def conv_critic() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 4, stride=2, padding=1),
        nn.LeakyReLU(0.2),
        nn.Conv2d(4, 8, 4, stride=2, padding=1),
        nn.LeakyReLU(0.2),
        nn.Flatten(),
        nn.Linear(8 * 4 * 4, 1),
    )


def mlp_critic() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(2, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 1)
    )


def parameter_gradients(value: torch.Tensor, critic: nn.Module) -> tuple[torch.Tensor, ...]:
    """Zeros for the parameters the penalty does not reach (the output bias)."""
    return torch.autograd.grad(value, list(critic.parameters()), materialize_grads=True)


def reference_wgan_gp(critic: nn.Module, x_hat: torch.Tensor) -> torch.Tensor:
    """The textbook computation, plain autograd, no shortcut."""
    x_hat = x_hat.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)
    return (g.flatten(1).norm(dim=1) - 1).pow(2)


@pytest.mark.parametrize("make, shape", [(conv_critic, (6, 1, 16, 16)), (mlp_critic, (16, 2))])
def test_fast_path_equals_plain_autograd_in_value_and_parameter_gradient(make, shape):
    critic = make().double()
    real, fake = torch.randn(shape, dtype=torch.float64), torch.randn(shape, dtype=torch.float64)
    value = gp.wgan_gp(critic, real, fake, generator=torch.Generator().manual_seed(1))
    fast = parameter_gradients(value.mean(), critic)
    x_hat = gp.interpolate(real, fake, generator=torch.Generator().manual_seed(1))
    expected = reference_wgan_gp(critic, x_hat)
    slow = parameter_gradients(expected.mean(), critic)
    torch.testing.assert_close(value, expected)
    for a, b in zip(fast, slow, strict=True):
        torch.testing.assert_close(a, b)


class CountConvolutions(TorchDispatchMode):
    """Counts convolution kernels: forward convolutions and convolution backwards."""

    def __init__(self) -> None:
        super().__init__()
        self.forward = 0
        self.backward = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.forward += func is torch.ops.aten.convolution.default
        self.backward += func is torch.ops.aten.convolution_backward.default
        return func(*args, **(kwargs or {}))


def test_fast_path_runs_fewer_convolutions_in_the_penalty_backward():
    critic = conv_critic()  # two conv layers
    real, fake = torch.randn(4, 1, 16, 16), torch.randn(4, 1, 16, 16)
    counts = []
    for value in (
        gp.wgan_gp(critic, real, fake).mean(),
        reference_wgan_gp(critic, gp.interpolate(real, fake)).mean(),
    ):
        with CountConvolutions() as counter:
            value.backward()
        counts.append((counter.forward, counter.backward))
    # Fast: per conv layer one forward conv (the gradient's gradient) and one weight gradient;
    # nothing goes back through the forward pass. PyTorch's own double backward runs two
    # forward convs per layer and pushes zeros back through the forward convs.
    assert counts[0] == (2, 2)
    assert sum(counts[0]) < sum(counts[1])


def test_grad_norm_of_a_16_bit_gradient_is_float32():
    g = torch.full((2, 3), 300.0, dtype=torch.float16)  # squares overflow in float16
    torch.testing.assert_close(gp.grad_norm(g), torch.full((2,), 300.0 * 3**0.5))


def test_grad_norm_is_nan_for_a_nan_gradient_and_zero_with_zero_gradient_at_zero():
    g = torch.tensor([[float("nan"), 1.0], [0.0, 0.0], [3.0, 4.0]], requires_grad=True)
    norms = gp.grad_norm(g)
    assert norms[0].isnan() and norms[1:].tolist() == [0.0, 5.0]
    (grad,) = torch.autograd.grad(norms[1:].sum(), g)
    torch.testing.assert_close(grad[1:], torch.tensor([[0.0, 0.0], [0.6, 0.8]]))


def test_bf16_autocast_penalty_is_within_5_percent_of_float32():
    critic = conv_critic()
    real, fake = torch.rand(16, 1, 16, 16), torch.randn(16, 1, 16, 16)
    penalty = gp.Penalty("wgan-gp", weight=10.0)
    torch.manual_seed(2)
    full = penalty(critic, real=real, fake=fake)
    torch.manual_seed(2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = penalty(critic, real=real, fake=fake)
    assert low.dtype == torch.float32
    assert low.item() == pytest.approx(full.item(), rel=0.05)


def scaled_step(scaler: torch.amp.GradScaler | None, dtype: torch.dtype | None):
    """Penalty value and unscaled parameter gradients of R1, optionally under fp16 autocast."""
    critic = mlp_critic()
    real = torch.randn(64, 2)
    penalty = gp.Penalty("r1", weight=10.0, scaler=scaler)
    enabled = dtype is not None
    with torch.autocast("cpu", dtype=dtype or torch.float16, enabled=enabled):
        term = penalty(critic, real=real)
    (scaler.scale(term) if scaler else term).backward()
    optimizer = torch.optim.SGD(critic.parameters(), lr=0.0)
    if scaler:
        scaler.unscale_(optimizer)
    grads = torch.cat([p.grad.flatten() for p in critic.parameters() if p.grad is not None])
    return term, grads, scaler, optimizer


def test_float16_grad_scaler_recipe_matches_float32():
    reference, reference_grads, _, _ = scaled_step(None, None)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)
    term, grads, _, _ = scaled_step(scaler, torch.float16)
    assert term.dtype == torch.float32
    assert term.item() == pytest.approx(reference.item(), rel=0.02)
    assert ((grads - reference_grads).norm() / reference_grads.norm()).item() < 0.05


def test_scale_and_unscale_are_exact_in_float32():
    """A power-of-two scale: scaling before autograd.grad and unscaling after changes nothing."""
    reference, reference_grads, _, _ = scaled_step(None, None)
    term, grads, _, _ = scaled_step(torch.amp.GradScaler("cpu", init_scale=2.0**16), None)
    torch.testing.assert_close(term, reference)
    torch.testing.assert_close(grads, reference_grads)


def test_overflowing_scale_makes_the_scaler_skip_the_step():
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**40)  # the scaled sum overflows fp16
    term, _, scaler, optimizer = scaled_step(scaler, torch.float16)
    assert not torch.isfinite(term)
    before = [p.detach().clone() for group in optimizer.param_groups for p in group["params"]]
    scaler.step(optimizer)
    scaler.update()
    after = [p for group in optimizer.param_groups for p in group["params"]]
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))
    assert scaler.get_scale() < 2.0**40
