"""The torch.compile paths give the eager gradients, or refuse with an explanation.

Compilation uses the ``aot_eager`` backend (aot_autograd, where double backward fails, without
the slow inductor code generation); the inductor run is marked slow.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import gradpen as gp
from gradpen import losses
from gradpen.compiled import CompiledCriticStep
from gradpen.errors import UserError


def critic() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(2, 16), nn.LeakyReLU(0.2), nn.Linear(16, 1))


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(8, 2, generator=g), torch.randn(8, 2, generator=g) + 2


def eager_gradients(net: nn.Module, penalty: gp.Penalty, step: int) -> list[torch.Tensor]:
    real, fake = batch()
    torch.manual_seed(7)
    term = penalty(net, real=real, fake=fake, step=step)
    (net(fake).mean() - net(real).mean() + term).backward()
    return [p.grad.clone() for p in net.parameters()]


def compiled_gradients(
    net: nn.Module, penalty: gp.Penalty, steps: list[int], backend: str = "aot_eager"
) -> list[list[torch.Tensor]]:
    compiled = CompiledCriticStep(net, penalty, backend=backend)
    out = []
    for step in steps:
        net.zero_grad(set_to_none=True)
        torch.manual_seed(7)
        compiled(*batch(), step=step)
        out.append([p.grad.clone() for p in net.parameters()])
    return out


def assert_all_close(a: list[torch.Tensor], b: list[torch.Tensor]) -> None:
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)


def test_compiled_wgan_gp_step_matches_eager():
    penalty = gp.Penalty("wgan-gp", weight=10.0)
    (compiled,) = compiled_gradients(critic(), penalty, [0])
    assert_all_close(compiled, eager_gradients(critic(), penalty, 0))


def test_compiled_step_uses_the_registrys_option_defaults():
    """wgan-div without p= is p = 6 (the registry's default) in the compiled step too."""
    penalty = gp.Penalty("wgan-div", weight=2.0)
    (compiled,) = compiled_gradients(critic(), penalty, [0])
    assert_all_close(compiled, eager_gradients(critic(), penalty, 0))
    with pytest.raises(AssertionError):
        assert_all_close(compiled, eager_gradients(critic(), gp.Penalty("wgan-div", 2.0, p=2), 0))


def test_compiled_module_loss_forward_with_eager_penalty_forward_matches_eager():
    net = critic()
    fast = torch.compile(net, backend="aot_eager")
    real, fake = batch()
    torch.manual_seed(7)
    term = gp.Penalty("wgan-gp", weight=10.0)(fast, real=real, fake=fake)
    (fast(fake).mean() - fast(real).mean() + term).backward()
    grads = [p.grad.clone() for p in net.parameters()]
    assert_all_close(grads, eager_gradients(critic(), gp.Penalty("wgan-gp", weight=10.0), 0))
    # Scores from the compiled forward cannot feed a penalty: refused before the backward.
    real = real.requires_grad_(True)
    with pytest.raises(ValueError, match=r"torch\.compile.*double backward.*CompiledCriticStep"):
        gp.Penalty("r1")(fast, real=real, real_scores=fast(real))


class PatchCritic(nn.Module):
    """A (B, 1, 2, 2) score map: one linear score per 2 x 2 patch of a 4 x 4 image."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 1, 2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.leaky_relu(self.conv(x), 0.2)


@pytest.mark.parametrize("reduce", ["sum", "mean"])
def test_compiled_step_on_a_patch_critic_matches_the_eager_loss_and_penalty(reduce):
    """The loss on the score maps (mean over batch and patches), the penalty's score by
    ``reduce``: as the eager loop computes them."""
    g = torch.Generator().manual_seed(2)
    real, fake = torch.randn(3, 1, 4, 4, generator=g), torch.randn(3, 1, 4, 4, generator=g)
    penalty = gp.Penalty("r1", weight=3.0, reduce=reduce)
    eager_net, compiled_net = PatchCritic(), PatchCritic()
    term = penalty(eager_net, real=real)
    loss = losses.d_loss("ns", eager_net(real), eager_net(fake))
    (loss + term).backward()
    step = CompiledCriticStep(compiled_net, penalty, loss="ns", backend="aot_eager")
    stats = step.update(real, fake)
    torch.testing.assert_close(stats["d_loss"], loss.detach())
    torch.testing.assert_close(stats["penalty"], term.detach())
    wasserstein = eager_net(real).mean() - eager_net(fake).mean()
    torch.testing.assert_close(stats["wasserstein"], wasserstein.detach())
    for a, b in zip(eager_net.parameters(), compiled_net.parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad)


def test_compiled_step_refuses_what_it_cannot_do():
    with pytest.raises(UserError, match="supports the penalties wgan-gp"):
        CompiledCriticStep(critic(), gp.Penalty("none"))
    scaler = torch.amp.GradScaler("cpu")
    with pytest.raises(UserError, match="GradScaler"):
        CompiledCriticStep(critic(), gp.Penalty("r1", scaler=scaler))


@pytest.mark.slow
def test_compiled_lazy_r1_with_inductor_matches_eager():
    penalty = gp.Penalty("r1", weight=10.0, every=2)
    on, off = compiled_gradients(critic(), penalty, [0, 1], backend="inductor")
    assert_all_close(on, eager_gradients(critic(), penalty, 0))
    assert_all_close(off, eager_gradients(critic(), penalty, 1))
