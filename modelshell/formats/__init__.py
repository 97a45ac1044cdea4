"""What modelshell reads and writes: one registry of formats (see ``registry``), imported without any
framework."""
from __future__ import annotations

from modelshell.formats.registry import FORMATS, Format, FormatRegistry

__all__ = ["FORMATS", "Format", "FormatRegistry", "markdown_table"]


def markdown_table() -> str:
    """The README's table of formats, as the registry renders it."""
    return FORMATS.markdown_table()
