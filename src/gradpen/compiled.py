"""A torch.compile path for penalized critic steps.

PyTorch's aot_autograd (the autograd of ``torch.compile``) does not support double backward,
so the usual penalty (``autograd.grad(create_graph=True)`` then ``backward()``) fails through
a compiled critic. Two ways around it, both exact:

- the loss forward compiled, the penalty forward eager: pass the ``torch.compile``-d module
  to :class:`gradpen.Penalty` as usual; gradpen runs its eager original (same parameters) for
  the penalty, and refuses with an explanation scores that came from a compiled graph.
- :class:`CompiledCriticStep`: the whole step written with ``torch.func`` (the input gradient
  is ``torch.func.grad`` of a functional critic, the parameter gradient a second
  ``torch.func.grad``), so one compiled function returns the parameter gradients of
  ``loss + penalty``; no double backward through aot_autograd is needed.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from gradpen.errors import UserError
from gradpen.losses import d_loss
from gradpen.penalties import (
    PENALTIES,
    Penalty,
    _distance_from_target,
    _squared_norm,
    check_no_batchnorm,
    interpolate,
    perturb,
)

__all__ = ["SUPPORTED", "CompiledCriticStep"]

# For each penalty: where it is taken ("interpolates", "perturbed", "real", "fake") and
# whether its per-sample value is a distance from a target norm or the squared norm.
SUPPORTED: dict[str, tuple[tuple[str, ...], str]] = {
    "wgan-gp": (("interpolates",), "target"),
    "one-sided": (("interpolates",), "target"),
    "dragan": (("perturbed",), "target"),
    "zero-centered": (("interpolates",), "squared"),
    "r1": (("real",), "squared"),
    "r2": (("fake",), "squared"),
    "r1r2": (("real", "fake"), "squared"),
}


class CompiledCriticStep:
    """``step(real, fake)`` accumulates the gradient of ``loss + penalty`` into the critic.

    Returns the detached ``(loss, penalty term)``. The penalty's conventions (weight, every,
    target, one-sided) are those of ``penalty``; R1 / R2 reuse the loss's forward. Interpolation
    and perturbation noise are drawn eagerly, so the compiled graph is deterministic. Not
    supported (a ``UserError`` says so): a ``scaler`` (float16), penalty ``none``.
    """

    def __init__(
        self,
        critic: nn.Module,
        penalty: Penalty,
        *,
        loss: str = "wgan",
        backend: str = "inductor",
    ) -> None:
        if penalty.name not in SUPPORTED:
            raise UserError(
                f"CompiledCriticStep supports the penalties {', '.join(SUPPORTED)}; got "
                f"{penalty.name!r} (for no penalty, torch.compile the plain step directly)"
            )
        if penalty.scaler is not None:
            raise UserError(
                "CompiledCriticStep does not support a GradScaler; use the eager Penalty for "
                "float16 training"
            )
        if not penalty.allow_batchnorm:
            check_no_batchnorm(critic)
        d_loss(loss, torch.zeros(1), torch.zeros(1))  # fail now on an unknown loss name
        self.critic = getattr(critic, "_orig_mod", critic)
        self.penalty = penalty
        self.loss = loss
        self._where, self._kind = SUPPORTED[penalty.name]
        gradients = torch.func.grad(self._objective, has_aux=True)
        self._compiled = torch.compile(gradients, backend=backend, fullgraph=True)

    def _scores(self, params: dict[str, Tensor], x: Tensor, cond: Any) -> Tensor:
        args = (x,) if cond is None else (x, cond)
        out = functional_call(self.critic, params, args)
        return out.squeeze(-1) if out.dim() == 2 else out

    def _scores_and_gradient(
        self, params: dict[str, Tensor], x: Tensor, cond: Any
    ) -> tuple[Tensor, Tensor]:
        def summed(point: Tensor) -> tuple[Tensor, Tensor]:
            scores = self._scores(params, point, cond)
            return scores.sum(), scores

        gradient, scores = torch.func.grad(summed, has_aux=True)(x)
        return scores, gradient

    def _per_sample(self, gradient: Tensor) -> Tensor:
        if self._kind == "squared":
            return _squared_norm(gradient)
        target = self.penalty.options.get("target", 1.0)
        one_sided = self.penalty.name == "one-sided" or self.penalty.options.get("one_sided", False)
        return _distance_from_target(gradient, target, one_sided)

    def _objective(
        self,
        params: dict[str, Tensor],
        real: Tensor,
        fake: Tensor,
        cond: Any,
        points: Tensor | None,
        active: bool,
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        gradients = []
        if active and "real" in self._where:
            real_scores, g = self._scores_and_gradient(params, real, cond)
            gradients.append(g)
        else:
            real_scores = self._scores(params, real, cond)
        if active and "fake" in self._where:
            fake_scores, g = self._scores_and_gradient(params, fake, cond)
            gradients.append(g)
        else:
            fake_scores = self._scores(params, fake, cond)
        if active and points is not None:
            gradients.append(self._scores_and_gradient(params, points, cond)[1])
        loss = d_loss(self.loss, real_scores, fake_scores)
        term = torch.zeros((), dtype=loss.dtype, device=loss.device)
        for gradient in gradients:
            term = term + self._per_sample(gradient).mean()
        factor = PENALTIES[self.penalty.name].weight_factor
        term = (self.penalty.every * self.penalty.weight * factor) * term
        return loss + term, (loss.detach(), term.detach())

    def _points(self, real: Tensor, fake: Tensor) -> Tensor | None:
        if "interpolates" in self._where:
            return interpolate(real, fake)
        if "perturbed" in self._where:
            options = {k: v for k, v in self.penalty.options.items() if k in ("scale", "noise")}
            return interpolate(real, perturb(real, **options))
        return None

    def __call__(
        self, real: Tensor, fake: Tensor, *, cond: Any = None, step: int = 0
    ) -> tuple[Tensor, Tensor]:
        """Add ``d(loss + term)/d params`` to each parameter's ``.grad``; return (loss, term)."""
        active = self.penalty.active(step)
        points = self._points(real, fake) if active else None
        named = dict(self.critic.named_parameters())
        params = {name: p.detach() for name, p in named.items()}
        grads, (loss, term) = self._compiled(
            params, real.detach(), fake.detach(), cond, points, active
        )
        for name, parameter in named.items():
            grad = grads[name]
            parameter.grad = grad if parameter.grad is None else parameter.grad + grad
        return loss, term
