"""Where each penalty is evaluated, pinned with a critic whose gradient is the point itself."""

from __future__ import annotations

import torch
from torch import nn

import gradpen as gp


class HalfSquare(nn.Module):
    """D(x) = ||x||^2 / 2: its input gradient at x is x, so a penalty reveals its points."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return 0.5 * x.flatten(1).pow(2).sum(1)


def seeded() -> torch.Generator:
    return torch.Generator().manual_seed(4)


REAL, FAKE = torch.randn(8, 3), torch.randn(8, 3) + 2


def dragan_points(spread: str) -> torch.Tensor:
    rng = seeded()
    return gp.interpolate(REAL, gp.perturb(REAL, spread=spread, generator=rng), generator=rng)


def test_dragan_penalizes_between_reals_and_their_perturbation():
    expected = {s: (dragan_points(s).norm(dim=1) - 1) ** 2 for s in ("global", "feature")}
    assert not torch.allclose(expected["global"], expected["feature"])
    torch.testing.assert_close(
        gp.dragan(HalfSquare(), REAL, generator=seeded()), expected["global"]
    )
    torch.testing.assert_close(
        gp.dragan(HalfSquare(), REAL, spread="feature", generator=seeded()), expected["feature"]
    )
    # The configured term draws from the global RNG and uses the same default spread.
    torch.manual_seed(4)
    term = gp.Penalty("dragan", weight=1.0)(HalfSquare(), real=REAL)
    torch.manual_seed(4)
    torch.testing.assert_close(term, gp.dragan(HalfSquare(), REAL, spread="global").mean())


def test_wgan_gp_and_zero_centered_penalize_at_interpolates():
    x = gp.interpolate(REAL, FAKE, generator=seeded())
    torch.testing.assert_close(
        gp.wgan_gp(HalfSquare(), REAL, FAKE, generator=seeded()), (x.norm(dim=1) - 1) ** 2
    )
    torch.testing.assert_close(
        gp.zero_centered(HalfSquare(), REAL, FAKE, generator=seeded()), x.pow(2).sum(1)
    )


def test_r1_and_r2_penalize_at_reals_and_fakes():
    torch.testing.assert_close(gp.r1(HalfSquare(), REAL), REAL.pow(2).sum(1))
    torch.testing.assert_close(gp.r2(HalfSquare(), FAKE), FAKE.pow(2).sum(1))


def test_forward_reuse_makes_no_critic_call_and_gives_the_same_gradients():
    critic = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1)).double()
    real = REAL.double()

    def weight_grads(reuse: bool) -> list[torch.Tensor]:
        critic.zero_grad()
        x = real.clone().requires_grad_(True)
        scores = critic(x).squeeze(1)
        calls = []
        handle = critic.register_forward_hook(lambda *_: calls.append(1))
        term = gp.Penalty("r1", weight=1.0)(critic, real=x, real_scores=scores if reuse else None)
        handle.remove()
        assert len(calls) == (0 if reuse else 1)
        (scores.sum() + term).backward()
        return [p.grad.clone() for p in critic.parameters()]

    for reused, fresh in zip(weight_grads(True), weight_grads(False), strict=True):
        torch.testing.assert_close(reused, fresh)
