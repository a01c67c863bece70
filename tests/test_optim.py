"""gradpen.optim: the gradient of L + weight * ||grad L||, exact and first-order, and the wrapper.

Also Barrett & Dherin's implicit regularization, the reason the penalty is worth having:
gradient descent with step h follows the flow of L + h/4 ||grad L||^2 more closely than L's.
"""

from __future__ import annotations

import json

import pytest
import torch
from torch import Tensor

from gradpen.optim import GradientNormPenalty, penalized_gradient
from gradpen.studies.gradnorm import implicit_regularization

A = torch.tensor([[3.0, 1.0, 0.0], [1.0, 2.0, 0.5], [0.0, 0.5, 1.0]], dtype=torch.float64)
B = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)


def quadratic(theta: Tensor) -> Tensor:
    """L = theta^T A theta / 2 + b . theta: grad L = A theta + b, Hessian A."""
    return 0.5 * theta @ A @ theta + B @ theta


def wavy(theta: Tensor) -> Tensor:
    """A non-quadratic loss: third derivatives do not vanish."""
    return torch.sin(theta).sum() + 0.25 * theta.pow(4).sum() + theta[0] * theta[1] ** 2


def start(values: list[float]) -> Tensor:
    return torch.tensor(values, dtype=torch.float64, requires_grad=True)


def penalized(loss, theta: Tensor, **kwargs) -> Tensor:
    return penalized_gradient(lambda: loss(theta), [theta], **kwargs)[1][0]


@pytest.mark.parametrize("method", ["exact", "approximate"])
@pytest.mark.parametrize("radius", [1e-3, 0.3])
def test_quadratic_loss_gives_the_closed_form_for_any_radius(method, radius):
    theta = start([0.5, -1.0, 2.0])
    grad = A @ theta.detach() + B
    expected = grad + 0.7 * A @ grad / grad.norm()
    got = penalized(quadratic, theta, weight=0.7, method=method, radius=radius)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(theta.detach(), torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64))


def test_exact_gradient_matches_finite_differences_of_the_penalized_objective():
    def objective(values: Tensor) -> float:
        theta = values.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(wavy(theta), theta)
        return float(wavy(theta).detach() + 0.3 * grad.norm())

    theta = start([0.4, -0.7, 1.1])
    step = 1e-6
    finite = torch.tensor(
        [
            (objective(theta.detach() + step * e) - objective(theta.detach() - step * e))
            / (2 * step)
            for e in torch.eye(3, dtype=torch.float64)
        ],
        dtype=torch.float64,
    )
    exact = penalized(wavy, theta, weight=0.3, method="exact")
    torch.testing.assert_close(exact, finite, rtol=1e-7, atol=1e-8)


def test_approximation_error_is_first_order_in_the_radius():
    theta = start([0.4, -0.7, 1.1])
    exact = penalized(wavy, theta, weight=0.3, method="exact")
    errors = [
        (penalized(wavy, theta, weight=0.3, radius=r) - exact).norm().item()
        for r in (0.04, 0.02, 0.01)
    ]
    assert errors[0] / errors[1] == pytest.approx(2.0, rel=0.1)
    assert errors[1] / errors[2] == pytest.approx(2.0, rel=0.05)


def test_wrapper_steps_along_the_penalized_gradient_with_any_optimizer():
    theta = start([0.5, -1.0, 2.0])
    expected_grad = penalized(quadratic, theta, weight=0.7, method="exact")
    sgd = GradientNormPenalty(torch.optim.SGD([theta], lr=0.1), weight=0.7, radius=0.2)
    loss = sgd.step(lambda: quadratic(theta))
    assert loss.item() == pytest.approx(quadratic(start([0.5, -1.0, 2.0])).item())
    expected = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64) - 0.1 * expected_grad
    torch.testing.assert_close(theta.detach(), expected)
    # Adam's first step moves every coordinate by lr against the sign of its gradient.
    other = start([0.5, -1.0, 2.0])
    adam = GradientNormPenalty(torch.optim.Adam([other], lr=0.01), weight=0.7, method="exact")
    adam.step(lambda: quadratic(other))
    expected = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64) - 0.01 * expected_grad.sign()
    torch.testing.assert_close(other.detach(), expected, rtol=0, atol=1e-9)
    assert adam.param_groups[0]["lr"] == 0.01
    assert adam.state_dict()["state"][0]["step"] == 1


def test_where_the_gradient_is_exactly_zero_the_update_is_zero_and_finite():
    # ||grad L|| has no gradient at grad L = 0; both methods fall back to grad L itself.
    for method in ("exact", "approximate"):
        theta = start([0.0, 0.0, 0.0])
        grad = penalized(lambda t: 0.5 * t.pow(2).sum(), theta, weight=1.0, method=method)
        assert torch.equal(grad, torch.zeros(3, dtype=torch.float64))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"weight": -1.0}, "weight"),
        ({"weight": 1.0, "method": "sam"}, "method"),
        ({"weight": 1.0, "radius": 0.0}, "radius"),
    ],
)
def test_bad_arguments_say_what_is_allowed(kwargs, message):
    theta = start([1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match=message):
        GradientNormPenalty(torch.optim.SGD([theta], lr=0.1), **kwargs)
    with pytest.raises(ValueError, match=message):
        penalized(quadratic, theta, **kwargs)


def test_gradient_descent_follows_the_modified_flow():
    # Global error of GD against the flow of L is O(h); against the flow of
    # L + h/4 ||grad L||^2 it is O(h^2): halving h halves one and quarters the other.
    coarse = implicit_regularization(0.1, duration=1.5)
    fine = implicit_regularization(0.05, duration=1.5)
    assert coarse["modified flow"] < coarse["flow"] / 2
    assert fine["modified flow"] < fine["flow"] / 4
    assert coarse["flow"] / fine["flow"] == pytest.approx(2.0, rel=0.25)
    assert coarse["modified flow"] / fine["modified flow"] == pytest.approx(4.0, rel=0.25)


def test_quick_gradnorm_study_writes_report_and_sane_numbers(tmp_path):
    from gradpen.studies.gradnorm import run, settings

    report = run(tmp_path, quick=True)
    assert "| variant |" in report.read_text()
    assert (tmp_path / "implicit.png").stat().st_size > 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["settings"] == settings(quick=True)
    assert results["step_cost_ratio"]["plain"] == 1.0
    assert results["step_cost_ratio"]["exact"] > 1.0
    for values in results["accuracy_per_seed"].values():
        assert all(0.0 <= v <= 1.0 for v in values)
    implicit = results["implicit_regularization"]
    assert all(d["modified flow"] < d["flow"] for d in implicit.values())
