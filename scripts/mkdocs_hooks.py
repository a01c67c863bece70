"""MkDocs hook: every page under ``docs/`` is in the nav, including pages others add later.

The study pages are written by ``gradpen study NAME`` and may be added, renamed or absent, and
other pages (``docs/recipes.md``) arrive from other branches. A static nav entry for a missing
page fails ``mkdocs build --strict``, and a page left out of the nav is unreachable (and fails
``validation.omitted_files: warn``). So the nav in ``mkdocs.yml`` lists the pages that always
exist, and this hook inserts, before "Results":

- every other top-level page (``docs/*.md``), in name order;
- the section "Studies": every ``docs/studies/*.md``, in name order (an index page first).

With no study pages there is no section.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any


def study_nav(docs_dir: Path) -> list[str]:
    """The study pages under ``docs_dir/studies``, as nav paths, sorted (index page first)."""
    pages = sorted((docs_dir / "studies").glob("*.md"), key=lambda p: (p.stem != "index", p.stem))
    return [page.relative_to(docs_dir).as_posix() for page in pages]


def nav_paths(nav: Any) -> Iterator[str]:
    """Every page path in a nav (nested lists of ``{title: path or list}`` and paths)."""
    if isinstance(nav, str):
        yield nav
    elif isinstance(nav, list):
        for entry in nav:
            yield from nav_paths(entry)
    elif isinstance(nav, dict):
        for value in nav.values():
            yield from nav_paths(value)


def on_config(config: Any) -> Any:
    """Insert the pages that exist but are not in the configured nav."""
    docs_dir = Path(config["docs_dir"])
    nav = config["nav"]
    if nav is None:  # no nav: MkDocs lists every page itself
        return config
    listed = set(nav_paths(nav))
    extra: list[Any] = sorted(
        page.name for page in docs_dir.glob("*.md") if page.name not in listed
    )
    studies = [page for page in study_nav(docs_dir) if page not in listed]
    if studies:
        extra.append({"Studies": studies})
    titles = [next(iter(entry)) if isinstance(entry, dict) else entry for entry in nav]
    where = titles.index("Results") if "Results" in titles else len(nav)
    nav[where:where] = extra
    return config
