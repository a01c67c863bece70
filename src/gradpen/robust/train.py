"""A minibatch training loop for classifiers, shared by the robustness and gradient-norm studies.

The loop owns only the data order; what one step does (which loss, which optimizer) is the
caller's ``step`` function, so the same loop serves double backpropagation and the
parameter-gradient-norm optimizer.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from tqdm import tqdm

Step = Callable[[Tensor, Tensor], float]


def train_classifier(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    step: Step,
    *,
    epochs: int,
    batch_size: int,
    seed: int,
    device: torch.device | str = "cpu",
    desc: str = "train",
) -> list[float]:
    """Run ``step(x, y)`` over shuffled minibatches for ``epochs``; returns each epoch's mean loss.

    The shuffling is seeded by ``seed`` alone, so two runs with the same seed see the same batches.

    Args:
        model: the classifier; moved to ``device``, in train mode during the loop and in eval
            mode after it.
        images: the training inputs, shape ``(N, ...)``.
        labels: their classes, shape ``(N,)``.
        step: ``step(x, y)`` takes one optimization step on a minibatch and returns its loss.
        epochs: passes over the data, >= 1.
        batch_size: samples per minibatch, >= 1 (the last one may be smaller).
        seed: seeds the shuffling.
        device: where the minibatches go.
        desc: the progress bar's label.

    Returns:
        The mean of ``step``'s losses in each epoch, one per epoch.
    """
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs} and {batch_size}")
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {labels.shape[0]} labels")
    generator = torch.Generator().manual_seed(seed)
    model.to(device).train()
    epoch_losses = []
    for _ in tqdm(range(epochs), desc=desc, leave=False):
        order = torch.randperm(images.shape[0], generator=generator)
        losses = [
            step(images[batch].to(device), labels[batch].to(device))
            for batch in order.split(batch_size)
        ]
        epoch_losses.append(sum(losses) / len(losses))
    model.eval()
    return epoch_losses
