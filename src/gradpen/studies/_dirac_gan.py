"""Dirac-GAN (Mescheder, Geiger & Nowozin 2018) driven through gradpen's losses and penalties.

The generator is a point mass at ``theta``, the data a point mass at 0, the critic linear with
slope ``psi``: the smallest GAN with the same local dynamics as a real one. Both players are
``nn.Module`` s with one parameter, trained by ``torch.optim.SGD`` on the critic loss of
:func:`gradpen.losses.d_loss` plus a :class:`gradpen.Penalty`, exactly as a training loop does;
nothing here writes the vector field by hand. :func:`vector_field` reads the field back from
those losses so it can be checked against the paper's formula.

Sign convention: the paper's discriminator ``D_psi(x) = psi * x`` scores *fakes* high (it
maximizes ``f(D(G(z))) + f(-D(x))`` with ``f(t) = -log(1 + e^-t)``), while gradpen's critics score
reals high. :class:`DiracCritic` therefore returns ``-psi * x``, so that ``psi`` is the paper's
``psi``: same start ``(1, 1)``, same vector field, same trajectories.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from gradpen import Penalty
from gradpen.lipschitz import clip_weights_
from gradpen.losses import d_loss, g_loss

F_PRIME_AT_ZERO = 0.5  # f'(0) for f(t) = -log(1 + e^-t): the rotation speed at equilibrium
SCHEMES = ("simultaneous", "alternating")


class DiracGenerator(nn.Module):
    """A point mass at ``theta``: every sample is the same 1-D point."""

    def __init__(self, theta: float, dtype: torch.dtype = torch.float64) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.tensor([theta], dtype=dtype))

    def forward(self, n: int) -> Tensor:
        """``n`` copies of the point, shape ``(n, 1)``."""
        return self.theta.view(1, 1).expand(n, 1)


class DiracCritic(nn.Module):
    """The linear critic ``x -> -psi * x`` (the paper's ``D_psi`` in gradpen's sign convention)."""

    def __init__(self, psi: float, dtype: torch.dtype = torch.float64) -> None:
        super().__init__()
        self.psi = nn.Parameter(torch.tensor([psi], dtype=dtype))

    def forward(self, x: Tensor) -> Tensor:
        """Scores of points ``(B, 1)``, shape ``(B,)``; high means "real"."""
        return -self.psi * x[:, 0]


@dataclass(frozen=True)
class Method:
    """A GAN variant: gradpen loss kind, optional penalty, optional weight clipping."""

    label: str
    loss: str
    penalty: str = "none"
    weight: float = 0.0
    clip: float | None = None

    def make_penalty(self) -> Penalty:
        """The configured gradpen penalty term (``"none"`` gives an exact zero)."""
        return Penalty(self.penalty, weight=self.weight)


def gan_r1(gamma: float) -> Method:
    """The paper's regularized GAN: the minimax loss plus gradpen's R1 with weight ``gamma``."""
    return Method(f"GAN + R1 (gamma={gamma:g})", "minimax", "r1", gamma)


# The paper's Figure settings (GAN_stability/notebooks/DiracGAN.ipynb): WGAN clips psi to
# [-1, 1]; WGAN-GP uses reg 0.7 in the gamma/2 (|psi| - 1)^2 convention, i.e. gradpen weight 0.35.
PAPER_METHODS: tuple[Method, ...] = (
    Method("GAN", "minimax"),
    Method("NS-GAN", "ns"),
    Method("WGAN (clip 1)", "wgan", clip=1.0),
    Method("WGAN-GP (lambda=0.35)", "wgan", "wgan-gp", 0.35),
    gan_r1(0.3),
    gan_r1(1.0),
)


class DiracGAN:
    """One Dirac-GAN run: the two modules, their SGD optimizers and one step of either scheme."""

    def __init__(self, method: Method, *, lr: float, theta: float = 1.0, psi: float = 1.0) -> None:
        if not math.isfinite(lr) or lr <= 0:
            raise ValueError(f"the learning rate must be a finite number > 0, got {lr}")
        self.method = method
        self.penalty = method.make_penalty()
        self.generator = DiracGenerator(theta)
        self.critic = DiracCritic(psi)
        self._clip()
        self.real = torch.zeros(1, 1, dtype=torch.float64)  # the data: one point at 0, B = 1
        self.opt_g = torch.optim.SGD(self.generator.parameters(), lr=lr)
        self.opt_d = torch.optim.SGD(self.critic.parameters(), lr=lr)

    @property
    def state(self) -> tuple[float, float]:
        """The current ``(theta, psi)``."""
        return self.generator.theta.item(), self.critic.psi.item()

    def critic_loss(self) -> Tensor:
        """``d_loss`` on the real point and a detached fake, plus the penalty term."""
        fake = self.generator(1).detach()
        loss = d_loss(self.method.loss, self.critic(self.real), self.critic(fake))
        return loss + self.penalty(self.critic, real=self.real, fake=fake)

    def generator_loss(self) -> Tensor:
        """``g_loss`` on the generator's point."""
        return g_loss(self.method.loss, self.critic(self.generator(1)))

    def _clip(self) -> None:
        if self.method.clip is not None:
            clip_weights_(self.critic, self.method.clip)

    def step(self, scheme: str) -> None:
        """One gradient step of both players.

        ``simultaneous``: both gradients at the same point, then both updates. ``alternating``:
        the generator moves first, then the critic answers the new generator (the paper's order).
        """
        if scheme == "simultaneous":
            critic_loss, generator_loss = self.critic_loss(), self.generator_loss()
            _set_gradients(self.critic, critic_loss)
            _set_gradients(self.generator, generator_loss)
            self.opt_g.step()
            self.opt_d.step()
        elif scheme == "alternating":
            _set_gradients(self.generator, self.generator_loss())
            self.opt_g.step()
            _set_gradients(self.critic, self.critic_loss())
            self.opt_d.step()
        else:
            raise ValueError(f"unknown scheme {scheme!r}; valid schemes: {', '.join(SCHEMES)}")
        self._clip()


def _set_gradients(module: nn.Module, loss: Tensor) -> None:
    """Store in ``.grad`` the gradient of ``loss`` for ``module``'s parameters only.

    (A plain ``backward`` would also push the generator's loss into the critic's gradients.)
    """
    params = list(module.parameters())
    for param, grad in zip(params, torch.autograd.grad(loss, params), strict=True):
        param.grad = grad


def trajectory(
    method: Method,
    scheme: str,
    *,
    lr: float = 0.2,
    steps: int = 500,
    start: tuple[float, float] = (1.0, 1.0),
    stop: Callable[[float], bool] | None = None,
) -> np.ndarray:
    """The ``(theta, psi)`` points of a run, shape ``(n + 1, 2)`` with the start first.

    ``stop(distance)`` (optional) ends the run early once it returns True.
    """
    gan = DiracGAN(method, lr=lr, theta=start[0], psi=start[1])
    points = [gan.state]
    for _ in range(steps):
        gan.step(scheme)
        points.append(gan.state)
        if stop is not None and stop(math.hypot(*points[-1])):
            break
    return np.asarray(points)


def vector_field(method: Method, theta: float, psi: float) -> tuple[float, float]:
    """The paper's vector field ``v = (-dL_G/dtheta, -dL_D/dpsi)`` read from gradpen's losses.

    A gradient step of size ``h`` moves ``(theta, psi)`` by ``h * v``.
    """
    gan = DiracGAN(method, lr=1.0, theta=theta, psi=psi)
    (d_theta,) = torch.autograd.grad(gan.generator_loss(), list(gan.generator.parameters()))
    (d_psi,) = torch.autograd.grad(gan.critic_loss(), list(gan.critic.parameters()))
    return -d_theta.item(), -d_psi.item()


def field_jacobian(method: Method, *, eps: float = 1e-6) -> np.ndarray:
    """Jacobian of :func:`vector_field` at the equilibrium (0, 0), by central differences."""
    columns = []
    for direction in ((eps, 0.0), (0.0, eps)):
        plus = vector_field(method, *direction)
        minus = vector_field(method, -direction[0], -direction[1])
        columns.append((np.asarray(plus) - np.asarray(minus)) / (2 * eps))
    return np.stack(columns, axis=1)
