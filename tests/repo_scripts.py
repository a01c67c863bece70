"""Import the repository's scripts (``benchmarks/``, ``scripts/``) as modules in the tests."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent


def load_script(relative_path: str) -> ModuleType:
    """Import ``ROOT / relative_path`` once, under its file stem, and return the module.

    Args:
        relative_path: the script's path from the repository root, e.g.
            ``"benchmarks/kill_resume.py"``.

    Returns:
        The module, registered in ``sys.modules`` (a second call returns the same one).
    """
    path = ROOT / relative_path
    if path.stem in sys.modules:
        return sys.modules[path.stem]
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module
