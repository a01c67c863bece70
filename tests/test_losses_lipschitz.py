"""Adversarial losses on hand-computed scores; weight clipping and spectral norm."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from gradpen import losses
from gradpen.lipschitz import clip_weights_, spectral_norm

REAL = torch.tensor([2.0, 0.0])
FAKE = torch.tensor([-1.0, 1.0])
SP = math.log1p  # softplus(t) = log(1 + e^t)


def softplus(t: float) -> float:
    return SP(math.exp(t))


@pytest.mark.parametrize(
    ("kind", "d_expected", "g_expected"),
    [
        ("wgan", 0.0 - 1.0, -0.0),
        (
            "ns",
            (softplus(-2) + softplus(0)) / 2 + (softplus(-1) + softplus(1)) / 2,
            (softplus(1) + softplus(-1)) / 2,
        ),
        (
            "minimax",
            (softplus(-2) + softplus(0)) / 2 + (softplus(-1) + softplus(1)) / 2,
            -(softplus(-1) + softplus(1)) / 2,
        ),
        ("hinge", (0.0 + 1.0) / 2 + (0.0 + 2.0) / 2, -0.0),
        ("relativistic", (softplus(-3) + softplus(1)) / 2, (softplus(3) + softplus(-1)) / 2),
    ],
)
def test_losses_on_hand_computed_scores(kind, d_expected, g_expected):
    assert losses.d_loss(kind, REAL, FAKE).item() == pytest.approx(d_expected)
    assert losses.g_loss(kind, FAKE, REAL).item() == pytest.approx(g_expected)


def test_loss_errors():
    with pytest.raises(ValueError, match="valid losses: wgan, ns, minimax, hinge, relativistic"):
        losses.d_loss("lsgan", REAL, FAKE)
    with pytest.raises(ValueError, match="needs real_scores"):
        losses.g_loss("relativistic", FAKE)
    with pytest.raises(ValueError, match=r"shape \(B,\)"):
        losses.d_loss("wgan", REAL, FAKE[:1])
    assert losses.needs_real_for_generator("relativistic")
    assert not losses.needs_real_for_generator("wgan")


def test_clip_weights_clamps_every_parameter():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 50), nn.Linear(50, 1))
    with torch.no_grad():
        net[0].weight.mul_(10)
    clip_weights_(net, 0.01)
    values = torch.cat([p.flatten() for p in net.parameters()])
    assert values.abs().max().item() == pytest.approx(0.01)
    with pytest.raises(ValueError, match="clip must be"):
        clip_weights_(net, 0.0)


def test_spectral_norm_bounds_each_layer():
    torch.manual_seed(0)
    net = spectral_norm(nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 1)))
    spectral_norm(net)  # idempotent
    net.train()
    for _ in range(50):  # power iterations converge while training
        net(torch.randn(2, 6))
    net.eval()
    for layer in (net[0], net[2]):
        sigma = torch.linalg.matrix_norm(layer.weight.detach(), ord=2).item()
        assert sigma == pytest.approx(1.0, rel=1e-3)
