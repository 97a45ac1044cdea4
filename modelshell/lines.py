"""Group input lines into complete inputs: one command, or one whole Python block.

Scripts, piped standard input and transcripts hold Python blocks (``for ...:`` and its body) across lines;
this is the one place that decides where such a block ends, the way the Python REPL does: at a blank
line, or at a line that is not indented and does not continue the block (``else:``, ``except:``...).
Neither ends an input that cannot end yet: an open bracket (a closing ``)`` is rarely indented) or a
decorator waiting for its ``def``.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator

__all__ = ["complete_inputs"]

_CONTINUES_BLOCK = re.compile(r"^(else|elif|except|finally)\b")


def complete_inputs(lines: Iterable[str], needs_more: Callable[[str], bool]) -> Iterator[tuple[int, str]]:
    """Yield (first line number, text) for each complete input; line numbers start at 1."""
    buffer: list[str] = []
    start = 0
    for number, raw in enumerate(lines, start=1):
        line = raw.rstrip("\r\n")
        if buffer:
            if _continues(buffer, line, needs_more):
                buffer.append(line)
                continue
            yield start, "\n".join(buffer)
            buffer = []
            if not line.strip():
                continue
        if needs_more(line):
            buffer, start = [line], number
        else:
            yield number, line
    if buffer:
        yield start, "\n".join(buffer)


def _continues(buffer: list[str], line: str, needs_more: Callable[[str], bool]) -> bool:
    """Whether ``line`` belongs to the input in ``buffer``: it must if the buffer cannot end here (even a
    blank line would leave it incomplete), and it does if it is indented or is ``else:`` and the like."""
    if needs_more("\n".join(buffer) + "\n") or buffer[-1].endswith("\\"):  # a backslash joins the next line
        return True
    return bool(line.strip()) and bool(line[0].isspace() or _CONTINUES_BLOCK.match(line))
