"""Fully connected generator and critic for the 2-D toy experiments.

The defaults are those of the official WGAN-GP toy code: 3 hidden layers of 512 ReLU units,
noise dimension 2, a linear output. The hidden Linear layers are exposed (``hidden_layers``,
``linear_layers()``, ``forward_with_hidden``) so a study can follow the gradient through the
layers of a deep critic.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

from gradpen.errors import UserError
from gradpen.nets._common import NoiseSampler, make_activation, make_norm


class _MLPTrunk(nn.Module):
    """``depth`` blocks Linear -> norm -> activation of ``width`` units, then a Linear head."""

    def __init__(
        self, in_dim: int, out_dim: int, width: int, depth: int, activation: str, norm: str
    ) -> None:
        super().__init__()
        if width < 1 or depth < 1:
            raise UserError(f"width and depth must be >= 1, got width={width}, depth={depth}")
        self.activation = make_activation(activation)
        dims = [in_dim] + [width] * depth
        self.hidden_layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(dims))
        self.norms = nn.ModuleList(make_norm(norm, width, spatial=False) for _ in range(depth))
        self.head = nn.Linear(width, out_dim)

    def linear_layers(self) -> list[nn.Linear]:
        """Every Linear layer from input to output (the hidden ones, then the head)."""
        return [*self.hidden_layers, self.head]

    def forward_with_hidden(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The head's output and the activation after each hidden block (for gradient studies)."""
        hidden = []
        for linear, norm in zip(self.hidden_layers, self.norms, strict=True):
            x = self.activation(norm(linear(x)))
            hidden.append(x)
        return self.head(x), hidden


class MLPGenerator(NoiseSampler):
    """Maps Gaussian noise (B, noise_dim) to points (B, out_dim) through a ReLU MLP."""

    n_classes = 0
    image_size = None  # makes and reads flat points, not images

    def __init__(
        self,
        noise_dim: int = 2,
        out_dim: int = 2,
        width: int = 512,
        depth: int = 3,
        activation: str = "relu",
    ) -> None:
        super().__init__(noise_dim, "gaussian")
        self.out_dim = out_dim
        self.trunk = _MLPTrunk(noise_dim, out_dim, width, depth, activation, "none")

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Generated points, shape (B, out_dim)."""
        return self.trunk.forward_with_hidden(z)[0]


class MLPCritic(nn.Module):
    """Scores points (B, in_dim) with one real number each, shape (B,).

    ``norm`` is ``none`` (the WGAN-GP choice), ``layer`` (per sample, penalty-safe) or ``batch``
    (mixes the batch; kept only to demonstrate why the penalty forbids it).
    """

    n_classes = 0
    image_size = None  # makes and reads flat points, not images

    def __init__(
        self,
        in_dim: int = 2,
        width: int = 512,
        depth: int = 3,
        activation: str = "relu",
        norm: str = "none",
    ) -> None:
        super().__init__()
        self.in_dim = in_dim
        self.trunk = _MLPTrunk(in_dim, 1, width, depth, activation, norm)

    @property
    def hidden_layers(self) -> nn.ModuleList:
        """The hidden Linear layers, input side first."""
        return self.trunk.hidden_layers

    def linear_layers(self) -> list[nn.Linear]:
        """Every Linear layer from input to output (the hidden ones, then the head)."""
        return self.trunk.linear_layers()

    def forward_with_hidden(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Critic values (B,) and the activation after each hidden block."""
        out, hidden = self.trunk.forward_with_hidden(x)
        return out.squeeze(-1), hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Critic values, shape (B,)."""
        return self.forward_with_hidden(x)[0]
