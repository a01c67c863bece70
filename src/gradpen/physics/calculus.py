"""Grid calculus shared by the phase-field models: energies on grids and their autograd derivatives.

The variational derivative of a discretized free energy F_h is dF_h/dphi_i divided by the cell
volume; autograd computes it from the energy alone, the same machinery that differentiates a critic
for the GAN gradient penalty. Finite-difference and spectral versions of the gradient energy
kappa/2 |grad phi|^2 live here so every model uses one definition.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from scipy import optimize
from torch import Tensor


def variational_derivative(
    energy: Callable[[Tensor], Tensor], field: Tensor, cell_volume: float
) -> Tensor:
    """Return dF_h/dphi / cell_volume for a scalar grid energy F_h, by autograd.

    Args:
        energy: the grid energy, a field to a scalar tensor.
        field: the field phi, any shape.
        cell_volume: h^d, the volume of one grid cell.

    Returns:
        The variational derivative at every node, the shape of ``field``.
    """
    phi = field.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(energy(phi), phi)
    return grad / cell_volume


def periodic_forward_differences(field: Tensor, spacing: float, ndim: int) -> list[Tensor]:
    """Periodic forward differences (phi[i+1] - phi[i]) / h along the last ``ndim`` axes."""
    return [(torch.roll(field, -1, dims=-d) - field) / spacing for d in range(1, ndim + 1)]


def periodic_laplacian(field: Tensor, spacing: float, ndim: int) -> Tensor:
    """The (2 ndim + 1)-point periodic Laplacian over the last ``ndim`` axes.

    Args:
        field: the field, shape ``(..., N_1, ..., N_ndim)``.
        spacing: the grid spacing h.
        ndim: the number of spatial axes (the last ones).

    Returns:
        The Laplacian, the shape of ``field``.
    """
    total = -2.0 * ndim * field
    for d in range(1, ndim + 1):
        total = total + torch.roll(field, 1, dims=-d) + torch.roll(field, -1, dims=-d)
    return total / spacing**2


def wavenumbers_squared(
    shape: Sequence[int], spacing: float, device: torch.device | str | None = None
) -> Tensor:
    """|k|^2 on the ``rfftn`` grid of a periodic field of ``shape`` (last axis halved)."""
    axes = [torch.fft.fftfreq(n, d=spacing, device=device, dtype=torch.float64) for n in shape[:-1]]
    axes.append(torch.fft.rfftfreq(shape[-1], d=spacing, device=device, dtype=torch.float64))
    grids = torch.meshgrid(*[(2.0 * math.pi * a) ** 2 for a in axes], indexing="ij")
    return sum(grids)


def gradient_energy(
    field: Tensor, spacing: float, kappa: float, ndim: int, method: str = "spectral"
) -> Tensor:
    """The discretized integral of kappa/2 |grad phi|^2 over the last ``ndim`` axes (periodic).

    ``method="fd"`` uses forward differences (its variational derivative is -kappa times the
    (2 ndim + 1)-point Laplacian); ``"spectral"`` uses Fourier derivatives through Parseval's
    identity (its variational derivative is -kappa times the spectral Laplacian).

    Args:
        field: the field, shape ``(..., N_1, ..., N_ndim)``.
        spacing: the grid spacing h.
        kappa: the gradient-energy coefficient.
        ndim: the number of spatial axes (the last ones).
        method: ``"spectral"`` or ``"fd"``.

    Returns:
        The energy, shape ``(...)``: one per field of the batch.
    """
    cell = spacing**ndim
    dims = tuple(range(-ndim, 0))
    if method == "fd":
        squares = sum(d**2 for d in periodic_forward_differences(field, spacing, ndim))
        return 0.5 * kappa * squares.sum(dim=dims) * cell
    if method == "spectral":
        shape = field.shape[-ndim:]
        k2 = wavenumbers_squared(shape, spacing, device=field.device)
        modes = torch.fft.rfftn(field, dim=dims)
        # rfft keeps half the last axis: count the mirrored half twice, but not k=0 or Nyquist.
        weight = torch.full((shape[-1] // 2 + 1,), 2.0, dtype=field.dtype, device=field.device)
        weight[0] = 1.0
        if shape[-1] % 2 == 0:
            weight[-1] = 1.0
        power = (k2 * weight * modes.abs() ** 2).sum(dim=dims)
        return 0.5 * kappa * power * cell / math.prod(shape)
    raise ValueError(f"unknown gradient discretization {method!r}; use 'fd' or 'spectral'")


def minimize_energy(
    energy: Callable[[Tensor], Tensor],
    initial: Tensor,
    free: Tensor | None = None,
    bounds: tuple[float, float] | None = None,
    gtol: float = 1e-12,
    max_iter: int = 20_000,
) -> Tensor:
    """Minimize a grid energy over the ``free`` entries (others stay fixed) with L-BFGS-B.

    The gradient comes from autograd through ``energy``; ``bounds`` (lower, upper) applies to every
    free entry, which is how irreversibility-free AT1 keeps its phase field in [0, 1].

    Args:
        energy: the grid energy, a field to a scalar tensor.
        initial: the starting field, any shape.
        free: a boolean mask of the entries to optimize, the shape of ``initial`` (None: all).
        bounds: ``(lower, upper)`` for every free entry, or None.
        gtol: L-BFGS-B's projected-gradient tolerance.
        max_iter: the iteration limit.

    Returns:
        The minimizing field, the shape of ``initial`` (detached).
    """
    fixed = initial.detach().clone().to(torch.float64)
    mask = torch.ones_like(fixed, dtype=torch.bool) if free is None else free

    def value_and_grad(values: np.ndarray) -> tuple[float, np.ndarray]:
        field = fixed.clone()
        field[mask] = torch.from_numpy(values).to(fixed)
        field.requires_grad_(True)
        value = energy(field)
        (grad,) = torch.autograd.grad(value, field)
        return value.item(), grad[mask].cpu().numpy()

    start = fixed[mask].cpu().numpy()
    box = None if bounds is None else [bounds] * start.size
    result = optimize.minimize(
        value_and_grad,
        start,
        jac=True,
        method="L-BFGS-B",
        bounds=box,
        options={"maxiter": max_iter, "maxfun": 2 * max_iter, "gtol": gtol, "ftol": 1e-15},
    )
    solution = fixed.clone()
    solution[mask] = torch.from_numpy(result.x).to(fixed)
    return solution


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run a block with ``count`` intra-op CPU threads, then restore the previous setting.

    Small grids (FFTs of 200 x 200) run fastest on one thread, and on a shared, oversubscribed
    machine extra threads spin and slow each step by two orders of magnitude.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
