"""WGAN-GP in a Hugging Face Accelerate loop, with or without mixed precision.

How the penalty meets Accelerate:

- ``accelerator.prepare`` wraps the critic's forward in autocast (and in DDP on several
  processes); the penalty calls that same wrapped critic, so its forward runs in the same
  precision, and its term joins the loss in the one ``accelerator.backward(d_loss)``, which
  also all-reduces its effect on the weights under DDP.
- ``accelerator.backward`` multiplies the loss by the fp16 ``GradScaler`` before backward; the
  input gradient inside the penalty is an ``autograd.grad`` call of its own, which that scaler
  never sees. With ``mixed_precision="fp16"`` (GPU only) pass ``scaler=accelerator.scaler`` to
  ``gp.Penalty``: it scales the critic's scores before ``autograd.grad``, unscales the gradient
  out of place and takes the norm in float32 (PyTorch's gradient-penalty recipe); on a step
  whose scaled gradient overflows, the scaler skips the step as usual. ``"bf16"`` (CPU or GPU)
  and ``"no"`` have no scaler (``accelerator.scaler`` is ``None``) and need nothing.

Needs ``pip install 'gradpen[examples]'``. On a CPU use ``--precision no`` or ``bf16``.

    python examples/accelerate_gan.py                    # float32, under a minute of CPU time
    python examples/accelerate_gan.py --precision bf16 --steps 300   # bf16 autocast (on a CPU,
                                                                     # slower for these tiny MLPs)
    python examples/accelerate_gan.py --steps 10         # a smoke run
"""

from __future__ import annotations

import argparse
import time

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch import nn

import gradpen as gp
from gradpen.data.toys import get_toy
from gradpen.metrics.toy import toy_metrics


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


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Train with Accelerate; print and return the toy metrics."""
    parser = argparse.ArgumentParser(description="WGAN-GP in an Accelerate loop, 8 Gaussians")
    parser.add_argument("--steps", type=int, default=1500, help="generator steps")
    parser.add_argument("--n-critic", type=int, default=2, help="critic steps per generator step")
    parser.add_argument("--precision", choices=["no", "bf16", "fp16"], default="no")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    set_seed(args.seed)
    torch.set_num_threads(1)  # small MLPs run fastest on one thread

    accelerator = Accelerator(mixed_precision=args.precision)
    data = get_toy("8gaussians")
    generator, critic = mlp(2, 2, 256), mlp(2, 1, 128)
    g_opt = torch.optim.Adam(generator.parameters(), lr=1e-3, betas=(0.5, 0.9))
    d_opt = torch.optim.Adam(critic.parameters(), lr=1e-3, betas=(0.5, 0.9))
    generator, critic, g_opt, d_opt = accelerator.prepare(generator, critic, g_opt, d_opt)
    # fp16 only: the penalty's own autograd.grad must be scaled too (None otherwise).
    penalty = gp.Penalty("wgan-gp", weight=0.1, scaler=accelerator.scaler)
    batch, device = 256, accelerator.device
    # Both learning rates decay linearly to 0: the samples sharpen onto the modes at the end.
    decays = [
        torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 1 - i / args.steps)
        for opt in (g_opt, d_opt)
    ]

    start = time.perf_counter()
    step = 0
    for _ in range(args.steps):
        for _ in range(args.n_critic):
            real = data.sample(batch).to(device)
            with torch.no_grad():
                fake = generator(torch.randn(batch, 2, device=device)).float()
            term = penalty(critic, real=real, fake=fake, step=step)
            d_loss = critic(fake).mean() - critic(real).mean() + term
            d_opt.zero_grad(set_to_none=True)
            accelerator.backward(d_loss)  # scales (fp16) and backpropagates loss + penalty
            d_opt.step()
            step += 1
        g_loss = -critic(generator(torch.randn(batch, 2, device=device))).mean()
        g_opt.zero_grad(set_to_none=True)
        accelerator.backward(g_loss)
        g_opt.step()
        for decay in decays:
            decay.step()
    seconds = time.perf_counter() - start

    with torch.no_grad():
        samples = accelerator.unwrap_model(generator)(torch.randn(2500, 2, device=device))
    result = toy_metrics(samples.float(), data, real=data.sample(2500))
    accelerator.print(
        f"Accelerate WGAN-GP (mixed_precision={args.precision}), 8 gaussians, {args.steps} "
        f"generator steps in {seconds:.1f} s: modes covered {result['modes_covered']}/8, "
        f"high quality {100 * result['high_quality']:.1f}%, W1 {result['w1']:.3f} "
        f"(penalty term dtype {term.dtype})"
    )
    return {**result, "seconds": seconds}


if __name__ == "__main__":
    main()
