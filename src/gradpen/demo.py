"""``gradpen demo``: the value of every registered penalty on a small critic and 2-D data."""

from __future__ import annotations

import torch
from torch import nn

from gradpen.penalties import PENALTIES, Penalty


def penalty_table(seed: int = 0) -> str:
    """Compute each registered penalty (weight 1) for a random MLP critic on 2-D points."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    critic = nn.Sequential(nn.Linear(2, 64), nn.LeakyReLU(0.2), nn.Linear(64, 1))
    real = torch.randn(256, 2, generator=generator)
    fake = 0.5 * torch.randn(256, 2, generator=generator) + 2.0
    rows = [f"{'penalty':<14} {'value (weight 1)':>16}"]
    for name in PENALTIES:
        value = Penalty(name, weight=1.0)(critic, real=real, fake=fake)
        rows.append(f"{name:<14} {value.item():>16.6f}")
    return "\n".join(rows)
