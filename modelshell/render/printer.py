"""Writes an Outcome: results to stdout (rich or JSON), the error line to stderr."""
from __future__ import annotations

import sys
from typing import TextIO

from rich.console import Console

from modelshell.render.json import to_json_line
from modelshell.render.rich import to_renderable
from modelshell.results import Message, Outcome, Text

__all__ = ["Printer", "make_console"]

PIPE_WIDTH = 100  # a fixed width when stdout is not a terminal, so scripted output is stable


def make_console(file: TextIO | None = None, width: int | None = None) -> Console:
    file = file or sys.stdout
    is_terminal = file.isatty()
    return Console(
        file=file,
        width=width or (None if is_terminal else PIPE_WIDTH),
        color_system="auto" if is_terminal else None,
        highlight=False,
        soft_wrap=False,
    )


class Printer:
    """Draws outcomes. ``pager`` pages long text (``doc``) on a terminal; pipes never page."""

    def __init__(self, out: TextIO | None = None, err: TextIO | None = None, interactive: bool = False,
                 width: int | None = None, ascii_only: bool = False) -> None:
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.console = make_console(self.out, width)
        self.interactive = interactive
        self.ascii_only = ascii_only

    def show(self, outcome: Outcome) -> None:
        for result in outcome.results:
            if outcome.as_json:
                self.out.write(to_json_line(result) + "\n")
                self.out.flush()
            elif isinstance(result, Text) and result.page and self.interactive and self._too_long(result.text):
                with self.console.pager(styles=False):
                    self.console.print(result.text, markup=False, highlight=False)
            elif isinstance(result, Text):
                # What Python printed (and help text) goes out as it is: rich would re-wrap long lines at
                # the console width and expand tabs, which breaks output that scripts read back.
                self.out.write(result.text if result.text.endswith("\n") else result.text + "\n")
            else:
                # A message keeps its one line (paths in it too) however narrow the console.
                self.console.print(to_renderable(result, self.ascii_only), soft_wrap=isinstance(result, Message))
        self.out.flush()
        if outcome.traceback:
            self.err.write(outcome.traceback)
        if outcome.error:
            self.err.write(f"error: {outcome.error}\n")
            self.err.flush()

    def _too_long(self, text: str) -> bool:
        return text.count("\n") + 1 > self.console.size.height - 2
