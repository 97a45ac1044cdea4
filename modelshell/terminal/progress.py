"""A spinner for interactive lines that take a while, so a big load or a long forward pass does not look
like a hung shell.

Only the interactive loop uses it, and only on a terminal: ``run``, piped input, transcripts and
``--json`` lines never show one. Nothing shows for a line that ends within ``DELAY`` seconds (most lines),
and the spinner is transient: once the line ends it is erased, and the output starts where it stood.
"""
from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from rich.console import Console
from rich.text import Text

if TYPE_CHECKING:
    from rich.live import Live
    from rich.spinner import Spinner

__all__ = ["spinner", "label", "DELAY"]

DELAY = 1.0  # seconds before the spinner shows: a line that is quicker draws nothing at all
_LABEL_WIDTH = 50


@contextlib.contextmanager
def spinner(console: Console, line: str, words: list[str] | None,
            delay: float = DELAY) -> Iterator[Callable[[], None]]:
    """Show a spinner labelled with what runs while the body runs longer than ``delay`` seconds.
    ``words``: the line's words if it is a command (``Session.command_words``), None for Python.

    The body runs in the calling (main) thread, so Ctrl-C still interrupts it; the spinner is drawn from
    a thread of its own and is always erased before this returns, interrupted or not. The body is given
    a function that erases it for good: called before the line writes anything of its own, so that the
    spinner shows only while nothing has been written, and never draws over output."""
    if not console.is_terminal or (words is not None and "--json" in words):
        yield lambda: None
        return
    status = _Status(console, label(line, words), delay)
    status.start()
    try:
        yield status.stop
    finally:
        status.stop()


def label(line: str, words: list[str] | None) -> str:
    """What the spinner says runs: the command with file names for paths (``load big.safetensors``), or
    the first line of Python, cut to fit. ``words``: as for ``spinner``."""
    first = line.strip().splitlines()[0] if line.strip() else ""
    if words is not None:
        text = " ".join(os.path.basename(w.rstrip("/")) or w if "/" in w else w for w in words)
    else:
        text = " ".join(first.split()) + (" ..." if "\n" in line.strip() else "")
    return text if len(text) <= _LABEL_WIDTH else text[: _LABEL_WIDTH - 3] + "..."


class _Status:
    """A rich Live spinner started by a timer thread, with the seconds since the line started.

    Live must not redirect stdout or stderr: it would swap ``sys.stdout`` from another thread while the
    session captures a Python line's output by swapping it too, and one would restore the other's."""

    def __init__(self, console: Console, text: str, delay: float) -> None:
        self._console, self._text, self._delay = console, text, delay
        self._started = time.monotonic()
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._live: Live | None = None
        self._spinner: Spinner | None = None
        self._thread = threading.Thread(target=self._show_later, name="modelshell-spinner", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        while True:
            try:
                with self._lock:
                    if self._live is not None:
                        self._live.stop()
                        self._live = None
                return
            except KeyboardInterrupt:  # a second Ctrl-C while the spinner is erased: erase it all the same
                continue

    def _show_later(self) -> None:
        if self._done.wait(self._delay):
            return
        from rich.live import Live  # only for a line that takes long: start-up is spared the import
        from rich.spinner import Spinner

        self._spinner = Spinner("dots", style="cyan")
        with self._lock:
            if self._done.is_set():
                return
            self._live = Live(get_renderable=self._renderable, console=self._console, transient=True,
                              refresh_per_second=8, redirect_stdout=False, redirect_stderr=False)
            self._live.start()

    def _renderable(self) -> Spinner:
        seconds = f"  {time.monotonic() - self._started:.0f} s, Ctrl-C cancels"
        # One line, short of the last column: a line that fills the terminal leaves the cursor waiting to
        # wrap, and each redraw would then land a line lower. The spinner and its space take 2.
        room = self._console.width - 3 - len(seconds)
        text = self._text if len(self._text) <= room else self._text[: max(room - 3, 0)] + "..."
        self._spinner.update(text=Text.assemble(text, (seconds, "dim"), no_wrap=True, overflow="crop"))
        return self._spinner
