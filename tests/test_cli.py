"""The command line: exit codes and messages."""

from __future__ import annotations

import subprocess
import sys

from gradpen.cli import main


def test_demo_command_trains_and_reports(tmp_path, capsys):
    assert main(["demo", "--seed", "1", "--steps", "4", "--out", str(tmp_path / "d")]) == 0
    out = capsys.readouterr().out
    assert "modes covered:" in out and (tmp_path / "d" / "summary.json").is_file()
    assert main(["demo", "--steps", "0"]) == 2


def test_unknown_study_is_a_user_error(capsys):
    assert main(["study", "no-such-study"]) == 2
    err = capsys.readouterr().err
    assert "unknown study 'no-such-study'" in err and "Traceback" not in err


def test_module_entry_point_runs():
    done = subprocess.run(
        [sys.executable, "-m", "gradpen", "study", "nope"], capture_output=True, text=True
    )
    assert done.returncode == 2 and "available studies" in done.stderr
