"""Every script in examples/ runs for a few steps and prints what it reached."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
# Each example's smoke arguments, and the start of what it prints.
RUNS = {
    "plain_wgan_gp.py": (["--steps", "5"], "plain WGAN-GP, 8 gaussians, 5 generator steps"),
    "r1_lazy.py": (["--steps", "8", "--every", "1", "4"], "R1 gamma=0.1 every step"),
    "patchgan_r1.py": (["--steps", "3"], "PatchGAN + R1 (gamma=1.0), 3 steps"),
    "lightning_gan.py": (["--steps", "3"], "Lightning WGAN-GP, 8 gaussians, 3 generator steps"),
    "accelerate_gan.py": (
        ["--steps", "3", "--precision", "bf16"],
        "Accelerate WGAN-GP (mixed_precision=bf16), 8 gaussians, 3 generator steps",
    ),
}
NEEDS = {"lightning_gan.py": "pytorch_lightning", "accelerate_gan.py": "accelerate"}


def test_every_example_is_tested() -> None:
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(RUNS)


@pytest.mark.parametrize("script", sorted(RUNS))
def test_example_runs(script: str) -> None:
    if script in NEEDS and importlib.util.find_spec(NEEDS[script]) is None:
        pytest.skip(f"{NEEDS[script]} is not installed: pip install -e '.[examples]'")
    arguments, printed = RUNS[script]
    env = os.environ | {"PYTHONWARNINGS": "ignore"}
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *arguments],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert printed in result.stdout, result.stdout
    if script == "r1_lazy.py":
        assert "R1 gamma=0.1 lazy, every 4: 8 steps" in result.stdout
    if script == "patchgan_r1.py":
        assert "critic output (8, 1, 4, 4)" in result.stdout
        assert "R1 sum/mean ratio 256.0 = 16^2" in result.stdout
