"""Every exact penalty on every zoo critic, against a reference independent of gradpen's code.

The reference takes each sample's input gradient in a Python loop over samples with plain
autograd (``create_graph=True``, so it is differentiable in the parameters), scores a critic's
output as the output contract says (written out here), draws the points by hand from the same
RNG and writes out each penalty's statistic, batch reduction and weight factor. Everything runs
in float64 on tiny critics and batches of 3.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

import gradpen as gp
from gradpen.errors import UserError
from gradpen.nets.zoo import (
    AudioCritic,
    FrozenBackboneHeads,
    MultiScaleCritic,
    PatchGANCritic,
    ProjectionCritic,
    ResNetGNCritic,
    ViTCritic,
    spectral_norm_critic,
)

DTYPE = torch.float64
BATCH = 3
WEIGHT = 3.0
N_CLASSES = 4
SEED = 1234


@dataclass(frozen=True)
class Case:
    """A tiny zoo critic and the shape of one of its samples."""

    make: Callable[[], nn.Module]
    sample_shape: tuple[int, ...]
    conditional: bool = False


CASES: Mapping[str, Case] = {
    "patchgan": Case(lambda: PatchGANCritic(2, width=4, n_layers=2), (2, 28, 28)),
    "multiscale": Case(lambda: MultiScaleCritic(1, width=4, n_layers=2, scales=3), (1, 16, 16)),
    "frozen-heads": Case(lambda: FrozenBackboneHeads(2, width=4), (2, 12, 12)),
    "resnet-gn": Case(lambda: ResNetGNCritic(3, width=4, groups=2), (3, 16, 16)),
    "vit": Case(lambda: ViTCritic(2, resolution=8, patch=4, dim=8, depth=1, heads=2), (2, 8, 8)),
    "audio": Case(lambda: AudioCritic(1, width=4, n_layers=2), (1, 64)),
    "projection": Case(
        lambda: ProjectionCritic(3, N_CLASSES, width=4, n_layers=2), (3, 12, 12), True
    ),
    # Eval mode: a training-mode forward also advances the power iteration (a buffer update),
    # so the penalty's forward and the reference's would see different weights.
    "spectral-norm": Case(lambda: spectral_norm_critic(2, width=4, n_layers=2).eval(), (2, 12, 12)),
}
MEAN_REDUCED = ("patchgan", "multiscale", "frozen-heads", "audio")
CRITIC_CASES = [(name, "sum") for name in CASES] + [(name, "mean") for name in MEAN_REDUCED]


def make_problem(name: str) -> tuple[nn.Module, Tensor, Tensor, Tensor | None]:
    """A seeded float64 critic, reals, fakes and (for the projection critic) labels."""
    case = CASES[name]
    torch.manual_seed(0)
    critic = case.make().to(DTYPE)
    real = torch.rand(BATCH, *case.sample_shape, dtype=DTYPE)
    fake = 0.5 + 0.3 * torch.randn(BATCH, *case.sample_shape, dtype=DTYPE)
    cond = torch.tensor([1, 3, 1]) if case.conditional else None
    return critic, real, fake, cond


# --- the reference -------------------------------------------------------------------------


def hand_score(out: Any, reduce: str) -> Tensor:
    """The score of ONE sample (batch of 1): each output's sum or mean, summed over outputs."""
    if isinstance(out, Tensor):
        return out.sum() if reduce == "sum" else out.mean()
    values = out.values() if isinstance(out, dict) else out
    return sum((hand_score(value, reduce) for value in values), torch.zeros((), dtype=DTYPE))


def per_sample_gradient(critic: nn.Module, x: Tensor, cond: Tensor | None, reduce: str) -> Tensor:
    """Each sample's input gradient, one sample at a time, differentiable in the parameters."""
    grads = []
    with sdpa_kernel(SDPBackend.MATH):
        for i in range(x.shape[0]):
            xi = x[i : i + 1].detach().clone().requires_grad_(True)
            out = critic(xi) if cond is None else critic(xi, cond[i : i + 1])
            (g,) = torch.autograd.grad(hand_score(out, reduce), xi, create_graph=True)
            grads.append(g)
    return torch.cat(grads)


def hand_points(
    at: str, real: Tensor, fake: Tensor, generator: torch.Generator | None = None
) -> Tensor:
    """The points, drawn in the order gradpen draws them: eps per sample; DRAGAN's u first."""
    per_sample = (real.shape[0],) + (1,) * (real.dim() - 1)
    if at == "real":
        return real
    if at == "fake":
        return fake
    other = fake
    if at == "perturbed":
        std = real.std(unbiased=False)  # the official code's one std over the whole batch
        other = real + 0.5 * std * torch.rand(real.shape, generator=generator, dtype=DTYPE)
    eps = torch.rand(per_sample, generator=generator, dtype=DTYPE)
    return eps * real + (1 - eps) * other


def norm(g: Tensor) -> Tensor:
    return g.flatten(1).pow(2).sum(dim=1).sqrt()


def distance(g: Tensor, target: float) -> Tensor:
    return (norm(g) - target).pow(2)


def one_sided(g: Tensor, target: float) -> Tensor:
    return (norm(g) - target).clamp_min(0).pow(2)


def squared(g: Tensor, target: float) -> Tensor:  # no target: the argument is ignored
    return norm(g).pow(2)


def sixth_power(g: Tensor, target: float) -> Tensor:
    return norm(g).pow(6)  # WGAN-div's default p = 6


@dataclass(frozen=True)
class Reference:
    """A penalty written out: where each term is taken, its statistic, factor, batch reduction."""

    points: tuple[str, ...]
    statistic: Callable[[Tensor, float], Tensor]
    factor: float
    reduction: Callable[[Tensor], Tensor] = torch.mean
    options: tuple[tuple[str, float], ...] = ()  # passed to Penalty as they are

    @property
    def has_target(self) -> bool:
        return self.statistic in (distance, one_sided)


REFERENCES: Mapping[str, Reference] = {
    "wgan-gp": Reference(("interpolates",), distance, 1.0),
    "one-sided": Reference(("interpolates",), one_sided, 1.0),
    "zero-centered": Reference(("interpolates",), squared, 1.0),
    "dragan": Reference(("perturbed",), distance, 1.0),
    "r1": Reference(("real",), squared, 0.5),
    "r2": Reference(("fake",), squared, 0.5),
    "r1r2": Reference(("real", "fake"), squared, 0.5),
    "wgan-div": Reference(("real", "fake"), sixth_power, 0.5, options=(("p", 6.0),)),
    "max-gp": Reference(("interpolates",), squared, 1.0, torch.amax),
}
EXACT = sorted(REFERENCES)


def test_every_exact_penalty_has_a_reference() -> None:
    exact = {n for n, spec in gp.PENALTIES.items() if spec.points and not spec.approximate}
    assert exact == set(REFERENCES)


def splitting_target(grads: list[Tensor]) -> float:
    """A target between the norms of the first term's samples: some above it, some below."""
    norms = sorted(norm(grads[0]).tolist())
    return (norms[len(norms) // 2 - 1] + norms[len(norms) // 2]) / 2


def trainable(critic: nn.Module) -> list[Tensor]:
    return [p for p in critic.parameters() if p.requires_grad]


def assert_close_with_parameter_grads(
    actual: Tensor, expected: Tensor, params: list[Tensor]
) -> None:
    """Same value, and the same gradient of its sum w.r.t. ``params`` (None counts as zero)."""
    torch.testing.assert_close(actual, expected, rtol=1e-9, atol=1e-12)
    got = torch.autograd.grad(actual.sum(), params, materialize_grads=True)
    want = torch.autograd.grad(expected.sum(), params, materialize_grads=True)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-7, atol=1e-10 * (1 + w.abs().max().item()))


# --- Penalty against the reference -------------------------------------------------------------


# A fast-path twin that fails falls back to plain autograd with a RuntimeWarning: none may here.
@pytest.mark.filterwarnings("error::RuntimeWarning")
@pytest.mark.parametrize("fast", [True, False], ids=["fast", "plain"])
@pytest.mark.parametrize("name", EXACT)
@pytest.mark.parametrize(("critic_name", "reduce"), CRITIC_CASES)
def test_penalty_matches_reference(critic_name: str, reduce: str, name: str, fast: bool) -> None:
    critic, real, fake, cond = make_problem(critic_name)
    ref = REFERENCES[name]
    torch.manual_seed(SEED)
    grads = [
        per_sample_gradient(critic, hand_points(at, real, fake), cond, reduce) for at in ref.points
    ]
    target = splitting_target(grads) if ref.has_target else 1.0
    expected = WEIGHT * ref.factor * sum(ref.reduction(ref.statistic(g, target)) for g in grads)
    options = dict(ref.options) | ({"target": target} if ref.has_target else {})
    torch.manual_seed(SEED)
    penalty = gp.Penalty(name, WEIGHT, fast=fast, reduce=reduce, **options)
    term = penalty(critic, real=real, fake=fake, cond=cond, step=0)
    assert term.shape == ()
    assert_close_with_parameter_grads(term, expected, trainable(critic))


# --- the per-sample functions, with an explicit generator --------------------------------------

PER_SAMPLE: Mapping[str, tuple[Callable[..., Tensor], tuple[str, ...], Reference]] = {
    "wgan_gp": (gp.wgan_gp, ("real", "fake"), REFERENCES["wgan-gp"]),
    "dragan": (gp.dragan, ("real",), REFERENCES["dragan"]),
    "zero_centered": (gp.zero_centered, ("real", "fake"), REFERENCES["zero-centered"]),
    "r1": (gp.r1, ("real",), REFERENCES["r1"]),
    "r2": (gp.r2, ("fake",), REFERENCES["r2"]),
    "wgan_div": (gp.wgan_div, ("real", "fake"), REFERENCES["wgan-div"]),
}
PER_SAMPLE_CASES = [("patchgan", "mean"), ("multiscale", "sum"), ("projection", "sum")]


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "plain"])
@pytest.mark.parametrize("function_name", sorted(PER_SAMPLE))
@pytest.mark.parametrize(("critic_name", "reduce"), PER_SAMPLE_CASES)
def test_per_sample_function_matches_reference(
    critic_name: str, reduce: str, function_name: str, fast: bool
) -> None:
    critic, real, fake, cond = make_problem(critic_name)
    function, takes, ref = PER_SAMPLE[function_name]
    generator = torch.Generator().manual_seed(SEED)
    grads = [
        per_sample_gradient(critic, hand_points(at, real, fake, generator), cond, reduce)
        for at in ref.points
    ]
    expected = sum(ref.statistic(g, 1.0) for g in grads)
    batches = [{"real": real, "fake": fake}[b] for b in takes]
    random_points = ref.points[0] in ("interpolates", "perturbed")
    draw = {"generator": torch.Generator().manual_seed(SEED)} if random_points else {}
    values = function(critic, *batches, cond=cond, fast=fast, reduce=reduce, **draw)
    assert values.shape == (BATCH,)
    assert_close_with_parameter_grads(values, expected, trainable(critic))


# --- what the critics do to the penalty -------------------------------------------------------


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "plain"])
def test_frozen_backbone_gets_no_gradient_and_the_heads_train(fast: bool) -> None:
    critic, real, fake, _ = make_problem("frozen-heads")
    frozen = list(critic.backbone.parameters())
    assert frozen and not any(p.requires_grad for p in frozen)
    gp.Penalty("wgan-gp", WEIGHT, fast=fast)(critic, real=real, fake=fake).backward()
    assert all(p.grad is None for p in frozen)
    for head in critic.heads.values():
        weights = [p for n, p in head.named_parameters() if n.endswith("weight")]
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in weights)


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "plain"])
def test_projection_critic_conditions_the_penalty_on_the_labels(fast: bool) -> None:
    critic, real, _, cond = make_problem("projection")
    assert cond is not None
    g = gp.input_gradient(critic, real, cond=cond, fast=fast)
    assert g.shape == real.shape
    torch.testing.assert_close(g, per_sample_gradient(critic, real, cond, "sum"))
    gp.Penalty("r1", WEIGHT, fast=fast)(critic, real=real, cond=cond).backward()
    rows = critic.embed.weight.grad.abs().sum(dim=1)
    used = torch.zeros(N_CLASSES, dtype=torch.bool)
    used[cond] = True
    assert (rows[used] > 0).all() and (rows[~used] == 0).all()


# --- the approximations tend to the exact penalty -------------------------------------------


@pytest.mark.parametrize(
    ("approx", "exact", "at"), [("approx-r1", "r1", "real"), ("approx-r2", "r2", "fake")]
)
def test_approx_r1_r2_tend_to_r1_r2_as_sigma_vanishes(approx: str, exact: str, at: str) -> None:
    """E[(g.e)^2] = ||g||^2 for e ~ N(0, I): the mean over many noise draws tends to R1 / R2.

    One draw's relative spread is sqrt(2); the batch mean over ``draws`` draws of each of 4
    samples has a relative spread of at most sqrt(2 / draws) (1.6%) and about half that for
    samples of similar norms, so the 5% bound is 3-6 of those, plus the O(sigma) bias.
    """
    draws, sigma = 8000, 1e-4
    torch.manual_seed(0)
    critic = AudioCritic(1, width=2, n_layers=1, activation="tanh").to(DTYPE)
    batches = {"real": torch.rand(4, 1, 8, dtype=DTYPE), "fake": torch.randn(4, 1, 8, dtype=DTYPE)}
    (function,) = gp.PENALTIES[approx].per_sample
    generator = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        estimate = function(
            critic, batches[at].repeat_interleave(draws, dim=0), sigma=sigma, generator=generator
        )
    exact_term = gp.Penalty(exact, WEIGHT)(critic, **batches).detach()
    assert abs(WEIGHT / 2 * estimate.mean() / exact_term - 1) < 0.05
    # The registered term is gamma / 2 times the batch mean of that estimator.
    with torch.random.fork_rng():
        torch.manual_seed(SEED)
        term = gp.Penalty(approx, WEIGHT, sigma=sigma)(critic, **batches)
        torch.manual_seed(SEED)
        torch.testing.assert_close(
            term, WEIGHT / 2 * function(critic, batches[at], sigma=sigma).mean()
        )


def test_wgan_div_penalty_defaults_to_the_registered_power() -> None:
    critic, real, fake, _ = make_problem("patchgan")
    assert gp.PENALTIES["wgan-div"].options["p"] == 6.0
    term = gp.Penalty("wgan-div", WEIGHT)(critic, real=real, fake=fake)
    torch.testing.assert_close(term, WEIGHT / 2 * gp.wgan_div(critic, real, fake, p=6.0).mean())


# --- the critics themselves ------------------------------------------------------------------


@pytest.mark.parametrize("size", [28, 32, 64])
@pytest.mark.parametrize("channels", [1, 3])
def test_patch_critics_work_at_every_size(size: int, channels: int) -> None:
    x = torch.rand(2, channels, size, size)
    patch = PatchGANCritic(channels, width=2)(x)
    assert patch.dim() == 4 and patch.shape[:2] == (2, 1) and patch.shape[2] > 1
    maps = MultiScaleCritic(channels, width=2, scales=2)(x)
    assert len(maps) == 2 and maps[0].shape == patch.shape
    assert maps[1].shape[2] < maps[0].shape[2]


def test_zoo_output_forms() -> None:
    image = torch.rand(2, 3, 32, 32)
    heads = FrozenBackboneHeads(3, width=4)(image)
    assert set(heads) == {"patch", "global"} and heads["global"].shape == (2, 1)
    assert ResNetGNCritic(3, width=8, groups=4)(image).shape == (2,)
    for pool in ("cls", "mean"):
        assert ViTCritic(3, 32, patch=8, dim=8, depth=1, heads=2, pool=pool)(image).shape == (2,)
    assert ProjectionCritic(3, 5, width=4)(image, torch.tensor([0, 4])).shape == (2,)
    assert spectral_norm_critic(3, width=4)(image).shape == (2,)
    waves = AudioCritic(1, width=4, n_layers=2)(torch.rand(2, 1, 100))
    assert waves.shape == (2, 1, math.ceil(100 / 16))


@pytest.mark.parametrize(
    "make",
    [
        lambda: ViTCritic(resolution=30, patch=4),
        lambda: ViTCritic(dim=10, heads=4),
        lambda: ViTCritic(pool="max"),
        lambda: ResNetGNCritic(width=12, groups=8),
        lambda: PatchGANCritic(width=0),
    ],
)
def test_zoo_rejects_inconsistent_sizes(make: Callable[[], nn.Module]) -> None:
    with pytest.raises(UserError):
        make()
