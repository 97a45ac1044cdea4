"""Where the output of a running Python line goes: written through as it is written, and kept.

A session given a ``LiveOutput`` (the shell, ``run``, pipes) writes what a Python line prints to the real
stdout and stderr the moment it is written, so a loop's ``print(..., flush=True)``, a progress bar or an
``input()`` prompt shows while the line runs; what went to stdout is also kept, in order, for the outcome
(transcripts and ``record`` read it from there). A session without one (transcript replay, tests) only
keeps it.
"""
from __future__ import annotations

import contextlib
import io
import sys
from collections.abc import Callable, Iterator
from typing import TextIO

__all__ = ["LiveOutput", "captured"]


class LiveOutput:
    """The sink a session writes a Python line's output to.

    ``out`` and ``err`` default to ``sys.stdout`` and ``sys.stderr`` as they are when the line starts.
    ``before_write`` is called once, before the first thing a line writes: the shell's spinner gets out of
    the way there, so it never draws over a program's own output."""

    def __init__(self, out: TextIO | None = None, err: TextIO | None = None) -> None:
        self.out = out
        self.err = err
        self.before_write: Callable[[], None] | None = None


class _Tee(io.TextIOBase):
    """A text stream that writes through to ``target`` (if any) and keeps what it was given.

    It has no ``fileno``, on purpose: ``input()`` then writes its prompt through ``write`` (which moves the
    spinner away first, and keeps the prompt in the output) instead of straight to the terminal."""

    def __init__(self, target: TextIO | None, kept: list[str] | None, first: Callable[[], None]) -> None:
        super().__init__()
        self._target, self._kept, self._first = target, kept, first

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        if text:
            self._first()
            if self._kept is not None:
                self._kept.append(text)
            if self._target is not None:
                self._target.write(text)
        return len(text)

    def flush(self) -> None:
        if self._target is not None:
            self._target.flush()

    def isatty(self) -> bool:
        return self._target is not None and self._target.isatty()

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:
        return getattr(self._target, "encoding", None) or "utf-8"


@contextlib.contextmanager
def captured(kept: list[str], live: LiveOutput | None) -> Iterator[None]:
    """While the body runs: stdout kept in ``kept`` and, with ``live``, written through; stderr written
    through with ``live`` (and left alone without)."""
    called = [False]

    def first() -> None:
        if not called[0]:
            called[0] = True
            if live is not None and live.before_write is not None:
                live.before_write()

    if live is None:
        with contextlib.redirect_stdout(_Tee(None, kept, first)):
            yield
        return
    out = _Tee(live.out or sys.stdout, kept, first)
    err = _Tee(live.err or sys.stderr, None, first)
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            yield
        finally:
            out.flush()
            err.flush()
