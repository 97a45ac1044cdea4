"""The shell's output sink: what a running line writes reaches the terminal as it is written.

The session writes a Python line's output to the sink it was given (``modelshell.core.output``); the
interactive shell gives it this one, which first stops the spinner, so the spinner shows only while
nothing has been written and never draws over a program's own output, a progress bar or an ``input()``
prompt.
"""
from __future__ import annotations

from collections.abc import Callable

from modelshell.core.output import StreamSink

__all__ = ["TerminalOutput"]


class TerminalOutput(StreamSink):
    """Writes through to the terminal (stdout, stderr); ``stop_spinner`` is the running line's spinner."""

    def __init__(self) -> None:
        super().__init__()
        self.stop_spinner: Callable[[], None] = lambda: None

    def before_first_write(self) -> None:
        self.stop_spinner()
