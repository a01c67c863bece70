"""A penalty on the parameter-gradient norm: descend ``J = L + weight * ||grad_theta L||``.

``grad J = grad L + weight * H grad L / ||grad L||`` needs a Hessian-vector product. Two ways:

* ``"exact"``: double backpropagation through ``||grad_theta L||`` (one forward, two backward
  passes with a graph kept for the second).
* ``"approximate"`` (Zhao, Zhang & Hu 2022): with ``u = grad L / ||grad L||`` and
  ``alpha = weight / radius``,
  ``grad J ~ (1 - alpha) grad L(theta) + alpha grad L(theta + radius u)``. Taylor expansion,
  ``grad L(theta + radius u) = grad L + radius H u + radius^2/2 T[u, u] + ...``, shows the
  error is ``weight * radius / 2 * T[u, u] + O(radius^2)``: zero for a quadratic loss (the
  third derivative ``T`` vanishes), ``O(radius)`` otherwise. ``alpha = 1`` (weight = radius) is
  SAM's update. Costs two plain forward/backward passes.

``GradientNormPenalty`` wraps any torch optimizer: it computes ``grad J`` into ``.grad`` and
lets the wrapped optimizer take its step. At ``grad L = 0`` the norm has no gradient, and the
update falls back to ``grad L`` (= 0).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from gradpen.penalties import grad_norm

METHODS = ("exact", "approximate")
"""The ways to compute ``grad J``: ``"exact"`` and ``"approximate"``."""

Closure = Callable[[], Tensor]


def _check(weight: float, method: str, radius: float) -> None:
    if not math.isfinite(weight) or weight < 0:
        raise ValueError(f"weight must be a finite number >= 0, got {weight}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
    if not math.isfinite(radius) or radius <= 0:
        raise ValueError(f"radius must be a finite number > 0, got {radius}")


def _global_norm(grads: Sequence[Tensor]) -> Tensor:
    """L2 norm over every parameter's gradient together, with a finite gradient at zero."""
    return grad_norm(torch.cat([g.reshape(-1) for g in grads]).unsqueeze(0))[0]


def _exact(loss: Tensor, params: Sequence[Tensor], weight: float) -> list[Tensor]:
    grads = torch.autograd.grad(loss, params, create_graph=True)
    norm = _global_norm(grads)
    if not norm.requires_grad:  # a loss linear in the parameters: the norm is constant
        return [g.detach() for g in grads]
    norm_grads = torch.autograd.grad(norm, params, allow_unused=True)
    return [
        g.detach() if n is None else (g + weight * n).detach()
        for g, n in zip(grads, norm_grads, strict=True)
    ]


def _approximate(
    closure: Closure, loss: Tensor, params: Sequence[Tensor], weight: float, radius: float
) -> list[Tensor]:
    grads = torch.autograd.grad(loss, params)
    norm = _global_norm(grads)
    if weight == 0 or norm == 0:
        return list(grads)
    alpha = weight / radius
    saved = [p.detach().clone() for p in params]
    with torch.no_grad():
        for p, g in zip(params, grads, strict=True):
            p.add_(g, alpha=radius / float(norm))
    try:
        shifted = torch.autograd.grad(closure(), params)
    finally:
        with torch.no_grad():
            for p, original in zip(params, saved, strict=True):
                p.copy_(original)
    return [(1 - alpha) * g + alpha * s for g, s in zip(grads, shifted, strict=True)]


def penalized_gradient(
    closure: Closure,
    params: Sequence[Tensor],
    *,
    weight: float,
    method: str = "approximate",
    radius: float = 0.05,
) -> tuple[Tensor, list[Tensor]]:
    """``(L, grad_theta J)`` for ``J = L + weight * ||grad_theta L||`` at the current ``params``.

    ``closure()`` recomputes the loss ``L`` from the current parameter values and returns it
    without calling ``backward`` (the approximate method calls it twice, once at a shifted
    point). ``radius`` is used by the approximate method only.

    Args:
        closure: recomputes and returns the scalar loss ``L`` (no ``backward``).
        params: the parameters ``theta``, each requiring grad.
        weight: the penalty's weight, finite and >= 0.
        method: ``"exact"`` (double backpropagation) or ``"approximate"`` (two gradients).
        radius: the approximate method's step along ``grad L / ||grad L||``, > 0.

    Returns:
        The loss ``L`` (detached scalar) and ``grad_theta J``, one tensor per parameter, each of
        its parameter's shape.
    """
    _check(weight, method, radius)
    params = list(params)
    if not params or not all(p.requires_grad for p in params):
        raise ValueError("params must be a non-empty sequence of tensors that require grad")
    loss = closure()
    if method == "exact" and weight > 0:
        return loss.detach(), _exact(loss, params, weight)
    return loss.detach(), _approximate(closure, loss, params, weight, radius)


class GradientNormPenalty:
    """Wrap a torch optimizer so each ``step(closure)`` descends ``L + weight * ||grad L||``.

    ``closure`` returns the loss without calling ``backward``; ``step`` fills ``.grad`` of every
    parameter the optimizer holds with ``grad J`` and calls the optimizer's ``step``. ::

        opt = GradientNormPenalty(torch.optim.SGD(model.parameters(), lr=0.1), weight=0.01)
        loss = opt.step(lambda: F.cross_entropy(model(x), y))

    Args:
        optimizer: the wrapped optimizer; it takes the step along ``grad J``.
        weight: the penalty's weight, finite and >= 0.
        method: ``"exact"`` or ``"approximate"`` (see :func:`penalized_gradient`).
        radius: the approximate method's step, > 0.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        weight: float,
        method: str = "approximate",
        radius: float = 0.05,
    ) -> None:
        _check(weight, method, radius)
        self.optimizer = optimizer
        self.weight = weight
        self.method = method
        self.radius = radius

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        """The wrapped optimizer's parameter groups (learning-rate schedulers adjust these)."""
        return self.optimizer.param_groups

    def _params(self) -> list[Tensor]:
        return [p for group in self.param_groups for p in group["params"] if p.requires_grad]

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear the gradients, as the wrapped optimizer does.

        Args:
            set_to_none: set ``.grad`` to None instead of zeroing it.
        """
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def step(self, closure: Closure) -> Tensor:
        """One update along ``grad J``.

        Args:
            closure: recomputes and returns the scalar loss ``L`` without calling ``backward``.

        Returns:
            The loss ``L`` before the update (detached scalar).
        """
        params = self._params()
        loss, grads = penalized_gradient(
            closure, params, weight=self.weight, method=self.method, radius=self.radius
        )
        for p, g in zip(params, grads, strict=True):
            p.grad = g
        self.optimizer.step()
        return loss

    def state_dict(self) -> dict[str, Any]:
        """The wrapped optimizer's state (the wrapper itself holds none between steps).

        Returns:
            ``optimizer.state_dict()`` of the wrapped optimizer.
        """
        return self.optimizer.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the wrapped optimizer's state.

        Args:
            state_dict: a state from :meth:`state_dict`.
        """
        self.optimizer.load_state_dict(state_dict)


__all__ = ["METHODS", "GradientNormPenalty", "penalized_gradient"]
