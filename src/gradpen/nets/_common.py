"""Building blocks shared by the networks: name checks, activations, norms, noise sampling.

Layer norm in conv nets is ``GroupNorm(1, C)``: it normalizes each sample over (C, H, W) on
its own, so the critic stays a per-sample function and the gradient penalty stays valid.
Batch norm mixes the samples of a batch and is offered only to show why it breaks the penalty.
"""

from __future__ import annotations

import torch
from torch import nn

from gradpen.errors import UserError

ACTIVATIONS = ("relu", "leaky_relu", "tanh")
NORMS = ("none", "layer", "batch")
NOISES = ("gaussian", "uniform")
CONDITIONINGS = ("onehot", "concat", "embed")
LEAKY_SLOPE = 0.2
# ``image_size`` of a network that reads images of any side (a fully convolutional critic).
ANY_IMAGE_SIZE = -1


def check_choice(what: str, value: str, valid: tuple[str, ...]) -> str:
    """Return ``value`` if it is one of ``valid``; otherwise raise a UserError listing them."""
    if value not in valid:
        raise UserError(f"unknown {what} {value!r}; valid: {', '.join(valid)}")
    return value


def make_activation(name: str) -> nn.Module:
    """The activation called ``name`` (leaky ReLU uses slope 0.2, the GAN convention)."""
    check_choice("activation", name, ACTIVATIONS)
    if name == "relu":
        return nn.ReLU()
    if name == "leaky_relu":
        return nn.LeakyReLU(LEAKY_SLOPE)
    return nn.Tanh()


def make_norm(name: str, channels: int, *, spatial: bool) -> nn.Module:
    """A norm over ``channels`` features: per-sample for ``layer``, batch-mixing for ``batch``.

    ``spatial`` selects the conv form (inputs (B, C, H, W)) over the dense form (inputs (B, C)).
    """
    check_choice("norm", name, NORMS)
    if name == "none":
        return nn.Identity()
    if name == "layer":
        return nn.GroupNorm(1, channels) if spatial else nn.LayerNorm(channels)
    return nn.BatchNorm2d(channels) if spatial else nn.BatchNorm1d(channels)


def module_device(module: nn.Module) -> torch.device:
    """The device of the module's first parameter (CPU for a module without parameters)."""
    first = next(module.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


class NoiseSampler(nn.Module):
    """Base of the generators: owns ``noise_dim``, ``noise`` and ``sample_noise``."""

    def __init__(self, noise_dim: int, noise: str) -> None:
        super().__init__()
        if noise_dim < 1:
            raise UserError(f"noise_dim must be >= 1, got {noise_dim}")
        self.noise_dim = noise_dim
        self.noise = check_choice("noise", noise, NOISES)

    def sample_noise(
        self,
        n: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """Draw ``n`` latent vectors, shape (n, noise_dim): N(0, I) or U(-1, 1) per coordinate.

        With a ``generator`` the draw happens on the generator's device and is then moved, so a
        seeded CPU generator gives the same noise whatever device the model runs on. ``device``
        defaults to the model's device.
        """
        target = torch.device(device) if device is not None else module_device(self)
        draw_device = generator.device if generator is not None else target
        shape = (n, self.noise_dim)
        if self.noise == "gaussian":
            z = torch.randn(shape, generator=generator, device=draw_device)
        else:
            z = torch.rand(shape, generator=generator, device=draw_device) * 2.0 - 1.0
        return z.to(target)
