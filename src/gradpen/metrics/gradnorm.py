"""Summary statistics of per-sample gradient norms, for the training loop's logs."""

from __future__ import annotations

from torch import Tensor


def grad_norm_stats(norms: Tensor, below: float = 1.0) -> dict[str, float]:
    """Mean, population std and the fraction of norms strictly below `below` of a (B,) tensor."""
    if norms.ndim != 1 or norms.numel() == 0:
        raise ValueError(f"expected a non-empty (B,) tensor of norms, got {tuple(norms.shape)}")
    values = norms.detach().double()
    return {
        "mean": float(values.mean()),
        "std": float(values.std(unbiased=False)),
        "frac_below": float((values < below).double().mean()),
    }
