"""WGAN-GP in a plain PyTorch loop, on the 8 Gaussians (Gulrajani et al. 2017, Algorithm 1).

Everything here is an ordinary training loop; gradpen contributes one line, the penalty term
added to the critic's loss. The toy data and the metrics come from gradpen for brevity.

    python examples/plain_wgan_gp.py              # 1500 generator steps, under a minute of CPU time
    python examples/plain_wgan_gp.py --steps 20   # a smoke run
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

import gradpen as gp
from gradpen.data.toys import get_toy
from gradpen.metrics.toy import toy_metrics


def mlp(inputs: int, outputs: int, width: int) -> nn.Sequential:
    """Three hidden ReLU layers, a linear output: the toy networks of the WGAN-GP paper."""
    return nn.Sequential(
        nn.Linear(inputs, width),
        nn.ReLU(),
        nn.Linear(width, width),
        nn.ReLU(),
        nn.Linear(width, width),
        nn.ReLU(),
        nn.Linear(width, outputs),
    )


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Train, then print and return the modes covered, % high-quality samples and W1."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500, help="generator steps")
    parser.add_argument("--n-critic", type=int, default=2, help="critic steps per generator step")
    parser.add_argument("--weight", type=float, default=0.1, help="the penalty weight lambda")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    torch.set_num_threads(1)  # small MLPs run fastest on one thread
    data = get_toy("8gaussians")
    generator, critic = mlp(2, 2, 256), mlp(2, 1, 128)
    g_opt = torch.optim.Adam(generator.parameters(), lr=1e-3, betas=(0.5, 0.9))
    d_opt = torch.optim.Adam(critic.parameters(), lr=1e-3, betas=(0.5, 0.9))
    # The penalty: lambda * mean((||grad D(x_hat)|| - 1)^2) at random interpolates x_hat,
    # one epsilon per sample. The critic returns (B, 1); gradpen sums each sample's outputs.
    penalty = gp.Penalty("wgan-gp", weight=args.weight)
    batch = 256
    # Both learning rates decay linearly to 0: the samples sharpen onto the modes at the end.
    decays = [
        torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 1 - i / args.steps)
        for opt in (g_opt, d_opt)
    ]

    start = time.perf_counter()
    step = 0
    for _ in range(args.steps):
        for _ in range(args.n_critic):
            real = data.sample(batch)
            with torch.no_grad():
                fake = generator(torch.randn(batch, 2))
            # Compute the penalty first, then the loss; one backward serves both.
            term = penalty(critic, real=real, fake=fake, step=step)
            d_loss = critic(fake).mean() - critic(real).mean() + term
            d_opt.zero_grad(set_to_none=True)
            d_loss.backward()
            d_opt.step()
            step += 1
        # The generator step: the critic's parameters get gradients too, but d_opt zeroes them.
        g_loss = -critic(generator(torch.randn(batch, 2))).mean()
        g_opt.zero_grad(set_to_none=True)
        g_loss.backward()
        g_opt.step()
        for decay in decays:
            decay.step()
    seconds = time.perf_counter() - start

    with torch.no_grad():
        samples = generator(torch.randn(2500, 2))
    result = toy_metrics(samples, data, real=data.sample(2500))
    print(
        f"plain WGAN-GP, 8 gaussians, {args.steps} generator steps in {seconds:.1f} s: "
        f"modes covered {result['modes_covered']}/8, "
        f"high quality {100 * result['high_quality']:.1f}%, W1 {result['w1']:.3f} "
        f"(last penalty term {term.item():.4f}, critic loss {d_loss.item():.4f})"
    )
    return {**result, "seconds": seconds}


if __name__ == "__main__":
    main()
