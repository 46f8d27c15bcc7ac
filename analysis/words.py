"""Counts in prose, shared by the table checks' messages and the reports' sentences."""

from __future__ import annotations


def plural(count: int, noun: str, many: str | None = None) -> str:
    """``1 model``, ``2 models``, ``0 models`` (``many``: an irregular plural form)."""
    return f"{count} {noun if count == 1 else many or noun + 's'}"


def noun(count: int, singular: str, many: str | None = None) -> str:
    """The noun alone, in the number ``count`` asks for: ``column`` / ``columns``."""
    return singular if count == 1 else many or singular + "s"
