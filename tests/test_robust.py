"""gradpen.robust: the double-backprop loss pinned by hand, its two scalings, FGSM/PGD, the loop."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from gradpen.robust import (
    SmallCNN,
    double_backprop_loss,
    fgsm,
    input_gradient_penalty,
    per_sample_weight,
    pgd,
    robust_accuracy,
    train_classifier,
)


def two_class_linear(w0: list[float], w1: list[float]) -> nn.Module:
    """Logits (w0 . x, w1 . x) of flattened x: the CE input gradient is W^T (softmax - onehot)."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(len(w0), 2, bias=False))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([w0, w1]))
    return model


def test_penalty_pinned_by_hand_at_the_decision_boundary():
    # At x = 0 both logits are 0, p = (1/2, 1/2), so g = (w_other - w_y) / 2 = (+-1, 0):
    # ||g||^2 = 1, per-sample penalty 1/2, batch-mean penalty 1/2 / B, CE = log 2.
    model = two_class_linear([0.0, 0.0], [2.0, 0.0])
    images = torch.zeros(4, 1, 1, 2)
    labels = torch.tensor([0, 1, 0, 1])
    per_sample = input_gradient_penalty(model, images, labels, scaling="per-sample")
    batch_mean = input_gradient_penalty(model, images, labels, scaling="batch-mean")
    assert per_sample.item() == pytest.approx(0.5)
    assert batch_mean.item() == pytest.approx(0.5 / 4)
    loss = double_backprop_loss(model, images, labels, weight=2.0)
    assert loss.item() == pytest.approx(math.log(2) + 1.0)


def test_batch_mean_scaling_is_half_the_squared_gradient_of_the_mean_loss():
    torch.manual_seed(0)
    model = SmallCNN(width=4, hidden=16)
    images, labels = torch.rand(5, 1, 28, 28), torch.tensor([0, 3, 3, 9, 1])
    x = images.clone().requires_grad_(True)
    (grad_of_mean,) = torch.autograd.grad(F.cross_entropy(model(x), labels), x)
    expected = 0.5 * grad_of_mean.pow(2).sum()
    got = input_gradient_penalty(model, images, labels, scaling="batch-mean")
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=0)


def test_weights_map_between_scalings_by_the_batch_size():
    torch.manual_seed(1)
    model = SmallCNN(width=4, hidden=16)
    batch = 6
    images, labels = torch.rand(batch, 1, 28, 28), torch.randint(0, 10, (batch,))
    ratio = input_gradient_penalty(model, images, labels) / input_gradient_penalty(
        model, images, labels, scaling="batch-mean"
    )
    assert ratio.item() == pytest.approx(batch, rel=1e-5)
    batch_mean_weight = 5.6e4
    per_sample = double_backprop_loss(
        model, images, labels, weight=per_sample_weight(batch_mean_weight, batch)
    )
    batch_mean = double_backprop_loss(
        model, images, labels, weight=batch_mean_weight, scaling="batch-mean"
    )
    torch.testing.assert_close(per_sample, batch_mean, rtol=1e-5, atol=0)
    assert per_sample_weight(5.6e4, 64) == pytest.approx(875.0)


def test_loss_without_penalty_is_the_cross_entropy_and_the_penalty_trains_the_weights():
    torch.manual_seed(2)
    model = SmallCNN(width=4, hidden=16)
    images, labels = torch.rand(3, 1, 28, 28), torch.tensor([1, 2, 3])
    plain = double_backprop_loss(model, images, labels, weight=0.0)
    torch.testing.assert_close(plain, F.cross_entropy(model(images), labels))
    input_gradient_penalty(model, images, labels).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"weight": 1.0, "scaling": "sum"}, "scaling"), ({"weight": -1.0}, "weight")],
)
def test_bad_arguments_say_what_is_allowed(kwargs, message):
    model = two_class_linear([0.0], [1.0])
    with pytest.raises(ValueError, match=message):
        double_backprop_loss(model, torch.zeros(2, 1, 1, 1), torch.tensor([0, 1]), **kwargs)
    with pytest.raises(ValueError, match="per image"):
        input_gradient_penalty(model, torch.zeros(2, 1, 1, 1), torch.tensor([0]))


def test_fgsm_on_a_linear_model_is_the_closed_form_step():
    # CE gradient of a 2-class linear model has the sign of (w_other - w_label), wherever x is.
    w0, w1 = [1.0, -2.0, 0.5], [-1.0, 1.0, 0.5 + 1e-3]
    model = two_class_linear(w0, w1)
    images = torch.tensor([[0.5, 0.5, 0.5], [0.02, 0.99, 0.5]]).view(2, 1, 1, 3)
    labels = torch.tensor([0, 1])
    direction = torch.tensor(w1) - torch.tensor(w0)
    expected = torch.stack([0.5 + 0.1 * direction.sign(), torch.zeros(3)])
    expected[1] = (images[1].flatten() - 0.1 * direction.sign()).clamp(0, 1)
    adversarial = fgsm(model, images, labels, eps=0.1)
    torch.testing.assert_close(adversarial.flatten(1), expected)
    assert adversarial[1].flatten().tolist() == pytest.approx([0.12, 0.89, 0.4])


def test_pgd_reaches_the_corner_of_the_ball_on_a_linear_model():
    # The loss of a linear model is maximized over the box at x + eps * sign(direction):
    # the FGSM point. From any random start, 40 steps of eps/10 get there and stay.
    model = two_class_linear([1.0, -2.0, 0.5, 0.0], [-1.0, 1.0, 0.7, -3.0])
    images = torch.rand(8, 1, 1, 4, generator=torch.Generator().manual_seed(0)) * 0.5 + 0.25
    labels = torch.randint(0, 2, (8,), generator=torch.Generator().manual_seed(1))
    generator = torch.Generator().manual_seed(2)
    adversarial = pgd(model, images, labels, eps=0.1, generator=generator)
    torch.testing.assert_close(adversarial, fgsm(model, images, labels, eps=0.1))


def test_pgd_stays_in_the_eps_ball_and_the_image_range():
    torch.manual_seed(3)
    model = SmallCNN(width=4, hidden=16)
    images = torch.rand(4, 1, 28, 28).round()  # pixels at 0 and 1: clamping matters
    labels = torch.tensor([0, 1, 2, 3])
    adversarial = pgd(model, images, labels, eps=0.3, steps=5)
    assert (adversarial - images).abs().max() <= 0.3 + 1e-6
    assert adversarial.min() >= 0 and adversarial.max() <= 1
    assert torch.equal(pgd(model, images, labels, eps=0.0, steps=2), images)
    with pytest.raises(ValueError, match="steps"):
        pgd(model, images, labels, eps=0.1, steps=0)
    with pytest.raises(ValueError, match="eps"):
        fgsm(model, images, labels, eps=-0.1)


def test_attacks_run_in_eval_mode_and_restore_the_modes_they_found():
    # Dropout(p=1) zeroes every input in train mode, so the gradient (and the FGSM step) is
    # zero unless the attack switches to eval mode; the frozen batch norm must stay in eval.
    model = nn.Sequential(nn.Dropout(p=1.0), nn.Flatten(), nn.Linear(3, 2), nn.BatchNorm1d(2))
    model.train()
    model[3].eval()
    modes = [m.training for m in model.modules()]
    images = torch.full((4, 1, 1, 3), 0.5)
    labels = torch.tensor([0, 1, 0, 1])
    attacks = {
        "fgsm": lambda: fgsm(model, images, labels, eps=0.1),
        "pgd": lambda: pgd(model, images, labels, eps=0.1, steps=2, random_start=False),
        "robust_accuracy": lambda: robust_accuracy(model, images, labels),
    }
    for name, attack in attacks.items():
        result = attack()
        assert [m.training for m in model.modules()] == modes, name
        if isinstance(result, torch.Tensor):
            assert not torch.equal(result, images), f"{name} did not attack in eval mode"


def test_robust_accuracy_white_box_and_transfer():
    # Model A: class 1 iff x > 0.5 (logits 0 and 10 (x - 0.5)); model B never changes its mind.
    class Threshold(nn.Module):
        def __init__(self, slope: float) -> None:
            super().__init__()
            self.slope = slope

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            score = self.slope * (x.flatten(1) - 0.5)
            return torch.cat([torch.zeros_like(score), score], dim=1)

    sensitive, stubborn = Threshold(10.0), Threshold(0.0)
    images = torch.tensor([0.3, 0.45, 0.55, 0.9]).view(4, 1, 1, 1)
    labels = torch.tensor([0, 0, 1, 1])
    attack = lambda model, x, y: fgsm(model, x, y, eps=0.1)  # noqa: E731
    assert robust_accuracy(sensitive, images, labels) == 1.0
    assert robust_accuracy(sensitive, images, labels, attack, batch_size=3) == 0.5
    # Crafted on the sensitive model, the examples fool it, not the stubborn one (all class 0).
    assert robust_accuracy(stubborn, images, labels) == 0.5
    assert robust_accuracy(stubborn, images, labels, attack, source=sensitive) == 0.5


def test_training_loop_is_seeded_and_learns_a_separable_problem():
    images = torch.rand(64, 1, 1, 2, generator=torch.Generator().manual_seed(0))
    labels = (images.flatten(1).sum(1) > 1).long()

    def fit(seed: int) -> tuple[list[float], nn.Module]:
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Flatten(), nn.Linear(2, 2))
        optimizer = torch.optim.SGD(model.parameters(), lr=2.0)

        def step(x: torch.Tensor, y: torch.Tensor) -> float:
            optimizer.zero_grad()
            loss = double_backprop_loss(model, x, y, weight=0.01)
            loss.backward()
            optimizer.step()
            return loss.item()

        losses = train_classifier(model, images, labels, step, epochs=8, batch_size=16, seed=seed)
        return losses, model

    losses, model = fit(0)
    assert losses == fit(0)[0]
    assert losses[-1] < 0.5 * losses[0]
    assert robust_accuracy(model, images, labels) >= 0.9
    assert SmallCNN()(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_quick_study_writes_report_figure_and_sane_accuracies(tmp_path):
    from gradpen.studies.robust import QUICK, run, settings

    report = run(tmp_path, quick=True)
    assert "| lambda (per-sample) |" in report.read_text()
    assert (tmp_path / "robust.png").stat().st_size > 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["settings"] == settings(quick=True)
    per_seed = results["accuracy_per_seed"]
    assert sorted(per_seed) == sorted(f"{w:g}" for w in QUICK.weights)
    for metrics in per_seed.values():
        assert "clean" in metrics and "pgd 0.1" in metrics and "transfer 0.3" in metrics
        for values in metrics.values():
            assert len(values) == len(QUICK.seeds)
            assert all(0.0 <= v <= 1.0 for v in values)
    # Against its own FGSM the unregularized model is exactly its transfer target.
    assert per_seed["0"]["fgsm 0.1"] == per_seed["0"]["transfer 0.1"]
