"""Experiments that test the field's claims, one module each, run as ``gradpen study NAME``.

Every module in this package that defines ``run(out_dir: Path, *, quick: bool = False) -> Path``
is a study. Its CLI name is the module name with ``_`` replaced by ``-``, unless the module sets
``STUDY_NAME`` (needed where the name is a Python keyword, e.g. ``lambda``). ``run`` writes a
report directory (``report.md`` with a table, PNG figures, and ``results.json``) under
``out_dir`` and returns the path of ``report.md``. ``quick=True`` is a seconds-long smoke version
used by the tests. The module docstring states the CPU budget of the full run. ``results.json``
holds a top-level ``"settings"`` object: each arm's fully resolved settings
(see ``gradpen.studies._toolkit``). A full run also publishes its report as the user-facing page
``docs/studies/NAME.md`` (figures in ``docs/studies/NAME/``); a quick run never writes there.
A study whose runs take minutes each passes ``store=out_dir / "finished"`` to
``_toolkit.run_jobs``, which keeps each finished run's result there: the same command, rerun
after a crash, resumes.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from types import ModuleType

from gradpen.errors import UserError
from gradpen.studies._toolkit import publish


def available() -> dict[str, ModuleType]:
    """Import every study module and map its CLI name to it."""
    studies = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        if callable(getattr(module, "run", None)):
            studies[getattr(module, "STUDY_NAME", info.name.replace("_", "-"))] = module
    return studies


def load(name: str) -> ModuleType:
    """Return the study called ``name`` (CLI spelling); an unknown name lists the valid ones."""
    studies = available()
    if name not in studies:
        valid = ", ".join(sorted(studies)) or "(none installed)"
        raise UserError(f"unknown study {name!r}; available studies: {valid}")
    return studies[name]


def run(name: str, out_dir: Path, *, quick: bool = False, docs_dir: Path | None = None) -> Path:
    """Run study ``name`` into ``out_dir``; a full run also publishes its page into ``docs_dir``.

    Args:
        name: the study's CLI name.
        out_dir: the report directory.
        quick: the seconds-long smoke version (never published).
        docs_dir: where full runs write ``NAME.md`` and its figures; None: nowhere.

    Returns:
        The path of the report (``report.md``).
    """
    report = load(name).run(out_dir, quick=quick)
    if docs_dir is not None and not quick:
        publish(report, docs_dir, name)
    return report
