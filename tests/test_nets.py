"""Generators and critics: shapes, values on hand-set weights, penalty-safety, error messages."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from gradpen.errors import UserError
from gradpen.nets import (
    DCGANCritic28,
    DCGANGenerator28,
    MLPCritic,
    MLPGenerator,
    build_critic,
    build_generator,
)

NORMS = ["none", "layer", "batch"]
BATCH = 4


def has_batch_norm(module: nn.Module) -> bool:
    return any(isinstance(m, _BatchNorm) for m in module.modules())


def labels_for(n_classes: int) -> torch.Tensor | None:
    return torch.arange(BATCH) % n_classes if n_classes else None


def test_mlp_defaults_follow_the_official_toy_code() -> None:
    generator, critic = MLPGenerator(), MLPCritic()
    # 3 hidden layers of 512: 2*512+512, then 2 x (512*512+512), then the 512 -> 2 output.
    assert sum(p.numel() for p in generator.parameters()) == 1536 + 2 * 262656 + 1026
    assert [layer.out_features for layer in critic.linear_layers()] == [512, 512, 512, 1]
    assert isinstance(generator.trunk.activation, nn.ReLU)
    assert generator.noise_dim == 2 and generator.n_classes == 0
    z = generator.sample_noise(5)
    assert generator(z).shape == (5, 2)
    assert critic(generator(z)).shape == (5,)


def test_mlp_critic_value_on_hand_set_weights() -> None:
    critic = MLPCritic(width=1, depth=1)
    with torch.no_grad():
        critic.hidden_layers[0].weight.copy_(torch.tensor([[1.0, 2.0]]))
        critic.hidden_layers[0].bias.fill_(-1.0)
        critic.trunk.head.weight.fill_(3.0)
        critic.trunk.head.bias.fill_(0.5)
    x = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    # 3 * relu(1 + 2 - 1) + 0.5 = 6.5 ; 3 * relu(-1) + 0.5 = 0.5
    assert torch.allclose(critic(x), torch.tensor([6.5, 0.5]))


@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "tanh"])
@pytest.mark.parametrize("norm", NORMS)
def test_mlp_critic_shapes_norms_and_input_gradient(activation: str, norm: str) -> None:
    critic = MLPCritic(width=16, depth=2, activation=activation, norm=norm)
    assert has_batch_norm(critic) == (norm == "batch")
    x = torch.randn(BATCH, 2, requires_grad=True)
    out = critic(x)
    assert out.shape == (BATCH,)
    (grad,) = torch.autograd.grad(out.sum(), x)
    assert grad.shape == x.shape and grad.abs().sum() > 0


def test_deep_critic_exposes_every_layer() -> None:
    critic = MLPCritic(width=8, depth=12, activation="leaky_relu")
    assert len(critic.hidden_layers) == 12
    assert len(critic.linear_layers()) == 13 and critic.linear_layers()[-1].out_features == 1
    out, hidden = critic.forward_with_hidden(torch.randn(BATCH, 2))
    assert out.shape == (BATCH,)
    assert [h.shape for h in hidden] == [(BATCH, 8)] * 12
    (grads,) = torch.autograd.grad(out.sum(), [hidden[0]])
    assert grads.shape == (BATCH, 8)


@pytest.mark.parametrize("norm", ["none", "layer"])
def test_per_sample_critics_ignore_the_rest_of_the_batch(norm: str) -> None:
    """The penalty needs D(x_i) to depend on x_i alone: true for none/layer, false for batch."""
    for critic, x in [
        (MLPCritic(width=8, depth=2, norm=norm), torch.randn(BATCH, 2)),
        (DCGANCritic28(norm=norm, width=4), torch.rand(BATCH, 1, 28, 28)),
    ]:
        changed = x.clone()
        changed[1:] = changed[1:] * 3 + 1
        assert torch.allclose(critic(x)[0], critic(changed)[0], atol=1e-6)


def test_batch_norm_critic_mixes_the_batch() -> None:
    critic = MLPCritic(width=8, depth=2, norm="batch")
    x = torch.randn(BATCH, 2)
    changed = x.clone()
    changed[1:] = changed[1:] * 3 + 1
    assert not torch.allclose(critic(x)[0], critic(changed)[0])


@pytest.mark.parametrize("n_classes", [0, 10])
@pytest.mark.parametrize("cond", ["onehot", "concat", "embed"])
@pytest.mark.parametrize("norm", NORMS)
def test_dcgan_shapes_and_norms(n_classes: int, cond: str, norm: str) -> None:
    generator = DCGANGenerator28(n_classes=n_classes, cond=cond, norm=norm, width=8)
    critic = DCGANCritic28(n_classes=n_classes, cond=cond, norm=norm, width=8)
    assert has_batch_norm(generator) == has_batch_norm(critic) == (norm == "batch")
    y = labels_for(n_classes)
    images = generator(generator.sample_noise(BATCH), y)
    assert images.shape == (BATCH, 1, 28, 28)
    assert images.min() >= 0.0 and images.max() <= 1.0
    x = images.detach().requires_grad_(True)
    out = critic(x, y)
    assert out.shape == (BATCH,)
    (grad,) = torch.autograd.grad(out.sum(), x)
    assert grad.shape == x.shape and torch.isfinite(grad).all() and grad.abs().sum() > 0


@pytest.mark.parametrize("cond", ["onehot", "concat", "embed"])
def test_dcgan_labels_change_the_output(cond: str) -> None:
    torch.manual_seed(0)
    generator = DCGANGenerator28(n_classes=10, cond=cond, width=4)
    critic = DCGANCritic28(n_classes=10, cond=cond, width=4)
    z, x = generator.sample_noise(2), torch.rand(2, 1, 28, 28)
    zeros, sevens = torch.zeros(2, dtype=torch.long), torch.full((2,), 7)
    assert not torch.allclose(generator(z, zeros), generator(z, sevens))
    assert not torch.allclose(critic(x, zeros), critic(x, sevens))


def label_weights(net: torch.nn.Module, width: int) -> list[torch.Tensor]:
    """The weight slices that read the one-hot label, layer by layer from the input."""
    if isinstance(net, DCGANGenerator28):
        z_dim, base = net.noise_dim, net.base_channels
        deconvs = [m for m in net.upsample if isinstance(m, torch.nn.ConvTranspose2d)]
        return [net.project.weight[:, z_dim:], deconvs[0].weight[base:], deconvs[1].weight[width:]]
    convs = [m for m in net.features if isinstance(m, torch.nn.Conv2d)]
    features = net.head.in_features - net.n_classes
    return [convs[0].weight[:, 1:], convs[1].weight[:, width:], net.head.weight[:, features:]]


@pytest.mark.parametrize("role", ["generator", "critic"])
def test_concat_conditioning_feeds_the_label_to_every_layer(role: str) -> None:
    # Keep one layer's label weights at a time: the output still depends on the label, so
    # that layer reads it; with every label weight zeroed it does not.
    width, zeros, sevens = 4, torch.zeros(2, dtype=torch.long), torch.full((2,), 7)
    torch.manual_seed(0)
    z, x = torch.rand(2, 100) * 2 - 1, torch.rand(2, 1, 28, 28)
    for kept in [0, 1, 2, None]:
        torch.manual_seed(1)
        net = (DCGANGenerator28 if role == "generator" else DCGANCritic28)(
            n_classes=10, cond="concat", width=width
        )
        with torch.no_grad():
            for index, weight in enumerate(label_weights(net, width)):
                if index != kept:
                    weight.zero_()
        inputs = z if role == "generator" else x
        differs = not torch.allclose(net(inputs, zeros), net(inputs, sevens))
        assert differs == (kept is not None), kept


def test_dcgan_paper_defaults_noise_and_output_range() -> None:
    generator = DCGANGenerator28(width=4)
    assert generator.noise_dim == 100 and generator.output_range == (0.0, 1.0)
    z = generator.sample_noise(2000)
    assert z.shape == (2000, 100) and z.min() >= -1.0 and z.max() <= 1.0
    assert abs(z.mean().item()) < 0.01 and abs(z.var().item() - 1 / 3) < 0.01  # U(-1, 1)
    tanh_generator = DCGANGenerator28(out="tanh", noise="gaussian", width=4)
    assert tanh_generator.output_range == (-1.0, 1.0)
    images = tanh_generator(tanh_generator.sample_noise(3) * 50)
    assert images.min() >= -1.0 and images.min() < 0.0


def test_sample_noise_is_reproducible_with_a_generator() -> None:
    model = MLPGenerator(width=4, depth=1)
    draws = [model.sample_noise(6, generator=torch.Generator().manual_seed(3)) for _ in range(2)]
    assert torch.equal(*draws) and draws[0].shape == (6, 2)


def test_conditioning_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="call it with labels y"):
        DCGANCritic28(n_classes=10, width=4)(torch.rand(2, 1, 28, 28))
    with pytest.raises(ValueError, match="unconditional"):
        DCGANGenerator28(width=4)(torch.rand(2, 100), torch.zeros(2, dtype=torch.long))


def test_factory_builds_each_kind() -> None:
    assert isinstance(build_generator("mlp", width=8), MLPGenerator)
    assert isinstance(build_critic("mlp", norm="layer"), MLPCritic)
    assert isinstance(build_generator("dcgan28", n_classes=10, width=4), DCGANGenerator28)
    assert isinstance(build_critic("dcgan28", width=4), DCGANCritic28)


def test_factory_errors_name_what_is_valid() -> None:
    with pytest.raises(
        UserError, match=r"unknown critic kind 'dcgan'.*valid kinds: dcgan28, dcgan32, dcgan64, mlp"
    ):
        build_critic("dcgan")
    with pytest.raises(UserError, match=r"'widht'.*did you mean 'width'.*valid options: in_dim"):
        build_critic("mlp", widht=8)
    with pytest.raises(UserError, match=r"'z_dim'.*valid options: noise_dim, out_dim"):
        build_generator("mlp", z_dim=8)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: MLPCritic(activation="gelu"), "activation 'gelu'; valid: relu, leaky_relu, tanh"),
        (lambda: MLPCritic(norm="instance"), "norm 'instance'; valid: none, layer, batch"),
        (lambda: DCGANCritic28(cond="proj"), "conditioning 'proj'; valid: onehot, concat, embed"),
        (lambda: DCGANGenerator28(out="relu"), "output 'relu'; valid: sigmoid, tanh"),
        (lambda: DCGANGenerator28(noise="normal"), "noise 'normal'; valid: gaussian, uniform"),
        (lambda: MLPGenerator(depth=0), "depth must be >= 1"),
    ],
)
def test_bad_names_raise_value_errors_listing_valid_ones(
    make: Callable[[], nn.Module], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        make()
