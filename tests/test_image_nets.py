"""DCGAN-32/64 and the WGAN-GP ResNet-32: shapes, conditioning, parameter counts, the penalty."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import gradpen as gp
from gradpen.gradients import check_no_batchnorm
from gradpen.nets import (
    CRITICS,
    GENERATORS,
    DCGANCritic32,
    DCGANGenerator32,
    ResNetCritic32,
    ResNetGenerator32,
    build_critic,
    build_generator,
)

KINDS = {"dcgan32": 32, "dcgan64": 64, "resnet32": 32}
CONDITIONINGS = ["onehot", "concat", "embed"]
BATCH = 3
CLASSES = 5
WIDTH = 4


def n_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def pair(kind: str, channels: int, n_classes: int = 0, cond: str = "onehot") -> tuple:
    torch.manual_seed(0)
    generator = build_generator(
        kind, width=WIDTH, out_channels=channels, n_classes=n_classes, cond=cond
    )
    critic = build_critic(kind, width=WIDTH, in_channels=channels, n_classes=n_classes, cond=cond)
    return generator, critic


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("n_classes", [0, CLASSES])
def test_shapes_and_the_penalty_through_each_network(
    kind: str, channels: int, n_classes: int
) -> None:
    generator, critic = pair(kind, channels, n_classes)
    side = KINDS[kind]
    assert GENERATORS[kind].image_size == CRITICS[kind].image_size == side
    y = torch.arange(BATCH) % CLASSES if n_classes else None
    fake = generator(generator.sample_noise(BATCH), y)
    assert fake.shape == (BATCH, channels, side, side)
    low, high = generator.output_range
    assert low <= fake.min() and fake.max() <= high
    assert critic(fake, y).shape == (BATCH,)
    real = torch.rand(BATCH, channels, side, side)
    term = gp.Penalty("wgan-gp", weight=10.0)(critic, real=real, fake=fake.detach(), cond=y)
    assert term.ndim == 0 and torch.isfinite(term) and term > 0
    term.backward()  # reaches every weight (a bias does not enter the input gradient)
    weights = [p for p in critic.parameters() if p.ndim > 1]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in weights)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("cond", CONDITIONINGS)
def test_labels_change_both_networks(kind: str, cond: str) -> None:
    generator, critic = pair(kind, 3, CLASSES, cond)
    side = KINDS[kind]
    z, x = generator.sample_noise(2), torch.rand(2, 3, side, side)
    zeros, fours = torch.zeros(2, dtype=torch.long), torch.full((2,), 4)
    assert not torch.allclose(generator(z, zeros), generator(z, fours))
    assert not torch.allclose(critic(x, zeros), critic(x, fours))


def resnet_label_weights(net: nn.Module) -> list[torch.Tensor]:
    """The weight slices that read the one-hot label, layer by layer from the input."""
    convs = [conv for block in net.blocks for conv in (block.conv1, block.conv2)]
    if isinstance(net, ResNetGenerator32):
        first = [net.project.weight[:, net.noise_dim :]]
        last = net.to_image.weight[:, WIDTH:]
    else:
        first = [convs.pop(0).weight[:, 3:]]  # the image has 3 channels
        last = net.head.weight[:, WIDTH:]
    return first + [conv.weight[:, WIDTH:] for conv in convs] + [last]


@pytest.mark.parametrize("role", ["generator", "critic"])
def test_resnet_concat_conditioning_feeds_the_label_to_every_layer(role: str) -> None:
    # Keep one layer's label weights at a time: the output still depends on the label, so that
    # layer reads it; with every label weight zeroed it does not.
    zeros, fours = torch.zeros(2, dtype=torch.long), torch.full((2,), 4)
    torch.manual_seed(0)
    z, x = torch.randn(2, 128), torch.rand(2, 3, 32, 32)
    layers = 2 + 2 * (3 if role == "generator" else 4) - (role == "critic")
    for kept in [*range(layers), None]:
        torch.manual_seed(1)
        cls = ResNetGenerator32 if role == "generator" else ResNetCritic32
        net = cls(n_classes=CLASSES, cond="concat", width=WIDTH).eval()
        weights = resnet_label_weights(net)
        assert len(weights) == layers
        with torch.no_grad():
            for index, weight in enumerate(weights):
                if index != kept:
                    weight.zero_()
        inputs = z if role == "generator" else x
        differs = not torch.allclose(net(inputs, zeros), net(inputs, fours))
        assert differs == (kept is not None), kept


def test_resnet_has_the_official_codes_parameter_counts() -> None:
    # gan_cifar_resnet.py, DIM_G = DIM_D = 128, unconditional, by hand:
    dim, conv3, conv1 = 128, 128 * 128 * 9 + 128, 128 * 128 + 128
    batch_norm = 2 * dim  # scale and offset
    up_block = conv1 + 2 * conv3 + 2 * batch_norm  # 1x1 shortcut, two 3x3 convs, two norms
    generator = (128 * 16 * dim + 16 * dim) + 3 * up_block + batch_norm + (dim * 3 * 9 + 3)
    first_block = (3 * dim + dim) + (3 * dim * 9 + dim) + conv3
    down_block = conv1 + 2 * conv3
    plain_block = 2 * conv3  # identity shortcut
    critic = first_block + down_block + 2 * plain_block + (dim + 1)
    assert (generator, critic) == (1_204_483, 1_053_825)
    assert n_params(ResNetGenerator32()) == generator
    assert n_params(ResNetCritic32()) == critic


def test_dcgan32_parameter_count_by_hand() -> None:
    w, z, c = 64, 128, 3
    generator = (z * 16 * 4 * w + 16 * 4 * w) + sum(
        a * b * 16 + b for a, b in [(4 * w, 2 * w), (2 * w, w), (w, c)]
    )
    critic = sum(a * b * 16 + b for a, b in [(c, w), (w, 2 * w), (2 * w, 4 * w)]) + 4 * w * 16 + 1
    assert n_params(DCGANGenerator32(z_dim=z, width=w, out_channels=c)) == generator
    assert n_params(DCGANCritic32(width=w, in_channels=c)) == critic


@pytest.mark.parametrize("norm", ["none", "layer"])
def test_resnet_critic_is_per_sample_and_penalty_safe(norm: str) -> None:
    torch.manual_seed(0)
    critic = ResNetCritic32(width=WIDTH, norm=norm)
    check_no_batchnorm(critic)  # raises on a batch-mixing norm
    x = torch.rand(4, 3, 32, 32)
    torch.testing.assert_close(critic(x)[:1], critic(x[:1]))
    with pytest.raises(ValueError, match="batch"):
        check_no_batchnorm(ResNetCritic32(width=WIDTH, norm="batch"))


def test_resnet_defaults_are_the_papers() -> None:
    generator = ResNetGenerator32()
    assert (generator.noise_dim, generator.noise, generator.out) == (128, "gaussian", "tanh")
    assert any(isinstance(m, nn.BatchNorm2d) for m in generator.modules())
    assert not any(isinstance(m, nn.BatchNorm2d | nn.GroupNorm) for m in ResNetCritic32().modules())
