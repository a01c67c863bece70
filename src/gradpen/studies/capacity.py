"""``gradpen study capacity``: does lambda set how fine a detail the critic can see?

The claim under test (the reference material on the gradient penalty): a weak penalty lets the
critic become hypersensitive to fine, nearly invisible detail (texture); a strong one forces it
to ignore fine detail and look at coarse structure.

Setting. DCGAN-28 critics (:func:`gradpen.nets.build_critic`, width 32, no norm) are trained
with the Wasserstein loss and :class:`gradpen.Penalty` ``("wgan-gp", weight=lambda)`` for
lambda in {0.1, 1, 10, 100}, three seeds each, between the 4000 training digits of the 5k MNIST
set and a *fixed* pool of 4000 fakes. The fakes come from one DCGAN-28 generator trained briefly
through the engine (the WGAN-GP recipe of ``configs/mnist/wgangp.toml``, lambda 10, at width 32
for 200 generator steps): they are digit-like in layout but wrong in stroke shape and texture, as
a GAN's fakes are while the critic is shaping them, so the critic can tell them apart by coarse
structure or by fine detail, and which one it uses is what is measured. Fixed fakes take the
generator's co-adaptation out of the comparison; every critic sees the same fakes.

Measured on 256 held-out digits (not seen by the critics or the generator):

* the radial power spectrum of the input gradient ``grad_x D(x)`` at the reals: the energy of
  each 2-D DFT coefficient (orthonormal, so it sums to ``||grad||^2``) grouped by its radial
  frequency ``rho = sqrt(fx^2 + fy^2)`` in cycles per pixel (``fx, fy`` in [-1/2, 1/2)). *Fine*:
  ``rho > 1/4`` (periods shorter than 4 pixels, stroke texture and edges); *coarse*:
  ``rho <= 1/8`` (periods of 8 pixels and more: where the strokes are, the constant included).
  The statistic is each image's fraction of gradient energy in a band, averaged over images, so
  it does not depend on the gradient's overall scale (which lambda also changes).
* the gradient's share on the stride lattice: the frequencies that are multiples of 1/4 in
  both axes, where DCGAN-28's two stride-2 convolutions put a checkerboard (an artifact of the
  architecture, not of the data).
* the critic's response to three perturbations of equal L2 norm per image: a quarter-pixel
  translation of the digit (bilinear, ``delta = (shift(x) - x) / 4``, in each of the four axis
  directions: a structural change that moves every stroke), fine noise (Gaussian noise keeping
  only the DFT coefficients with ``rho > 1/4``), and coarse noise (only ``rho <= 1/8``), each
  rescaled to the translation's norm. The slope along ``delta`` is the odd part of the response,
  ``|D(x + delta) - D(x - delta)| / 2``, the curvature its even part (see :func:`responses`);
  the slope ratios fine / translation and fine / coarse are scale-free.

The claim predicts that the fine fraction and both ratios fall as lambda grows.

CPU budget of the full run: the generator (1000 critic + 200 generator steps at width 32,
~0.08 s per critic step single-threaded on an idle core) about 1.5 minutes; 12 critics of
1000 steps at ~0.075 s each about 15 minutes; the measurements seconds. About 17 CPU minutes
on one idle core of the 2-core machine, single-threaded (more wall time under load).
``quick=True`` (tiny networks, a few steps, 16 probe digits) runs in seconds.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from torch import Tensor, nn
from torch.nn import functional as F
from tqdm import tqdm

from gradpen.gradients import input_gradient
from gradpen.losses import d_loss
from gradpen.nets import build_critic
from gradpen.penalties import grad_norm
from gradpen.penalty import Penalty
from gradpen.plots import save_image_grid
from gradpen.report import markdown_table, save_figure
from gradpen.studies._toolkit import (
    Settings,
    engine_config,
    mean_std,
    mean_std_cell,
    report,
    sweep_settings,
)
from gradpen.train.config import Config, to_dict
from gradpen.train.loop import Trainer

PERTURBATIONS = ("translation", "fine", "coarse")
DIRECTIONS = ((1, 0), (-1, 0), (0, 1), (0, -1))  # (dx, dy) of the one-pixel shift


@dataclass(frozen=True)
class CapacityConfig:
    """Everything that determines the study's numbers (lambdas and seeds included)."""

    lambdas: tuple[float, ...] = (0.1, 1.0, 10.0, 100.0)
    seeds: tuple[int, ...] = (0, 1, 2)
    critic_width: int = 32
    critic_steps: int = 1000
    batch_size: int = 64
    lr: float = 1e-4
    betas: tuple[float, float] = (0.5, 0.9)
    checkpoints: int = 8  # times during training the fine fraction is measured
    generator_steps: int = 200  # engine generator steps, 5 critic steps each
    generator_width: int = 32
    fake_pool: int = 4000
    probe_images: int = 256
    fine_above: float = 0.25  # cycles per pixel
    coarse_up_to: float = 0.125  # cycles per pixel
    shift_fraction: float = 0.25  # pixels of the bilinear translation
    probe_seed: int = 0


QUICK = CapacityConfig(
    lambdas=(0.1, 100.0),
    seeds=(0,),
    critic_width=4,
    critic_steps=6,
    batch_size=16,
    checkpoints=2,
    generator_steps=2,
    generator_width=4,
    fake_pool=64,
    probe_images=16,
)


# --- spectra -------------------------------------------------------------------------------


def radial_frequency(side: int) -> Tensor:
    """The radial frequency of each coefficient of a ``side x side`` 2-D DFT.

    Args:
        side: the image's height and width.

    Returns:
        ``rho = sqrt(fx^2 + fy^2)`` in cycles per pixel, shape ``(side, side)``, float64, laid
        out as ``torch.fft.fft2`` lays out its coefficients (``fx, fy`` in [-1/2, 1/2)).
    """
    frequencies = torch.fft.fftfreq(side, dtype=torch.float64)
    fy, fx = torch.meshgrid(frequencies, frequencies, indexing="ij")
    return torch.sqrt(fx**2 + fy**2)


def _square_side(images: Tensor) -> int:
    if images.ndim != 4 or images.shape[-1] != images.shape[-2]:
        raise ValueError(f"expected square images (B, C, N, N), got {tuple(images.shape)}")
    return images.shape[-1]


def power_spectrum(images: Tensor) -> Tensor:
    """Energy of each 2-D DFT coefficient, summed over channels.

    The transform is orthonormal, so each image's energies sum to its squared L2 norm.

    Args:
        images: square images, shape ``(B, C, N, N)``.

    Returns:
        ``|DFT|^2``, shape ``(B, N, N)``, float64.
    """
    _square_side(images)
    return torch.fft.fft2(images.double(), norm="ortho").abs().pow(2).sum(dim=1)


def radial_power_spectrum(images: Tensor) -> Tensor:
    """Each image's energy per ring of radial frequency.

    Ring ``k`` holds the coefficients with ``round(N * rho) == k``, i.e. radial frequency
    ``k / N`` cycles per pixel to the nearest ``1 / N``; a sinusoid of ``k`` periods across the
    image (along an axis, or ``(a, b)`` periods with ``a^2 + b^2 = k^2``) lies in ring ``k``.

    Args:
        images: square images, shape ``(B, C, N, N)``.

    Returns:
        Energies, shape ``(B, R)`` with ``R = round(N / sqrt(2)) + 1`` rings; each row sums to
        the image's squared L2 norm.
    """
    side = _square_side(images)
    rings = torch.round(radial_frequency(side) * side).long().flatten()
    power = power_spectrum(images).flatten(1)
    energy = power.new_zeros(power.shape[0], int(rings.max()) + 1)
    return energy.index_add_(1, rings, power)


def energy_fraction(images: Tensor, coefficients: Tensor) -> Tensor:
    """Each image's fraction of energy in the chosen DFT coefficients.

    Args:
        images: square images, shape ``(B, C, N, N)``; a zero image has fraction 0.
        coefficients: a boolean mask over the DFT layout, shape ``(N, N)``.

    Returns:
        Fractions in [0, 1], shape ``(B,)``, float64.
    """
    power = power_spectrum(images)
    total = power.sum(dim=(1, 2))
    return power[:, coefficients].sum(dim=1) / total.clamp_min(torch.finfo(total.dtype).tiny)


def energy_fraction_above(images: Tensor, cut: float) -> Tensor:
    """Each image's fraction of energy at radial frequency ``rho > cut`` (cycles per pixel).

    Args:
        images: square images, shape ``(B, C, N, N)``.
        cut: the radial frequency, cycles per pixel.

    Returns:
        Fractions in [0, 1], shape ``(B,)``, float64.
    """
    return energy_fraction(images, radial_frequency(images.shape[-1]) > cut)


def stride_lattice(side: int, period: int = 4) -> Tensor:
    """The non-constant DFT coefficients whose frequencies are multiples of ``1 / period``.

    A stack of strided convolutions with total stride ``period`` (4 for DCGAN-28's two stride-2
    layers) repeats its input gradient's pattern on a ``period``-pixel grid, which puts energy at
    exactly these frequencies (the checkerboard of transposed and strided convolutions).

    Args:
        side: the image side, a multiple of ``period``.
        period: the grid's period in pixels.

    Returns:
        A boolean mask, shape ``(side, side)``, with ``period^2 - 1`` entries set.
    """
    if side % period:
        raise ValueError(f"side {side} is not a multiple of the period {period}")
    on_grid = torch.arange(side) % (side // period) == 0
    lattice = on_grid[:, None] & on_grid[None, :]
    lattice[0, 0] = False
    return lattice


# --- perturbations of equal norm --------------------------------------------------------------


def shift_one_pixel(images: Tensor, dx: int, dy: int) -> Tensor:
    """The images moved by ``dx`` pixels right and ``dy`` down, zeros shifted in.

    Args:
        images: shape ``(B, C, H, W)``.
        dx: -1, 0 or 1.
        dy: -1, 0 or 1.

    Returns:
        Shape ``(B, C, H, W)``: ``out[..., i, j] = images[..., i - dy, j - dx]`` (0 outside).
    """
    if dx not in (-1, 0, 1) or dy not in (-1, 0, 1):
        raise ValueError(f"shifts are by at most one pixel, got dx={dx}, dy={dy}")
    height, width = images.shape[-2:]
    padded = F.pad(images, (1, 1, 1, 1))
    return padded[..., 1 - dy : 1 - dy + height, 1 - dx : 1 - dx + width]


def band_noise(shape: Sequence[int], low: float, high: float, generator: torch.Generator) -> Tensor:
    """Gaussian white noise keeping only the DFT coefficients with ``low < rho <= high``.

    Args:
        shape: ``(B, C, N, N)``.
        low: the band's lower edge, cycles per pixel (excluded; -1 keeps the constant).
        high: the band's upper edge, cycles per pixel (included; ``inf`` for no edge).
        generator: the random stream.

    Returns:
        Real noise of ``shape``, float32, with no energy outside the band.
    """
    noise = torch.randn(*shape, generator=generator, dtype=torch.float64)
    rho = radial_frequency(shape[-1])
    band = (rho > low) & (rho <= high)  # symmetric under f -> -f, so the inverse is real
    return torch.fft.ifft2(torch.fft.fft2(noise) * band).real.float()


def scaled_to_norm(delta: Tensor, norms: Tensor) -> Tensor:
    """``delta`` with each sample rescaled to the L2 norm ``norms[i]``.

    Args:
        delta: shape ``(B, ...)``, no sample zero.
        norms: the target norms, shape ``(B,)``.

    Returns:
        Shape ``(B, ...)``.
    """
    factor = norms / grad_norm(delta)
    return delta * factor.view(-1, *([1] * (delta.ndim - 1)))


def matched_perturbations(
    images: Tensor,
    *,
    shift_fraction: float,
    fine_above: float,
    coarse_up_to: float,
    generator: torch.Generator,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Three perturbations of each image with equal L2 norm, one set per shift direction.

    Args:
        images: shape ``(B, C, N, N)``.
        shift_fraction: the bilinear translation, in pixels (0 < t <= 1).
        fine_above: fine noise keeps the coefficients with ``rho`` above this.
        coarse_up_to: coarse noise keeps those with ``rho`` up to this (the constant included).
        generator: the noise's random stream.

    Returns:
        The images repeated once per direction of :data:`DIRECTIONS`, shape ``(4B, C, N, N)``
        (direction-major), and ``{"translation", "fine", "coarse"}``, each ``(4B, C, N, N)``:
        ``t * (shift(x) - x)``, and the two noises rescaled to its per-sample norm.
    """
    bases = torch.cat([images] * len(DIRECTIONS))
    translation = torch.cat(
        [shift_fraction * (shift_one_pixel(images, dx, dy) - images) for dx, dy in DIRECTIONS]
    )
    norms = grad_norm(translation)
    shape = tuple(bases.shape)
    fine = band_noise(shape, fine_above, math.inf, generator)
    coarse = band_noise(shape, -1.0, coarse_up_to, generator)
    return bases, {
        "translation": translation,
        "fine": scaled_to_norm(fine, norms),
        "coarse": scaled_to_norm(coarse, norms),
    }


# --- training and measuring -------------------------------------------------------------------


def generator_config(config: CapacityConfig) -> Config:
    """The engine run that makes the fixed fakes: the WGAN-GP MNIST recipe at the study's size.

    Args:
        config: the study's parameters (generator steps and width).

    Returns:
        The resolved engine config (``configs/mnist/wgangp.toml`` with width and steps set).
    """
    return engine_config(
        {
            "data.name": "mnist5k",
            "data.holdout": 0.2,
            "generator.kind": "dcgan28",
            "generator.norm": "batch",
            "generator.out": "tanh",
            "generator.noise": "gaussian",
            "generator.z_dim": 100,
            "generator.width": config.generator_width,
            "critic.kind": "dcgan28",
            "critic.norm": "none",
            "critic.width": config.generator_width,
            "train.loss": "wgan",
            "train.steps": config.generator_steps,
            "train.n_critic": 5,
            "train.batch_size": 64,
            "train.g_lr": 1e-4,
            "train.d_lr": 1e-4,
            "train.g_betas": [0.5, 0.9],
            "train.d_betas": [0.5, 0.9],
            "train.threads": 1,
            "penalty.name": "wgan-gp",
            "penalty.weight": 10.0,
            "log.every": max(1, config.generator_steps // 10),
            "log.checkpoint_every": config.generator_steps,
            "log.eval_samples": 100,
            "log.progress": False,
        }
    )


def _sample_batch(pool: Tensor, size: int, generator: torch.Generator) -> Tensor:
    return pool[torch.randint(len(pool), (size,), generator=generator)]


def fine_fraction(critic: nn.Module, reals: Tensor, cut: float) -> float:
    """The fine fraction of the critic's input gradient, averaged over ``reals``.

    Args:
        critic: the critic.
        reals: the points, ``(B, C, N, N)``.
        cut: the band edge, cycles per pixel.

    Returns:
        The mean over ``reals`` of the fraction of ``||grad_x D||^2`` at ``rho > cut``.
    """
    gradient = input_gradient(critic, reals).detach()
    return float(energy_fraction_above(gradient, cut).mean())


def train_critic(
    reals: Tensor,
    fakes: Tensor,
    weight: float,
    seed: int,
    config: CapacityConfig,
    probe: Tensor,
) -> tuple[nn.Module, list[tuple[int, float]]]:
    """A DCGAN-28 critic trained with the Wasserstein loss and WGAN-GP at ``weight``.

    Args:
        reals: training digits, shape ``(N, 1, 28, 28)`` in [0, 1].
        fakes: the fixed fakes, shape ``(M, 1, 28, 28)`` in [0, 1].
        weight: lambda.
        seed: seeds the initialization, the batches and the interpolation.
        config: steps, width, optimizer.
        probe: digits at which the fine fraction is tracked, ``(P, 1, 28, 28)``.

    Returns:
        The trained critic and ``[(step, fine fraction at probe)]`` over training.
    """
    torch.manual_seed(seed)
    critic = build_critic("dcgan28", width=config.critic_width)
    optimizer = torch.optim.Adam(critic.parameters(), lr=config.lr, betas=config.betas)
    penalty = Penalty("wgan-gp", weight=weight)
    batches = torch.Generator().manual_seed(seed)
    every = max(1, config.critic_steps // config.checkpoints)
    curve = [(0, fine_fraction(critic, probe, config.fine_above))]
    for step in range(1, config.critic_steps + 1):
        real = _sample_batch(reals, config.batch_size, batches)
        fake = _sample_batch(fakes, config.batch_size, batches)
        loss = d_loss("wgan", critic(real), critic(fake)) + penalty(critic, real=real, fake=fake)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % every == 0:
            curve.append((step, fine_fraction(critic, probe, config.fine_above)))
    return critic, curve


@torch.no_grad()
def responses(
    critic: nn.Module, bases: Tensor, perturbations: dict[str, Tensor]
) -> dict[str, dict[str, float]]:
    """The critic's first- and second-order response to each perturbation, averaged.

    Args:
        critic: the critic.
        bases: the points, ``(B, ...)``.
        perturbations: named deltas, each ``(B, ...)``.

    Returns:
        ``{"odd": {name: mean |D(x + d) - D(x - d)| / 2}, "even": {name: mean |(D(x + d) +
        D(x - d)) / 2 - D(x)|}}``: the odd part is the slope along ``d`` (exact for a linear
        critic, blind to curvature), the even part the curvature (zero for a linear critic).
    """
    clean = critic(bases)
    odd, even = {}, {}
    for name, delta in perturbations.items():
        plus, minus = critic(bases + delta), critic(bases - delta)
        odd[name] = float(((plus - minus) / 2).abs().mean())
        even[name] = float(((plus + minus) / 2 - clean).abs().mean())
    return {"odd": odd, "even": even}


def measure(
    critic: nn.Module,
    probe_reals: Tensor,
    probe_fakes: Tensor,
    bases: Tensor,
    perturbations: dict[str, Tensor],
    config: CapacityConfig,
) -> dict[str, Any]:
    """What the critic sees at held-out reals.

    Args:
        critic: the critic.
        probe_reals: held-out digits, ``(P, 1, 28, 28)``.
        probe_fakes: fakes not trained on, ``(P, 1, 28, 28)``.
        bases: ``probe_reals`` once per shift direction, ``(4P, 1, 28, 28)``.
        perturbations: :func:`matched_perturbations`' deltas for ``bases``.
        config: the band edges.

    Returns:
        ``fine`` and ``coarse`` energy fractions of the input gradient (means over images),
        and the fraction on the :func:`stride_lattice` (``lattice``), ``grad_norm`` (mean),
        ``spectrum`` (mean per-image energy fraction per ring), ``gap`` (mean score of reals
        minus fakes), ``response`` (:func:`responses`) and the ratios of the odd responses
        ``fine/translation`` and ``fine/coarse``.
    """
    gradient = input_gradient(critic, probe_reals).detach()
    with torch.no_grad():
        gap = float(critic(probe_reals).mean() - critic(probe_fakes).mean())
    response = responses(critic, bases, perturbations)
    odd = response["odd"]
    return {
        "fine": float(energy_fraction_above(gradient, config.fine_above).mean()),
        "coarse": float(1 - energy_fraction_above(gradient, config.coarse_up_to).mean()),
        "lattice": float(energy_fraction(gradient, stride_lattice(gradient.shape[-1])).mean()),
        "grad_norm": float(grad_norm(gradient).mean()),
        "spectrum": _mean_ring_fractions(gradient).tolist(),
        "gap": gap,
        "response": response,
        "fine/translation": odd["fine"] / odd["translation"],
        "fine/coarse": odd["fine"] / odd["coarse"],
    }


# --- the study --------------------------------------------------------------------------------


def _arm(weight: float) -> str:
    return f"lambda{weight:g}"


def settings(quick: bool = False) -> Settings:
    """Each lambda's settings, as ``run`` records them under ``"settings"``.

    Args:
        quick: the seconds-long size the tests run.

    Returns:
        ``{"lambda0.1": ..., ...}``: the shared parameters, the fake generator's engine config
        (``fake_generator``) and the arm's ``weight``.
    """
    config = QUICK if quick else CapacityConfig()
    shared = dataclasses.asdict(config) | {"fake_generator": to_dict(generator_config(config))}
    return sweep_settings(shared, {_arm(w): {"weight": w} for w in config.lambdas})


def _make_fakes(config: CapacityConfig, out_dir: Path) -> tuple[Trainer, Tensor]:
    """Train the fake generator through the engine; ``fake_pool + probe_images`` fakes in [0, 1]."""
    trainer = Trainer(generator_config(config), out_dir / "runs" / "generator")
    trainer.train()
    fakes, _ = trainer.samples01(config.fake_pool + config.probe_images)
    return trainer, fakes.detach()


def _summary_rows(
    runs: dict[str, list[dict[str, Any]]], untrained: list[dict[str, Any]]
) -> list[list[str]]:
    keys = ("grad_norm", "gap", "fine", "coarse", "lattice", "fine/translation", "fine/coarse")
    rows = []
    for arm, measured in [*runs.items(), ("untrained", untrained)]:
        name = "untrained critic" if arm == "untrained" else f"λ = {arm.removeprefix('lambda')}"
        rows.append([name, *(mean_std_cell([m[key] for m in measured]) for key in keys)])
    return rows


def _trend(runs: dict[str, list[dict[str, Any]]], key: str) -> dict[str, Any]:
    """How ``key`` moves from the smallest to the largest lambda, against the seeds' spread
    (one seed has no spread: its change never counts as beyond it)."""
    stats = [mean_std([m[key] for m in measured]) for measured in runs.values()]
    means = [mean for mean, _ in stats]
    (low_mean, low_std), (high_mean, high_std) = stats[0], stats[-1]
    falls = all(b < a for a, b in itertools.pairwise(means))
    rises = all(b > a for a, b in itertools.pairwise(means))
    return {
        "means": means,
        "monotone": "falls" if falls else "rises" if rises else "not monotone",
        "beyond_seed_noise": min(len(m) for m in runs.values()) > 1
        and abs(high_mean - low_mean) > 2 * math.hypot(low_std, high_std),
        "ratio_largest_to_smallest_lambda": high_mean / low_mean,
    }


def verdict(trends: dict[str, dict[str, Any]]) -> str:
    """The claim's verdict from the trends of the fine fraction and the two response ratios.

    Supported: all three fall with lambda (monotone) and the end points differ beyond twice the
    seeds' spread. Contradicted: all three rise that way. Otherwise mixed.

    Args:
        trends: each statistic's ``_trend`` (``monotone``, ``beyond_seed_noise``).

    Returns:
        ``"supported"``, ``"contradicted"`` or ``"mixed"``.
    """
    clear = [t["beyond_seed_noise"] for t in trends.values()]
    directions = {t["monotone"] for t in trends.values()}
    if all(clear) and directions == {"falls"}:
        return "supported"
    if all(clear) and directions == {"rises"}:
        return "contradicted"
    return "mixed"


def _mean_ring_fractions(images: Tensor) -> Tensor:
    """The images' energy fraction per ring (:func:`radial_power_spectrum`), mean over images."""
    rings = radial_power_spectrum(images)
    return (rings / rings.sum(dim=1, keepdim=True)).mean(dim=0)


def _plot_spectra(
    runs: dict[str, list[dict[str, Any]]], references: dict[str, Tensor], config: CapacityConfig
) -> plt.Figure:
    figure, axis = plt.subplots(figsize=(6, 4))
    side = 28
    for arm, measured in runs.items():
        mean = torch.tensor([m["spectrum"] for m in measured]).mean(dim=0)
        rings = torch.arange(len(mean)) / side
        axis.semilogy(rings, mean, "o-", ms=3, label=f"∇D, λ = {arm.removeprefix('lambda')}")
    for (name, spectrum), style in zip(references.items(), ("k--", "k:"), strict=True):
        axis.semilogy(torch.arange(len(spectrum)) / side, spectrum, style, label=name)
    for edge in (config.coarse_up_to, config.fine_above):
        axis.axvline(edge, color="grey", lw=0.8)
    axis.set(
        xlabel="radial frequency (cycles / pixel)",
        ylabel="fraction of energy per ring",
        title="Input gradient at held-out reals: radial spectrum",
    )
    axis.legend(fontsize=8)
    return figure


def _plot_trends(runs: dict[str, list[dict[str, Any]]]) -> plt.Figure:
    figure, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    weights = [float(arm.removeprefix("lambda")) for arm in runs]
    panels = (
        ("fine", "fine fraction of ‖∇D‖² (ρ > 1/4)"),
        ("fine/translation", "response: fine noise / translation"),
        ("fine/coarse", "response: fine noise / coarse noise"),
    )
    for axis, (key, label) in zip(axes, panels, strict=True):
        for weight, measured in zip(weights, runs.values(), strict=True):
            axis.scatter([weight] * len(measured), [m[key] for m in measured], c="C0", s=14)
        means = [statistics.fmean(m[key] for m in measured) for measured in runs.values()]
        axis.plot(weights, means, "C0-")
        axis.set(xscale="log", xlabel="λ", title=label)
    return figure


def _plot_training(curves: dict[str, list[list[tuple[int, float]]]]) -> plt.Figure:
    figure, axis = plt.subplots(figsize=(6, 4))
    for index, (arm, per_seed) in enumerate(curves.items()):
        for seed_index, curve in enumerate(per_seed):
            steps, values = zip(*curve, strict=True)
            label = f"λ = {arm.removeprefix('lambda')}" if seed_index == 0 else None
            axis.plot(steps, values, color=f"C{index}", alpha=0.8, label=label)
    axis.set(xlabel="critic step", ylabel="fine fraction (ρ > 1/4)", title="Over training")
    axis.legend(fontsize=8)
    return figure


def _gradient_grid(critics: dict[str, nn.Module], digits: Tensor) -> Tensor:
    """Rows: lambdas; columns: digits; each input gradient scaled to [0, 1] by its own max."""
    tiles = []
    for critic in critics.values():
        gradient = input_gradient(critic, digits).detach()
        peak = gradient.flatten(1).abs().amax(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        tiles.append(0.5 + 0.5 * gradient / peak)
    return torch.cat([digits, *tiles])


def run(out_dir: Path, *, quick: bool = False) -> Path:
    """Make the fakes, train every (lambda, seed) critic, measure, write the report directory.

    Args:
        out_dir: the report directory (the generator's engine run goes to ``runs/generator``).
        quick: the seconds-long smoke version (:data:`QUICK`).

    Returns:
        The path of ``report.md``.
    """
    config = QUICK if quick else CapacityConfig()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    generator_run, fakes = _make_fakes(config, out_dir)
    train_set, heldout = generator_run.data.train_set, generator_run.data.heldout
    assert train_set is not None and heldout is not None
    reals = train_set.images
    pool, probe_fakes = fakes[: config.fake_pool], fakes[config.fake_pool :]
    noise = torch.Generator().manual_seed(config.probe_seed)
    # The held-out digits are stored class by class: a random subset keeps the classes mixed.
    chosen = torch.randperm(len(heldout), generator=noise)[: config.probe_images]
    probe_reals = heldout.images[chosen]
    bases, perturbations = matched_perturbations(
        probe_reals,
        shift_fraction=config.shift_fraction,
        fine_above=config.fine_above,
        coarse_up_to=config.coarse_up_to,
        generator=noise,
    )
    track = probe_reals[:64]
    runs: dict[str, list[dict[str, Any]]] = {}
    curves: dict[str, list[list[tuple[int, float]]]] = {}
    untrained: list[dict[str, Any]] = []
    shown: dict[str, nn.Module] = {}
    jobs = [(w, s) for w in config.lambdas for s in config.seeds]
    for weight, seed in tqdm(jobs, desc="capacity critics"):
        if weight == config.lambdas[0]:
            torch.manual_seed(seed)
            initial = build_critic("dcgan28", width=config.critic_width)
            untrained.append(
                measure(initial, probe_reals, probe_fakes, bases, perturbations, config)
            )
        critic, curve = train_critic(reals, pool, weight, seed, config, track)
        measured = measure(critic, probe_reals, probe_fakes, bases, perturbations, config)
        runs.setdefault(_arm(weight), []).append(measured | {"seed": seed})
        curves.setdefault(_arm(weight), []).append(curve)
        if seed == config.seeds[0]:
            shown[_arm(weight)] = critic

    image_spectra = {
        "the digits themselves": _mean_ring_fractions(probe_reals),
        "the fakes themselves": _mean_ring_fractions(probe_fakes),
    }
    references = {
        "digits_fine": float(energy_fraction_above(probe_reals, config.fine_above).mean()),
        "digits_coarse": float(1 - energy_fraction_above(probe_reals, config.coarse_up_to).mean()),
        "white_noise_fine": float((radial_frequency(28) > config.fine_above).double().mean()),
        "white_noise_coarse": float((radial_frequency(28) <= config.coarse_up_to).double().mean()),
        "fakes_fine": float(energy_fraction_above(probe_fakes, config.fine_above).mean()),
        "fakes_coarse": float(1 - energy_fraction_above(probe_fakes, config.coarse_up_to).mean()),
        "digits_lattice": float(energy_fraction(probe_reals, stride_lattice(28)).mean()),
        "fakes_lattice": float(energy_fraction(probe_fakes, stride_lattice(28)).mean()),
        "perturbation_norm": float(grad_norm(perturbations["translation"]).mean()),
    }
    trends = {key: _trend(runs, key) for key in ("fine", "fine/translation", "fine/coarse")}
    outcome = verdict(trends)

    figures = [
        save_figure(_plot_spectra(runs, image_spectra, config), out_dir, "spectra.png"),
        save_figure(_plot_trends(runs), out_dir, "trends.png"),
        save_figure(_plot_training(curves), out_dir, "training.png"),
    ]
    save_image_grid(_gradient_grid(shown, probe_reals[:10]), out_dir / "gradients.png", nrow=10)
    save_image_grid(probe_fakes[:50], out_dir / "fakes.png", nrow=10)
    figures += ["gradients.png", "fakes.png"]

    header = [
        "critic",
        "‖∇D‖ at reals",
        "D(real) − D(fake)",
        "fine fraction (ρ > 1/4)",
        "coarse fraction (ρ ≤ 1/8)",
        "on the stride lattice",
        "slope ratio fine / translation",
        "slope ratio fine / coarse",
    ]
    table = markdown_table(header, _summary_rows(runs, untrained))
    setting = (
        f"DCGAN-28 critics of width {config.critic_width} trained for {config.critic_steps} "
        f"steps (Adam {config.lr:g}, betas {list(config.betas)}, batch {config.batch_size}, "
        f"Wasserstein loss + WGAN-GP at λ) between the 4000 training digits and {config.fake_pool} "
        f"fixed fakes from a DCGAN-28 generator trained {config.generator_steps} generator steps "
        f"with WGAN-GP λ = 10 (width {config.generator_width}); seeds {list(config.seeds)}. "
        f"Measured at {config.probe_images} held-out digits; mean ± std over seeds. Fine / "
        "coarse fraction: each image's share of ‖∇D‖² carried by DFT coefficients of radial "
        f"frequency ρ > {config.fine_above:g} / ρ ≤ {config.coarse_up_to:g} cycles per pixel, "
        "averaged over images; on the stride lattice: its share at the 15 non-constant "
        "frequencies (fx, fy) that are multiples of 1/4, where the two stride-2 convolutions "
        "put their checkerboard. Slope along δ: mean |D(x + δ) − D(x − δ)| / 2 for a "
        f"{config.shift_fraction:g}-pixel bilinear translation (four directions), fine noise and "
        f"coarse noise of the same per-image norm (mean ‖δ‖ = "
        f"{references['perturbation_norm']:.3g}); curvature: mean |(D(x + δ) + D(x − δ)) / 2 − "
        "D(x)|, the part of the response a slope does not explain."
    )
    reference = (
        f"For scale: the digits' own pixels put {references['digits_fine']:.3g} of their energy "
        f"at ρ > {config.fine_above:g}, {references['digits_coarse']:.3g} at ρ ≤ "
        f"{config.coarse_up_to:g} and {references['digits_lattice']:.3g} on the stride lattice; "
        f"the fakes {references['fakes_fine']:.3g}, {references['fakes_coarse']:.3g} and "
        f"{references['fakes_lattice']:.3g} (the checkerboard of the generator's transposed "
        "convolutions: a fine-detail tell); white noise (equal energy per coefficient) puts "
        f"{references['white_noise_fine']:.3g} at ρ > {config.fine_above:g} and "
        f"{references['white_noise_coarse']:.3g} at ρ ≤ {config.coarse_up_to:g}."
    )
    response_table = markdown_table(
        [
            "critic",
            *(f"slope: {name}" for name in PERTURBATIONS),
            *(f"curvature: {name}" for name in PERTURBATIONS),
        ],
        [
            [
                f"λ = {arm.removeprefix('lambda')}",
                *(
                    mean_std_cell([m["response"][part][p] for m in measured])
                    for part in ("odd", "even")
                    for p in PERTURBATIONS
                ),
            ]
            for arm, measured in runs.items()
        ],
    )
    trend_text = "; ".join(
        f"{key}: {trend['monotone']} with λ, λ = {config.lambdas[-1]:g} / λ = "
        f"{config.lambdas[0]:g} = {trend['ratio_largest_to_smallest_lambda']:.3g}"
        f"{'' if trend['beyond_seed_noise'] else ' (not beyond twice the seeds spread)'}"
        for key, trend in trends.items()
    )
    verdict_text = (
        f"**Verdict: {outcome}.** The claim predicts that the fine fraction and both response "
        f"ratios fall as λ grows. Measured: {trend_text}. (Supported: all three fall "
        "monotonically and the end points differ by more than twice the seeds' spread; "
        "contradicted: all three rise that way; otherwise mixed.)"
    )
    sections = [
        setting,
        table,
        reference,
        "Absolute responses (they scale with the critic's overall slope, which λ also sets):",
        response_table,
        verdict_text,
        "Figures: the gradient's radial spectrum per λ (grey lines: the band edges); the three "
        "statistics against λ (dots: seeds); the fine fraction over training (at 64 held-out "
        "digits); ten held-out digits and, below them, each λ's input gradient at them (seed "
        f"{config.seeds[0]}, rows λ = {', '.join(f'{w:g}' for w in config.lambdas)}; grey = 0, "
        "each scaled by its own largest entry); fifty of the fixed fakes.",
    ]
    results = {
        "verdict": outcome,
        "trends": trends,
        "references": references,
        "runs": runs,
        "untrained": untrained,
        "training_curves": curves,
        "image_spectra": {name: spectrum.tolist() for name, spectrum in image_spectra.items()},
    }
    return report(
        out_dir,
        "Study: does λ set how fine a detail the critic sees?",
        sections,
        figures,
        results,
        settings(quick),
    )
