"""docs/recipes.md, run on tiny tensors: each recipe's code and a value that can be checked."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import torch
from torch import nn

import gradpen as gp
from gradpen import losses

RECIPES = Path(__file__).resolve().parents[1] / "docs" / "recipes.md"
SHIFT = (1, 2)


def test_recipe_code_parses() -> None:
    blocks = re.findall(r"```python\n(.*?)```", RECIPES.read_text(), flags=re.S)
    assert len(blocks) == 3
    for block in blocks:
        ast.parse(block)


class LinearCritic(nn.Module):
    """D(x) = w . flatten(x) + b: its gradient is w everywhere."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(shape, dtype=torch.float64))
        self.b = nn.Parameter(torch.zeros((), dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.w.flatten() + self.b


def augment(x: torch.Tensor) -> torch.Tensor:
    """A differentiable augmentation: a fixed translation (a permutation) and a brightness shift."""
    return torch.roll(x, shifts=SHIFT, dims=(2, 3)) + 0.1


def test_r1_through_augmentation_is_taken_at_the_unaugmented_image() -> None:
    torch.manual_seed(0)
    critic = LinearCritic((3, 4, 5))
    real = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    fake = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    gamma = 10.0
    r1 = gp.Penalty("r1", weight=gamma)
    augmented = lambda x: critic(augment(x))  # noqa: E731 (as the recipe writes it)

    # d/dx w . (P x + c) = P^T w: the un-rolled w, not w itself (the augmented image's gradient)
    grad = gp.input_gradient(augmented, real)
    expected = torch.roll(critic.w, shifts=(-SHIFT[0], -SHIFT[1]), dims=(1, 2))
    assert grad.shape == real.shape
    torch.testing.assert_close(grad, expected.expand_as(real))
    assert not torch.allclose(grad[0], critic.w)
    squared = critic.w.detach().pow(2).sum()  # a permutation keeps the norm: ||grad|| = ||w||
    torch.testing.assert_close(r1(augmented, real=real), gamma / 2 * squared)

    # forward reuse, as StyleGAN2-ADA: the same value from the loss's own forward
    real = real.detach().requires_grad_()
    real_scores = augmented(real)
    term = r1(augmented, real=real, real_scores=real_scores)
    torch.testing.assert_close(term, gamma / 2 * squared)
    d_loss = losses.d_loss("ns", real_scores, augmented(fake)) + term
    d_loss.backward(inputs=list(critic.parameters()))
    assert critic.w.grad is not None and real.grad is None


def feature_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(64, 6))


def test_penalty_in_feature_space_trains_heads_only() -> None:
    torch.manual_seed(0)
    features = feature_net().eval().requires_grad_(False)
    heads = nn.Linear(6, 1)
    real = torch.randn(3, 3, 4, 4)
    r1 = gp.Penalty("r1", weight=2.0)

    # (a) in feature space: a linear head's R1 is ||w_head||^2, and only the heads get gradients
    with torch.no_grad():
        f_real = features(real)
    term = r1(heads, real=f_real)
    torch.testing.assert_close(term, heads.weight.detach().pow(2).sum())
    term.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in [heads.weight])
    assert all(p.grad is None for p in features.parameters())

    # F gets nothing in feature space even if it was not frozen; through F it does
    features.requires_grad_(True)
    with torch.no_grad():
        f_real = features(real)
    r1(heads, real=f_real).backward()
    assert all(p.grad is None for p in features.parameters())
    r1(lambda x: heads(features(x)), real=real).backward()
    assert features[0].weight.grad is not None and features[0].weight.grad.abs().sum() > 0


def test_penalty_through_features_is_taken_at_the_image() -> None:
    torch.manual_seed(0)
    features = nn.Sequential(nn.Flatten(), nn.Linear(12, 6)).eval().requires_grad_(False)
    heads = nn.Linear(6, 1)
    real = torch.randn(3, 3, 2, 2)
    critic = lambda x: heads(features(x))  # noqa: E731 (as the recipe writes it)
    grad = gp.input_gradient(critic, real)
    # the gradient of w_head . (A x + a) with respect to the image is A^T w_head
    expected = (heads.weight @ features[1].weight).reshape(1, 3, 2, 2).expand_as(real)
    assert grad.shape == real.shape
    torch.testing.assert_close(grad, expected)
    term = gp.Penalty("r1", weight=2.0)(critic, real=real)
    torch.testing.assert_close(term, expected[0].pow(2).sum())
    term.backward()
    assert heads.weight.grad is not None and features[1].weight.grad is None


def test_lazy_r1_loop() -> None:
    torch.manual_seed(0)
    critic = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 1), nn.Flatten(0)).double()
    generator = nn.Linear(3, 2).double()
    loader = [torch.randn(8, 2, dtype=torch.float64) for _ in range(8)]

    every = 4
    r1 = gp.Penalty("r1", weight=10.0, every=every)
    lr, betas = gp.lazy_adam_hyperparameters(2e-3, (0.0, 0.99), every)
    d_opt = torch.optim.Adam(critic.parameters(), lr=lr, betas=betas)
    assert lr == pytest.approx(2e-3 * 0.8) and betas[1] == pytest.approx(0.99**0.8)

    stepped, terms = [], {}
    for step, real in enumerate(loader):
        fake = generator(torch.randn(len(real), 3, dtype=torch.float64)).detach()
        d_loss = losses.d_loss("ns", critic(real), critic(fake))
        d_opt.zero_grad()
        d_loss.backward()
        d_opt.step()
        plain = gp.Penalty("r1", weight=10.0)(critic, real=real).detach()
        before = [p.detach().clone() for p in critic.parameters()]
        term = gp.lazy_penalty_step(r1, critic, d_opt, step=step, real=real)
        if any(not torch.equal(a, p) for a, p in zip(before, critic.parameters(), strict=True)):
            stepped.append(step)
        terms[step] = (term, plain)

    assert stepped == [0, 4]
    for step, (term, plain) in terms.items():
        if step in (0, 4):
            assert plain > 0
            torch.testing.assert_close(term, every * plain)
        else:
            assert term.item() == 0.0
    with pytest.raises(ValueError, match="step"):
        gp.Penalty("r1", 10, every=4)(critic, real=loader[0])
