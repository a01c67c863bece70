"""The labelled approximations: sub-batch penalty and finite-difference WGAN-GP."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import gradpen as gp
from gradpen.approx import sub_batch, wgan_gp_finite_difference


class Linear(nn.Module):
    """D(x) = w . x: its directional derivative along u is w . u exactly."""

    def __init__(self, w: list[float]) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(w))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.w


def test_sub_batch_takes_the_same_rows_of_every_tensor():
    real = torch.arange(10.0).unsqueeze(1)
    real_part, none_part, fake_part = sub_batch(0.25, real, None, 100 + real)
    assert real_part.shape == (3, 1) and none_part is None  # ceil(0.25 * 10) = 3
    torch.testing.assert_close(fake_part, 100 + real_part)
    assert real_part.unique().numel() == 3


def test_sub_batch_mean_is_unbiased():
    values = torch.arange(8.0)  # full-batch mean 3.5
    generator = torch.Generator().manual_seed(0)
    means = [sub_batch(0.5, values, generator=generator)[0].mean() for _ in range(4000)]
    assert torch.stack(means).mean().item() == pytest.approx(3.5, abs=0.05)


def test_sub_batch_rejects_bad_input():
    with pytest.raises(ValueError, match=r"fraction must be a number in \(0, 1\]"):
        sub_batch(0.0, torch.zeros(4))
    with pytest.raises(ValueError, match="share the batch size"):
        sub_batch(0.5, torch.zeros(4), torch.zeros(5))


def test_finite_difference_is_exact_along_the_line_and_blind_across_it():
    critic = Linear([3.0, 4.0])  # ||w|| = 5, exact WGAN-GP = (5 - 1)^2 = 16
    fake = torch.zeros(6, 2)
    along = torch.tensor([[0.6, 0.8]]).repeat(6, 1) * torch.arange(1.0, 7.0).unsqueeze(1)
    # float32 central difference with h = 1e-2: exact up to rounding (about 1e-5 relative)
    estimate = wgan_gp_finite_difference(critic, along, fake)
    torch.testing.assert_close(estimate, 16 * torch.ones(6), rtol=1e-4, atol=0)
    across = torch.tensor([[-0.8, 0.6]]).repeat(6, 1)  # w . u = 0: the estimate sees no slope
    estimate = wgan_gp_finite_difference(critic, across, fake)
    torch.testing.assert_close(estimate, torch.ones(6), rtol=1e-4, atol=0)
    torch.testing.assert_close(gp.wgan_gp(critic, across, fake), 16 * torch.ones(6))


def test_finite_difference_is_a_lower_bound_and_trains_the_critic():
    torch.manual_seed(0)
    critic = nn.Sequential(nn.Linear(5, 32), nn.Tanh(), nn.Linear(32, 1))
    real, fake = torch.randn(64, 5), torch.randn(64, 5) + 1
    g = torch.Generator().manual_seed(3)
    estimate = wgan_gp_finite_difference(critic, real, fake, target=0.0, generator=g)
    g = torch.Generator().manual_seed(3)
    exact = gp.zero_centered(critic, real, fake, generator=g)  # ||grad||^2
    assert (estimate <= exact * (1 + 1e-3)).all()
    estimate.mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in critic.parameters())
