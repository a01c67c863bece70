"""Shared test setup.

- One torch thread (tiny ops run faster, and the CI machine is shared).
- The fast path's twins on every convolution: the tests' convolutions are far smaller than
  :data:`gradpen.fastpath.SMALL_CONV_MACS`, below which the shipped fast path leaves a
  convolution to PyTorch; the twins' tests check the twin itself. ``tests/test_fast_switch.py``
  checks the shipped size rule.
"""

import pytest
import torch

from gradpen import fastpath

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def twin_every_convolution(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fastpath, "SMALL_CONV_MACS", 0)
