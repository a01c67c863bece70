"""``gradpen study optimal-critic``: is the penalized critic's gradient unit and along the OT lines?

The claim under test (the WGAN-GP paper's Proposition 1, repeated in lecture notes): for the
optimal critic D* and an optimally coupled pair (x real, y fake), at ``x_t = t x + (1 - t) y`` the
gradient is ``(x - y) / ||x - y||``: unit norm, along the line (here D is high on reals, so it
points from the fake to the real). This is why the penalty asks for norm 1 on interpolates.

Fixed clouds of 256 reals and 256 fakes: the paper's Figure 1a setting, reals from a toy and
fakes = independent reals plus unit Gaussian noise, on 8 Gaussians in 2-D, and the 8 Gaussians
placed in 16-D by a fixed random rotation with 16-D unit noise. A critic (3 hidden
ReLU layers) is trained full batch to near optimality on the Wasserstein loss plus the WGAN-GP
penalty (interpolates between reals and a fresh random pairing of the fakes at every step, as
the paper draws them): Adam lr 1e-3 decayed linearly to 0, betas (0.5, 0.9), 1500 steps. Arms:
lambda in {0.1, 1, 10, 100} at width 128, and width in {16, 64, 256} at lambda 10.

The coupling is exact: ``ot.emd`` between the two clouds (Euclidean cost; an optimal plan of
equal uniform clouds is a permutation). At ``t`` in {0.1, 0.3, 0.5, 0.7, 0.9} on every coupled
pair and on as many random (uncoupled) pairs: the gradient norm and the cosine between the
gradient and ``x - y``. The critic's W1 estimate ``mean D(real) - mean D(fake)`` is compared with
the exact W1 (``ot.emd2``).

CPU budget of the full run: 14 critics of 1500 full-batch steps, about 5-50 CPU seconds each by
width (estimated from 50 CPU seconds for 2000 steps on 512 points at width 128, measured on the
shared 2-core machine), about 6 CPU minutes in all, in one process; ``quick=True`` takes
seconds.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor

from gradpen.data.toys import get_toy
from gradpen.gradients import input_gradient
from gradpen.losses import d_loss
from gradpen.metrics.toy import wasserstein1
from gradpen.nets.mlp import MLPCritic
from gradpen.penalty import Penalty
from gradpen.report import markdown_table
from gradpen.studies._geometry import cosine, euclidean_coupling, random_rotation
from gradpen.studies._toolkit import Settings, report, run_jobs, sweep_settings

PAIRINGS = ("coupled", "random")
ALIGNED = 0.9  # a mean cosine at least this counts as "along the line"
UNIT_TOLERANCE = 0.1  # a mean norm within 1 +- this counts as "unit"


@dataclass(frozen=True)
class Cloud:
    """A fixed real cloud from a 2-D toy, placed in ``R^dim``; fakes add unit Gaussian noise.

    Attributes:
        toy: a name of :func:`gradpen.data.toys.get_toy`.
        dim: the ambient dimension (2: the toy's plane itself).
        noise_std: the standard deviation of the fakes' noise (1: the paper's setting).
        rotation_seed: the seed of the rotation placing the toy's plane in ``R^dim``.
    """

    toy: str
    dim: int = 2
    noise_std: float = 1.0
    rotation_seed: int = 0

    def draw(self, n: int, seed: int) -> tuple[Tensor, Tensor]:
        """The reals and the fakes (independent reals plus noise), each ``(n, dim)`` float32.

        Args:
            n: points per cloud.
            seed: the seed of every draw.

        Returns:
            ``(real, fake)``.
        """
        rng = torch.Generator().manual_seed(seed)
        toy = get_toy(self.toy)
        real, base = toy.sample(n, generator=rng), toy.sample(n, generator=rng)
        if self.dim != 2:
            plane = random_rotation(self.dim, self.rotation_seed)[:, :2].float()
            real, base = real @ plane.T, base @ plane.T
        noise = torch.randn(n, self.dim, generator=rng) * self.noise_std
        return real, base + noise


CLOUDS = {
    "8gaussians-2d": Cloud("8gaussians"),
    "8gaussians-16d": Cloud("8gaussians", dim=16, rotation_seed=3),
}
FIELD_CLOUDS = ("8gaussians-2d",)  # drawn at the base arm


@dataclass(frozen=True)
class OptimalCriticParams:
    """The settings every arm shares (see the module docstring)."""

    points: int = 256
    steps: int = 1500
    lr: float = 1e-3
    betas: tuple[float, float] = (0.5, 0.9)
    depth: int = 3
    base_width: int = 128
    base_weight: float = 10.0
    weights: tuple[float, ...] = (0.1, 1.0, 10.0, 100.0)
    widths: tuple[int, ...] = (16, 64, 128, 256)
    ts: tuple[float, ...] = (0.1, 0.3, 0.5, 0.7, 0.9)
    seed: int = 0


QUICK = OptimalCriticParams(
    points=32, steps=20, weights=(1.0, 10.0), widths=(16, 128), base_width=16
)


def arm_grid(params: OptimalCriticParams) -> dict[str, dict[str, Any]]:
    """Each arm's name and own values: the lambda sweep at the base width, the width sweep at
    the base lambda (their shared arm once).

    Args:
        params: the shared settings.

    Returns:
        ``{"CLOUD/lambda=W/width=N": {"cloud": ..., "cloud_name": ..., "weight": W,
        "width": N}}``.
    """
    pairs = [(w, params.base_width) for w in params.weights]
    pairs += [(params.base_weight, n) for n in params.widths if n != params.base_width]
    return {
        f"{name}/lambda={weight:g}/width={width}": {
            "cloud": asdict(cloud),
            "cloud_name": name,
            "weight": weight,
            "width": width,
        }
        for name, cloud in CLOUDS.items()
        for weight, width in pairs
    }


def settings(quick: bool = False) -> Settings:
    """Each arm's settings, as run records them under ``"settings"``."""
    params = QUICK if quick else OptimalCriticParams()
    return sweep_settings(params, arm_grid(params))


def train_critic(
    real: Tensor, fake: Tensor, weight: float, width: int, params: OptimalCriticParams
) -> MLPCritic:
    """A critic trained full batch on the Wasserstein loss plus the WGAN-GP penalty.

    Args:
        real: the real cloud ``(N, D)``.
        fake: the fake cloud ``(N, D)``.
        weight: lambda.
        width: the critic's hidden width.
        params: the shared settings (steps, lr, betas, depth, seed).

    Returns:
        The trained critic.
    """
    torch.manual_seed(params.seed)
    rng = torch.Generator().manual_seed(params.seed + 1)
    critic = MLPCritic(real.shape[1], width, params.depth)
    optimizer = torch.optim.Adam(critic.parameters(), lr=params.lr, betas=params.betas)
    decay = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / params.steps)
    penalty = Penalty("wgan-gp", weight=weight)
    for _ in range(params.steps):
        shuffled = fake[torch.randperm(len(fake), generator=rng)]
        loss = d_loss("wgan", critic(real), critic(fake))
        loss = loss + penalty(critic, real=real, fake=shuffled)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        decay.step()
    return critic


def along_pairs(
    critic: MLPCritic, real: Tensor, fake: Tensor, ts: tuple[float, ...]
) -> dict[str, list[float]]:
    """Gradient norm and cosine with ``real - fake`` along each pair's segment.

    Args:
        critic: the critic.
        real: the pairs' real ends ``(N, D)``.
        fake: the pairs' fake ends ``(N, D)`` (row ``i`` paired with ``real[i]``).
        ts: the positions ``t`` of ``x_t = t real + (1 - t) fake``.

    Returns:
        ``norm`` and ``cos``: per ``t``, the mean over pairs; ``aligned``: per ``t``, the fraction
        of pairs with cosine at least ``ALIGNED``.
    """
    direction = real - fake
    out: dict[str, list[float]] = {"norm": [], "cos": [], "aligned": []}
    for t in ts:
        gradient = input_gradient(critic, t * real + (1 - t) * fake).detach()
        cos = cosine(gradient, direction)
        out["norm"].append(float(gradient.double().norm(dim=1).mean()))
        out["cos"].append(float(cos.mean()))
        out["aligned"].append(float((cos >= ALIGNED).double().mean()))
    return out


def value_field(critic: MLPCritic, lim: float, points: int) -> dict[str, list]:
    """The critic's values and input gradients on a grid over ``[-lim, lim]^2`` (2-D critics)."""
    axis = torch.linspace(-lim, lim, points)
    grid = torch.cartesian_prod(axis, axis).flip(1)  # rows: y, columns: x
    gradient = input_gradient(critic, grid).detach().reshape(points, points, 2)
    with torch.no_grad():
        values = critic(grid).reshape(points, points)
    return {
        "axis": axis.tolist(),
        "value": values.tolist(),
        "gx": gradient[..., 0].tolist(),
        "gy": gradient[..., 1].tolist(),
    }


def run_arm(arm: dict[str, Any], params: OptimalCriticParams, draw_field: bool) -> dict[str, Any]:
    """Train one critic and measure it along coupled and random pairs.

    Args:
        arm: the arm's own values (see :func:`arm_grid`).
        params: the shared settings.
        draw_field: also return the critic's value field and the clouds (2-D clouds only).

    Returns:
        ``pairs`` (per pairing, :func:`along_pairs`'s means per t), ``w1_estimate``, ``w1_exact``,
        ``coupled_cost`` (the mean distance of the coupled pairs: W1 again, from the coupling),
        and with ``draw_field`` ``field``, ``real``, ``fake`` and ``partner``.
    """
    real, fake = CLOUDS[arm["cloud_name"]].draw(params.points, params.seed)
    critic = train_critic(real, fake, arm["weight"], arm["width"], params)
    partner = euclidean_coupling(real, fake)
    shuffle = torch.randperm(len(fake), generator=torch.Generator().manual_seed(params.seed + 2))
    ends = {"coupled": fake[partner], "random": fake[shuffle]}
    with torch.no_grad():
        w1_estimate = float(critic(real).mean() - critic(fake).mean())
    result: dict[str, Any] = {
        "pairs": {name: along_pairs(critic, real, y, params.ts) for name, y in ends.items()},
        "w1_estimate": w1_estimate,
        "w1_exact": wasserstein1(real, fake),
        "coupled_cost": float((real - fake[partner]).double().norm(dim=1).mean()),
    }
    if draw_field:
        lim = float(torch.cat([real, fake]).abs().max()) * 1.02
        result |= {
            "field": value_field(critic, lim, 31),
            "real": real.tolist(),
            "fake": fake.tolist(),
            "partner": partner.tolist(),
        }
    return result


def judge(norm: float, cos: float) -> str:
    """The claim's verdict on one arm's coupled pairs.

    Args:
        norm: the mean gradient norm along the coupled pairs.
        cos: the mean cosine between the gradient and the pair's direction.

    Returns:
        ``"holds"`` (unit within ``UNIT_TOLERANCE`` and aligned), ``"direction only"`` (aligned,
        norm off), ``"norm only"`` (unit, not aligned) or ``"fails"``.
    """
    unit = abs(norm - 1.0) <= UNIT_TOLERANCE
    aligned = cos >= ALIGNED
    return {
        (True, True): "holds",
        (False, True): "direction only",
        (True, False): "norm only",
        (False, False): "fails",
    }[unit, aligned]


def _mean(values: list[float]) -> float:
    return float(np.mean(values))


def _plot_sweeps(
    results: dict[str, dict], grid: dict[str, dict], params: OptimalCriticParams, path: Path
) -> None:
    """Coupled and random pairs' mean cosine and norm against lambda and against width."""
    fig = Figure(figsize=(10, 7))
    axes = fig.subplots(2, 2)
    sweeps = (("weight", "width", params.base_width), ("width", "weight", params.base_weight))
    for column, (varied, fixed, fixed_value) in enumerate(sweeps):
        for cloud, color in zip(CLOUDS, ("tab:blue", "tab:green", "tab:purple"), strict=False):
            arms = sorted(
                (own[varied], name)
                for name, own in grid.items()
                if own["cloud_name"] == cloud and own[fixed] == fixed_value
            )
            xs = [x for x, _ in arms]
            for pairing, style in zip(PAIRINGS, ("-o", ":x"), strict=True):
                for row, key in enumerate(("cos", "norm")):
                    ys = [_mean(results[name]["pairs"][pairing][key]) for _, name in arms]
                    axes[row, column].plot(
                        xs, ys, style, color=color, lw=1.2, ms=4, label=f"{cloud}, {pairing}"
                    )
        label = "λ" if varied == "weight" else "critic width"
        fixed_label = f"width {fixed_value}" if fixed == "width" else f"λ = {fixed_value:g}"
        axes[0, column].set(title=f"against {label} ({fixed_label})", ylabel="mean cosine")
        axes[1, column].set(xlabel=label, ylabel="mean ‖∇D‖")
        axes[1, column].axhline(1.0, color="0.4", lw=0.8)
        for ax in axes[:, column]:
            ax.set_xscale("log")
            ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _plot_along(results: dict[str, dict], base: dict[str, str], ts: tuple, path: Path) -> None:
    """At the base arm of each cloud: mean cosine and norm against the position t on the pair."""
    fig = Figure(figsize=(10, 3.8))
    axes = fig.subplots(1, 2)
    for (cloud, name), color in zip(
        base.items(), ("tab:blue", "tab:green", "tab:purple"), strict=False
    ):
        for pairing, style in zip(PAIRINGS, ("-o", ":x"), strict=True):
            for ax, key in zip(axes, ("cos", "norm"), strict=True):
                ax.plot(
                    ts,
                    results[name]["pairs"][pairing][key],
                    style,
                    color=color,
                    ms=4,
                    label=f"{cloud}, {pairing}",
                )
    axes[0].set(xlabel="t (0 = fake end, 1 = real end)", ylabel="mean cosine")
    axes[1].set(xlabel="t (0 = fake end, 1 = real end)", ylabel="mean ‖∇D‖")
    axes[1].axhline(1.0, color="0.4", lw=0.8)
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _plot_fields(results: dict[str, dict], base: dict[str, str], path: Path) -> None:
    """The 2-D clouds' base critics: value surface, gradient field, 40 coupled pairs."""
    shown = [cloud for cloud in FIELD_CLOUDS if cloud in base]
    fig = Figure(figsize=(5.5 * len(shown), 5))
    axes = fig.subplots(1, len(shown), squeeze=False)[0]
    for ax, cloud in zip(axes, shown, strict=True):
        result = results[base[cloud]]
        field = result["field"]
        axis = np.asarray(field["axis"])
        ax.contourf(axis, axis, np.asarray(field["value"]), levels=20, cmap="coolwarm", alpha=0.6)
        ax.quiver(
            axis[::2],
            axis[::2],
            np.asarray(field["gx"])[::2, ::2],
            np.asarray(field["gy"])[::2, ::2],
            width=0.003,
            color="0.2",
        )
        real, fake = np.asarray(result["real"]), np.asarray(result["fake"])
        partner = np.asarray(result["partner"])
        ax.scatter(fake[:, 0], fake[:, 1], s=3, color="tab:orange", label="fake")
        ax.scatter(real[:, 0], real[:, 1], s=3, color="tab:green", label="real")
        for i in range(0, len(real), max(1, len(real) // 40)):
            j = partner[i]
            ax.plot([real[i, 0], fake[j, 0]], [real[i, 1], fake[j, 1]], color="k", lw=0.5)
        ax.set(title=f"{cloud}: {base[cloud].split('/', 1)[1]}", aspect="equal")
        ax.legend(loc="upper right", fontsize=7, markerscale=3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def run(out_dir: Path, *, quick: bool = False) -> Path:
    """Train every arm's critic, measure it along coupled and random pairs, report.

    Args:
        out_dir: the report directory.
        quick: the seconds-long version the tests run.

    Returns:
        The path of ``report.md``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    params = QUICK if quick else OptimalCriticParams()
    grid = arm_grid(params)
    base_suffix = f"/lambda={params.base_weight:g}/width={params.base_width}"
    base = {cloud: f"{cloud}{base_suffix}" for cloud in CLOUDS}
    jobs = {
        name: (own, params, name in {base[c] for c in FIELD_CLOUDS}) for name, own in grid.items()
    }
    results = run_jobs(run_arm, jobs, workers=1, desc="optimal-critic arms")
    results = {name: results[name] for name in grid}
    rows, verdicts = [], {}
    for name, own in grid.items():
        result = results[name]
        coupled, random = result["pairs"]["coupled"], result["pairs"]["random"]
        verdicts[name] = judge(_mean(coupled["norm"]), _mean(coupled["cos"]))
        rows.append(
            [
                own["cloud_name"],
                f"{own['weight']:g}",
                own["width"],
                f"{_mean(coupled['norm']):.3f}",
                f"{_mean(coupled['cos']):.3f}",
                f"{_mean(coupled['aligned']):.2f}",
                f"{_mean(random['norm']):.3f}",
                f"{_mean(random['cos']):.3f}",
                f"{result['w1_estimate']:.4g}",
                f"{result['w1_exact']:.4g}",
                f"{result['w1_estimate'] / result['w1_exact']:.3f}",
                verdicts[name],
            ]
        )
    header = [
        "cloud",
        "λ",
        "width",
        "coupled: mean ‖∇D‖",
        "mean cos",
        f"share cos ≥ {ALIGNED:g}",
        "random: mean ‖∇D‖",
        "mean cos",
        "W1 estimate",
        "exact W1",
        "estimate / exact",
        "claim on coupled pairs",
    ]
    figures = ["sweeps.png", "along_pairs.png", "fields_2d.png"]
    _plot_sweeps(results, grid, params, out_dir / figures[0])
    _plot_along(results, base, params.ts, out_dir / figures[1])
    _plot_fields(results, base, out_dir / figures[2])
    coupling_gap = max(abs(r["coupled_cost"] - r["w1_exact"]) for r in results.values())
    counts = {v: sum(x == v for x in verdicts.values()) for v in sorted(set(verdicts.values()))}
    command = "gradpen study optimal-critic" + (" --quick" if quick else "")
    sections = [
        f"{params.points} reals and {params.points} fakes per cloud, critics trained "
        f"{params.steps} full-batch steps; norms and cosines are means over the pairs and over "
        f"t in {list(params.ts)}. Cosine: between ∇D(x_t) and x - y (fake to real). Verdict on "
        f"the coupled pairs: holds = mean norm within 1 ± {UNIT_TOLERANCE:g} and mean cosine ≥ "
        f"{ALIGNED:g}. The coupling's mean pair distance matches ot.emd2's W1 to "
        f"{coupling_gap:.1e} on every cloud. Command: `{command}`.",
        markdown_table(header, rows),
        "Verdicts over the arms: " + ", ".join(f"{k}: {v}" for k, v in counts.items()) + ".",
    ]
    return report(
        out_dir,
        "Study: the optimal critic's gradient along the transport lines",
        sections,
        figures,
        {"verdicts": verdicts, "coupling_gap": coupling_gap, "arms": results},
        settings(quick),
    )
