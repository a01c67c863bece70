"""Parameter-gradient-norm penalty: cost, accuracy, implicit bias (``gradpen study gradnorm``).

Three parts:

1. Cost per training step of the small CNN (batch 64) for plain SGD, the first-order
   approximation of ``grad (L + weight * ||grad L||)`` and the exact double-backprop gradient,
   as ratios to plain (medians over interleaved repeats).
2. Held-out accuracy on the 5k MNIST digits of the small CNN trained plain, with the
   approximation and with the exact penalty (SGD with momentum, mean ± std over 3 seeds).
3. Barrett & Dherin's implicit regularization on ``L(a, b) = (a b - 1)^2 / 2``: gradient descent
   with step ``h`` follows the modified flow of ``L + h/4 ||grad L||^2`` to ``O(h^2)`` but the
   flow of ``L`` only to ``O(h)``. Both flows are integrated with RK4 at step ``h/5``.

CPU budget of the full run: 9 trainings of 4 epochs (the approximation costs about 2 plain
steps, the exact gradient about 3); about 10 minutes with ``torch.set_num_threads(1)`` on the
shared 2-core machine under heavy load (load average ~17), less on an idle one.
``quick=True`` runs in seconds.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from torch import Tensor
from torch.nn import functional as F
from tqdm import tqdm

from gradpen.data.mnist import load_mnist5k, split_holdout
from gradpen.optim import GradientNormPenalty
from gradpen.robust import SmallCNN, robust_accuracy
from gradpen.robust.train import train_classifier
from gradpen.studies._toolkit import Settings, sweep_settings

Loss = Callable[[Tensor], Tensor]
VARIANTS = ("plain", "approximate", "exact")


@dataclass(frozen=True)
class GradnormConfig:
    """Everything that determines the study's numbers."""

    weight: float = 0.02
    radius: float = 0.05
    lr: float = 0.05
    momentum: float = 0.9
    epochs: int = 4
    batch_size: int = 64
    seeds: tuple[int, ...] = (0, 1, 2)
    width: int = 8
    hidden: int = 64
    timing_repeats: int = 15
    train_images: int | None = None
    step_sizes: tuple[float, ...] = (0.1, 0.05, 0.025, 0.0125)
    flow_time: float = 3.0
    holdout_fraction: float = 0.2
    split_seed: int = 0


QUICK = GradnormConfig(
    epochs=1,
    seeds=(0, 1),
    timing_repeats=3,
    train_images=128,
    step_sizes=(0.1,),
    flow_time=1.0,
)


def balanced_product_loss(theta: Tensor) -> Tensor:
    """``(a b - 1)^2 / 2``: a valley of minima ``a b = 1``, not a quadratic."""
    return 0.5 * (theta[0] * theta[1] - 1) ** 2


def _gradient(loss: Loss, theta: Tensor, create_graph: bool = False) -> Tensor:
    theta = theta if theta.requires_grad else theta.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(loss(theta), theta, create_graph=create_graph)
    return grad


def modified_gradient(loss: Loss, theta: Tensor, h: float) -> Tensor:
    """``grad (L + h/4 ||grad L||^2)`` by double backpropagation."""
    theta = theta.detach().requires_grad_(True)
    grad = _gradient(loss, theta, create_graph=True)
    modified = loss(theta) + h / 4 * grad.pow(2).sum()
    (total,) = torch.autograd.grad(modified, theta)
    return total


def _rk4(field: Callable[[Tensor], Tensor], theta: Tensor, duration: float, dt: float) -> Tensor:
    """Integrate ``d theta / dt = field(theta)`` for ``duration`` with classic RK4 steps."""
    for _ in range(round(duration / dt)):
        k1 = field(theta)
        k2 = field(theta + dt / 2 * k1)
        k3 = field(theta + dt / 2 * k2)
        k4 = field(theta + dt * k3)
        theta = theta + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return theta


def implicit_regularization(
    h: float,
    *,
    loss: Loss = balanced_product_loss,
    start: tuple[float, ...] = (2.5, 0.1),
    duration: float = 3.0,
    substeps: int = 5,
) -> dict[str, float]:
    """Largest distance, over the GD iterates ``theta_k`` (k h <= duration), from the flow of
    ``L`` and from the modified flow of ``L + h/4 ||grad L||^2`` at the same times (float64)."""
    theta_gd = theta_flow = theta_modified = torch.tensor(start, dtype=torch.float64)
    distances = {"flow": 0.0, "modified flow": 0.0}
    for _ in range(round(duration / h)):
        theta_gd = theta_gd - h * _gradient(loss, theta_gd)
        theta_flow = _rk4(lambda t: -_gradient(loss, t), theta_flow, h, h / substeps)
        theta_modified = _rk4(
            lambda t: -modified_gradient(loss, t, h), theta_modified, h, h / substeps
        )
        distances["flow"] = max(distances["flow"], float((theta_gd - theta_flow).norm()))
        distances["modified flow"] = max(
            distances["modified flow"], float((theta_gd - theta_modified).norm())
        )
    return distances


def _optimizer(config: GradnormConfig, model: torch.nn.Module, variant: str) -> GradientNormPenalty:
    sgd = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum)
    if variant == "plain":
        return GradientNormPenalty(sgd, weight=0.0)
    return GradientNormPenalty(sgd, weight=config.weight, method=variant, radius=config.radius)


def _train(config: GradnormConfig, train_set, variant: str, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = SmallCNN(width=config.width, hidden=config.hidden)
    optimizer = _optimizer(config, model, variant)

    def step(images: Tensor, labels: Tensor) -> float:
        return optimizer.step(lambda: F.cross_entropy(model(images), labels)).item()

    train_classifier(
        model,
        train_set.images,
        train_set.labels,
        step,
        epochs=config.epochs,
        batch_size=config.batch_size,
        seed=seed,
        desc=f"{variant} seed={seed}",
    )
    return model


def step_cost_ratios(config: GradnormConfig, images: Tensor, labels: Tensor) -> dict[str, float]:
    """Median seconds per step of each variant divided by plain's, timed interleaved."""
    torch.manual_seed(0)
    model = SmallCNN(width=config.width, hidden=config.hidden)
    optimizers = {v: _optimizer(config, model, v) for v in VARIANTS}
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for _ in tqdm(range(config.timing_repeats), desc="timing", leave=False):
        for variant, optimizer in optimizers.items():
            start = time.perf_counter()
            optimizer.step(lambda: F.cross_entropy(model(images), labels))
            times[variant].append(time.perf_counter() - start)
    plain = statistics.median(times["plain"])
    return {v: statistics.median(t) / plain for v, t in times.items()}


def _figure(distances: dict[float, dict[str, float]], path: Path) -> None:
    steps = sorted(distances)
    fig, ax = plt.subplots(figsize=(5, 4))
    for name in ("flow", "modified flow"):
        ax.loglog(steps, [distances[h][name] for h in steps], "o-", label=f"GD vs {name}")
    ax.set(xlabel="step size h", ylabel="max distance along the trajectory")
    ax.set_title("GD follows L + h/4 ||grad L||^2", fontsize=10)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def settings(quick: bool = False) -> Settings:
    """Each variant's settings (the shared config plus its name), as run records them."""
    config = QUICK if quick else GradnormConfig()
    return sweep_settings(config, {variant: {"variant": variant} for variant in VARIANTS})


def run(out_dir: Path, *, quick: bool = False) -> Path:
    """Run the three parts; write report.md, implicit.png and results.json into ``out_dir``."""
    config = QUICK if quick else GradnormConfig()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    train_set, test_set = split_holdout(load_mnist5k(), config.holdout_fraction, config.split_seed)
    if config.train_images is not None:
        chosen = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(0))
        train_set = type(train_set)(*train_set[chosen[: config.train_images]])
    batch = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(1))
    batch = batch[: config.batch_size]
    ratios = step_cost_ratios(config, train_set.images[batch], train_set.labels[batch])
    accuracy: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for seed in config.seeds:
        for variant in VARIANTS:
            model = _train(config, train_set, variant, seed)
            accuracy[variant].append(robust_accuracy(model, test_set.images, test_set.labels))
    distances = {
        h: implicit_regularization(h, duration=config.flow_time) for h in config.step_sizes
    }
    _figure(distances, out_dir / "implicit.png")
    (out_dir / "results.json").write_text(
        json.dumps(
            {
                "settings": settings(quick),
                "step_cost_ratio": ratios,
                "accuracy_per_seed": accuracy,
                "implicit_regularization": {f"{h:g}": d for h, d in distances.items()},
            },
            indent=2,
        )
    )
    rows = "\n".join(
        f"| {v} | {ratios[v]:.2f} | {100 * statistics.fmean(a):.1f} ± "
        f"{100 * (statistics.stdev(a) if len(a) > 1 else 0.0):.1f} |"
        for v, a in accuracy.items()
    )
    flow_rows = "\n".join(
        f"| {h:g} | {d['flow']:.2e} | {d['modified flow']:.2e} |" for h, d in distances.items()
    )
    report = out_dir / "report.md"
    report.write_text(
        "# Gradient-norm penalty on the parameters\n\n"
        f"J = L + {config.weight:g} * ||grad L||; approximation radius {config.radius:g} "
        f"(alpha = {config.weight / config.radius:g}); SGD lr {config.lr:g}, momentum "
        f"{config.momentum:g}, {config.epochs} epochs, seeds {list(config.seeds)}.\n\n"
        "| variant | cost per step / plain (median) | held-out accuracy (%) |\n"
        f"|---|---|---|\n{rows}\n\n"
        "Implicit regularization on L(a, b) = (ab - 1)^2 / 2 from (2.5, 0.1), "
        f"t <= {config.flow_time:g}: largest distance between gradient descent and each flow.\n\n"
        f"| h | GD vs flow of L | GD vs flow of L + h/4 ‖∇L‖² |\n|---|---|---|\n{flow_rows}\n\n"
        "![implicit regularization](implicit.png)\n"
    )
    return report


__all__ = ["QUICK", "GradnormConfig", "implicit_regularization", "modified_gradient", "run"]
