"""The penalty core: values pinned on hand-solvable critics, the bug families, error paths."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.func import functional_call

import gradpen as gp


class Linear(nn.Module):
    """D(x) = w . flatten(x) + b: its input gradient is w everywhere."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(w.clone())
        self.b = nn.Parameter(torch.tensor(0.3, dtype=w.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.w + self.b


class HalfSquare(nn.Module):
    """D(x) = ||x||^2 / 2 per sample: its input gradient is x itself."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * x.flatten(1).pow(2).sum(1)


class CountingCritic(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.inner(x)


def smooth_mlp(dim: int = 3, dtype: torch.dtype = torch.float64) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(dim, 8), nn.Tanh(), nn.Linear(8, 1)).to(dtype)


W = torch.tensor([3.0, 4.0])  # ||w|| = 5


@pytest.fixture
def points() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(16, 2, generator=g), torch.randn(16, 2, generator=g) + 3.0


# --- values pinned on critics solvable by hand -------------------------------------------


def test_linear_critic_pins_every_penalty(points):
    real, fake = points
    critic = Linear(W)
    ones = torch.ones(16)
    torch.testing.assert_close(gp.wgan_gp(critic, real, fake), (5.0 - 1.0) ** 2 * ones)
    torch.testing.assert_close(gp.wgan_gp(critic, real, fake, target=2.0), 9.0 * ones)
    torch.testing.assert_close(gp.r1(critic, real), 25.0 * ones)
    torch.testing.assert_close(gp.r2(critic, fake), 25.0 * ones)
    torch.testing.assert_close(gp.dragan(critic, real), 16.0 * ones)
    torch.testing.assert_close(gp.zero_centered(critic, real, fake), 25.0 * ones)
    torch.testing.assert_close(gp.grad_norm(gp.input_gradient(critic, real)), 5.0 * ones)


def test_quadratic_critic_r1_is_squared_norm_of_the_point():
    x = torch.randn(5, 3, 4, 4)
    torch.testing.assert_close(gp.r1(HalfSquare(), x), x.flatten(1).pow(2).sum(1))
    torch.testing.assert_close(gp.input_gradient(HalfSquare(), x), x)


def test_one_sided_is_zero_when_every_norm_is_within_target(points):
    real, fake = points
    small = Linear(torch.tensor([0.6, 0.0]))
    assert torch.equal(gp.wgan_gp(small, real, fake, one_sided=True), torch.zeros(16))
    big = Linear(W)
    torch.testing.assert_close(gp.wgan_gp(big, real, fake, one_sided=True), 16.0 * torch.ones(16))
    # The two-sided penalty does charge the small norm.
    torch.testing.assert_close(gp.wgan_gp(small, real, fake), 0.16 * torch.ones(16))


def test_penalty_weight_conventions(points):
    real, fake = points
    critic = Linear(W)
    assert gp.Penalty("wgan-gp", weight=10.0)(critic, real=real, fake=fake).item() == pytest.approx(
        160.0
    )
    assert gp.Penalty("one-sided", weight=2.0)(
        critic, real=real, fake=fake
    ).item() == pytest.approx(32.0)
    # R1/R2: weight is gamma, the term is gamma / 2 * mean.
    assert gp.Penalty("r1", weight=2.0)(critic, real=real).item() == pytest.approx(25.0)
    assert gp.Penalty("r2", weight=2.0)(critic, fake=fake).item() == pytest.approx(25.0)
    assert gp.Penalty("r1r2", weight=2.0)(critic, real=real, fake=fake).item() == pytest.approx(
        50.0
    )
    assert gp.Penalty("dragan", weight=1.0)(critic, real=real).item() == pytest.approx(16.0)
    assert gp.Penalty("zero-centered", weight=1.0)(critic, real=real, fake=fake).item() == (
        pytest.approx(25.0)
    )
    assert gp.Penalty("none", weight=10.0)(critic, real=real, fake=fake).item() == 0.0
    assert gp.Penalty("wgan-gp", weight=1.0, target=5.0)(critic, real=real, fake=fake).item() == (
        pytest.approx(0.0, abs=1e-10)
    )


# --- eps per sample, norm per sample: the bug families of popular code ------------------------


def test_interpolate_draws_one_eps_per_sample_for_any_rank():
    for shape in [(64, 2), (64, 7, 5), (64, 3, 8, 8)]:
        real, fake = torch.zeros(shape), torch.ones(shape)
        x_hat = gp.interpolate(real, fake)
        one_minus_eps = x_hat.flatten(1)
        # Not one eps per pixel/row: constant within each sample.
        assert torch.equal(one_minus_eps.max(1).values, one_minus_eps.min(1).values)
        # Not one eps per batch: the samples differ.
        assert one_minus_eps[:, 0].unique().numel() == 64
        assert one_minus_eps.min() >= 0.0 and one_minus_eps.max() <= 1.0


def test_interpolate_is_seedable_and_detached():
    real = torch.randn(4, 3, requires_grad=True)
    fake = torch.randn(4, 3, requires_grad=True)
    a = gp.interpolate(real, fake, generator=torch.Generator().manual_seed(7))
    b = gp.interpolate(real, fake, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b) and not a.requires_grad


def test_grad_norm_runs_over_all_non_batch_dims_of_an_image_gradient():
    g = torch.zeros(2, 3, 4, 4)
    g[0, 0, 0, 0], g[0, 1, 2, 3] = 3.0, 4.0  # ||g_0|| = 5, while a norm over dim 1 alone is not
    g[1, 2, 1, 1] = 1.0
    torch.testing.assert_close(gp.grad_norm(g), torch.tensor([5.0, 1.0]))
    assert gp.grad_norm(g).shape == (2,)


def test_per_sample_penalty_does_not_mix_samples():
    """One norm over the whole batch would make a sample's penalty depend on its neighbours."""
    x = torch.randn(6, 2, 5, 5)
    batch = gp.r1(HalfSquare(), x)
    alone = torch.cat([gp.r1(HalfSquare(), x[i : i + 1]) for i in range(6)])
    torch.testing.assert_close(batch, alone)
    assert batch.unique().numel() == 6


def test_wgan_gp_per_sample_matches_its_definition_on_images():
    torch.manual_seed(0)
    critic = nn.Sequential(nn.Conv2d(1, 4, 3), nn.LeakyReLU(0.2), nn.Flatten(), nn.Linear(144, 1))
    real, fake = torch.randn(8, 1, 8, 8), torch.randn(8, 1, 8, 8)
    value = gp.wgan_gp(critic, real, fake, generator=torch.Generator().manual_seed(3))
    x_hat = gp.interpolate(real, fake, generator=torch.Generator().manual_seed(3))
    expected = []
    for i in range(8):
        xi = x_hat[i : i + 1].clone().requires_grad_(True)
        (g,) = torch.autograd.grad(critic(xi).sum(), xi)
        expected.append((g.norm() - 1) ** 2)
    torch.testing.assert_close(value, torch.stack(expected))


# --- differentiability ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["wgan-gp", "one-sided", "r1", "r2", "r1r2", "dragan", "zero-centered"]
)
def test_gradcheck_penalty_wrt_critic_parameters(name):
    critic = smooth_mlp()
    g = torch.Generator().manual_seed(0)
    real = torch.randn(5, 3, generator=g, dtype=torch.float64)
    fake = torch.randn(5, 3, generator=g, dtype=torch.float64) + 2
    names = [n for n, _ in critic.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_(True) for p in critic.parameters())
    options = {"target": 0.2} if name == "one-sided" else {}
    penalty = gp.Penalty(name, weight=1.0, **options)

    def value(*flat: torch.Tensor) -> torch.Tensor:
        torch.manual_seed(5)  # same interpolates and perturbations on every call

        def call(x: torch.Tensor) -> torch.Tensor:
            return functional_call(critic, dict(zip(names, flat, strict=True)), (x,))

        return penalty(call, real=real, fake=fake)

    assert value(*params).item() > 0
    assert torch.autograd.gradcheck(value, params)


def test_grad_norm_is_finite_with_finite_gradient_at_zero():
    g = torch.zeros(3, 4, requires_grad=True)
    n = gp.grad_norm(g)
    n.sum().backward()
    assert torch.equal(n, torch.zeros(3)) and torch.isfinite(g.grad).all()
    # A critic with zero input gradient (constant in x, but dependent on x) has a finite penalty.
    critic = Linear(torch.zeros(2))
    w = critic.w
    value = gp.Penalty("wgan-gp", weight=1.0)(
        critic, real=torch.randn(4, 2), fake=torch.randn(4, 2)
    )
    value.backward()
    assert value.item() == pytest.approx(1.0) and torch.isfinite(w.grad).all()


def test_grad_norm_matches_torch_norm_in_float64():
    g = torch.randn(7, 2, 3, dtype=torch.float64)
    torch.testing.assert_close(gp.grad_norm(g), g.flatten(1).norm(dim=1))


# --- lazy regularization --------------------------------------------------------------------


def test_lazy_penalty_is_k_times_on_steps_and_exact_zero_without_critic_call_elsewhere(points):
    real, _ = points
    critic = CountingCritic(Linear(W))
    every = gp.Penalty("r1", weight=2.0)(critic, real=real).item()
    lazy = gp.Penalty("r1", weight=2.0, every=4)
    critic.calls = 0
    values = [lazy(critic, real=real, step=s) for s in range(8)]
    assert critic.calls == 2
    for step, value in enumerate(values):
        expected = 4 * every if step % 4 == 0 else 0.0
        assert value.item() == pytest.approx(expected)
    assert values[1].dtype == real.dtype and not values[1].requires_grad


# --- conditional critics --------------------------------------------------------------------


class Conditional(nn.Module):
    """D(x, y) = w_y . x: the gradient with respect to x is the row of the label."""

    def __init__(self) -> None:
        super().__init__()
        self.table = nn.Parameter(torch.tensor([[3.0, 4.0], [0.0, 1.0], [1.0, 0.0]]))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (x * self.table[y]).sum(1)


def test_conditional_gradient_is_with_respect_to_data_for_each_label():
    y = torch.tensor([0, 1, 2, 0])
    y_before = y.clone()
    x = torch.randn(4, 2)
    grad = gp.input_gradient(Conditional(), x, cond=y)
    torch.testing.assert_close(grad, Conditional().table.detach()[y])
    r1 = gp.r1(Conditional(), x, cond=y)
    torch.testing.assert_close(r1, torch.tensor([25.0, 1.0, 1.0, 25.0]))
    value = gp.Penalty("wgan-gp", weight=1.0)(Conditional(), real=x, fake=x + 1, cond=y)
    assert value.item() == pytest.approx((16.0 + 0 + 0 + 16.0) / 4)
    assert torch.equal(y, y_before) and y.dtype == torch.int64


def test_input_gradient_leaves_the_callers_tensor_alone():
    x = torch.randn(4, 2)
    gp.input_gradient(Linear(W), x)
    assert not x.requires_grad and x.grad is None


# --- forward reuse --------------------------------------------------------------------------


def test_r1_from_the_loss_forward_equals_a_fresh_forward():
    critic = smooth_mlp()
    real = torch.randn(6, 3, dtype=torch.float64).requires_grad_(True)
    scores = critic(real).squeeze(1)
    reused = gp.Penalty("r1", weight=1.0)(critic, real=real, real_scores=scores)
    fresh = gp.Penalty("r1", weight=1.0)(critic, real=real.detach())
    torch.testing.assert_close(reused, fresh)


# --- errors ---------------------------------------------------------------------------------


def test_interpolate_rejects_mismatched_or_empty_batches():
    with pytest.raises(ValueError, match=r"\(4, 2\).*\(4, 3\)"):
        gp.interpolate(torch.zeros(4, 2), torch.zeros(4, 3))
    with pytest.raises(ValueError, match="float64"):
        gp.interpolate(torch.zeros(4, 2), torch.zeros(4, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="non-empty"):
        gp.interpolate(torch.zeros(0, 2), torch.zeros(0, 2))


def test_critic_that_ignores_x_is_reported():
    class Ignores(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c = nn.Parameter(torch.ones(1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.c.expand(x.shape[0])

    with pytest.raises(ValueError, match="does not depend on its input"):
        gp.input_gradient(Ignores(), torch.randn(3, 2))
    with pytest.raises(ValueError, match="does not depend on its input"):
        gp.input_gradient(lambda x: torch.zeros(x.shape[0]), torch.randn(3, 2))


def test_critic_output_shape_is_checked():
    # an output whose first dim is not the batch is refused, naming the shape and the batch
    with pytest.raises(ValueError, match=r"shape \(2, 3\).*batch size 3"):
        gp.input_gradient(lambda x: (x * 2).t(), torch.randn(3, 2))
    # (B, 1) is accepted, and (B, ...) is summed over its non-batch elements
    x = torch.randn(3, 2)
    torch.testing.assert_close(gp.input_gradient(lambda x: x.sum(1, keepdim=True), x), x * 0 + 1)
    torch.testing.assert_close(gp.input_gradient(lambda x: x * 2, x), x * 0 + 2)


def test_batchnorm_critic_is_refused_with_an_explanation_unless_allowed():
    critic = nn.Sequential(nn.Linear(2, 4), nn.BatchNorm1d(4), nn.Linear(4, 1))
    with pytest.raises(ValueError, match=r"batch to a batch.*layer norm.*allow_batchnorm"):
        gp.wgan_gp(critic, torch.randn(8, 2), torch.randn(8, 2))
    assert gp.wgan_gp(critic, torch.randn(8, 2), torch.randn(8, 2), allow_batchnorm=True).shape == (
        8,
    )
    assert gp.Penalty("r1", allow_batchnorm=True)(critic, real=torch.randn(8, 2)).dim() == 0
    critic.eval()  # running statistics: per-sample again
    assert gp.r1(critic, torch.randn(8, 2)).shape == (8,)


def test_penalty_configuration_errors_name_the_valid_choices():
    with pytest.raises(ValueError, match="valid penalties: none, wgan-gp, one-sided, r1"):
        gp.Penalty("wgan_gp")
    with pytest.raises(
        ValueError, match=r"unknown option.*gamma.*its options are: one_sided, target"
    ):
        gp.Penalty("wgan-gp", gamma=1.0)
    with pytest.raises(ValueError, match="every must be an integer >= 1"):
        gp.Penalty("r1", every=0)
    with pytest.raises(ValueError, match="weight must be a finite number >= 0"):
        gp.Penalty("r1", weight=math.nan)
    with pytest.raises(ValueError, match="needs fake"):
        gp.Penalty("r2")(Linear(W), real=torch.randn(3, 2))


def test_cond_and_perturb_errors():
    with pytest.raises(ValueError, match="cond must have the batch size 3"):
        gp.input_gradient(Conditional(), torch.randn(3, 2), cond=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="'uniform' or 'gaussian'"):
        gp.perturb(torch.randn(3, 2), noise="normal")


def test_perturb_scales_noise_by_one_global_std_by_default():
    # The official DRAGAN code: X + 0.5 * X.std() * U[0, 1), one std over every element, so a
    # constant pixel (column 0 here) moves as much as a varying one.
    real = torch.tensor([[0.0, 0.0], [0.0, 4.0]])  # elements 0, 0, 0, 4: population std sqrt(3)
    for noise in ("uniform", "gaussian"):
        torch.manual_seed(0)
        u = (torch.rand if noise == "uniform" else torch.randn)(2, 2)
        torch.manual_seed(0)
        out = gp.perturb(real, scale=0.5, noise=noise)
        torch.testing.assert_close(out, real + 0.5 * math.sqrt(3.0) * u)


def test_perturb_scales_noise_by_feature_std_as_an_option():
    real = torch.tensor([[0.0, 0.0], [2.0, 20.0]])  # per-feature std 1 and 10
    for noise in ("uniform", "gaussian"):
        torch.manual_seed(0)
        u = (torch.rand if noise == "uniform" else torch.randn)(2, 2)
        torch.manual_seed(0)
        out = gp.perturb(real, scale=0.5, noise=noise, spread="feature")
        torch.testing.assert_close(out, real + 0.5 * torch.tensor([[1.0, 10.0]]) * u)
    constant = torch.tensor([[3.0, 0.0], [3.0, 2.0]])
    assert torch.equal(gp.perturb(constant, spread="feature")[:, 0], constant[:, 0])
    with pytest.raises(ValueError, match="spread must be 'global' or 'feature'"):
        gp.perturb(real, spread="pixel")


def test_lazy_adam_hyperparameters_follow_stylegan2():
    assert gp.lazy_adam_hyperparameters(1e-3, (0.0, 0.99), 1) == (1e-3, (0.0, 0.99))
    lr, (b1, b2) = gp.lazy_adam_hyperparameters(0.0025, (0.0, 0.99), 16)
    assert lr == pytest.approx(0.0025 * 16 / 17)
    assert (b1, b2) == (0.0, pytest.approx(0.99 ** (16 / 17)))
    with pytest.raises(ValueError, match="every must be"):
        gp.lazy_adam_hyperparameters(1e-3, (0.5, 0.9), 0)
