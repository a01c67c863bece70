"""Distances between feature sets: Frechet distance, KID and k-NN precision/recall.

They work in any feature space (the shipped MNIST classifier's, or Inception's for the standard
FID). Features are (N, D) tensors or arrays; the Frechet distance is computed in float64 with an
eigen-decomposition of symmetric PSD matrices, which is exact and stable where sqrtm of the
non-symmetric product S1 @ S2 can return complex or NaN values.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

Features = Tensor | np.ndarray


def _as_float64(name: str, features: Features) -> np.ndarray:
    array = features.detach().cpu().numpy() if isinstance(features, Tensor) else features
    array = np.asarray(array, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] < 2:
        raise ValueError(f"{name} must be (N, D) with N >= 2, got shape {array.shape}")
    return array


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Square root of a symmetric PSD matrix (negative round-off eigenvalues clipped to 0)."""
    eigenvalues, eigenvectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (eigenvectors * np.sqrt(np.clip(eigenvalues, 0.0, None))) @ eigenvectors.T


def frechet_from_moments(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray
) -> float:
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)), the squared W2 between two Gaussians.

    tr (S1 S2)^(1/2) equals tr (S1^(1/2) S2 S1^(1/2))^(1/2), whose argument is symmetric PSD.
    """
    mu1, mu2 = np.asarray(mu1, dtype=np.float64), np.asarray(mu2, dtype=np.float64)
    sigma1, sigma2 = np.asarray(sigma1, dtype=np.float64), np.asarray(sigma2, dtype=np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
        raise ValueError(
            f"moment shapes disagree: mu {mu1.shape}/{mu2.shape}, "
            f"sigma {sigma1.shape}/{sigma2.shape}"
        )
    sqrt_sigma1 = _psd_sqrt(sigma1)
    product = sqrt_sigma1 @ sigma2 @ sqrt_sigma1
    trace_covmean = np.sqrt(np.clip(np.linalg.eigvalsh((product + product.T) / 2), 0, None)).sum()
    diff = mu1 - mu2
    distance = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_covmean
    return float(max(distance, 0.0))


def frechet_distance(feat_a: Features, feat_b: Features) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (FID in Inception space)."""
    a, b = _as_float64("feat_a", feat_a), _as_float64("feat_b", feat_b)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature dimensions differ: {a.shape[1]} vs {b.shape[1]}")
    return frechet_from_moments(
        a.mean(axis=0), np.cov(a, rowvar=False), b.mean(axis=0), np.cov(b, rowvar=False)
    )


def kid(
    feat_a: Features, feat_b: Features, subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """Kernel Inception Distance: mean and std over random subsets of the unbiased MMD^2 with the
    cubic polynomial kernel k(x, y) = (x . y / D + 1)^3 (Binkowski et al. 2018).

    subset_size is capped at the smaller set's size; subsets are drawn without replacement.
    """
    a, b = _as_float64("feat_a", feat_a), _as_float64("feat_b", feat_b)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature dimensions differ: {a.shape[1]} vs {b.shape[1]}")
    if subsets < 1 or subset_size < 2:
        raise ValueError(f"need subsets >= 1 and subset_size >= 2, got {subsets}, {subset_size}")
    size = min(subset_size, len(a), len(b))
    dim = a.shape[1]
    rng = np.random.default_rng(seed)
    estimates = np.empty(subsets)
    for index in range(subsets):
        x = a[rng.choice(len(a), size, replace=False)]
        y = b[rng.choice(len(b), size, replace=False)]
        k_xx = (x @ x.T / dim + 1) ** 3
        k_yy = (y @ y.T / dim + 1) ** 3
        k_xy = (x @ y.T / dim + 1) ** 3
        within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (size * (size - 1))
        estimates[index] = within - 2.0 * k_xy.mean()
    return float(estimates.mean()), float(estimates.std())


def _within_manifold(queries: Tensor, support: Tensor, radii: Tensor, chunk: int = 1024) -> Tensor:
    """For each query, whether it lies inside some support point's k-NN ball."""
    inside = [(torch.cdist(block, support) <= radii).any(dim=1) for block in queries.split(chunk)]
    return torch.cat(inside)


def _knn_radii(points: Tensor, k: int, chunk: int = 1024) -> Tensor:
    """Distance from each point to its k-th nearest other point (the point itself is excluded)."""
    radii = [
        torch.cdist(block, points).kthvalue(k + 1, dim=1).values for block in points.split(chunk)
    ]
    return torch.cat(radii)


def precision_recall(real_feats: Features, fake_feats: Features, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019): precision is the fraction of fakes
    inside the real manifold (union of balls reaching each real's k-th neighbour), recall the
    fraction of reals inside the fake manifold."""
    real = torch.from_numpy(_as_float64("real_feats", real_feats))
    fake = torch.from_numpy(_as_float64("fake_feats", fake_feats))
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"feature dimensions differ: {real.shape[1]} vs {fake.shape[1]}")
    if not 1 <= k < min(len(real), len(fake)):
        raise ValueError(f"k must be in [1, {min(len(real), len(fake)) - 1}], got {k}")
    precision = _within_manifold(fake, real, _knn_radii(real, k)).double().mean()
    recall = _within_manifold(real, fake, _knn_radii(fake, k)).double().mean()
    return float(precision), float(recall)
