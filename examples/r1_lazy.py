"""R1 in your own loop, two ways: every step reusing the loss's forward, or lazily (StyleGAN2).

A non-saturating GAN on the 8 Gaussians with the R1 penalty ``gamma/2 * E ||grad D(real)||^2``:

- ``--every 1``: R1 on every critic step, taken from the loss's own forward on the reals
  (``real_scores=``), so the penalty costs no extra forward. Under ``gp.penalty_forward()`` the
  backward is cheaper still; then ``backward(inputs=critic params)`` skips the gradient into the
  reals, which nothing needs.
- ``--every k`` (k > 1): lazy regularization. The loss step has no penalty; every k-th step
  ``gp.lazy_penalty_step`` takes a separate optimizer step on ``k x`` R1, and Adam's lr and betas
  are corrected by ``k / (k + 1)`` (``gp.lazy_adam_hyperparameters``), as in StyleGAN2.

By default the script trains both (every 1, then every 16) from the same seed and prints what
each reached and what it cost.

    python examples/r1_lazy.py                          # both, under a minute of CPU time
    python examples/r1_lazy.py --steps 20 --every 4     # a smoke run of the lazy variant
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch import nn

import gradpen as gp
from gradpen.data.toys import get_toy
from gradpen.metrics.toy import toy_metrics

LR, BETAS = 1e-3, (0.5, 0.9)


def mlp(inputs: int, outputs: int, width: int) -> nn.Sequential:
    """Three hidden ReLU layers and a linear output."""
    return nn.Sequential(
        nn.Linear(inputs, width),
        nn.ReLU(),
        nn.Linear(width, width),
        nn.ReLU(),
        nn.Linear(width, width),
        nn.ReLU(),
        nn.Linear(width, outputs),
    )


def train(steps: int, every: int, gamma: float, seed: int) -> dict[str, float]:
    """Train one GAN with R1 applied every ``every`` critic steps; return its toy metrics."""
    torch.manual_seed(seed)
    data = get_toy("8gaussians")
    generator, critic = mlp(2, 2, 256), mlp(2, 1, 128)
    params = list(critic.parameters())
    g_opt = torch.optim.Adam(generator.parameters(), lr=LR, betas=BETAS)
    # Lazy regularization steps the critic k/(k+1) times as often per loss step: StyleGAN2
    # corrects lr and betas so the optimizer's horizon is unchanged (a no-op for every=1).
    lr, betas = gp.lazy_adam_hyperparameters(LR, BETAS, every)
    d_opt = torch.optim.Adam(params, lr=lr, betas=betas)
    r1 = gp.Penalty("r1", weight=gamma, every=every)  # weight is gamma: gamma/2 * mean ||g||^2
    batch = 256
    # Both learning rates decay linearly to 0: the samples sharpen onto the modes at the end.
    decays = [
        torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 1 - i / steps) for opt in (g_opt, d_opt)
    ]

    start = time.perf_counter()
    for step in range(steps):
        real = data.sample(batch)
        with torch.no_grad():
            fake = generator(torch.randn(batch, 2))
        if every == 1:
            # Forward reuse: the reals' scores feed both the loss and R1.
            real.requires_grad_(True)
            with gp.penalty_forward(critic=critic):
                real_scores = critic(real)
            term = r1(critic, real=real, real_scores=real_scores, step=step)
        else:
            real_scores, term = critic(real), torch.zeros(())
        d_loss = F.softplus(critic(fake)).mean() + F.softplus(-real_scores).mean() + term
        d_opt.zero_grad(set_to_none=True)
        d_loss.backward(inputs=params)  # no gradient into `real` (nor into the generator)
        d_opt.step()
        if every > 1:
            # k x R1 on every k-th step, with its own optimizer step; nothing on the others.
            gp.lazy_penalty_step(r1, critic, d_opt, step=step, real=real)

        g_loss = F.softplus(-critic(generator(torch.randn(batch, 2)))).mean()
        g_opt.zero_grad(set_to_none=True)
        g_loss.backward(inputs=list(generator.parameters()))
        g_opt.step()
        for decay in decays:
            decay.step()
    seconds = time.perf_counter() - start

    with torch.no_grad():
        samples = generator(torch.randn(2500, 2))
    return {**toy_metrics(samples, data, real=data.sample(2500)), "seconds": seconds}


def main(argv: list[str] | None = None) -> dict[int, dict[str, float]]:
    """Train each requested variant; print and return its metrics and time."""
    parser = argparse.ArgumentParser(description="R1 with forward reuse and lazily, 8 Gaussians")
    parser.add_argument("--steps", type=int, default=1500, help="critic (= generator) steps")
    parser.add_argument(
        "--every", type=int, nargs="+", default=[1, 16], help="R1 intervals to train with"
    )
    parser.add_argument("--gamma", type=float, default=0.1, help="R1 weight gamma")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # small MLPs run fastest on one thread

    results = {}
    for every in args.every:
        result = train(args.steps, every, args.gamma, args.seed)
        how = "every step, reusing the loss forward" if every == 1 else f"lazy, every {every}"
        print(
            f"R1 gamma={args.gamma} {how}: {args.steps} steps in {result['seconds']:.1f} s, "
            f"modes covered {result['modes_covered']}/8, "
            f"high quality {100 * result['high_quality']:.1f}%, W1 {result['w1']:.3f}"
        )
        results[every] = result
    return results


if __name__ == "__main__":
    main()
