"""DiffAugment: shapes, differentiability, hand-made cases, and where the penalty is taken."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import gradpen as gp
from gradpen.augment import (
    POLICIES,
    AugmentedCritic,
    adjust_color,
    cut_out,
    diff_augment,
    parse_policy,
    translate,
)
from gradpen.errors import UserError
from gradpen.train import Trainer, load


def test_translate_shifts_and_fills_with_zeros_on_a_hand_made_image():
    x = torch.arange(1.0, 10.0).reshape(1, 1, 3, 3)  # rows [1 2 3], [4 5 6], [7 8 9]
    down_left = translate(x, torch.tensor([1]), torch.tensor([-1]))
    assert down_left[0, 0].tolist() == [[0, 0, 0], [2, 3, 0], [5, 6, 0]]
    two = torch.cat([x, 10 * x])
    out = translate(two, torch.tensor([0, -2]), torch.tensor([2, 0]))  # per sample
    assert out[0, 0].tolist() == [[0, 0, 1], [0, 0, 4], [0, 0, 7]]
    assert out[1, 0].tolist() == [[70, 80, 90], [0, 0, 0], [0, 0, 0]]


def test_cut_out_zeroes_the_rectangle_clipped_at_the_border():
    x = torch.ones(2, 2, 4, 4)
    out = cut_out(x, top=torch.tensor([1, -1]), left=torch.tensor([0, 3]), size=(2, 2))
    expected_first = torch.tensor([[1, 1, 1, 1], [0, 0, 1, 1], [0, 0, 1, 1], [1, 1, 1, 1.0]])
    expected_second = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1.0]])
    for channel in range(2):
        assert torch.equal(out[0, channel], expected_first)
        assert torch.equal(out[1, channel], expected_second)


def test_adjust_color_on_a_hand_solvable_image():
    # Two channels, two pixels: channel 0 = [0, 2], channel 1 = [2, 4].
    x = torch.tensor([[[[0.0, 2.0]], [[2.0, 4.0]]]])
    identity = adjust_color(x, torch.zeros(1), torch.ones(1), torch.ones(1))
    torch.testing.assert_close(identity, x)
    # brightness +1: [1, 3], [3, 5]; pixel means over channels 2 and 4; saturation 0 -> the
    # means in both channels: [2, 4], [2, 4]; image mean 3; contrast 2 -> [1, 5], [1, 5].
    out = adjust_color(x, torch.ones(1), torch.zeros(1), torch.full((1,), 2.0))
    torch.testing.assert_close(out, torch.tensor([[[[1.0, 5.0]], [[1.0, 5.0]]]]))


@pytest.mark.parametrize("policy", [*POLICIES, "color,translation,cutout"])
def test_each_policy_keeps_the_shape_changes_the_image_and_is_per_sample(policy):
    torch.manual_seed(0)
    x = torch.rand(6, 3, 16, 16)
    out = diff_augment(x, policy)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert not torch.equal(out, x)
    # Row i depends on row i only: the Jacobian of sample 0's output in sample 1 is zero.
    x = x.requires_grad_()
    torch.manual_seed(1)
    (grad,) = torch.autograd.grad(diff_augment(x, policy)[0].sum(), x)
    assert grad[1:].abs().sum() == 0 and grad[0].abs().sum() > 0


@pytest.mark.parametrize(
    "transform",
    [
        lambda x: adjust_color(
            x, torch.tensor([0.3, -0.2]), torch.tensor([1.5, 0.4]), torch.tensor([0.7, 1.2])
        ),
        lambda x: translate(x, torch.tensor([1, -2]), torch.tensor([-1, 0])),
        lambda x: cut_out(x, torch.tensor([0, 2]), torch.tensor([1, -1]), (2, 3)),
    ],
    ids=["color", "translation", "cutout"],
)
def test_each_transform_passes_gradcheck_and_gradgradcheck_in_float64(transform):
    x = torch.rand(2, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(transform, (x,))
    assert torch.autograd.gradgradcheck(transform, (x,))


def test_the_policy_is_parsed_and_checked():
    assert parse_policy(" color , cutout ") == ("color", "cutout")
    assert parse_policy("") == ()
    with pytest.raises(ValueError, match="unknown augmentation 'flip'"):
        parse_policy("color,flip")
    with pytest.raises(ValueError, match="twice"):
        parse_policy("color,color")
    with pytest.raises(UserError, match=r"train\.augment: unknown augmentation"):
        load(None, ["data.name='mnist5k'", "train.augment='zoom'"])
    with pytest.raises(UserError, match="2-D toy"):
        load(None, ["train.augment='color'"])


class RecordingCritic(nn.Module):
    """A linear critic on images that records every input it is called with."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.weight = nn.Parameter(torch.randn(shape))
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.detach().clone())
        return (x * self.weight).flatten(1).sum(1)


def test_r1_through_the_augmentation_is_the_gradient_at_the_unaugmented_image():
    """For a linear critic after a translation by (dh, dw), d/dx sum(w * T(x)) at pixel (a, b)
    is w[a + dh, b + dw] where that pixel is inside the image, else 0 (written out by hand)."""
    batch, side = 4, 8
    real = torch.rand(batch, 1, side, side)
    critic = RecordingCritic((1, side, side))
    torch.manual_seed(9)
    gradient = gp.input_gradient(AugmentedCritic(critic, "translation"), real)
    torch.manual_seed(9)  # the same draw: shifts in [-1, 1] (1/8 of 8 pixels), rows then columns
    shift_h, shift_w = torch.randint(-1, 2, (batch,)), torch.randint(-1, 2, (batch,))
    expected = torch.zeros(batch, 1, side, side)
    weight = critic.weight.detach()
    for n in range(batch):
        for a in range(side):
            for b in range(side):
                row, col = a + int(shift_h[n]), b + int(shift_w[n])
                if 0 <= row < side and 0 <= col < side:
                    expected[n, 0, a, b] = weight[0, row, col]
    assert (shift_h != 0).any() or (shift_w != 0).any()  # the case is not the identity
    torch.testing.assert_close(gradient, expected)
    assert not torch.equal(critic.seen[0], real)  # the critic itself saw translated images


IMAGES = [
    "data.name='mnist5k'",
    "generator.kind='dcgan28'",
    "critic.kind='dcgan28'",
    "generator.width=4",
    "critic.width=4",
    "train.batch_size=4",
    "train.augment='color,translation,cutout'",
    "log.progress=false",
]


def recorded_inputs(
    trainer: Trainer, penalty: str
) -> tuple[list, list, torch.Tensor, torch.Tensor]:
    """One critic update; the inputs of the augmented critic and of the critic inside it."""
    trainer.penalty = gp.Penalty(penalty, 10.0)
    before, inside = [], []
    trainer.D_seen.register_forward_pre_hook(lambda m, args: before.append(args[0].detach()))
    trainer.D.register_forward_pre_hook(lambda m, args: inside.append(args[0].detach()))
    real = torch.rand(4, 1, 28, 28)
    fake = torch.rand(4, 1, 28, 28)
    trainer.critic_update(real, fake, None)
    return before, inside, real, fake


def test_the_loop_takes_r1_at_the_unaugmented_reals_of_the_loss_forward(tmp_path):
    trainer = Trainer(load(None, IMAGES), tmp_path / "run")
    before, inside, real, fake = recorded_inputs(trainer, "r1")
    # R1 reuses the loss's forward: two calls, the pre-augmentation reals and fakes
    assert len(before) == 2
    assert torch.equal(before[0], real) and torch.equal(before[1], fake)
    assert all(not torch.equal(a, b) for a, b in zip(inside, before, strict=True))


def test_the_loop_takes_wgan_gp_at_interpolates_of_the_unaugmented_batches(tmp_path):
    trainer = Trainer(load(None, IMAGES), tmp_path / "run")
    before, inside, real, fake = recorded_inputs(trainer, "wgan-gp")
    assert len(before) == 3  # the penalty's forward first, then the loss's two
    x_hat = before[0]
    # On the segment from each fake to its real: x_hat - fake = eps * (real - fake), one eps
    # per sample in [0, 1] (the augmented images would not lie on it).
    eps = ((x_hat - fake) * (real - fake)).flatten(1).sum(1) / (real - fake).flatten(1).pow(2).sum(
        1
    )
    assert ((eps >= 0) & (eps <= 1)).all()
    torch.testing.assert_close(x_hat, fake + eps.reshape(-1, 1, 1, 1) * (real - fake))
    assert not torch.equal(inside[0], x_hat)


def test_the_generator_loss_sees_augmented_fakes(tmp_path):
    trainer = Trainer(load(None, IMAGES), tmp_path / "run")
    before, inside = [], []
    trainer.D_seen_by_G.register_forward_pre_hook(lambda m, a: before.append(a[0].detach()))
    trainer.D.register_forward_pre_hook(lambda m, a: inside.append(a[0].detach()))
    trainer.generator_step()
    assert len(before) == len(inside) == 1
    assert before[0].shape == inside[0].shape and not torch.equal(before[0], inside[0])
