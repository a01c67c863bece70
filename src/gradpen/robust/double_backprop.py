"""Double backpropagation: ``CE + weight * 1/2 * ||grad_x CE||^2`` (Drucker & LeCun 1992).

Two scalings of the penalty exist in the literature, and ``weight`` means different things
under each. Write ``l_i`` for sample ``i``'s cross-entropy and ``g_i = grad_{x_i} l_i`` for its
input gradient, over a batch of ``B`` samples.

* ``"per-sample"``: ``P = 1/2 * mean_i ||g_i||^2``, the mean of each sample's own penalty.
  Its size does not depend on the batch size.
* ``"batch-mean"`` (Ross & Doshi-Velez 2018): ``P = 1/2 * ||grad_X CE||_F^2`` where
  ``CE = mean_i l_i`` is the batch-mean loss and ``X`` the whole batch. Sample ``i``'s slice
  of that gradient is ``g_i / B``, so ``P = 1/2 * sum_i ||g_i||^2 / B^2
  = (1/B) * (1/2 * mean_i ||g_i||^2)``: the per-sample penalty divided by ``B``.

Hence the same loss is obtained with ``weight_batch_mean = B * weight_per_sample``. Ross &
Doshi-Velez's large weight (about 5.6e4) is a batch-mean weight; ``per_sample_weight``
converts it for a given batch size.
"""

from __future__ import annotations

import math

from torch import Tensor, nn
from torch.nn import functional as F

from gradpen.gradients import gradient_of_scores

SCALINGS = ("per-sample", "batch-mean")
"""The two scalings of the penalty (see the module docstring)."""


def _check_scaling(scaling: str) -> None:
    if scaling not in SCALINGS:
        raise ValueError(f"scaling must be one of {', '.join(SCALINGS)}; got {scaling!r}")


def per_sample_weight(batch_mean_weight: float, batch_size: int) -> float:
    """The per-sample weight that gives the same loss as ``batch_mean_weight`` at ``batch_size``.

    Args:
        batch_mean_weight: a weight under the ``"batch-mean"`` scaling.
        batch_size: the batch size ``B`` it was used with, >= 1.

    Returns:
        ``batch_mean_weight / batch_size``, the weight under ``"per-sample"``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
    return batch_mean_weight / batch_size


def _penalized_terms(
    model: nn.Module, images: Tensor, labels: Tensor, scaling: str
) -> tuple[Tensor, Tensor]:
    """(mean CE, penalty) from one forward pass whose graph the penalty differentiates."""
    _check_scaling(scaling)
    if images.shape[0] == 0 or labels.shape != (images.shape[0],):
        raise ValueError(
            "images must be a non-empty batch and labels one class index per image; got images "
            f"{tuple(images.shape)} and labels {tuple(labels.shape)}"
        )
    x = images.detach().requires_grad_(True)
    per_sample_ce = F.cross_entropy(model(x), labels, reduction="none")
    squared_norms = gradient_of_scores(per_sample_ce, x).flatten(1).pow(2).sum(dim=1)
    penalty = 0.5 * squared_norms.mean()
    if scaling == "batch-mean":
        penalty = penalty / x.shape[0]
    return per_sample_ce.mean(), penalty


def input_gradient_penalty(
    model: nn.Module, images: Tensor, labels: Tensor, *, scaling: str = "per-sample"
) -> Tensor:
    """``1/2 * ||grad_x CE||^2`` under ``scaling`` (see the module docstring), differentiable.

    The model must treat samples independently (no batch-statistics normalization), or the
    per-sample gradient is not what is penalized.

    Args:
        model: a classifier, images ``(B, ...)`` to logits ``(B, classes)``.
        images: the inputs, shape ``(B, ...)``.
        labels: class indices, shape ``(B,)``.
        scaling: ``"per-sample"`` or ``"batch-mean"``.

    Returns:
        A scalar, differentiable with respect to the model's parameters.
    """
    return _penalized_terms(model, images, labels, scaling)[1]


def double_backprop_loss(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    *,
    weight: float,
    scaling: str = "per-sample",
) -> Tensor:
    """``mean CE + weight * input_gradient_penalty``: one forward pass, differentiable twice.

    ``weight = 0`` gives the plain cross-entropy (and skips the second backward pass).

    Args:
        model: a classifier, images ``(B, ...)`` to logits ``(B, classes)``.
        images: the inputs, shape ``(B, ...)``.
        labels: class indices, shape ``(B,)``.
        weight: the penalty's weight, finite and >= 0 (its meaning depends on ``scaling``).
        scaling: ``"per-sample"`` or ``"batch-mean"`` (see the module docstring).

    Returns:
        The scalar loss.
    """
    if not math.isfinite(weight) or weight < 0:
        raise ValueError(f"weight must be a finite number >= 0, got {weight}")
    if weight == 0:
        _check_scaling(scaling)
        return F.cross_entropy(model(images), labels)
    ce, penalty = _penalized_terms(model, images, labels, scaling)
    return ce + weight * penalty
