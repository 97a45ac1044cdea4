"""Outcomes as plain text for transcripts: a fixed width, no colour, ASCII only, errors in line.

The same Printer that draws for people draws here, into a buffer that says it can only hold ASCII, so
rich picks ASCII boxes and tree guides by itself; trailing spaces are dropped, as a reader would.
"""
from __future__ import annotations

import io

from modelshell.render.printer import Printer
from modelshell.core.results import Outcome

__all__ = ["outcome_text", "DEFAULT_WIDTH"]

DEFAULT_WIDTH = 100


class _AsciiBuffer(io.StringIO):
    @property
    def encoding(self) -> str:  # rich reads this to choose box and tree characters
        return "ascii"

    def isatty(self) -> bool:
        return False


def outcome_text(outcome: Outcome, width: int = DEFAULT_WIDTH) -> str:
    """What the line printed, stdout and the error line together, as a transcript shows it."""
    buffer = _AsciiBuffer()
    Printer(out=buffer, err=buffer, width=width, ascii_only=True, streamed_too=True).show(outcome)
    lines = [line.rstrip() for line in buffer.getvalue().splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines)
