"""The one error type the user sees.

A ``ModelshellError`` is a value, not a crash: the shell prints its one line (and hint) and keeps going,
``modelshell run`` turns it into exit status 1, and only ``--debug`` shows a traceback.
"""
from __future__ import annotations

__all__ = ["ModelshellError", "first_line"]


class ModelshellError(Exception):
    """A failure explained in one line for the user, with an optional hint on what to do instead."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        """The message and hint as the single line the shell prints."""
        return f"{self.message} ({self.hint})" if self.hint else self.message


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message: framework errors can run to pages, users need one line."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
