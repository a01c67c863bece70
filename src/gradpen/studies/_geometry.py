"""Geometry of the manifold and optimal-critic studies: curves with exact tangents, OT couplings.

A :class:`Curve` is a plane curve (a circle, or the noise-free swiss-roll spiral of the toy data)
placed in ``R^D`` by the first two columns of a fixed orthogonal matrix. Its points are addressed
by the arc-length fraction ``s`` in ``[0, 1)``; its unit tangent is exact (the derivative of the
parametrization), so the normal space of a point is everything orthogonal to that tangent: one
dimension in 2-D, ``D - 1`` in ``R^D``. A point off the curve is assigned the tangent of its
nearest curve point (:meth:`Curve.project`).

The couplings are exact optimal transport plans from POT's network simplex (``ot.emd``): between
two clouds of equal size with uniform weights an optimal plan is a permutation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import ot
import torch
from torch import Tensor

CurveKind = Literal["circle", "spiral"]
SPIRAL_TURNS = (1.5 * math.pi, 4.5 * math.pi)  # the swiss-roll toy's angle range (sklearn)
SPIRAL_SCALE = 7.5  # the swiss-roll toy's scale: points (t cos t, t sin t) / 7.5
TABLE_POINTS = 4096  # the lookup table a projection starts from
REFINEMENTS = 3  # Newton steps along the tangent after the table lookup
EMD_MAX_ITERATIONS = 10_000_000


def spiral_arc_length(t: Tensor) -> Tensor:
    """Arc length of ``(t cos t, t sin t)`` from angle 0 to ``t`` (closed form, unscaled).

    Args:
        t: angles, any shape.

    Returns:
        ``(t sqrt(1 + t^2) + asinh t) / 2``, the shape of ``t``.
    """
    return 0.5 * (t * torch.sqrt(1 + t * t) + torch.asinh(t))


def random_rotation(dim: int, seed: int) -> Tensor:
    """A fixed random orthogonal matrix (QR of a seeded Gaussian matrix, signs fixed).

    Args:
        dim: the ambient dimension D.
        seed: the seed of the Gaussian draw.

    Returns:
        Shape ``(D, D)``, float64, orthogonal.
    """
    gaussian = torch.randn(dim, dim, generator=torch.Generator().manual_seed(seed))
    q, r = torch.linalg.qr(gaussian.double())
    return q * torch.sign(torch.diagonal(r))


@dataclass(frozen=True)
class Curve:
    """A plane curve in ``R^D`` with exact arc-length parametrization and tangents.

    Attributes:
        kind: ``"circle"`` (closed, radius ``radius``) or ``"spiral"`` (open; the swiss roll's
            spine).
        dim: the ambient dimension D (2: the plane itself).
        seed: the seed of the rotation that places the plane in ``R^D`` (unused for D = 2).
        radius: the circle's radius.
    """

    kind: CurveKind
    dim: int = 2
    seed: int = 0
    radius: float = 1.0

    @property
    def closed(self) -> bool:
        """Whether the curve is a loop (the arc coordinate wraps around)."""
        return self.kind == "circle"

    @property
    def length(self) -> float:
        """The curve's length."""
        if self.kind == "circle":
            return 2 * math.pi * self.radius
        ends = spiral_arc_length(torch.tensor(SPIRAL_TURNS, dtype=torch.float64))
        return float(ends[1] - ends[0]) / SPIRAL_SCALE

    @property
    def plane(self) -> Tensor:
        """The orthonormal columns ``(D, 2)`` that embed the curve's plane in ``R^D``."""
        if self.dim == 2:
            return torch.eye(2, dtype=torch.float64)
        return random_rotation(self.dim, self.seed)[:, :2]

    def _angle(self, s: Tensor) -> Tensor:
        """The parameter angle at arc fraction ``s`` (the spiral's by Newton on its arc length)."""
        if self.kind == "circle":
            return 2 * math.pi * s
        start, end = SPIRAL_TURNS
        base = spiral_arc_length(torch.tensor(start, dtype=torch.float64))
        target = base + s * self.length * SPIRAL_SCALE
        t = start + s * (end - start)
        for _ in range(30):  # dL/dt = sqrt(1 + t^2) > 1: Newton converges fast and monotonically
            t = t - (spiral_arc_length(t) - target) / torch.sqrt(1 + t * t)
        return t

    def _plane_point_and_velocity(self, s: Tensor) -> tuple[Tensor, Tensor]:
        """Points and (unnormalized) d/dangle in the plane, each ``(N, 2)`` float64."""
        t = self._angle(s.double())
        cos, sin = torch.cos(t), torch.sin(t)
        if self.kind == "circle":
            return self.radius * torch.stack([cos, sin], 1), torch.stack([-sin, cos], 1)
        point = torch.stack([t * cos, t * sin], 1) / SPIRAL_SCALE
        return point, torch.stack([cos - t * sin, sin + t * cos], 1)

    def point_and_tangent(self, s: Tensor) -> tuple[Tensor, Tensor]:
        """The curve's points and unit tangents (direction of increasing ``s``) in ``R^D``.

        Args:
            s: arc-length fractions, shape ``(N,)``, in ``[0, 1]``.

        Returns:
            Points and unit tangents, each ``(N, D)`` float64.
        """
        point, velocity = self._plane_point_and_velocity(s)
        tangent = velocity / velocity.norm(dim=1, keepdim=True)
        plane = self.plane
        return point @ plane.T, tangent @ plane.T

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """``n`` points uniform in arc length, and their arc fractions.

        Args:
            n: how many points.
            generator: the random source.

        Returns:
            Points ``(n, D)`` float32 and arc fractions ``(n,)`` float64.
        """
        s = torch.rand(n, generator=generator, dtype=torch.float64)
        return self.point_and_tangent(s)[0].float(), s

    def project(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The nearest curve point of each of ``x``: its arc fraction, unit tangent, distance.

        The in-plane part of ``x`` is matched to a table of ``TABLE_POINTS`` curve points and
        refined by Newton steps along the tangent (exact for the circle up to rounding).

        Args:
            x: points, shape ``(N, D)``.

        Returns:
            Arc fractions ``(N,)``, unit tangents ``(N, D)`` and distances ``(N,)``, float64.
        """
        x = x.detach().to(torch.float64)
        grid = torch.linspace(0, 1, TABLE_POINTS + int(self.closed), dtype=torch.float64)
        grid = grid[:TABLE_POINTS]  # a loop's table stops short of s = 1, which is s = 0
        table, _ = self.point_and_tangent(grid)
        s = grid[torch.cdist(x, table).argmin(dim=1)]
        for _ in range(REFINEMENTS):
            point, tangent = self.point_and_tangent(s)
            step = ((x - point) * tangent).sum(1) / self.length  # dc/ds = length * tangent
            s = torch.remainder(s + step, 1.0) if self.closed else (s + step).clamp(0, 1)
        point, tangent = self.point_and_tangent(s)
        return s, tangent, (x - point).norm(dim=1)


def split_gradient(gradient: Tensor, tangent: Tensor) -> tuple[Tensor, Tensor]:
    """A gradient's squared norm in the tangent line and in its orthogonal complement.

    Args:
        gradient: the gradients, shape ``(N, D)``.
        tangent: unit tangents, shape ``(N, D)``.

    Returns:
        ``(tangential, normal)`` squared norms, each ``(N,)`` float64; they sum to ``||g||^2``.
    """
    gradient, tangent = gradient.to(torch.float64), tangent.to(torch.float64)
    along = (gradient * tangent).sum(1)
    normal = gradient - along[:, None] * tangent
    return along**2, (normal**2).sum(1)


def coupling(cost: np.ndarray) -> np.ndarray:
    """The optimal assignment between two equal-size uniform clouds for ``cost`` (``ot.emd``).

    Args:
        cost: the ground cost, shape ``(N, N)``: row ``i`` the first cloud's point ``i``.

    Returns:
        ``partner`` of shape ``(N,)``: point ``i`` is coupled with point ``partner[i]``.
    """
    n = cost.shape[0]
    if cost.shape != (n, n):
        raise ValueError(f"cost must be square (equal clouds), got {cost.shape}")
    weights = np.full(n, 1.0 / n)
    plan = ot.emd(
        weights, weights, np.ascontiguousarray(cost, dtype=np.float64), EMD_MAX_ITERATIONS
    )
    partner = plan.argmax(axis=1)
    if not np.allclose(plan[np.arange(n), partner], 1.0 / n):
        raise RuntimeError("the optimal plan is not a permutation")  # a vertex of Birkhoff's
    return partner


def euclidean_coupling(x: Tensor, y: Tensor) -> Tensor:
    """The W1-optimal coupling of two equal-size clouds (Euclidean ground cost).

    Args:
        x: the first cloud, ``(N, D)``.
        y: the second cloud, ``(N, D)``.

    Returns:
        ``partner`` ``(N,)`` int64: ``x[i]`` is coupled with ``y[partner[i]]``.
    """
    cost = torch.cdist(x.detach().double(), y.detach().double()).numpy()
    return torch.from_numpy(coupling(cost))


def arc_offsets(source: Tensor, target: Tensor, closed: bool) -> Tensor:
    """Signed arc offsets ``b - a`` from each ``a`` in ``source`` to the fractions ``target``.

    Args:
        source: arc fractions ``(N,)``.
        target: arc fractions ``(M,)``.
        closed: wrap the offset into ``[-1/2, 1/2)`` (the shorter way round a loop).

    Returns:
        Shape ``(N, M)``, float64.
    """
    offsets = target.double()[None, :] - source.double()[:, None]
    return torch.remainder(offsets + 0.5, 1.0) - 0.5 if closed else offsets


def transport_along_curve(fake_s: Tensor, real_s: Tensor, closed: bool) -> Tensor:
    """Where each fake must move along the curve: its signed arc offset to its coupled real.

    The coupling is the W1-optimal transport between the two sets of arc fractions with the
    curve's own (geodesic) distance, so the offsets point from over-covered to under-covered
    parts of the curve.

    Args:
        fake_s: the fakes' arc fractions ``(N,)``.
        real_s: the reals' arc fractions ``(N,)``.
        closed: whether the curve is a loop.

    Returns:
        Signed offsets (fractions of the curve's length) ``(N,)``, float64; positive: toward
        increasing ``s``.
    """
    offsets = arc_offsets(fake_s, real_s, closed)
    partner = coupling(offsets.abs().numpy())
    return offsets[torch.arange(len(fake_s)), torch.from_numpy(partner)]


def cosine(a: Tensor, b: Tensor) -> Tensor:
    """Row-wise cosine similarity of ``(N, D)`` tensors (0 where a row is zero), float64."""
    a, b = a.double(), b.double()
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-300)
