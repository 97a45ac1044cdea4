"""Python lines as CPython's interactive interpreter runs them: compile, run, display, explain errors.

What ``code.InteractiveConsole`` accepts, this accepts, and it prints the same: an input is compiled in
"single" mode with one ``codeop.CommandCompiler`` per session (so ``from __future__ import ...`` holds for
the lines after it), an expression statement shows its ``repr`` and is kept in ``_`` (the two before it in
``__`` and ``___``, as IPython has them), and one input may be a one-line compound statement
(``for i in range(3): print(i)``), a decorated definition or a multi-line string or bracket.

Two things differ, on purpose: an input of several statements (a script's lines that belong together, a
transcript step over ``..>`` lines) runs as a module would, where the REPL refuses it; and an error is one
line, ``NameError: name 'x' is not defined``, the last line of the REPL's traceback, while the whole
traceback is kept for ``%tb``.
"""
from __future__ import annotations

import codeop
import linecache
import sys
from types import CodeType, TracebackType
from typing import Any

from modelshell.core.errors import first_line

__all__ = ["PythonLines", "FILENAME", "INPUT_NAME", "error_line", "formatted_traceback"]

FILENAME = "<modelshell>"
INPUT_NAME = "modelshell-input"  # the file name of a traceback's frames in a line typed: <modelshell-input-3>
_NAMESPACE_MODULE = "__modelshell__"  # the session namespace's __name__; its classes are named bare


class PythonLines:
    """The compiler and the display hook of one session's Python lines."""

    def __init__(self, namespace: dict[str, Any]) -> None:
        self.namespace = namespace
        self._compiler = codeop.CommandCompiler()
        self._inputs = 0

    def incomplete(self, source: str) -> bool:
        """True while ``source`` is the start of an input the REPL would wait for more of (``for ...:``,
        an open bracket, a one-line ``if x: y`` until the blank line after it). Errors are complete: they
        show when the input runs."""
        try:
            return self._compiler(source, FILENAME, "single") is None
        except (SyntaxError, ValueError, OverflowError):
            return False

    def compile(self, source: str) -> CodeType:
        """The code of one complete input, as the REPL compiles it once the blank line after it came.
        Raises SyntaxError (and its IndentationError) with the REPL's message."""
        compiler = self._compiler.compiler  # a codeop.Compile: it keeps the __future__ flags seen so far
        filename = self._remember(source)
        try:
            return compiler(source + "\n", filename, "single", incomplete_input=False)
        except SyntaxError as exc:
            if "multiple statements" not in str(exc):
                raise
        return compiler(source + "\n", filename, "exec", incomplete_input=False)

    def _remember(self, source: str) -> str:
        """A name of its own for each input, with its lines in ``linecache`` (as IPython keeps its cells),
        so that a traceback shows the source line of each frame, functions defined lines ago too."""
        self._inputs += 1
        filename = f"<{INPUT_NAME}-{self._inputs}>"
        linecache.cache[filename] = (len(source), None, (source + "\n").splitlines(True), filename)
        return filename

    def run(self, code: CodeType) -> None:
        """Run compiled code in the namespace with this session's display hook."""
        old_hook = sys.displayhook
        sys.displayhook = self.display
        try:
            exec(code, self.namespace)  # noqa: S102 - running the user's Python is the point
        finally:
            sys.displayhook = old_hook

    def display(self, value: Any) -> None:
        """Like the REPL's ``sys.displayhook``: the repr of a value that is not None, kept in ``_``."""
        if value is None:
            return
        text = repr(value)  # before ``_`` moves: a repr that fails changes nothing
        namespace = self.namespace
        namespace["___"], namespace["__"] = namespace.get("__"), namespace.get("_")
        namespace["_"] = value
        sys.stdout.write(text + "\n")


def error_line(exc: BaseException, source: str = "") -> str:
    """The line the REPL's traceback ends with (``ZeroDivisionError: division by zero``), cut to the
    message's first line; a SyntaxError in an input of several lines says which line."""
    name = _type_name(type(exc))
    if isinstance(exc, SyntaxError):
        where = f" (line {exc.lineno})" if exc.lineno and "\n" in source.strip() else ""
        return f"{name}: {exc.msg}{where}"
    return f"{name}: {first_line(exc)}" if str(exc).strip() else name


def formatted_traceback(exc: BaseException, own_frames: str = "") -> str:
    """The traceback the REPL would print: the frames that lead to the user's code (this file's, and
    those of ``own_frames``, the caller's file) are left out."""
    tb: TracebackType | None = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename in (__file__, own_frames):
        tb = tb.tb_next
    import traceback  # only when a line failed: start-up does not pay for it

    if isinstance(exc, SyntaxError):
        return "".join(traceback.format_exception_only(type(exc), exc))
    return "".join(traceback.format_exception(type(exc), exc, tb))


def _type_name(cls: type) -> str:
    """As ``traceback.format_exception_only`` names it: qualified by its module unless that is builtins or
    the session namespace (the REPL's ``__main__``)."""
    module = getattr(cls, "__module__", None)
    if module in (None, "builtins", "__main__", _NAMESPACE_MODULE):
        return cls.__qualname__
    return f"{module}.{cls.__qualname__}"
