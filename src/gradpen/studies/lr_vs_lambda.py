"""The largest stable learning rate against the penalty weight, measured and predicted.

Dirac-GAN with R1 (minimax loss + ``Penalty("r1", weight=gamma)``, SGD, both schemes): ``h_max``
is found by bisection on real runs (stable = the distance to equilibrium trends down), and
compared with linear stability. The Jacobian of the vector field at the equilibrium is
``J = [[0, -a], [a, -gamma]]`` with ``a = f'(0) = 1/2`` (read back from gradpen's autograd by
:func:`field_jacobian`). Its eigenvalues are ``(-gamma +- sqrt(gamma^2 - 4 a^2)) / 2``.

* Simultaneous GD, update ``I + hJ``: stable iff ``|1 + h lambda_i| < 1``. For
  ``gamma < 2a`` the eigenvalues are complex, ``|1 + h lambda|^2 = 1 - h gamma + h^2 a^2``, so
  ``h_max = gamma / a^2``: it *grows* with gamma. For ``gamma >= 2a`` they are real and the most
  negative one binds: ``h_max = 4 / (gamma + sqrt(gamma^2 - 4 a^2))``, so ``gamma h_max -> 2``.
* Alternating GD (generator first), update ``[[1, -ha], [ha, 1 - h gamma - h^2 a^2]]``:
  determinant ``1 - h gamma``, trace ``2 - h gamma - h^2 a^2``; the Jury conditions give
  ``h_max = 4 / (gamma + sqrt(gamma^2 + 4 a^2))``: falling for every gamma > 0 (at gamma = 0 the
  determinant is 1: circles, no convergence), again ``gamma h_max -> 2``.

On a toy (25 Gaussians, small MLP critic and generator, WGAN loss + ``Penalty("wgan-gp")``, SGD,
n_critic 5) the largest learning rate on a factor-2 grid before the first divergence (a
non-finite or blown-up loss), for each lambda; a self-contained loop, since ``gradpen.train``
was not available when this study was written.

CPU budget of the full run: about 1 CPU minute for the Dirac-GAN part and 1 to 2 for the toy
(much longer in wall time when the 2 cores are shared); ``quick=True`` takes seconds.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from tqdm import tqdm

from gradpen import Penalty
from gradpen.data.toys import get_toy
from gradpen.losses import d_loss, g_loss
from gradpen.nets import MLPCritic, MLPGenerator
from gradpen.studies._dirac_gan import (
    F_PRIME_AT_ZERO,
    SCHEMES,
    field_jacobian,
    gan_r1,
    trajectory,
)
from gradpen.studies._toolkit import Settings, sweep_settings

GAMMAS = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
QUICK_GAMMAS = (0.3, 10.0)
START = (0.01, 0.01)  # near the equilibrium: linear stability is a local statement
CONVERGED_RATIO = 1e-9  # stop early: the distance fell this far below the start
LEFT_RATIO = 10.0  # unstable: the distance grew this far above the start (left the linear regime)


def predicted_h_max(gamma: float, scheme: str, a: float = F_PRIME_AT_ZERO) -> float:
    """Linear-stability ``h_max`` for Dirac-GAN + R1 (closed forms in the module docstring)."""
    if gamma <= 0:
        raise ValueError(f"gamma must be > 0, got {gamma}")
    if scheme == "alternating":
        return 4 / (gamma + math.sqrt(gamma**2 + 4 * a**2))
    if scheme != "simultaneous":
        raise ValueError(f"unknown scheme {scheme!r}; valid schemes: {', '.join(SCHEMES)}")
    if gamma < 2 * a:
        return gamma / a**2
    return 4 / (gamma + math.sqrt(gamma**2 - 4 * a**2))


def update_matrix(jacobian: np.ndarray, lr: float, scheme: str) -> np.ndarray:
    """Jacobian of one GD step at the equilibrium, given the field's Jacobian ``J``.

    Simultaneous: ``I + lr J``. Alternating: theta moves with row 0 of ``J``, then psi with row 1
    evaluated at the new theta.
    """
    (j11, j12), (j21, j22) = jacobian
    if scheme == "simultaneous":
        return np.eye(2) + lr * jacobian
    theta_row = np.array([1 + lr * j11, lr * j12])
    psi_row = np.array([0.0, 1 + lr * j22]) + lr * j21 * theta_row
    return np.stack([theta_row, psi_row])


def spectral_h_max(jacobian: np.ndarray, scheme: str, *, iterations: int = 60) -> float:
    """``h_max`` from the eigenvalues of :func:`update_matrix` (spectral radius < 1), bisected."""

    def stable(lr: float) -> bool:
        return max(abs(np.linalg.eigvals(update_matrix(jacobian, lr, scheme)))) < 1

    return bisect_h_max(stable, 1.0, iterations=iterations)


def bisect_h_max(stable: Callable[[float], bool], guess: float, *, iterations: int) -> float:
    """The boundary of ``{h : stable(h)}`` (assumed an interval ``(0, h_max)``).

    Doubles or halves ``guess`` until a stable and an unstable ``h`` bracket the boundary, then
    bisects in log space; returns the largest ``h`` found stable.
    """
    low, high = guess, guess
    if stable(guess):
        while stable(high := high * 2):
            low = high
    else:
        while not stable(low := low / 2):
            high = low
    for _ in range(iterations):
        middle = math.sqrt(low * high)
        low, high = (middle, high) if stable(middle) else (low, middle)
    return low


def dirac_stable(gamma: float, scheme: str, lr: float, steps: int) -> bool:
    """Whether Dirac-GAN + R1 run from near the equilibrium is trending in.

    Stable when the distance fell below ``CONVERGED_RATIO`` of the start, or when its mean log
    over the last quarter of the run is below that over the first quarter (averaging over the
    rotation makes the test see the trend, not the phase); unstable when it grew past
    ``LEFT_RATIO`` times the start (beyond that the nonlinearity of ``f`` can trap it in a
    bounded cycle, which is not what linear stability describes) or stopped being finite.
    """
    start = math.hypot(*START)

    def done(distance: float) -> bool:
        return not distance < start * LEFT_RATIO or distance < start * CONVERGED_RATIO

    points = trajectory(gan_r1(gamma), scheme, lr=lr, steps=steps, start=START, stop=done)
    distance = np.hypot(points[:, 0], points[:, 1])
    if not np.isfinite(distance).all() or distance[-1] >= start * LEFT_RATIO:
        return False
    if distance[-1] < start * CONVERGED_RATIO:
        return True
    quarter = max(len(distance) // 4, 1)
    log_distance = np.log(distance)
    return bool(log_distance[-quarter:].mean() < log_distance[:quarter].mean())


def dirac_study(
    gammas: tuple[float, ...], schemes: tuple[str, ...], steps: int, iterations: int
) -> list[dict[str, float | str]]:
    """Measured and predicted ``h_max`` for every gamma and scheme."""
    rows = []
    jobs = [(g, s) for g in gammas for s in schemes]
    for gamma, scheme in tqdm(jobs, desc="dirac h_max", leave=False):
        measured = bisect_h_max(
            lambda lr, g=gamma, s=scheme: dirac_stable(g, s, lr, steps),
            min(1.0, 1.0 / gamma),
            iterations=iterations,
        )
        jacobian = field_jacobian(gan_r1(gamma))
        rows.append(
            {
                "gamma": gamma,
                "scheme": scheme,
                "measured": measured,
                "predicted": predicted_h_max(gamma, scheme),
                "spectral": spectral_h_max(jacobian, scheme),
                "jacobian": jacobian.tolist(),
            }
        )
    return rows


@dataclass(frozen=True)
class ToySetup:
    """The toy WGAN-GP run whose stability is probed at each (lambda, lr)."""

    dataset: str = "25gaussians"
    width: int = 64
    depth: int = 2
    batch: int = 64
    generator_steps: int = 60
    n_critic: int = 5
    blow_up: float = 1e3  # |critic loss| above this counts as divergence
    seed: int = 0


def toy_diverges(setup: ToySetup, lam: float, lr: float) -> bool:
    """Whether a short toy WGAN-GP run with SGD at ``lr`` diverges (NaN/inf or blow-up)."""
    torch.manual_seed(setup.seed)
    data = get_toy(setup.dataset)
    critic = MLPCritic(width=setup.width, depth=setup.depth)
    generator = MLPGenerator(width=setup.width, depth=setup.depth)
    penalty = Penalty("wgan-gp", weight=lam)
    opt_d = torch.optim.SGD(critic.parameters(), lr=lr)
    opt_g = torch.optim.SGD(generator.parameters(), lr=lr)
    for _ in range(setup.generator_steps):
        for _ in range(setup.n_critic):
            real = data.sample(setup.batch)
            fake = generator(torch.randn(setup.batch, generator.noise_dim)).detach()
            loss = d_loss("wgan", critic(real), critic(fake))
            loss = loss + penalty(critic, real=real, fake=fake)
            if not math.isfinite(loss.item()) or abs(loss.item()) > setup.blow_up:
                return True
            opt_d.zero_grad(set_to_none=True)
            loss.backward()
            opt_d.step()
        fake = generator(torch.randn(setup.batch, generator.noise_dim))
        loss = g_loss("wgan", critic(fake))
        if not math.isfinite(loss.item()) or abs(loss.item()) > setup.blow_up:
            return True
        opt_g.zero_grad(set_to_none=True)
        loss.backward()
        opt_g.step()
    return False


def toy_study(
    setup: ToySetup, lams: tuple[float, ...], lrs: tuple[float, ...]
) -> list[dict[str, object]]:
    """For each lambda, run the ascending lr grid up to the first divergence."""
    rows = []
    for lam in tqdm(lams, desc="toy lambdas", leave=False):
        tried: dict[float, bool] = {}
        for lr in lrs:
            tried[lr] = toy_diverges(setup, lam, lr)
            if tried[lr]:
                break
        stable = [lr for lr, diverged in tried.items() if not diverged]
        first_bad = next((lr for lr, diverged in tried.items() if diverged), None)
        rows.append(
            {
                "lambda": lam,
                "h_max": max(stable) if stable else None,
                "first_divergent_lr": first_bad,
                "lambda_times_h_max": lam * max(stable) if stable else None,
            }
        )
    return rows


def _plot(dirac_rows: list[dict], toy_rows: list[dict], path: Path) -> None:
    fig = Figure(figsize=(15, 4.3))
    ax_h, ax_gh, ax_toy = (fig.add_subplot(1, 3, i) for i in (1, 2, 3))
    fine = np.logspace(math.log10(min(r["gamma"] for r in dirac_rows)) - 0.3, 2.3, 200)
    for scheme, color in zip(SCHEMES, ("tab:red", "tab:blue"), strict=True):
        rows = [r for r in dirac_rows if r["scheme"] == scheme]
        if not rows:
            continue
        gammas = np.array([r["gamma"] for r in rows])
        measured = np.array([r["measured"] for r in rows])
        predicted = np.array([predicted_h_max(g, scheme) for g in fine])
        ax_h.loglog(fine, predicted, color=color, lw=1, label=f"{scheme}: linear stability")
        ax_h.loglog(gammas, measured, "o", color=color, label=f"{scheme}: measured")
        ax_gh.semilogx(fine, fine * predicted, color=color, lw=1)
        ax_gh.semilogx(gammas, gammas * measured, "o", color=color)
    ax_h.axvline(2 * F_PRIME_AT_ZERO, color="0.6", ls=":", label="gamma = 2 f'(0)")
    ax_h.set(xlabel="gamma (R1 weight)", ylabel="h_max", title="Dirac-GAN + R1: largest stable lr")
    ax_h.legend(fontsize=7)
    ax_gh.axhline(2, color="0.6", ls=":")
    ax_gh.set(xlabel="gamma", ylabel="gamma * h_max", title="gamma * h_max (tends to 2)")
    points = [(r["lambda"], r["h_max"]) for r in toy_rows if r["h_max"] is not None]
    if points:
        lams, h_max = zip(*points, strict=True)
        ax_toy.loglog(lams, h_max, "o-", color="tab:green", label="measured h_max (grid)")
        ax_toy.loglog(lams, [2 / lam for lam in lams], color="0.6", ls=":", label="2 / lambda")
        ax_toy.legend(fontsize=7)
    ax_toy.set(xlabel="lambda (WGAN-GP weight)", ylabel="largest stable SGD lr", title="toy")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


@dataclass(frozen=True)
class Plan:
    """What one run measures: the Dirac-GAN bisections and the toy's (lambda, lr) grid."""

    gammas: tuple[float, ...]
    schemes: tuple[str, ...]
    steps: int
    bisections: int
    setup: ToySetup
    lams: tuple[float, ...]
    lrs: tuple[float, ...]


def plan(quick: bool = False) -> Plan:
    """The full study's plan, or the seconds-long one the tests run."""
    if quick:
        return Plan(
            QUICK_GAMMAS,
            ("simultaneous",),
            300,
            6,
            ToySetup(generator_steps=5),
            (10.0,),
            (1e-3, 10.0),
        )
    lrs = tuple(float(2.0**k) for k in range(-12, 5))
    return Plan(GAMMAS, SCHEMES, 1500, 8, ToySetup(), (0.1, 1.0, 10.0, 100.0, 1000.0), lrs)


def settings(quick: bool = False) -> Settings:
    """The two arms' settings (``dirac``: R1 on Dirac-GAN; ``toy``: WGAN-GP with SGD)."""
    p = plan(quick)
    dirac = {"gammas": list(p.gammas), "schemes": list(p.schemes), "steps": p.steps}
    dirac |= {"bisections": p.bisections, "start": list(START)}
    toy = asdict(p.setup) | {"lambdas": list(p.lams), "lr_grid": list(p.lrs)}
    return sweep_settings({}, {"dirac": dirac, "toy": toy})


def run(out_dir: Path, *, quick: bool = False) -> Path:
    """Measure h_max on Dirac-GAN + R1 and on the toy; write report.md, results.json, a PNG."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    p = plan(quick)
    gammas, schemes, steps, iterations = p.gammas, p.schemes, p.steps, p.bisections
    setup, lams, lrs = p.setup, p.lams, p.lrs
    dirac_rows = dirac_study(gammas, schemes, steps, iterations)
    toy_rows = toy_study(setup, lams, lrs)
    figure = out_dir / "lr_vs_lambda.png"
    _plot(dirac_rows, toy_rows, figure)
    results = {
        "settings": settings(quick),
        "dirac": {
            "start": list(START),
            "steps": steps,
            "bisections": iterations,
            "rows": dirac_rows,
        },
        "toy": {"setup": asdict(setup), "lr_grid": list(lrs), "rows": toy_rows},
    }
    (out_dir / "results.json").write_text(json.dumps(results, indent=2))
    report = out_dir / "report.md"
    report.write_text(_report(dirac_rows, toy_rows, setup, steps, iterations, figure.name))
    return report


def _report(
    dirac_rows: list[dict],
    toy_rows: list[dict],
    setup: ToySetup,
    steps: int,
    iterations: int,
    figure: str,
) -> str:
    lines = [
        "# Largest stable learning rate against the penalty weight",
        "",
        f"Dirac-GAN + R1, SGD, start {START}, up to {steps} steps per probe, {iterations} "
        "log-bisections after bracketing; linear stability from the closed forms, and from the "
        "eigenvalues of the update built on gradpen's own field Jacobian (spectral).",
        "",
        "| gamma | scheme | measured h_max | predicted h_max | spectral h_max | "
        "measured / predicted | gamma * measured |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in dirac_rows:
        lines.append(
            f"| {r['gamma']:g} | {r['scheme']} | {r['measured']:.4g} | {r['predicted']:.4g} | "
            f"{r['spectral']:.4g} | {r['measured'] / r['predicted']:.3f} | "
            f"{r['gamma'] * r['measured']:.3g} |"
        )
    lines += [
        "",
        f"Toy: {setup.dataset}, MLP critic and generator ({setup.depth} x {setup.width}), WGAN "
        f"loss + WGAN-GP penalty, SGD, n_critic {setup.n_critic}, batch {setup.batch}, "
        f"{setup.generator_steps} generator steps; divergence = non-finite or |loss| > "
        f"{setup.blow_up:g}; lr grid of factor 2, ascending, stopped at the first divergence.",
        "",
        "| lambda | largest stable lr | first divergent lr | lambda * h_max |",
        "|---|---|---|---|",
    ]
    for r in toy_rows:
        cells = [
            f"{r[key]:.3g}" if r[key] is not None else "-"
            for key in ("h_max", "first_divergent_lr", "lambda_times_h_max")
        ]
        lines.append(f"| {r['lambda']:g} | " + " | ".join(cells) + " |")
    lines += ["", f"![h_max against the penalty weight]({figure})", ""]
    return "\n".join(lines)
