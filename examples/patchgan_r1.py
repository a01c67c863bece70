"""R1 with a PatchGAN critic: the critic returns a map of patch scores, not one score.

A PatchGAN critic (pix2pix, VQGAN) scores every patch of an image, so it returns ``(B, 1, h, w)``.
gradpen penalizes the gradient of each sample's summed patch scores (``reduce="sum"``, the
gradient of ``logits.sum()``) or of their mean (``reduce="mean"``), and ``gradpen.losses``
averages a loss over batch and patches. Nothing needs reshaping.

The data are scikit-learn's bundled 8x8 digits, upsampled to 16x16 (no download). The script
trains a small convolutional GAN with the non-saturating loss and R1, then reports how close its
samples are to real digits, and checks that ``reduce="sum"`` is (number of patches)^2 times
``reduce="mean"`` for this critic.

    python examples/patchgan_r1.py              # 600 steps, under a minute of CPU time
    python examples/patchgan_r1.py --steps 10   # a smoke run
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import gradpen as gp
from gradpen import losses
from gradpen.data import load_sklearn_digits

NOISE = 32


class PatchCritic(nn.Module):
    """A tiny PatchGAN critic: 16x16 images to a (B, 1, 4, 4) map of overlapping patch scores.

    No batch norm: it mixes samples, and gradpen refuses it in a penalized critic.
    """

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(1, width, 4, stride=2, padding=1),  # 16 -> 8
            nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 4, stride=2, padding=1),  # 8 -> 4
            nn.GroupNorm(1, 2 * width),  # layer norm per sample: safe under the penalty
            nn.LeakyReLU(0.2),
            nn.Conv2d(2 * width, 1, 3, padding=1),  # 4 -> 4 patch scores
        )

    def forward(self, images: Tensor) -> Tensor:
        """Patch scores, shape (B, 1, 4, 4)."""
        return self.layers(images)


def make_generator(width: int = 64) -> nn.Sequential:
    """Noise (B, NOISE) to images (B, 1, 16, 16) in [-1, 1]."""
    return nn.Sequential(
        nn.Linear(NOISE, 2 * width * 4 * 4),
        nn.ReLU(),
        nn.Unflatten(1, (2 * width, 4, 4)),
        nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1),  # 4 -> 8
        nn.ReLU(),
        nn.ConvTranspose2d(width, 1, 4, stride=2, padding=1),  # 8 -> 16
        nn.Tanh(),
    )


def nearest_distance(samples: Tensor, reference: Tensor) -> float:
    """Mean L2 distance from each sample to its nearest reference image."""
    return torch.cdist(samples.flatten(1), reference.flatten(1)).min(dim=1).values.mean().item()


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Train; print and return distances to the nearest real digit and the reduce check."""
    parser = argparse.ArgumentParser(description="R1 with a PatchGAN critic on 16x16 digits")
    parser.add_argument("--steps", type=int, default=600, help="critic (= generator) steps")
    parser.add_argument("--gamma", type=float, default=1.0, help="R1 weight gamma")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    torch.set_num_threads(1)  # small convolutions: one thread is enough

    digits = load_sklearn_digits().images  # (1797, 1, 8, 8) in [0, 1]
    images = F.interpolate(digits, size=16, mode="bilinear", align_corners=False) * 2 - 1
    order = torch.randperm(len(images))
    train_set, held_out = images[order[:1500]], images[order[1500:]]

    generator, critic = make_generator(), PatchCritic()
    g_opt = torch.optim.Adam(generator.parameters(), lr=2e-4, betas=(0.5, 0.99))
    d_opt = torch.optim.Adam(critic.parameters(), lr=2e-4, betas=(0.5, 0.99))
    # R1 on the reals, gamma/2 * mean ||grad||^2, of each image's summed patch scores.
    r1 = gp.Penalty("r1", weight=args.gamma, reduce="sum")
    batch = 64

    def sample(n: int) -> Tensor:
        with torch.no_grad():
            return generator(torch.randn(n, NOISE))

    before = nearest_distance(sample(300), train_set)
    start = time.perf_counter()
    for step in range(args.steps):
        real = train_set[torch.randint(len(train_set), (batch,))]
        fake = sample(batch)
        term = r1(critic, real=real, step=step)
        # losses.d_loss takes the (B, 1, 4, 4) maps as they are: the mean over batch and patches.
        d_loss = losses.d_loss("ns", critic(real), critic(fake)) + term
        d_opt.zero_grad(set_to_none=True)
        d_loss.backward()
        d_opt.step()

        g_loss = losses.g_loss("ns", critic(generator(torch.randn(batch, NOISE))))
        g_opt.zero_grad(set_to_none=True)
        g_loss.backward(inputs=list(generator.parameters()))
        g_opt.step()
    seconds = time.perf_counter() - start

    after = nearest_distance(sample(300), train_set)
    floor = nearest_distance(held_out, train_set)  # what real digits achieve
    # The per-sample R1 of summed patch scores is patches^2 times that of their mean.
    probe = train_set[:8]
    patches = critic(probe)[0].numel()
    ratio = (gp.r1(critic, probe, reduce="sum") / gp.r1(critic, probe, reduce="mean")).mean()
    print(
        f"PatchGAN + R1 (gamma={args.gamma}), {args.steps} steps in {seconds:.1f} s: "
        f"critic output {tuple(critic(probe).shape)}; mean distance to the nearest training "
        f"digit {before:.2f} before training, {after:.2f} after (held-out real digits: "
        f"{floor:.2f}); R1 sum/mean ratio {ratio.item():.1f} = {patches}^2"
    )
    return {"before": before, "after": after, "floor": floor, "ratio": ratio.item()}


if __name__ == "__main__":
    main()
