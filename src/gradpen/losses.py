"""Adversarial losses: each maps critic scores to a scalar; none owns an optimizer step.

``d_loss(kind, real_scores, fake_scores)`` is what the critic minimizes and
``g_loss(kind, fake_scores, real_scores)`` what the generator minimizes.
Scores are raw critic outputs (logits for the probabilistic losses), shape ``(B,)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

__all__ = ["LOSSES", "d_loss", "g_loss"]


@dataclass(frozen=True)
class _Loss:
    critic: Callable[[Tensor, Tensor], Tensor]
    generator: Callable[[Tensor, Tensor], Tensor]
    needs_real_for_generator: bool = False


LOSSES: dict[str, _Loss] = {
    # Wasserstein: the critic estimates E[D(real)] - E[D(fake)].
    "wgan": _Loss(
        critic=lambda r, f: f.mean() - r.mean(),
        generator=lambda f, r: -f.mean(),
    ),
    # Non-saturating GAN (Goodfellow et al. 2014): D is a logistic classifier; G maximizes
    # log D(G(z)).
    "ns": _Loss(
        critic=lambda r, f: F.softplus(-r).mean() + F.softplus(f).mean(),
        generator=lambda f, r: F.softplus(-f).mean(),
    ),
    # The original minimax GAN: G minimizes log(1 - D(G(z))), which saturates early in training.
    "minimax": _Loss(
        critic=lambda r, f: F.softplus(-r).mean() + F.softplus(f).mean(),
        generator=lambda f, r: -F.softplus(f).mean(),
    ),
    # Hinge (Lim & Ye 2017; Miyato et al. 2018).
    "hinge": _Loss(
        critic=lambda r, f: F.relu(1 - r).mean() + F.relu(1 + f).mean(),
        generator=lambda f, r: -f.mean(),
    ),
    # Relativistic pairing GAN (Jolicoeur-Martineau 2019; R3GAN): scores compared pairwise.
    "relativistic": _Loss(
        critic=lambda r, f: F.softplus(f - r).mean(),
        generator=lambda f, r: F.softplus(r - f).mean(),
        needs_real_for_generator=True,
    ),
}


def _get(kind: str) -> _Loss:
    if kind not in LOSSES:
        raise ValueError(f"unknown loss {kind!r}; valid losses: {', '.join(LOSSES)}")
    return LOSSES[kind]


def _check_scores(real_scores: Tensor, fake_scores: Tensor) -> None:
    if real_scores.shape != fake_scores.shape or real_scores.dim() != 1:
        raise ValueError(
            "real and fake scores must both have shape (B,); got "
            f"{tuple(real_scores.shape)} and {tuple(fake_scores.shape)}"
        )


def d_loss(kind: str, real_scores: Tensor, fake_scores: Tensor) -> Tensor:
    """The critic's (discriminator's) loss for ``kind``."""
    loss = _get(kind)
    _check_scores(real_scores, fake_scores)
    return loss.critic(real_scores, fake_scores)


def g_loss(kind: str, fake_scores: Tensor, real_scores: Tensor | None = None) -> Tensor:
    """The generator's loss for ``kind``; ``relativistic`` also needs ``real_scores``."""
    loss = _get(kind)
    if loss.needs_real_for_generator:
        if real_scores is None:
            raise ValueError(f"the {kind!r} generator loss needs real_scores")
        _check_scores(real_scores, fake_scores)
    return loss.generator(fake_scores, real_scores)


def needs_real_for_generator(kind: str) -> bool:
    """Whether the generator step must also score a real batch (relativistic losses)."""
    return _get(kind).needs_real_for_generator
