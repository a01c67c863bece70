"""``gradpen study manifold``: does the critic's gradient point off the data manifold, not along it?

The claim under test ("the map is not the territory"): real data lie on a curved manifold and the
penalty's straight real-fake lines run mostly off it, so the critic's gradient is strong normal
to the manifold ("get on it") and weak and unstructured along it, which tells the generator
little about *where on* the manifold to go (why mode collapse can persist under WGAN-GP).

Data lie exactly on a known curve (see :mod:`gradpen.studies._geometry`): the unit circle in
2-D, the unit circle in 10-D, and the swiss-roll spiral in 10-D (each placed by a fixed random
rotation), sampled uniformly in arc length. A small MLP generator (noise 2, 3 x 64 ReLU) and
critic (3 x 64 ReLU) train with WGAN-GP (Wasserstein loss, lambda 10) and, for contrast, R1
(non-saturating loss, gamma 1), Adam lr 1e-3 decayed linearly to 0, betas (0.5, 0.9), 5 critic
steps per generator step, batches of 128, 800 generator steps, 2 seeds. Every 100 generator
steps, on 500 reals, 500 fakes and 500 interpolates (one eps per pair, as the penalty draws
them):

- the tangent share: sum of ``(g . t)^2`` over sum of ``||g||^2``, ``g`` the critic's input
  gradient and ``t`` the unit tangent at the point's nearest curve point; an isotropic gradient
  has share ``1/D``;
- the tangential agreement at fakes: each fake's projection is coupled to a real's arc position by
  the exact 1-D optimal transport along the curve (geodesic cost), which says which way along the
  curve the fake must go to fill under-covered arc; agreement is the fraction of the fakes that
  must move more than half a coverage bin whose tangential gradient ``g . t`` has that sign (the
  generator moves fakes along ``+grad D`` under both losses); 0.5 is chance;
- coverage: the fakes' histogram over 20 equal arc bins against the uniform real one (total
  variation distance, and bins holding at least half their share).

With the generator spreading its fakes evenly, no fake needs to move far and the agreement
measures noise; so a probe also trains, per arm and seed, a fresh critic for 500 steps against
fakes that lie on the curve but only on the first half of its arc (a generator collapsed onto
half the manifold) and measures the same numbers at such fakes.

CPU budget of the full run: 12 runs (3 curves x 2 penalties x 2 seeds) of about 50 CPU seconds
each with their probe (measured on the shared 2-core machine), about 10 CPU minutes in all, in
one process;
``quick=True`` takes seconds.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor

from gradpen.gradients import input_gradient
from gradpen.losses import d_loss, g_loss
from gradpen.nets.mlp import MLPCritic, MLPGenerator
from gradpen.penalties import interpolate
from gradpen.penalty import Penalty
from gradpen.report import markdown_table
from gradpen.studies._geometry import Curve, split_gradient, transport_along_curve
from gradpen.studies._toolkit import Settings, mean_std_cell, report, run_jobs, sweep_settings

POINT_SETS = ("real", "fake", "interp")
CURVES = {
    "circle-2d": Curve("circle", dim=2),
    "circle-10d": Curve("circle", dim=10, seed=1),
    "spiral-10d": Curve("spiral", dim=10, seed=2),
}
FIELD_CURVE = "circle-2d"  # the curve whose gradient field is drawn
AGREEMENT_BAND = 0.1  # agreement within 0.5 +- this counts as unstructured (chance)
LATE_FRACTION = 0.25  # the table averages the last quarter of the checkpoints


@dataclass(frozen=True)
class Method:
    """A loss and a penalty on it.

    Attributes:
        loss: a key of :data:`gradpen.losses.LOSSES`.
        penalty: a key of :data:`gradpen.PENALTIES`.
        weight: the penalty's weight (lambda, or gamma for R1).
    """

    loss: str
    penalty: str
    weight: float


METHODS = {
    "wgan-gp": Method("wgan", "wgan-gp", 10.0),
    "r1": Method("ns", "r1", 1.0),
}


@dataclass(frozen=True)
class ManifoldParams:
    """The settings every arm shares (see the module docstring)."""

    steps: int = 800
    n_critic: int = 5
    batch_size: int = 128
    width: int = 64
    depth: int = 3
    noise_dim: int = 2
    lr: float = 1e-3
    betas: tuple[float, float] = (0.5, 0.9)
    measure_every: int = 100
    measure_points: int = 500
    bins: int = 20
    probe_steps: int = 500
    collapsed_arc: float = 0.5
    seeds: tuple[int, ...] = (0, 1)


QUICK = ManifoldParams(
    steps=10,
    n_critic=2,
    batch_size=64,
    width=32,
    measure_every=5,
    measure_points=100,
    seeds=(0,),
    probe_steps=5,
)


def arms() -> dict[str, tuple[str, str]]:
    """Each arm's name, ``CURVE/METHOD``, and its (curve, method) keys."""
    return {f"{c}/{m}": (c, m) for c in CURVES for m in METHODS}


def settings(quick: bool = False) -> Settings:
    """Each arm's settings, as run records them under ``"settings"``."""
    own = {
        name: {"curve": asdict(CURVES[c]), "curve_name": c, "method": m, **asdict(METHODS[m])}
        for name, (c, m) in arms().items()
    }
    return sweep_settings(QUICK if quick else ManifoldParams(), own)


def coverage(arc: Tensor, bins: int) -> dict[str, float]:
    """How evenly arc fractions cover the curve, against the uniform real distribution.

    Args:
        arc: arc fractions in ``[0, 1]``, shape ``(N,)``.
        bins: the number of equal arc bins.

    Returns:
        ``tv``: total variation distance of the binned fractions to uniform (0 best, 1 - 1/bins
        at most); ``covered``: the fraction of bins holding at least half their uniform share.
    """
    counts = torch.histc(arc.double(), bins=bins, min=0.0, max=1.0)
    share = counts / counts.sum()
    return {
        "tv": float(0.5 * (share - 1.0 / bins).abs().sum()),
        "covered": float((share >= 0.5 / bins).double().mean()),
    }


def tangential_agreement(along: Tensor, offsets: Tensor, min_offset: float) -> tuple[float, int]:
    """How often the tangential gradient points the way a fake must move along the curve.

    Args:
        along: ``g . t`` at each fake, shape ``(N,)``.
        offsets: each fake's signed arc offset to its transport target, shape ``(N,)``.
        min_offset: fakes with ``|offset|`` at most this are left out (they need not move).

    Returns:
        The fraction of the counted fakes where ``sign(g . t) == sign(offset)`` (NaN for
        none), and how many fakes were counted.
    """
    moving = offsets.abs() > min_offset
    count = int(moving.sum())
    if count == 0:
        return float("nan"), 0
    agree = torch.sign(along[moving]) == torch.sign(offsets[moving])
    return float(agree.double().mean()), count


def measure(
    critic: MLPCritic, fake: Tensor, curve: Curve, params: ManifoldParams, seed: int
) -> dict[str, float]:
    """The gradient's tangent share at reals, fakes and interpolates; agreement; coverage.

    Args:
        critic: the critic.
        fake: the fakes, ``(N, D)``, as many as ``params.measure_points``.
        curve: the data curve.
        params: the study's settings (``measure_points``, ``bins``).
        seed: the seed of the measurement's draws.

    Returns:
        ``tangent_share_{set}``, ``gnorm_{set}`` per point set, ``agreement``,
        ``agreement_count``, ``tv``, ``covered``, ``fake_distance`` (mean distance of the fakes to
        the curve).
    """
    rng = torch.Generator().manual_seed(seed)
    n = len(fake)
    real, _ = curve.sample(n, rng)
    points = {"real": real, "fake": fake, "interp": interpolate(real, fake, generator=rng)}
    result: dict[str, float] = {}
    for name, x in points.items():
        gradient = input_gradient(critic, x).detach()
        arc, tangent, distance = curve.project(x)
        tangential, normal = split_gradient(gradient, tangent)
        result[f"tangent_share_{name}"] = float(tangential.sum() / (tangential + normal).sum())
        result[f"gnorm_{name}"] = float((tangential + normal).sqrt().mean())
        if name == "fake":
            target_arc = curve.sample(n, rng)[1]
            offsets = transport_along_curve(arc, target_arc, curve.closed)
            along = (gradient.double() * tangent).sum(1)
            agreement, count = tangential_agreement(along, offsets, 0.5 / params.bins)
            result |= {"agreement": agreement, "agreement_count": count}
            result |= coverage(arc, params.bins)
            result["fake_distance"] = float(distance.mean())
    return result


def critic_step(
    critic: MLPCritic,
    optimizer: torch.optim.Optimizer,
    penalty: Penalty,
    loss: str,
    real: Tensor,
    fake: Tensor,
) -> None:
    """One critic update on ``loss`` plus ``penalty`` for a real and a fake batch ``(B, D)``."""
    total = d_loss(loss, critic(real), critic(fake)) + penalty(critic, real=real, fake=fake)
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    optimizer.step()


def collapsed_fakes(curve: Curve, n: int, arc: float, rng: torch.Generator) -> Tensor:
    """``n`` points of the curve uniform on the arc fractions ``[0, arc)``, ``(n, D)`` float32."""
    s = arc * torch.rand(n, generator=rng, dtype=torch.float64)
    return curve.point_and_tangent(s)[0].float()


def collapsed_probe(
    curve_name: str, method_name: str, seed: int, params: ManifoldParams
) -> dict[str, float]:
    """A fresh critic trained against fakes that cover only part of the curve, then measured.

    The fakes lie on the curve, uniform on the arc fractions ``[0, collapsed_arc)``: a generator
    collapsed onto part of the manifold, so every fake has somewhere to go along it. The critic
    takes ``probe_steps`` updates (the arm's loss and penalty, fresh draws each step).

    Args:
        curve_name: a key of :data:`CURVES`.
        method_name: a key of :data:`METHODS`.
        seed: seeds the critic and the draws.
        params: the shared settings.

    Returns:
        :func:`measure`'s numbers for the trained critic at ``measure_points`` collapsed fakes.
    """
    curve, method = CURVES[curve_name], METHODS[method_name]
    torch.manual_seed(seed)
    rng = torch.Generator().manual_seed(20_000 + seed)
    critic = MLPCritic(curve.dim, params.width, params.depth)
    optimizer = torch.optim.Adam(critic.parameters(), lr=params.lr, betas=params.betas)
    penalty = Penalty(method.penalty, weight=method.weight)
    for _ in range(params.probe_steps):
        real = curve.sample(params.batch_size, rng)[0]
        fake = collapsed_fakes(curve, params.batch_size, params.collapsed_arc, rng)
        critic_step(critic, optimizer, penalty, method.loss, real, fake)
    fake = collapsed_fakes(curve, params.measure_points, params.collapsed_arc, rng)
    return measure(critic, fake, curve, params, seed=seed)


def gradient_field(critic: MLPCritic, lim: float, points: int) -> dict[str, list]:
    """The critic's input gradient on a ``points`` x ``points`` grid over ``[-lim, lim]^2``."""
    axis = torch.linspace(-lim, lim, points)
    grid = torch.cartesian_prod(axis, axis).flip(1)  # rows: y, columns: x
    gradient = input_gradient(critic, grid).detach().reshape(points, points, 2)
    return {"axis": axis.tolist(), "gx": gradient[..., 0].tolist(), "gy": gradient[..., 1].tolist()}


def train_and_measure(
    curve_name: str, method_name: str, seed: int, params: ManifoldParams
) -> dict[str, Any]:
    """Train one arm with one seed, measuring every ``measure_every`` generator steps.

    Args:
        curve_name: a key of :data:`CURVES`.
        method_name: a key of :data:`METHODS`.
        seed: seeds the networks, the training draws and the measurements.
        params: the shared settings.

    Returns:
        ``steps`` (the measured generator steps), ``curves`` (each measured quantity over
        them), and for the field curve ``fields`` (the gradient field at a quarter of training
        and at the end) and ``fakes`` (500 final fakes).
    """
    curve, method = CURVES[curve_name], METHODS[method_name]
    torch.manual_seed(seed)
    rng = torch.Generator().manual_seed(10_000 + seed)
    generator = MLPGenerator(params.noise_dim, curve.dim, params.width, params.depth)
    critic = MLPCritic(curve.dim, params.width, params.depth)
    g_opt = torch.optim.Adam(generator.parameters(), lr=params.lr, betas=params.betas)
    d_opt = torch.optim.Adam(critic.parameters(), lr=params.lr, betas=params.betas)
    decays = [
        torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1 - step / params.steps)
        for opt in (g_opt, d_opt)
    ]
    penalty = Penalty(method.penalty, weight=method.weight)
    field_steps = {params.steps // 4, params.steps}
    steps, records, fields = [], [], {}
    for step in range(params.steps + 1):
        if step % params.measure_every == 0 or step == params.steps:
            steps.append(step)
            with torch.no_grad():
                noise = generator.sample_noise(params.measure_points, generator=rng)
                fake = generator(noise)
            records.append(measure(critic, fake, curve, params, seed=step))
        if curve_name == FIELD_CURVE and step in field_steps:
            fields[str(step)] = gradient_field(critic, lim=1.6, points=21)
        if step == params.steps:
            break
        for _ in range(params.n_critic):
            real = curve.sample(params.batch_size, rng)[0]
            with torch.no_grad():
                fake = generator(generator.sample_noise(params.batch_size, generator=rng))
            critic_step(critic, d_opt, penalty, method.loss, real, fake)
        fake = generator(generator.sample_noise(params.batch_size, generator=rng))
        g_opt.zero_grad(set_to_none=True)
        g_loss(method.loss, critic(fake)).backward()
        g_opt.step()
        for decay in decays:
            decay.step()
    result: dict[str, Any] = {
        "steps": steps,
        "curves": {key: [r[key] for r in records] for key in records[0]},
        "probe": collapsed_probe(curve_name, method_name, seed, params),
    }
    if fields:
        with torch.no_grad():
            result["fakes"] = generator(generator.sample_noise(500, generator=rng)).tolist()
        result["fields"] = fields
    return result


def late_mean(values: list[float]) -> float:
    """The mean over the last ``LATE_FRACTION`` of a curve's checkpoints (NaNs skipped)."""
    tail = values[-max(1, round(len(values) * LATE_FRACTION)) :]
    finite = [v for v in tail if np.isfinite(v)]
    return statistics.fmean(finite) if finite else float("nan")


def judge(tangent_share: float, dim: int, agreement: float) -> str:
    """The claim's verdict for one arm from its late-training numbers.

    Args:
        tangent_share: the tangent share of the squared gradient norm at fakes.
        dim: the ambient dimension (an isotropic gradient's tangent share is ``1/dim``).
        agreement: the tangential agreement at the collapsed probe's fakes (0.5 is chance).

    Returns:
        ``"supported"`` (normal-dominated and the tangential part no better than chance),
        ``"refuted"`` (the tangential part points toward under-covered arc, or the gradient is
        not normal-dominated), or ``"no data"`` (no fake needed to move).
    """
    if not np.isfinite(agreement):
        return "no data"
    normal_dominated = tangent_share < 1.0 / dim
    informative = agreement > 0.5 + AGREEMENT_BAND
    return "supported" if normal_dominated and not informative else "refuted"


def _plot_split(results: dict[str, list[dict]], path: Path) -> None:
    """Tangent share over training, one panel per curve, one line per method and point set."""
    fig = Figure(figsize=(4.3 * len(CURVES), 3.8))
    axes = fig.subplots(1, len(CURVES), squeeze=False)[0]
    styles = {"real": ":", "fake": "-", "interp": "--"}
    colors = dict(zip(METHODS, ("tab:blue", "tab:red"), strict=True))
    for ax, (curve_name, curve) in zip(axes, CURVES.items(), strict=True):
        for method in METHODS:
            runs = results[f"{curve_name}/{method}"]
            steps = runs[0]["steps"]
            for point_set in POINT_SETS:
                key = f"tangent_share_{point_set}"
                mean = np.nanmean([r["curves"][key] for r in runs], axis=0)
                ax.plot(
                    steps,
                    mean,
                    styles[point_set],
                    color=colors[method],
                    lw=1.2,
                    label=f"{method}, {point_set}",
                )
        ax.axhline(1.0 / curve.dim, color="0.4", lw=0.8, label=f"isotropic 1/{curve.dim}")
        ax.set(
            title=curve_name,
            xlabel="generator step",
            ylabel="tangent share of ||∇D||²",
            yscale="log",
        )
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle("Share of the critic gradient's squared norm along the manifold")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _plot_coverage(results: dict[str, list[dict]], path: Path) -> None:
    """Coverage (TV distance) and tangential agreement over training, per curve and method."""
    fig = Figure(figsize=(4.3 * len(CURVES), 7))
    axes = fig.subplots(2, len(CURVES), squeeze=False)
    for column, curve_name in enumerate(CURVES):
        for method, color in zip(METHODS, ("tab:blue", "tab:red"), strict=True):
            runs = results[f"{curve_name}/{method}"]
            for row, key in enumerate(("tv", "agreement")):
                for index, run in enumerate(runs):
                    axes[row, column].plot(
                        run["steps"],
                        run["curves"][key],
                        color=color,
                        lw=1,
                        alpha=0.8,
                        label=method if index == 0 else None,
                    )
        axes[0, column].set(title=curve_name, ylabel="coverage TV distance (0 = uniform)")
        axes[1, column].axhline(0.5, color="0.4", lw=0.8, label="chance")
        axes[1, column].set(
            xlabel="generator step", ylabel="tangential agreement at fakes", ylim=(0, 1)
        )
        for ax in axes[:, column]:
            ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7)
    axes[1, 0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _plot_field(results: dict[str, list[dict]], path: Path) -> None:
    """The critic's gradient field over the 2-D circle, per method, at a quarter and the end."""
    field_runs = {m: results[f"{FIELD_CURVE}/{m}"][0] for m in METHODS}
    step_keys = sorted(next(iter(field_runs.values()))["fields"], key=int)
    fig = Figure(figsize=(4.2 * len(step_keys), 4.0 * len(METHODS)))
    axes = fig.subplots(len(METHODS), len(step_keys), squeeze=False)
    circle = CURVES[FIELD_CURVE].point_and_tangent(torch.linspace(0, 1, 200))[0].numpy()
    for row, (method, run) in enumerate(field_runs.items()):
        for column, step in enumerate(step_keys):
            ax = axes[row, column]
            field = run["fields"][step]
            axis = np.asarray(field["axis"])
            gx, gy = np.asarray(field["gx"]), np.asarray(field["gy"])
            magnitude = np.hypot(gx, gy)
            ax.quiver(axis, axis, gx, gy, magnitude, cmap="viridis", width=0.004)
            ax.plot(circle[:, 0], circle[:, 1], color="tab:green", lw=1.5, label="data")
            if int(step) == max(map(int, step_keys)):
                fakes = np.asarray(run["fakes"])
                ax.scatter(fakes[:, 0], fakes[:, 1], s=2, color="tab:orange", label="fakes")
            ax.set(title=f"{method}, step {step} (seed 0)", aspect="equal")
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, -1].legend(loc="upper right", fontsize=7, markerscale=3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def run(out_dir: Path, *, quick: bool = False) -> Path:
    """Train every (curve, method, seed), tabulate the late-training geometry, draw the figures.

    Args:
        out_dir: the report directory.
        quick: the seconds-long version the tests run.

    Returns:
        The path of ``report.md``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    params = QUICK if quick else ManifoldParams()
    jobs = {
        (arm, seed): (curve, method, seed, params)
        for arm, (curve, method) in arms().items()
        for seed in params.seeds
    }
    done = run_jobs(train_and_measure, jobs, workers=1, desc="manifold runs")
    results = {arm: [done[arm, seed] for seed in params.seeds] for arm in arms()}
    rows, verdicts = [], {}
    for arm, (curve_name, _) in arms().items():
        late = {
            key: [late_mean(run["curves"][key]) for run in results[arm]]
            for key in results[arm][0]["curves"]
        }
        dim = CURVES[curve_name].dim
        probe = {
            key: [run["probe"][key] for run in results[arm]]
            for key in ("tangent_share_fake", "agreement", "agreement_count")
        }
        verdicts[arm] = judge(
            statistics.fmean(late["tangent_share_fake"]), dim, statistics.fmean(probe["agreement"])
        )
        final_tv = [run["curves"]["tv"][-1] for run in results[arm]]
        rows.append(
            [
                arm,
                f"{1 / dim:.3g}",
                *(mean_std_cell(late[f"tangent_share_{s}"]) for s in POINT_SETS),
                mean_std_cell(late["gnorm_fake"]),
                mean_std_cell(late["agreement"]),
                mean_std_cell(late["agreement_count"]),
                mean_std_cell(final_tv),
                mean_std_cell(late["fake_distance"]),
                mean_std_cell(probe["tangent_share_fake"]),
                mean_std_cell(probe["agreement"]),
                verdicts[arm],
            ]
        )
    header = [
        "curve / method",
        "isotropic share 1/D",
        "tangent share at reals",
        "at fakes",
        "at interpolates",
        "‖∇D‖ at fakes",
        "tangential agreement at fakes",
        "fakes that must move",
        "coverage TV at end",
        "fake distance to curve",
        "collapsed probe: tangent share at fakes",
        "collapsed probe: agreement",
        "claim",
    ]
    figures = ["normal_tangent_split.png", "coverage_agreement.png", "gradient_field.png"]
    _plot_split(results, out_dir / figures[0])
    _plot_coverage(results, out_dir / figures[1])
    _plot_field(results, out_dir / figures[2])
    summary = _summary(verdicts)
    command = "gradpen study manifold" + (" --quick" if quick else "")
    sections = [
        f"{params.steps} generator steps, {len(params.seeds)} seed(s); numbers are means over "
        f"the last {LATE_FRACTION:.0%} of the checkpoints (every {params.measure_every} steps), "
        "then mean ± std over seeds; the coverage TV is at the last checkpoint. Tangent share: "
        "Σ(g·t)² / Σ‖g‖² (an isotropic gradient has 1/D). Tangential agreement: the fraction "
        "of fakes, among those whose optimal transport along the curve moves them more than "
        "half a coverage bin, whose tangential gradient points that way (0.5 = chance). "
        f"Collapsed probe: a fresh critic trained {params.probe_steps} steps (the arm's loss and "
        f"penalty) against fakes on the curve but only on the arc fractions "
        f"[0, {params.collapsed_arc:g}), measured at such fakes: every one of them has "
        "somewhere to go along the curve. Claim supported for an arm: tangent share at fakes "
        f"(training) below 1/D and the probe's agreement at most {0.5 + AGREEMENT_BAND:g}. "
        f"Command: `{command}`.",
        markdown_table(header, rows),
        summary,
    ]
    return report(
        out_dir,
        "Study: does the critic's gradient point along the data manifold?",
        sections,
        figures,
        {"verdicts": verdicts, "runs": results},
        settings(quick),
    )


def _summary(verdicts: dict[str, str]) -> str:
    """One paragraph: the verdict per method over the curves."""
    lines = []
    for method in METHODS:
        own = {arm: v for arm, v in verdicts.items() if arm.endswith(f"/{method}")}
        supported = sum(v == "supported" for v in own.values())
        lines.append(f"{method}: claim supported on {supported} of {len(own)} curves")
    return "Verdict: " + "; ".join(lines) + "."
