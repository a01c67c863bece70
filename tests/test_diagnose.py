"""gp.diagnose: ops without a double backward by module path, sample mixing, notes, bad input."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.autograd.function import once_differentiable

import gradpen as gp


class _Cube(torch.autograd.Function):
    """x^3 with a correct first derivative but no second one (@once_differentiable)."""

    @staticmethod
    def forward(ctx: object, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)  # type: ignore[attr-defined]
        return x**3

    @staticmethod
    @once_differentiable
    def backward(ctx: object, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors  # type: ignore[attr-defined]
        return 3 * x**2 * grad


class Cube(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _Cube.apply(x)


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 8)
        self.act = Cube()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.fc(x))


class MinibatchStd(nn.Module):
    """StyleGAN's minibatch-stddev feature: one channel holding the batch's mean std."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        std = x.std(dim=0).mean().expand(x.shape[0], 1)
        return torch.cat([x, std], dim=1)


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 1))


def dcgan() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 4, stride=2, padding=1),
        nn.LeakyReLU(0.2),
        nn.Conv2d(8, 16, 4, stride=2, padding=1),
        nn.LeakyReLU(0.2),
        nn.Flatten(),
        nn.Linear(16 * 2 * 2, 1),
    )


class Projection(nn.Module):
    """A conditional critic: an MLP plus a projection of the label embedding."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 8), nn.ReLU())
        self.out = nn.Linear(8, 1)
        self.embed = nn.Embedding(3, 8)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.body(x)
        return self.out(h).squeeze(1) + (self.embed(y) * h).sum(1)


def test_plain_critics_pass() -> None:
    torch.manual_seed(0)
    for critic, x in ((mlp(), torch.randn(6, 4)), (dcgan(), torch.randn(3, 3, 8, 8))):
        report = gp.diagnose(critic, x)
        assert report.ok and report.problems == [] and report.mixing == []
        assert str(report).startswith("gradpen.diagnose: OK")
    assert gp.diagnose(Projection(), torch.randn(4, 4), torch.tensor([0, 1, 2, 0])).ok


def test_once_differentiable_op_named_by_module_path() -> None:
    torch.manual_seed(0)
    critic = nn.Sequential(nn.Linear(4, 4), Block(), nn.Linear(8, 1))
    report = gp.diagnose(critic, torch.randn(3, 4))
    assert not report.ok
    assert report.no_double_backward == ["1.act"]  # the innermost module, not "1" or the root
    assert len(report.problems) == 1
    assert "layer '1.act' (Cube)" in report.problems[0]
    assert "once_differentiable" in report.problems[0]
    assert "NOT OK" in str(report) and "1.act" in str(report)


def test_batchnorm_in_training_mode_named() -> None:
    torch.manual_seed(0)
    critic = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 1))
    before = critic[1].running_mean.clone()
    report = gp.diagnose(critic, torch.randn(5, 4))
    assert not report.ok and report.mixing == ["1"]
    assert len(report.problems) == 1  # found by type and numerically: reported once
    assert "layer '1' (BatchNorm1d)" in report.problems[0]
    assert torch.equal(critic[1].running_mean, before)  # the critic's buffers are restored
    critic.eval()  # running statistics: no mixing
    assert gp.diagnose(critic, torch.randn(5, 4)).ok


def test_minibatch_stddev_detected_numerically() -> None:
    torch.manual_seed(0)
    critic = nn.Sequential(nn.Linear(4, 8), nn.LeakyReLU(0.2), MinibatchStd(), nn.Linear(9, 1))
    report = gp.diagnose(critic, torch.randn(4, 4))
    assert not report.ok and report.mixing == ["2"]
    assert "samples mix" in report.problems[0] and "layer '2' (MinibatchStd)" in report.problems[0]
    assert not gp.diagnose(lambda x: critic(x), torch.randn(4, 4)).ok  # any callable


class TwoScales(nn.Module):
    """A multi-scale patch critic: a list of two patch maps."""

    def __init__(self) -> None:
        super().__init__()
        self.fine = nn.Conv2d(3, 1, 3, padding=1)
        self.coarse = nn.Sequential(
            nn.Conv2d(3, 4, 4, stride=2, padding=1), nn.ReLU(), nn.Conv2d(4, 1, 3, padding="same")
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.fine(x), self.coarse(x)]


def test_output_reduction_note() -> None:
    torch.manual_seed(0)
    report = gp.diagnose(TwoScales(), torch.randn(2, 3, 8, 8), reduce="mean")
    assert report.ok
    note = next(n for n in report.notes if n.startswith("the critic returns"))
    assert "a list of 2 outputs: output[0] (B, 1, 8, 8), output[1] (B, 1, 4, 4)" in note
    assert "the mean of their elements" in note and "reduce='mean'" in note
    single = gp.diagnose(mlp(), torch.randn(3, 4)).notes[0]
    assert single == "the critic returns one score per sample, shape (B, 1)"


def test_fast_path_coverage_note() -> None:
    torch.manual_seed(0)
    report = gp.diagnose(TwoScales(), torch.randn(2, 3, 8, 8))
    (note,) = (n for n in report.notes if n.startswith("fast path"))
    twins, plain = note.split("ran plain")
    assert "layer 'fine' (Conv2d): conv" in twins and "layer 'coarse.0' (Conv2d): conv" in twins
    assert "layer 'coarse.1' (ReLU): ReLU" in twins
    assert "layer 'coarse.2' (Conv2d): conv (padding='same')" in plain
    off = gp.diagnose(TwoScales(), torch.randn(2, 3, 8, 8), fast=False)
    assert "fast=False" in off.notes[1]


def test_bad_input_raises_value_error() -> None:
    critic = mlp()
    with pytest.raises(ValueError, match="batch size 4"):
        gp.diagnose(critic, torch.randn(4))  # one sample without its batch dim
    with pytest.raises(ValueError, match="at least 2 samples"):
        gp.diagnose(critic, torch.randn(1, 4))
    with pytest.raises(ValueError, match="floating-point"):
        gp.diagnose(critic, torch.ones(3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="batch size 3"):
        gp.diagnose(lambda x: critic(x).sum(0), torch.randn(3, 4))
    with pytest.raises(ValueError, match="could not run on x"):
        gp.diagnose(critic, torch.randn(3, 5))
