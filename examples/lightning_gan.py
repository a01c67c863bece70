"""WGAN-GP in a PyTorch Lightning module, with manual optimization (a GAN has two optimizers).

``automatic_optimization = False`` hands the steps to ``training_step``: the critic's loss with
the penalty term goes through ``self.manual_backward`` like any loss (it handles precision
plugins and strategies; under DDP the penalty reaches every rank through that one backward).
Pass the penalty a step counter of your own: with manual optimization Lightning's
``global_step`` counts optimizer steps, not batches. Needs ``pip install 'gradpen[examples]'``.

    python examples/lightning_gan.py              # 1500 generator steps, under a minute of CPU time
    python examples/lightning_gan.py --steps 10   # a smoke run
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, IterableDataset

import gradpen as gp
from gradpen.data.toys import ToyDistribution, get_toy
from gradpen.metrics.toy import toy_metrics


class ToyStream(IterableDataset):
    """An endless stream of batches ``(batch, 2)`` from a toy distribution."""

    def __init__(self, data: ToyDistribution, batch: int) -> None:
        self.data, self.batch = data, batch

    def __iter__(self) -> Iterator[Tensor]:
        while True:
            yield self.data.sample(self.batch)


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


class WGANGP(pl.LightningModule):
    """A WGAN-GP whose critic takes ``n_critic`` steps per generator step, one per batch."""

    def __init__(
        self, steps: int, weight: float = 0.1, n_critic: int = 2, lr: float = 1e-3
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.generator, self.critic = mlp(2, 2, 256), mlp(2, 1, 128)
        self.penalty = gp.Penalty("wgan-gp", weight=weight)
        self.steps, self.n_critic, self.lr = steps, n_critic, lr
        self.critic_steps = 0  # the penalty's step (matters once the penalty is lazy)

    def configure_optimizers(self) -> tuple[list[torch.optim.Optimizer], list[Any]]:
        """Adam for the generator and the critic, in that order, each decayed linearly to 0."""
        betas = (0.5, 0.9)
        optimizers = [
            torch.optim.Adam(self.generator.parameters(), lr=self.lr, betas=betas),
            torch.optim.Adam(self.critic.parameters(), lr=self.lr, betas=betas),
        ]
        decays = [
            torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 1 - i / self.steps)
            for opt in optimizers
        ]
        return optimizers, decays

    def training_step(self, real: Tensor, batch_idx: int) -> None:
        """One critic step on ``real``; every ``n_critic``-th batch also a generator step."""
        g_opt, d_opt = self.optimizers()
        noise = torch.randn(len(real), 2, device=real.device)
        with torch.no_grad():
            fake = self.generator(noise)
        term = self.penalty(self.critic, real=real, fake=fake, step=self.critic_steps)
        d_loss = self.critic(fake).mean() - self.critic(real).mean() + term
        d_opt.zero_grad()
        self.manual_backward(d_loss)  # one backward for loss + penalty, as in plain PyTorch
        d_opt.step()
        self.critic_steps += 1
        self.log_dict({"d_loss": d_loss.detach(), "penalty": term.detach()})

        if (batch_idx + 1) % self.n_critic == 0:
            # Freeze the critic so the generator step computes no critic gradients.
            self.critic.requires_grad_(False)
            g_loss = -self.critic(self.generator(torch.randn_like(noise))).mean()
            g_opt.zero_grad()
            self.manual_backward(g_loss)
            g_opt.step()
            self.critic.requires_grad_(True)
            # Manual optimization steps the schedulers too: once per generator step.
            for decay in self.lr_schedulers():
                decay.step()


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Fit with a Lightning Trainer on CPU; print and return the toy metrics."""
    parser = argparse.ArgumentParser(description="WGAN-GP as a Lightning module, 8 Gaussians")
    parser.add_argument("--steps", type=int, default=1500, help="generator steps")
    parser.add_argument("--n-critic", type=int, default=2, help="critic steps per generator step")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    pl.seed_everything(args.seed, verbose=False)
    torch.set_num_threads(1)  # small MLPs run fastest on one thread

    data = get_toy("8gaussians")
    model = WGANGP(args.steps, n_critic=args.n_critic)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=1,
        # One batch per critic step; manual optimization would count each optimizer's steps.
        limit_train_batches=args.steps * args.n_critic,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    start = time.perf_counter()
    trainer.fit(model, DataLoader(ToyStream(data, 256), batch_size=None))
    seconds = time.perf_counter() - start

    with torch.no_grad():
        samples = model.generator(torch.randn(2500, 2))
    result = toy_metrics(samples, data, real=data.sample(2500))
    print(
        f"Lightning WGAN-GP, 8 gaussians, {args.steps} generator steps "
        f"({model.critic_steps} critic steps) in {seconds:.1f} s: "
        f"modes covered {result['modes_covered']}/8, "
        f"high quality {100 * result['high_quality']:.1f}%, W1 {result['w1']:.3f}"
    )
    return {**result, "seconds": seconds}


if __name__ == "__main__":
    main()
