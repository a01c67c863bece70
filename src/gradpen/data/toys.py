"""The 2-D toy distributions of the official WGAN-GP code (gan_toy.py), sampled with torch RNGs.

The constants are the official ones: 8 Gaussians on a circle of radius 2 (std 0.02) divided by
1.414; a 5 x 5 grid of Gaussians at {-4, -2, 0, 2, 4}^2 (std 0.05) divided by 2.828; scikit-learn's
swiss roll (noise 0.25), columns (x, z), divided by 7.5. `centers` and `std` are stored after that
scaling, so they are directly comparable with the samples (the toy metrics rely on it).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from gradpen.errors import UserError

SWISSROLL_NOISE = 0.25
SWISSROLL_SCALE = 7.5

Drawer = Callable[[int, torch.Generator | None], Tensor]


@dataclass(frozen=True)
class ToyDistribution:
    """A 2-D data distribution: a Gaussian mixture (centers, std) or a custom drawer (swiss roll).

    Mixtures pick each sample's center uniformly at random, then add isotropic noise of `std`.
    """

    name: str
    centers: Tensor | None = None
    std: float | None = None
    drawer: Drawer | None = field(default=None, repr=False, compare=False)

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """Draw n points, (n, 2) float32; the same generator state gives the same points."""
        if n < 0:
            raise UserError(f"cannot draw a negative number of samples ({n})")
        if self.drawer is not None:
            return self.drawer(n, generator)
        if self.centers is None or self.std is None:
            raise ValueError(f"toy {self.name!r} has neither a drawer nor centers and std")
        which = torch.randint(len(self.centers), (n,), generator=generator)
        noise = torch.randn(n, 2, generator=generator) * self.std
        return self.centers[which] + noise


def _eight_gaussians() -> ToyDistribution:
    angles = torch.arange(8, dtype=torch.float64) * (math.pi / 4)
    centers = 2.0 * torch.stack([angles.cos(), angles.sin()], dim=1) / 1.414
    return ToyDistribution("8gaussians", centers.float(), 0.02 / 1.414)


def _twentyfive_gaussians() -> ToyDistribution:
    grid = torch.tensor([-4.0, -2.0, 0.0, 2.0, 4.0], dtype=torch.float64)
    centers = torch.cartesian_prod(grid, grid) / 2.828
    return ToyDistribution("25gaussians", centers.float(), 0.05 / 2.828)


def _draw_swissroll(n: int, generator: torch.Generator | None) -> Tensor:
    """scikit-learn's swiss roll, seeded by a number drawn from the torch generator."""
    from sklearn.datasets import make_swiss_roll

    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator).item())
    points, _ = make_swiss_roll(n_samples=n, noise=SWISSROLL_NOISE, random_state=seed)
    return torch.from_numpy(points[:, [0, 2]] / SWISSROLL_SCALE).float()


_BUILDERS: dict[str, Callable[[], ToyDistribution]] = {
    "8gaussians": _eight_gaussians,
    "25gaussians": _twentyfive_gaussians,
    "swissroll": lambda: ToyDistribution("swissroll", drawer=_draw_swissroll),
}
TOY_NAMES: tuple[str, ...] = tuple(_BUILDERS)


def get_toy(name: str) -> ToyDistribution:
    """The toy distribution called `name` (one of TOY_NAMES)."""
    if name not in _BUILDERS:
        raise UserError(f"unknown toy dataset {name!r}; valid names: {', '.join(TOY_NAMES)}")
    return _BUILDERS[name]()
