"""MkDocs hook: put every study page that exists (``docs/studies/*.md``) in the nav.

The study pages are written by ``gradpen study NAME`` and may be added, renamed or absent; a
static nav entry for a missing page would fail ``mkdocs build --strict``, and a page left out of
the nav would be unreachable. The section "Studies" is inserted before "Results", one entry per
file in name order, titled by the page's first heading; with no study pages there is no section.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def study_nav(docs_dir: Path) -> list[str]:
    """The study pages under ``docs_dir/studies``, as nav paths, sorted (index page first)."""
    pages = sorted((docs_dir / "studies").glob("*.md"), key=lambda p: (p.stem != "index", p.stem))
    return [page.relative_to(docs_dir).as_posix() for page in pages]


def on_config(config: Any) -> Any:
    """Insert the "Studies" section into the configured nav."""
    pages = study_nav(Path(config["docs_dir"]))
    nav = config["nav"]
    if pages and nav is not None:
        titles = [next(iter(entry)) if isinstance(entry, dict) else entry for entry in nav]
        where = titles.index("Results") if "Results" in titles else len(nav)
        nav.insert(where, {"Studies": pages})
    return config
