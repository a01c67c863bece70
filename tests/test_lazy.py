"""Lazy regularization: k times the term every k-th step matches the every-step penalty."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import gradpen as gp


def critic_and_batch() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    critic = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 1)).double()
    return critic, torch.randn(32, 2, dtype=torch.float64), torch.randn(32, 2).double() + 1


def displacement(every: int, lr: float, steps: int) -> torch.Tensor:
    """Parameter change after ``steps`` SGD steps of WGAN loss + R1 (weight 1, lazy ``every``)."""
    critic, real, fake = critic_and_batch()
    start = torch.nn.utils.parameters_to_vector(critic.parameters()).detach().clone()
    optimizer = torch.optim.SGD(critic.parameters(), lr=lr)
    penalty = gp.Penalty("r1", weight=1.0, every=every)
    for step in range(steps):
        optimizer.zero_grad()
        loss = critic(fake).mean() - critic(real).mean()
        (loss + penalty(critic, real=real, step=step)).backward()
        optimizer.step()
    return torch.nn.utils.parameters_to_vector(critic.parameters()).detach() - start


def test_lazy_sgd_update_matches_every_step_to_first_order_in_lr():
    k = 8
    gaps = []
    for lr in (1e-3, 1e-4):
        every_step, lazy = displacement(1, lr, k), displacement(k, lr, k)
        gaps.append(((lazy - every_step).norm() / every_step.norm()).item())
    # The relative gap is O(lr) (measured 5.5e-3 at lr 1e-3): ten times smaller lr, ten times
    # smaller gap, so the two updates agree to first order.
    assert gaps[0] < 1e-2
    assert 9 < gaps[0] / gaps[1] < 11


def adam_displacement(gradients: list[float], lr: float, betas: tuple[float, float]) -> float:
    theta = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.Adam([theta], lr=lr, betas=betas, eps=1e-12)
    for g in gradients:
        optimizer.zero_grad()
        theta.grad = torch.tensor([g])
        optimizer.step()
    return theta.item()


def test_adam_lazy_correction_keeps_the_displacement_of_a_stylegan2_cycle():
    """StyleGAN2's schedule: k loss steps and one separate step on k x the penalty, all with
    lr * k/(k+1) and betas ** (k/(k+1)). In the steady case (every step sees the same gradient)
    Adam moves by lr per step, so the cycle's k+1 corrected steps cover the k plain steps."""
    k, lr, betas = 4, 1e-3, (0.5, 0.9)
    loss_grad = 0.3
    penalty_grad = loss_grad / k  # the lazy step's k x penalty gradient equals the loss's
    every_step = adam_displacement([loss_grad + penalty_grad] * k, lr, betas)
    lazy_lr, lazy_betas = gp.lazy_adam_hyperparameters(lr, betas, k)
    lazy = adam_displacement([loss_grad] * k + [k * penalty_grad], lazy_lr, lazy_betas)
    assert every_step == pytest.approx(-k * lr, rel=1e-6)
    assert lazy == pytest.approx(every_step, rel=1e-6)
    # The averaging horizon is kept too: (k+1) corrected decays equal k plain ones.
    assert lazy_betas[1] ** (k + 1) == pytest.approx(betas[1] ** k)
