"""Errors that mean "the user asked for something invalid" (the CLI exits 2 on them)."""

from __future__ import annotations


class UserError(ValueError):
    """A bad config, path or value given by the user; the message says what is allowed."""
