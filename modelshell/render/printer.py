"""Writes an Outcome: results to stdout (rich or JSON), the error line to stderr."""
from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, TextIO

from modelshell.render.json import to_json_line
from modelshell.core.results import Message, Outcome, Text

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["Printer", "make_console"]

PIPE_WIDTH = 100  # a fixed width when stdout is not a terminal, so scripted output is stable


def make_console(file: TextIO | None = None, width: int | None = None) -> "Console":
    from rich.console import Console

    file = file or sys.stdout
    is_terminal = file.isatty()
    return Console(
        file=file,
        width=width or (None if is_terminal else PIPE_WIDTH),
        color_system="auto" if is_terminal else None,
        highlight=False,
        soft_wrap=False,
    )


def _renderable(result, ascii_only: bool):
    from modelshell.render.rich import to_renderable  # rich only once something is drawn with it

    return to_renderable(result, ascii_only)


class Printer:
    """Draws outcomes. It never decides to page: the interactive shell passes ``show`` a ``pager`` (see
    ``modelshell.terminal.paging``) that may take a drawn result and show it in a pager instead; ``run``,
    pipes, ``--json`` and transcripts pass none and never page."""

    def __init__(self, out: TextIO | None = None, err: TextIO | None = None, width: int | None = None,
                 ascii_only: bool = False, streamed_too: bool = False) -> None:
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.width = width
        self._console: Console | None = None
        self.ascii_only = ascii_only
        self.streamed_too = streamed_too  # draw text that was written out live as well (transcripts)

    @property
    def console(self) -> "Console":
        """Made at the first table: rich costs ~30 ms of imports that a script printing nothing, or only
        Python output and errors, never needs (``modelshell run`` starts in 0.2 s)."""
        if self._console is None:
            self._console = make_console(self.out, self.width)
        return self._console

    def show(self, outcome: Outcome, pager: Callable[[str], bool] | None = None) -> None:
        """Draw ``outcome``. ``pager(text)``: given each drawn result but a one-line message, it returns
        True when it showed the text itself (in a pager), and the text is then not written."""
        if not outcome.results and not outcome.error and not outcome.traceback:
            return
        if not self.streamed_too:
            outcome = replace(outcome, results=[r for r in outcome.results
                                                if not (isinstance(r, Text) and r.streamed)])
        for result in outcome.results:
            if outcome.as_json:
                self.out.write(to_json_line(result) + "\n")
                self.out.flush()
            elif isinstance(result, Text):
                # What Python printed (and help text) goes out as it is: rich would re-wrap long lines at
                # the console width and expand tabs, which breaks output that scripts read back.
                text = result.text if result.text.endswith("\n") else result.text + "\n"
                self._write(text, pager)
            elif isinstance(result, Message) and not self.out.isatty():
                # Plain text into a pipe, as rich would write it there, without importing rich: a script
                # that loads and lists (`load DIR` + `weights --json`) then never needs it.
                self.out.write("\n".join(line.rstrip() for line in result.text.split("\n")) + "\n")
            elif isinstance(result, Message):
                # A message keeps its one line (paths in it too) however narrow the console.
                self._print(_renderable(result, self.ascii_only), soft_wrap=True)
            elif pager is not None:
                with self.console.capture() as capture:  # drawn once, then shown or paged
                    self.console.print(_renderable(result, self.ascii_only))
                self._write(capture.get(), pager)
            else:
                self._print(_renderable(result, self.ascii_only))
        self.out.flush()
        if outcome.traceback:
            self.err.write(outcome.traceback)
        if outcome.error:
            self.err.write(f"error: {outcome.error}\n")
            self.err.flush()

    def _print(self, renderable, soft_wrap: bool = False) -> None:
        """Drawn on a terminal as rich draws it; into a pipe or file without the spaces rich pads each line
        of a table with, which a script reading the lines back would have to strip."""
        if self.console.is_terminal:
            self.console.print(renderable, soft_wrap=soft_wrap)
            return
        with self.console.capture() as capture:
            self.console.print(renderable, soft_wrap=soft_wrap)
        self.out.write("\n".join(line.rstrip() for line in capture.get().split("\n")))

    def _write(self, text: str, pager: Callable[[str], bool] | None) -> None:
        """``text`` as it is, unless the pager took it."""
        if pager is not None and pager(text):
            return
        self.out.write(text)
