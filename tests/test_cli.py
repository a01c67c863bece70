"""The command line: exit codes and messages."""

from __future__ import annotations

import subprocess
import sys

from gradpen.cli import main
from gradpen.penalties import PENALTIES


def test_demo_prints_every_penalty(capsys):
    assert main(["demo", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    for name in PENALTIES:
        assert name in out


def test_unknown_study_is_a_user_error(capsys):
    assert main(["study", "no-such-study"]) == 2
    err = capsys.readouterr().err
    assert "unknown study 'no-such-study'" in err and "Traceback" not in err


def test_module_entry_point_runs():
    done = subprocess.run(
        [sys.executable, "-m", "gradpen", "study", "nope"], capture_output=True, text=True
    )
    assert done.returncode == 2 and "available studies" in done.stderr
