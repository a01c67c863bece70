"""gradpen.keep_freed_memory: a penalized step stops faulting its pages in again (glibc)."""

from __future__ import annotations

import ctypes
import statistics
import subprocess
import sys
import textwrap

import pytest

import gradpen as gp


def _has_glibc() -> bool:
    try:
        return hasattr(ctypes.CDLL("libc.so.6"), "gnu_get_libc_version")
    except OSError:
        return False


# A WGAN-GP critic step on the DCGAN-28 critic, 16 times; prints what keep_freed_memory returned
# (None when not called) and the minor page faults of each step.
PROBE = textwrap.dedent(
    """
    import resource, sys, torch
    import gradpen as gp
    from gradpen.nets import DCGANCritic28
    torch.set_num_threads(1)
    applied = gp.keep_freed_memory() if sys.argv[1] == "keep" else None
    torch.manual_seed(0)
    critic = DCGANCritic28()
    optimizer = torch.optim.Adam(critic.parameters())
    real, fake = torch.rand(64, 1, 28, 28), torch.rand(64, 1, 28, 28)
    penalty = gp.Penalty("wgan-gp", 10.0)
    faults = []
    for _ in range(16):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        optimizer.zero_grad()
        loss = critic(fake).mean() - critic(real).mean() + penalty(critic, real=real, fake=fake)
        loss.backward()
        optimizer.step()
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    print(applied, *faults)
    """
)


@pytest.mark.skipif(not _has_glibc(), reason="glibc's mallopt only")
def test_penalized_steps_stop_faulting_pages_once_freed_memory_is_kept() -> None:
    # In a child process: the setting is process-wide and cannot be undone. Without it this
    # machine's glibc faulted 750-3000 pages in on most steps after the first (median over steps
    # 5-20: 1536-2322); with it 0-2 on most steps, with a rare step of a few hundred.
    out = subprocess.run(
        [sys.executable, "-c", PROBE, "keep"], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out[0] == "True"
    faults = [int(count) for count in out[1:]]
    assert len(faults) == 16 and faults[0] > 1000  # the first step faults its memory in once
    assert statistics.median(faults[4:]) < 50, faults


def test_elsewhere_it_does_nothing_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    assert gp.keep_freed_memory() is False
