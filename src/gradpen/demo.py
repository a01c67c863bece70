"""``gradpen demo``: a short 25-gaussians WGAN-GP run on the training engine.

The embedded recipe is a smaller, shorter cousin of configs/toy/25gaussians.toml, sized to end
in about a minute on 2 CPU cores (61 s wall measured at load average ~4); it prints the toy
metrics and where its plots are.
"""

from __future__ import annotations

from pathlib import Path

from gradpen.errors import UserError

DEMO_STEPS = 2500
DEMO_OUT = Path("runs") / "demo"
# A 3 x 128 MLP pair, lambda 0.1, 3 critic steps, Adam 1e-3 decayed linearly to 0, one thread.
DEMO_SETTINGS = [
    "data.name='25gaussians'",
    "generator.width=128",
    "generator.depth=3",
    "critic.width=128",
    "critic.depth=3",
    "train.n_critic=3",
    "train.batch_size=256",
    "train.g_lr=1e-3",
    "train.d_lr=1e-3",
    "train.lr_decay='linear'",
    "penalty.name='wgan-gp'",
    "penalty.weight=0.1",
    "log.eval_samples=2500",
    "train.threads=1",
]


def fresh_run_dir(base: Path) -> Path:
    """``base`` if it holds no run yet, else the first free ``base-1``, ``base-2``, ..."""
    candidate, index = base, 0
    while (candidate / "config.toml").exists() or (candidate / "checkpoints").exists():
        index += 1
        candidate = base.with_name(f"{base.name}-{index}")
    return candidate


def run_demo(
    seed: int = 0, out: str | Path | None = None, steps: int = DEMO_STEPS, progress: bool = True
) -> str:
    """Train the demo recipe into a fresh run directory; returns the report to print."""
    from gradpen.train import train

    if steps < 1:
        raise UserError(f"--steps must be >= 1, got {steps}")
    run_dir = fresh_run_dir(Path(out) if out is not None else DEMO_OUT)
    every = max(1, min(100, steps))
    overrides = [
        *DEMO_SETTINGS,
        f"seed={seed}",
        f"train.steps={steps}",
        f"log.every={every}",
        f"log.checkpoint_every={steps}",
        f"log.progress={'true' if progress else 'false'}",
    ]
    trainer, summary = train(None, overrides, out=run_dir)
    toy = trainer.data.toy
    total_modes = len(toy.centers) if toy is not None and toy.centers is not None else 0
    lines = [
        f"25 gaussians, WGAN-GP (lambda 0.1), {summary['step']} generator steps, seed {seed}",
        f"modes covered: {summary['modes_covered']}/{total_modes}",
        f"high quality:  {100 * summary['high_quality']:.1f}%",
        f"W1:            {summary['w1']:.4f}",
        *(f"plot: {path}" for path in summary["plots"]),
        f"run directory: {trainer.run_dir}",
    ]
    return "\n".join(lines)
