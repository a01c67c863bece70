"""The alternatives the penalty is compared with: weight clipping and spectral normalization."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils import parametrizations, parametrize

__all__ = ["clip_weights_", "spectral_norm"]

_SPECTRAL_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.Embedding)


@torch.no_grad()
def clip_weights_(module: nn.Module, clip: float) -> None:
    """Clamp every parameter of ``module`` to ``[-clip, clip]`` in place (Arjovsky et al. 2017).

    Call it after each critic optimizer step, as the original WGAN algorithm does.

    Args:
        module: the critic; every parameter is clamped.
        clip: the bound, finite and > 0 (the WGAN paper's is 0.01).
    """
    if not math.isfinite(clip) or clip <= 0:
        raise ValueError(f"clip must be a finite number > 0, got {clip}")
    for param in module.parameters():
        param.clamp_(-clip, clip)


def spectral_norm(module: nn.Module, *, n_power_iterations: int = 1) -> nn.Module:
    """Put torch's spectral-norm parametrization on every linear, conv and embedding layer.

    Layers that already carry one are left alone.

    Args:
        module: the network; its ``nn.Linear``, ``nn.Conv1d/2d/3d``, ``nn.ConvTranspose2d`` and
            ``nn.Embedding`` layers are parametrized in place.
        n_power_iterations: power iterations per forward, >= 1.

    Returns:
        ``module`` itself, changed in place.
    """
    if n_power_iterations < 1:
        raise ValueError(f"n_power_iterations must be >= 1, got {n_power_iterations}")
    layers = [m for m in module.modules() if isinstance(m, _SPECTRAL_LAYERS)]
    for layer in layers:
        if not parametrize.is_parametrized(layer, "weight"):
            parametrizations.spectral_norm(layer, n_power_iterations=n_power_iterations)
    return module
