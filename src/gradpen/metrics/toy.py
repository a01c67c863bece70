"""Metrics for the 2-D toys: mode coverage, high-quality fraction and the exact W1 distance.

Definitions follow the PacGAN / VEEGAN convention the published toy numbers use: a sample is high
quality when it lies within 3 std of its nearest center (in 2-D a perfect sampler scores
1 - exp(-4.5) = 98.9%), and a mode is covered when some high-quality sample has it as its nearest
center.
"""

from __future__ import annotations

import numpy as np
import ot
import torch
from torch import Tensor

from gradpen.data.toys import ToyDistribution

HIGH_QUALITY_STDS = 3.0
EMD_MAX_ITERATIONS = 10_000_000


def _as_points(name: str, points: Tensor) -> Tensor:
    if points.ndim != 2 or points.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty (N, D) tensor, got {tuple(points.shape)}")
    return points.detach().to("cpu", torch.float64)


def wasserstein1(samples: Tensor, real: Tensor) -> float:
    """Exact W1 between two point clouds, uniform weights, Euclidean ground cost (POT's emd)."""
    x, y = _as_points("samples", samples), _as_points("real", real)
    cost = torch.cdist(x, y).numpy()
    weights_x = np.full(len(x), 1.0 / len(x))
    weights_y = np.full(len(y), 1.0 / len(y))
    return float(ot.emd2(weights_x, weights_y, cost, numItermax=EMD_MAX_ITERATIONS))


def toy_metrics(
    samples: Tensor, dist: ToyDistribution, real: Tensor | None = None
) -> dict[str, float | int]:
    """`modes_covered` and `high_quality` for mixtures, and `w1` to `real` when it is given."""
    points = _as_points("samples", samples)
    result: dict[str, float | int] = {}
    if dist.centers is not None and dist.std is not None:
        distances = torch.cdist(points, dist.centers.to(torch.float64))
        nearest_distance, nearest_center = distances.min(dim=1)
        high_quality = nearest_distance <= HIGH_QUALITY_STDS * dist.std
        result["modes_covered"] = int(torch.unique(nearest_center[high_quality]).numel())
        result["high_quality"] = float(high_quality.double().mean())
    if real is not None:
        result["w1"] = wasserstein1(points, real)
    return result
