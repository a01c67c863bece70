"""A configured penalty term, as a training loop uses it, and lazy regularization.

:class:`Penalty` reads everything about a penalty from its registry entry
(:data:`gradpen.registry.PENALTIES`): where each term is taken, its per-sample function, its
weight factor, its options and how the batch is reduced. :func:`lazy_penalty_step` is
StyleGAN2's separate penalty step for a loop of your own; :func:`lazy_adam_hyperparameters`
the Adam correction that goes with it.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from gradpen import outputs
from gradpen.outputs import Critic
from gradpen.registry import BATCH_REDUCTIONS, PENALTIES, POINTS, check_options

__all__ = ["Penalty", "lazy_adam_hyperparameters", "lazy_penalty_step"]


class Penalty:
    """A configured penalty term, as a training loop uses it.

    ``Penalty("wgan-gp", weight=10.0)`` returns ``10 * mean(per-sample)``; R1/R2 terms return
    ``weight / 2 * mean(per-sample)`` so that ``weight`` is gamma. With ``every = k > 1`` the term
    is lazy (Karras et al. 2020): ``k`` times the term on steps where ``step % k == 0`` and an
    exact zero elsewhere, without calling the critic (a lazy term needs ``step=``). For the
    cheapest step call the penalty before the loss's forwards and backpropagate ``loss + term``
    once.

    Args:
        name: a key of :data:`PENALTIES`.
        weight: lambda (WGAN-GP family) or gamma (R1/R2 family), finite and >= 0.
        every: apply the term every ``every`` steps (lazy regularization), an integer >= 1.
        allow_batchnorm: allow batch norm layers that use batch statistics (they mix samples).
        scaler: an enabled ``torch.amp.GradScaler`` for float16 training (PyTorch's
            gradient-penalty recipe; see :func:`gradient_of_scores`); the term is float32.
        fast: run through :mod:`gradpen.fastpath` (exact, cheaper); ``False``: plain autograd.
        reduce: how a critic's outputs become the per-sample score whose gradient is
            penalized: ``"sum"`` (default; the gradient of ``logits.sum()``) or ``"mean"`` of
            each output's non-batch elements, summed over outputs (see :mod:`gradpen.outputs`).
        **options: the penalty's options (``PENALTIES[name].options``), e.g. ``target``.
    """

    def __init__(
        self,
        name: str,
        weight: float = 10.0,
        every: int = 1,
        *,
        allow_batchnorm: bool = False,
        scaler: Any = None,
        fast: bool = True,
        reduce: str = "sum",
        **options: Any,
    ) -> None:
        if name not in PENALTIES:
            raise ValueError(f"unknown penalty {name!r}; valid penalties: {', '.join(PENALTIES)}")
        check_options(name, options)
        outputs.check_reduce(reduce)
        if isinstance(weight, bool) or not isinstance(weight, int | float):
            raise ValueError(f"weight must be a number, got {weight!r}")
        if not math.isfinite(weight) or weight < 0:
            raise ValueError(f"weight must be a finite number >= 0, got {weight}")
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be an integer >= 1, got {every!r}")
        self.name = name
        self.spec = PENALTIES[name]
        self.weight = float(weight)
        self.every = every
        self.allow_batchnorm = allow_batchnorm
        self.scaler = scaler
        self.fast = fast
        self.reduce = reduce
        self.options = dict(options)
        # what the per-sample functions get: the registry's defaults, what the name fixes, then
        # the user's options
        self.resolved_options = dict(self.spec.options) | dict(self.spec.fixed) | self.options

    def __repr__(self) -> str:
        extra = "".join(f", {k}={v!r}" for k, v in self.options.items())
        return f"Penalty({self.name!r}, weight={self.weight}, every={self.every}{extra})"

    @property
    def needs(self) -> frozenset[str]:
        """The inputs (``"real"``, ``"fake"``) the penalty reads."""
        return self.spec.needs

    @property
    def gain(self) -> float:
        """The factor on the reduced per-sample values: ``every * weight * weight_factor``."""
        return self.every * self.weight * self.spec.weight_factor

    def active(self, step: int | None) -> bool:
        """Whether the term is computed at ``step`` (always, unless lazy; a lazy term needs it).

        Args:
            step: the critic step count, or None for a term that is not lazy.

        Returns:
            True when the term is computed at ``step``.
        """
        if self.every > 1 and step is None:
            raise ValueError(
                f"{self!r} is lazy (every={self.every}): pass step= (the critic step count) "
                f"so that it is applied, {self.every} times over, on every {self.every}-th step "
                "only; without it the term cannot know which steps those are"
            )
        return bool(self.spec.points) and self.weight > 0 and (step or 0) % self.every == 0

    def __call__(
        self,
        critic: Critic,
        *,
        real: Tensor | None = None,
        fake: Tensor | None = None,
        cond: Any = None,
        step: int | None = None,
        real_scores: Any = None,
        fake_scores: Any = None,
    ) -> Tensor:
        """The weighted scalar term at ``step``.

        Args:
            critic: the critic.
            real: the real batch, shape ``(B, ...)``, if :attr:`needs` names it.
            fake: the generated batch, shape ``(B, ...)``, if :attr:`needs` names it.
            cond: the condition passed to a conditional critic.
            step: the critic step; a lazy term (``every > 1``) needs it and is computed when
                ``step % every == 0``.
            real_scores: the critic's output on ``real`` from the loss's forward; terms taken at
                the reals (R1, WGAN-div) then reuse it (``real`` must require grad and be the
                tensor that produced it). Other terms ignore it.
            fake_scores: the same for ``fake`` (R2, WGAN-div).

        Returns:
            A scalar tensor (an exact zero on a lazy term's inactive steps).
        """
        given = {"real": real, "fake": fake}
        missing = [name for name in sorted(self.needs) if given[name] is None]
        if missing:
            raise ValueError(f"penalty {self.name!r} needs {' and '.join(missing)}")
        reference = real if real is not None else fake
        if not self.active(step):
            if reference is None:
                return torch.zeros(())
            return torch.zeros((), dtype=reference.dtype, device=reference.device)
        scores = {"real": real_scores, "fake": fake_scores}
        how = {
            "cond": cond,
            "allow_batchnorm": self.allow_batchnorm,
            "scaler": self.scaler,
            "fast": self.fast,
            "reduce": self.reduce,
        }
        options = self.resolved_options
        reduce_batch = BATCH_REDUCTIONS[self.spec.batch_reduction]
        total = None
        for function, at in zip(self.spec.per_sample, self.spec.points, strict=True):
            reused = {"scores": scores[at]} if self.spec.reuses_scores else {}
            batches = [given[name] for name in POINTS[at]]
            value = reduce_batch(function(critic, *batches, **how, **options, **reused))
            total = value if total is None else total + value
        assert total is not None
        return self.gain * total


def lazy_adam_hyperparameters(
    lr: float, betas: tuple[float, float], every: int
) -> tuple[float, tuple[float, float]]:
    """Adam's lr and betas corrected for a penalty applied every ``every`` steps (StyleGAN2).

    With ``c = every / (every + 1)``: ``lr * c`` and ``betas ** c``, so that the lazily
    regularized critic's optimizer keeps its effective step size and averaging horizon.

    Args:
        lr: the learning rate without lazy regularization.
        betas: Adam's ``(beta1, beta2)``.
        every: the penalty's interval, an integer >= 1.

    Returns:
        The corrected ``(lr, (beta1, beta2))``.
    """
    if every < 1:
        raise ValueError(f"every must be an integer >= 1, got {every}")
    if every == 1:
        return lr, betas
    c = every / (every + 1)
    return lr * c, (betas[0] ** c, betas[1] ** c)


def lazy_penalty_step(
    penalty: Penalty,
    critic: Critic,
    optimizer: torch.optim.Optimizer,
    *,
    step: int,
    real: Tensor | None = None,
    fake: Tensor | None = None,
    cond: Any = None,
) -> Tensor:
    """StyleGAN2's separate penalty step, for a training loop of your own.

    Call it after the critic's loss step, with the same critic step count. On steps where the
    lazy ``penalty`` is active it takes one optimizer step on ``every x`` the term (the
    ``Penalty`` already includes the factor ``every``), plus a zero-weighted sum of the critic's
    scores on the same batches, which keeps every critic parameter in the graph (DDP needs that
    on every backward; the penalty alone may leave out, e.g., the last bias). Elsewhere it does
    nothing and calls nothing. Make the critic's optimizer with
    :func:`lazy_adam_hyperparameters` (lr and betas corrected by ``every / (every + 1)``).

    Args:
        penalty: a (usually lazy) :class:`Penalty`.
        critic: the critic (its DDP wrapper under DDP).
        optimizer: the critic's optimizer.
        step: the critic step count (the one the loss steps count).
        real: the real batch, ``(B, ...)``, if the penalty needs it.
        fake: the generated batch, ``(B, ...)``, if the penalty needs it.
        cond: the condition of a conditional critic.

    Returns:
        The detached term (an exact zero on inactive steps).
    """
    if not penalty.active(step):
        return penalty(critic, real=real, fake=fake, cond=cond, step=step)
    term = penalty(critic, real=real, fake=fake, cond=cond, step=step)
    anchor = sum(
        outputs.critic_scores(critic, batch, cond, penalty.reduce).sum()
        for batch in (real, fake)
        if batch is not None
    )
    optimizer.zero_grad(set_to_none=True)
    (term + 0.0 * anchor).backward()
    optimizer.step()
    return term.detach()
