"""Critic outputs of any form, the penalties added with them (WGAN-div, max-GP, approximate
R1/R2), lazy terms without a step, and attention in the penalty's forward."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import gradpen as gp
from gradpen import losses

W = torch.tensor([3.0, 4.0], dtype=torch.float64)  # ||w|| = 5


class Linear(nn.Module):
    """D(x) = x . w: the input gradient is w everywhere."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(W.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.w


class HalfSquare(nn.Module):
    """D(x) = ||x||^2 / 2 per sample: the input gradient is x itself."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * x.flatten(1).pow(2).sum(1)


def batch(n: int = 6, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


# --- outputs of any form --------------------------------------------------------------------


class PatchAndList(nn.Module):
    """A (B, 1, 2, 2) patch map of x-dependent values and a list with a second map."""

    def forward(self, x: torch.Tensor):
        patch = x[:, :1, None, None] * torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=x.dtype)
        return [patch, {"head": 2 * x[:, 1:2]}]


def test_patch_and_nested_outputs_sum_or_mean_per_sample():
    x = batch()
    # reduce="sum": score = x0 * (1+2+3+4) + 2 * x1, gradient (10, 2)
    g = gp.input_gradient(PatchAndList(), x)
    torch.testing.assert_close(g, torch.tensor([10.0, 2.0], dtype=x.dtype).expand_as(x))
    # reduce="mean": score = x0 * 10/4 + 2 * x1, gradient (2.5, 2)
    g = gp.input_gradient(PatchAndList(), x, reduce="mean")
    torch.testing.assert_close(g, torch.tensor([2.5, 2.0], dtype=x.dtype).expand_as(x))
    term = gp.Penalty("r1", 2.0, reduce="mean")(PatchAndList(), real=x)
    torch.testing.assert_close(term, torch.tensor(2.5**2 + 4.0, dtype=x.dtype))


def test_bad_outputs_and_reduce_get_clear_errors():
    x = batch()
    with pytest.raises(ValueError, match=r"output\[1\].*str.*tensor"):
        gp.input_gradient(lambda x: [x.sum(1), "logits"], x)
    with pytest.raises(ValueError, match=r"output\['a'\] has shape \(3,\).*batch size 6"):
        gp.input_gradient(lambda x: {"a": x[:3, 0]}, x)
    with pytest.raises(ValueError, match="empty list"):
        gp.input_gradient(lambda x: [], x)
    with pytest.raises(ValueError, match="reduce must be one of sum, mean; got 'max'"):
        gp.Penalty("r1", reduce="max")
    with pytest.raises(ValueError, match="reduce must be one of"):
        gp.r1(Linear().double(), x, reduce="avg")


def test_losses_take_patch_maps_and_lists_mean_over_patches_sum_over_outputs():
    real = torch.tensor([[[[1.0, 3.0]]], [[[5.0, 7.0]]]])  # (2, 1, 1, 2)
    fake = torch.zeros(2, 1, 1, 2)
    # WGAN: mean over batch and patches
    assert losses.d_loss("wgan", real, fake).item() == pytest.approx(-4.0)
    # hinge per patch: relu(1 - r) is zero for every patch here, relu(1 + 0) = 1
    assert losses.d_loss("hinge", real, fake).item() == pytest.approx(1.0)
    # a list of outputs: the sum of each output's loss
    assert losses.d_loss("wgan", [real, real[..., :1]], [fake, fake[..., :1]]).item() == (
        pytest.approx(-4.0 - 3.0)
    )
    with pytest.raises(ValueError, match="same form"):
        losses.d_loss("wgan", [real], [fake, fake])


# --- WGAN-div and max-GP, pinned by hand -----------------------------------------------------


def test_wgan_div_on_a_linear_critic_is_k_times_norm_to_the_p():
    real, fake = batch(seed=1), batch(seed=2)
    per_sample = gp.wgan_div(Linear().double(), real, fake, p=6)
    torch.testing.assert_close(per_sample, torch.full((6,), 2 * 5.0**6, dtype=torch.float64))
    # the official code's k = 2, p = 6: k/2 * mean(||g_r||^6 + ||g_f||^6) = 2 * 5^6
    term = gp.Penalty("wgan-div", weight=2.0, p=6)(Linear().double(), real=real, fake=fake)
    torch.testing.assert_close(term, torch.tensor(2 * 5.0**6, dtype=torch.float64))


def test_wgan_div_reuses_the_loss_forward_and_takes_the_power_per_sample():
    real, fake = batch(seed=1), batch(seed=2)
    critic = HalfSquare()
    expected = real.norm(dim=1) ** 3 + fake.norm(dim=1) ** 3  # gradient = x
    torch.testing.assert_close(gp.wgan_div(critic, real, fake, p=3), expected)
    r, f = real.clone().requires_grad_(), fake.clone().requires_grad_()
    term = gp.Penalty("wgan-div", 4.0, p=3)(
        critic, real=r, fake=f, real_scores=critic(r), fake_scores=critic(f)
    )
    torch.testing.assert_close(term, 2.0 * expected.mean())


def test_max_gp_is_the_batch_maximum_of_the_squared_norm_at_interpolates():
    x = batch()
    # real == fake: every interpolate is the point itself, where HalfSquare's gradient is x
    term = gp.Penalty("max-gp", weight=3.0)(HalfSquare(), real=x, fake=x.clone())
    torch.testing.assert_close(term, 3.0 * x.pow(2).sum(1).max())


def test_new_options_are_checked_when_the_penalty_is_made():
    with pytest.raises(ValueError, match="option p must be a finite number > 0; got 0"):
        gp.Penalty("wgan-div", 2.0, p=0)
    with pytest.raises(ValueError, match=r"option sigma must be a finite number > 0; got -0\.1"):
        gp.Penalty("approx-r1", 2.0, sigma=-0.1)
    with pytest.raises(ValueError, match=r"option target must be a finite number >= 0 \(a norm\)"):
        gp.Penalty("wgan-gp", 10.0, target=-1)
    with pytest.raises(ValueError, match="p must be a finite number > 0"):
        gp.wgan_div(Linear().double(), batch(), batch(seed=1), p=-2)


# --- approximate R1 / R2 ------------------------------------------------------------------------


def test_approx_r1_on_a_linear_critic_is_the_squared_projection_on_the_noise():
    x = batch(n=5)
    sigma = 0.3
    noise = torch.randn(x.shape, dtype=x.dtype, generator=torch.Generator().manual_seed(7))
    value = gp.approx.approx_r1(
        Linear().double(), x, sigma=sigma, generator=torch.Generator().manual_seed(7)
    )
    torch.testing.assert_close(value, (noise @ W) ** 2)  # (sigma w.e / sigma)^2, exactly


def test_approx_r1_tends_to_r1_in_expectation_as_sigma_shrinks():
    torch.manual_seed(0)
    critic = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1)).double()
    x = batch(n=20000, seed=3)
    exact = gp.Penalty("r1", 10.0)(critic, real=x)
    approx = gp.Penalty("approx-r1", 10.0, sigma=1e-4)(critic, real=x)
    assert abs(approx.item() / exact.item() - 1) < 0.05
    coarse = gp.Penalty("approx-r1", 10.0, sigma=3.0)(critic, real=x)
    assert abs(coarse.item() / exact.item() - 1) > 0.1  # a large sigma is visibly biased


class OnceDifferentiableSquare(torch.autograd.Function):
    """x^2 with a backward that cannot itself be differentiated (like some custom kernels)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return 2 * x * grad


class CustomOpCritic(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Linear(2, 8)
        self.outer = nn.Linear(8, 1)

    def forward(self, x):
        return self.outer(OnceDifferentiableSquare.apply(self.inner(x)))


def test_approx_r1_trains_a_critic_whose_op_has_no_double_backward():
    torch.manual_seed(0)
    critic = CustomOpCritic().double()
    x = batch(n=64, seed=4)
    exact = gp.Penalty("r1", 10.0)
    with pytest.raises(ValueError, match=r"once_differentiable.*approx-r1"):
        exact(critic, real=x)  # refused at once, not left to a backward that may skip it
    reused = x.clone().requires_grad_()
    with pytest.raises(ValueError, match="once_differentiable"):
        exact(critic, real=reused, real_scores=critic(reused))

    def gradient_norm() -> float:  # first-order autograd only: the exact R1 value
        point = x.clone().requires_grad_()
        (g,) = torch.autograd.grad(critic(point).sum(), point)
        return g.pow(2).sum(1).mean().item()

    before = gradient_norm()
    approx = gp.Penalty("approx-r1", 10.0, sigma=1e-3)
    optimizer = torch.optim.Adam(critic.parameters(), lr=1e-2)
    for step in range(60):
        optimizer.zero_grad()
        approx(critic, real=x, step=step).backward()
        optimizer.step()
    assert gradient_norm() < 0.1 * before


# --- lazy terms, attention ------------------------------------------------------------------


def test_a_lazy_penalty_without_step_raises_naming_step():
    lazy = gp.Penalty("r1", 10.0, every=16)
    with pytest.raises(ValueError, match=r"lazy \(every=16\): pass step="):
        lazy(Linear().double(), real=batch())
    gp.Penalty("r1", 10.0)(Linear().double(), real=batch())  # every=1 needs no step


class Attention(nn.Module):
    """Multi-head self-attention with F.scaled_dot_product_attention, q, k, v (B, heads, T, d)."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv = nn.Linear(8, 24)

    def forward(self, x):
        b, t, _ = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, 2, 4).permute(2, 0, 3, 1, 4)
        return F.scaled_dot_product_attention(q, k, v).sum((1, 2, 3))


@pytest.mark.parametrize("fast", [True, False])
def test_attention_critic_penalty_runs_on_the_math_kernel_and_is_exact(fast):
    torch.manual_seed(0)
    critic = Attention()
    x = torch.randn(3, 5, 8)
    term = gp.Penalty("r1", 10.0, fast=fast)(critic, real=x)
    grads = torch.autograd.grad(term, list(critic.parameters()))
    # reference: per sample, on the math kernel, with plain autograd
    with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH):
        norms = []
        for i in range(3):
            point = x[i : i + 1].clone().requires_grad_()
            (g,) = torch.autograd.grad(critic(point).sum(), point, create_graph=True)
            norms.append(g.pow(2).sum())
        reference = 5.0 * torch.stack(norms).mean()
    torch.testing.assert_close(term, reference)
    for got, want in zip(
        grads, torch.autograd.grad(reference, list(critic.parameters())), strict=True
    ):
        torch.testing.assert_close(got, want)
