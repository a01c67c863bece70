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

from gradpen import outputs
from gradpen.errors import UserError
from gradpen.gradients import check_no_batchnorm
from gradpen.losses import d_loss
from gradpen.penalty import Penalty
from gradpen.registry import BATCH_REDUCTIONS, PENALTIES, sample_points

__all__ = ["SUPPORTED", "CompiledCriticStep"]

# Every registered exact penalty: the step composes the registry entry's points and
# per-sample statistic with torch.func's gradient.
SUPPORTED = tuple(name for name, spec in PENALTIES.items() if spec.points and not spec.approximate)


class CompiledCriticStep:
    """``step(real, fake)`` accumulates the gradient of ``loss + penalty`` into the critic.

    Returns the detached ``(loss, penalty term)`` (:meth:`update` also the Wasserstein estimate).
    The penalty's conventions (weight, every, target, one-sided, ``reduce`` for a patch or
    multi-output critic) are those of ``penalty``, and the loss is taken on the critic's outputs
    as :func:`gradpen.losses.d_loss` takes it; R1 / R2 reuse the loss's forward. Interpolation
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
        # Resolved here, not in the compiled function: dynamo need not trace the registry.
        self._points = penalty.spec.points
        self._reduce = BATCH_REDUCTIONS[penalty.spec.batch_reduction]
        self._statistic = penalty.spec.bound_statistic(penalty.resolved_options)
        gradients = torch.func.grad(self._objective, has_aux=True)
        self._compiled = torch.compile(gradients, backend=backend, fullgraph=True)

    def _output(self, params: dict[str, Tensor], x: Tensor, cond: Any) -> Any:
        args = (x,) if cond is None else (x, cond)
        return functional_call(self.critic, params, args)

    def _output_and_gradient(
        self, params: dict[str, Tensor], x: Tensor, cond: Any
    ) -> tuple[Any, Tensor]:
        """The critic's output at ``x`` and the input gradient of its summed scores."""

        def summed(point: Tensor) -> tuple[Tensor, Any]:
            out = self._output(params, point, cond)
            return outputs.scores(out, point.shape[0], self.penalty.reduce).sum(), out

        gradient, out = torch.func.grad(summed, has_aux=True)(x)
        return out, gradient

    def _objective(
        self,
        params: dict[str, Tensor],
        batches: dict[str, Tensor],
        cond: Any,
        points: list[Tensor],
        active: bool,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        outs, gradients = {}, {}
        for name, batch in batches.items():
            if active and name in self._points:  # R1 / R2: the loss's forward serves the penalty
                outs[name], gradients[name] = self._output_and_gradient(params, batch, cond)
            else:
                outs[name] = self._output(params, batch, cond)
        loss = d_loss(self.loss, outs["real"], outs["fake"])
        term = torch.zeros((), dtype=loss.dtype, device=loss.device)
        if active:
            for at, x in zip(self._points, points, strict=True):
                gradient = (
                    gradients[at]
                    if at in gradients
                    else self._output_and_gradient(params, x, cond)[1]
                )
                term = term + self._reduce(self._statistic(gradient))
        term = self.penalty.gain * term
        stats = {
            "d_loss": loss.detach(),
            "penalty": term.detach(),
            "wasserstein": -d_loss("wgan", outs["real"], outs["fake"]).detach(),
        }
        return loss + term, stats

    def update(
        self, real: Tensor, fake: Tensor, *, cond: Any = None, step: int = 0
    ) -> dict[str, Tensor]:
        """Add ``d(loss + term)/d params`` to each parameter's ``.grad``.

        Args:
            real, fake: the batches, ``(B, ...)``.
            cond: the condition of a conditional critic.
            step: the critic step (a lazy term is active when ``step % every == 0``).

        Returns:
            The detached ``d_loss``, ``penalty`` (the weighted term) and ``wasserstein``
            (``E[D(real)] - E[D(fake)]``, over batch and patches), each a scalar.
        """
        spec = self.penalty.spec
        active = self.penalty.active(step)
        options = self.penalty.resolved_options
        real, fake = real.detach(), fake.detach()
        points = [sample_points(at, real, fake, **options) for at in spec.points] if active else []
        named = dict(self.critic.named_parameters())
        params = {name: p.detach() for name, p in named.items()}
        grads, stats = self._compiled(params, {"real": real, "fake": fake}, cond, points, active)
        for name, parameter in named.items():
            grad = grads[name]
            parameter.grad = grad if parameter.grad is None else parameter.grad + grad
        return stats

    def __call__(
        self, real: Tensor, fake: Tensor, *, cond: Any = None, step: int = 0
    ) -> tuple[Tensor, Tensor]:
        """Add ``d(loss + term)/d params`` to each parameter's ``.grad``; return (loss, term)."""
        stats = self.update(real, fake, cond=cond, step=step)
        return stats["d_loss"], stats["penalty"]
