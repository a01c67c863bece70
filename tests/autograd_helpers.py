"""Autograd helpers shared by the fast-path tests."""

from __future__ import annotations

import torch


class NoGradient(torch.autograd.Function):
    """The identity whose backward sends no gradient (None) back."""

    @staticmethod
    def forward(ctx, t: torch.Tensor) -> torch.Tensor:
        return t.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> None:
        return None
