"""L-infinity attacks for evaluating classifiers: FGSM and PGD with random start.

Implemented here rather than imported: torchattacks 3.5.1 does import beside torch 2.13
without torchvision, but its package metadata requires torchvision, so ``pip install
torchattacks`` pulls a torchvision build pinned to some torch release; the Adversarial
Robustness Toolbox (1.20) imports too but is a large framework for two short functions.
Images are assumed to live in ``[0, 1]``. Both attacks run the model in eval mode and
return detached adversarial images; they leave every module in the mode they found it in, so
an adversarial training loop that crafts its examples mid-epoch keeps training in train mode.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn
from torch.nn import functional as F

Attack = Callable[[nn.Module, Tensor, Tensor], Tensor]


def _check_eps(eps: float) -> None:
    if not math.isfinite(eps) or eps < 0:
        raise ValueError(f"eps must be a finite number >= 0, got {eps}")


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Run the block with ``model`` in eval mode, then restore each submodule's own mode.

    Args:
        model: the network; its modules may be in mixed modes (e.g. a frozen batch norm).
    """
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


def _loss_gradient(model: nn.Module, images: Tensor, labels: Tensor) -> Tensor:
    """Gradient of the summed cross-entropy with respect to the images (no graph kept)."""
    x = images.detach().requires_grad_(True)
    loss = F.cross_entropy(model(x), labels, reduction="sum")
    (grad,) = torch.autograd.grad(loss, x)
    return grad


def fgsm(
    model: nn.Module, images: Tensor, labels: Tensor, *, eps: float, clamp: bool = True
) -> Tensor:
    """Fast gradient sign method: ``clip(x + eps * sign(grad_x CE), 0, 1)`` (Goodfellow 2015).

    Puts ``model`` in eval mode for the attack and restores its modes after.

    Args:
        model: a classifier, images ``(B, ...)`` to logits ``(B, classes)``.
        images: clean images in ``[0, 1]``, shape ``(B, ...)``.
        labels: their classes, shape ``(B,)``.
        eps: the L-infinity radius, > 0.
        clamp: clip the result to the image range ``[0, 1]``.

    Returns:
        The adversarial images, shape ``(B, ...)``, detached.
    """
    _check_eps(eps)
    with eval_mode(model):
        adversarial = images.detach() + eps * _loss_gradient(model, images, labels).sign()
    return adversarial.clamp(0.0, 1.0) if clamp else adversarial


def pgd(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    *,
    eps: float,
    step_size: float | None = None,
    steps: int = 40,
    random_start: bool = True,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Projected gradient descent on the L-inf ball of radius ``eps`` (Madry et al. 2018).

    Starts at a uniform random point of the ball (``random_start``), takes ``steps`` signed
    gradient steps of ``step_size`` (default ``eps / 10``), and after each projects back onto
    the ball around ``images`` and onto the image range ``[0, 1]``.

    Args:
        model: a classifier, images ``(B, ...)`` to logits ``(B, classes)``.
        images: clean images in ``[0, 1]``, shape ``(B, ...)``.
        labels: their classes, shape ``(B,)``.
        eps: the L-infinity radius, > 0.
        step_size: the size of each signed step (default ``eps / 10``).
        steps: the number of steps, >= 1.
        random_start: start at a uniform random point of the ball instead of ``images``.
        generator: the random generator of the start (None: torch's default).

    Returns:
        The adversarial images, shape ``(B, ...)``, detached.
    """
    _check_eps(eps)
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    step_size = eps / 10 if step_size is None else step_size
    _check_eps(step_size)
    original = images.detach()
    adversarial = original.clone()
    if random_start:
        noise = torch.rand(
            original.shape, generator=generator, dtype=original.dtype, device=original.device
        )
        adversarial = (adversarial + eps * (2 * noise - 1)).clamp(0.0, 1.0)
    with eval_mode(model):
        for _ in range(steps):
            step = step_size * _loss_gradient(model, adversarial, labels).sign()
            adversarial = torch.min(torch.max(adversarial + step, original - eps), original + eps)
            adversarial = adversarial.clamp(0.0, 1.0)
    return adversarial


@torch.no_grad()
def _correct(model: nn.Module, images: Tensor, labels: Tensor) -> int:
    return int((model(images).argmax(dim=1) == labels).sum())


def robust_accuracy(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    attack: Attack | None = None,
    *,
    source: nn.Module | None = None,
    batch_size: int = 500,
) -> float:
    """Accuracy of ``model`` on ``attack(source, x, y)``, batched; clean accuracy without attack.

    ``source`` is the model the adversarial examples are crafted on (default ``model``: a
    white-box attack); another model gives a transfer (black-box) attack. ``model`` is scored
    in eval mode and left in the modes it had.

    Args:
        model: the classifier evaluated.
        images: images in ``[0, 1]``, shape ``(N, ...)``.
        labels: their classes, shape ``(N,)``.
        attack: ``attack(model, x, y)`` returning adversarial ``x``, e.g.
            ``functools.partial(pgd, eps=0.1)``; None for clean accuracy.
        source: the model the attack is crafted on (default ``model``).
        batch_size: images per batch.

    Returns:
        The fraction of ``images`` classified correctly after the attack, in ``[0, 1]``.
    """
    source = model if source is None else source
    correct = 0
    with eval_mode(model):
        for x, y in zip(images.split(batch_size), labels.split(batch_size), strict=True):
            attacked = x if attack is None else attack(source, x, y)
            correct += _correct(model, attacked, y)
    return correct / images.shape[0]
