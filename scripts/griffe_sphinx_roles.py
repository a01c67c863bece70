"""Griffe extension: show the Sphinx roles of gradpen's docstrings as code in the API pages.

The docstrings cross-reference with Sphinx roles (``:func:`r1```, ``:data:`PENALTIES```), which
read well in the source and in ``help()``; mkdocstrings renders Markdown, where they would show
as raw ``:func:`` text. Each role becomes inline code of its target (``~`` dropped).
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:func|class|data|mod|meth|attr|obj|exc):`~?([^`]+)`")


def plain(text: str) -> str:
    """``text`` with every Sphinx role replaced by inline code of its target."""
    return ROLE.sub(r"`\1`", text)


class SphinxRoles(griffe.Extension):
    """Rewrites the roles in every docstring griffe loads."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        """Rewrite ``obj``'s docstring, if it has one."""
        if obj.docstring is not None:
            obj.docstring.value = plain(obj.docstring.value)
