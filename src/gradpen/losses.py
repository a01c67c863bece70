"""Adversarial losses: each maps critic scores to a scalar; none owns an optimizer step.

``d_loss(kind, real_scores, fake_scores)`` is what the critic minimizes and
``g_loss(kind, fake_scores, real_scores)`` what the generator minimizes. Scores are raw critic
outputs (logits for the probabilistic losses): ``(B,)``, or anything a critic may return (see
:mod:`gradpen.outputs`): a patch map ``(B, ...)`` is one score per patch, so the loss is the
mean over batch and patches (pix2pix, VQGAN); a list, tuple or dict of outputs (multi-scale
critics) gives the sum of each output's loss. Real and fake outputs must have the same form.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch.nn.functional as F
from torch import Tensor

from gradpen import outputs

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
"""The losses by name: ``wgan``, ``ns``, ``minimax``, ``hinge``, ``relativistic``."""


def _get(kind: str) -> _Loss:
    if kind not in LOSSES:
        raise ValueError(f"unknown loss {kind!r}; valid losses: {', '.join(LOSSES)}")
    return LOSSES[kind]


def _paired(real_scores: Any, fake_scores: Any) -> list[tuple[Tensor, Tensor]]:
    """The output tensors of the real and the fake batch, paired (same paths and shapes)."""
    real = outputs.leaves(real_scores, None)
    fake = outputs.leaves(fake_scores, None)
    if [(p, t.shape) for p, t in real] != [(p, t.shape) for p, t in fake]:
        raise ValueError(
            "real and fake scores must have the same form and shapes, e.g. shape (B,) each; got "
            f"{[(p, tuple(t.shape)) for p, t in real]} and {[(p, tuple(t.shape)) for p, t in fake]}"
        )
    return [(r, f) for (_, r), (_, f) in zip(real, fake, strict=True)]


def d_loss(kind: str, real_scores: Any, fake_scores: Any) -> Tensor:
    """The critic's (discriminator's) loss for ``kind``.

    Args:
        kind: a key of :data:`LOSSES`.
        real_scores: the critic's output on the real batch: ``(B,)``, a patch map ``(B, ...)``
            or a list, tuple or dict of those.
        fake_scores: its output on the fake batch, of the same form and shapes.

    Returns:
        A scalar: the mean over batch and patches, summed over outputs.
    """
    loss = _get(kind)
    return sum(loss.critic(r, f) for r, f in _paired(real_scores, fake_scores))


def g_loss(kind: str, fake_scores: Any, real_scores: Any = None) -> Tensor:
    """The generator's loss for ``kind``; ``relativistic`` also needs ``real_scores``.

    Args:
        kind: a key of :data:`LOSSES`.
        fake_scores: the critic's output on the fake batch: ``(B,)``, a patch map
            ``(B, ...)`` or a list, tuple or dict of those.
        real_scores: its output on a real batch, of the same form (relativistic losses only).

    Returns:
        A scalar.
    """
    loss = _get(kind)
    if loss.needs_real_for_generator:
        if real_scores is None:
            raise ValueError(f"the {kind!r} generator loss needs real_scores")
        pairs = _paired(real_scores, fake_scores)
    else:
        pairs = [(f, f) for _, f in outputs.leaves(fake_scores, None)]
    return sum(loss.generator(f, r) for r, f in pairs)


def needs_real_for_generator(kind: str) -> bool:
    """Whether the generator step must also score a real batch (relativistic losses).

    Args:
        kind: a key of :data:`LOSSES`.

    Returns:
        True for losses whose generator term compares fake with real scores.
    """
    return _get(kind).needs_real_for_generator
