"""Where the output of a running Python line goes: to the sink the session was given, and into its outcome.

The session never writes to a terminal or to ``sys.stdout`` itself. It is given a sink: the shell's
(``modelshell.terminal``) writes to the terminal the moment anything is written, after its spinner got out
of the way, so a loop's ``print(..., flush=True)``, a progress bar or an ``input()`` prompt shows while the
line runs; ``run`` and pipes give a ``StreamSink`` that writes through to stdout and stderr; transcript
replay and tests give none (``OutputSink``, which shows nothing). Whatever the sink, what went to stdout
is also kept, in order, for the outcome: transcripts and ``record`` read it from there.
"""
from __future__ import annotations

import contextlib
import io
import sys
from collections.abc import Iterator
from typing import TextIO

__all__ = ["OutputSink", "StreamSink", "captured"]


class OutputSink:
    """A sink that shows nothing, and leaves stderr where it was: the outcome alone holds the output.

    ``shows``: whether what the sink is given goes out as it is written (then a printer that draws the
    outcome afterwards leaves that text out: it is on the screen already)."""

    shows = False

    def line_started(self) -> None:
        """Called before each Python line runs."""

    def before_first_write(self) -> None:
        """Called once a line, before the first thing it writes (the shell's spinner stops here)."""

    def write(self, text: str, err: bool) -> None:
        """``text`` a line wrote to stdout (or, with ``err``, to stderr)."""

    def flush(self) -> None:
        """Whatever the sink holds back goes out."""

    def isatty(self) -> bool:
        return False

    @property
    def encoding(self) -> str:
        return "utf-8"


class StreamSink(OutputSink):
    """Writes through to two text streams: ``out`` and ``err``, by default ``sys.stdout`` and ``sys.stderr``
    as they are when each line starts (so a test's or a caller's redirection is followed)."""

    shows = True

    def __init__(self, out: TextIO | None = None, err: TextIO | None = None) -> None:
        self.out, self.err = out, err
        self._streams: tuple[TextIO, TextIO] = (out or sys.stdout, err or sys.stderr)

    def line_started(self) -> None:
        self._streams = (self.out or sys.stdout, self.err or sys.stderr)

    def write(self, text: str, err: bool) -> None:
        self._streams[err].write(text)

    def flush(self) -> None:
        for stream in self._streams:
            stream.flush()

    def isatty(self) -> bool:
        return self._streams[0].isatty()

    @property
    def encoding(self) -> str:
        return getattr(self._streams[0], "encoding", None) or "utf-8"


class _Tee(io.TextIOBase):
    """A text stream that gives what it is written to the sink and keeps it (stdout) or not (stderr).

    It has no ``fileno``, on purpose: ``input()`` then writes its prompt through ``write`` (which moves the
    spinner away first, and keeps the prompt in the output) instead of straight to the terminal."""

    def __init__(self, sink: OutputSink, kept: list[str] | None, first: "_Once", err: bool) -> None:
        super().__init__()
        self._sink, self._kept, self._first, self._err = sink, kept, first, err

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        if text:
            self._first()
            if self._kept is not None:
                self._kept.append(text)
            self._sink.write(text, self._err)
        return len(text)

    def flush(self) -> None:
        self._sink.flush()

    def isatty(self) -> bool:
        return self._sink.isatty()

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:
        return self._sink.encoding


class _Once:
    """Calls the sink's ``before_first_write`` at the first write of a line, and never again."""

    def __init__(self, sink: OutputSink) -> None:
        self._sink, self._called = sink, False

    def __call__(self) -> None:
        if not self._called:
            self._called = True
            self._sink.before_first_write()


@contextlib.contextmanager
def captured(kept: list[str], sink: OutputSink) -> Iterator[None]:
    """While the body runs: stdout kept in ``kept`` and given to ``sink``; stderr given to a sink that
    shows (and left alone for one that does not)."""
    sink.line_started()
    first = _Once(sink)
    out = _Tee(sink, kept, first, err=False)
    with contextlib.ExitStack() as stack:
        stack.enter_context(contextlib.redirect_stdout(out))
        if sink.shows:
            stack.enter_context(contextlib.redirect_stderr(_Tee(sink, None, first, err=True)))
        try:
            yield
        finally:
            out.flush()
