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

__all__ = ["complete_inputs", "after_enter", "dedent_continuation", "undecodable", "INDENT"]

_CONTINUES_BLOCK = re.compile(r"^(else|elif|except|finally)\b")
_ENDS_BODY = re.compile(r"^\s*(pass|return|raise|break|continue)\b")
INDENT = "    "


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


def after_enter(text: str, needs_more: Callable[[str], bool]) -> str | None:
    """What Enter does at the end of ``text`` in the shell's one multi-line buffer, as in the REPL: None
    when the input is complete and runs (a command, a finished statement, an error to show, or a block
    whose last line is left empty), else the newline and indentation to insert (four spaces more after a
    ``:``, four fewer after ``return``, ``pass`` and the like)."""
    *before, last = text.split("\n")
    if not last.strip():
        return None if not before or not needs_more("\n".join(before) + "\n") else "\n" + _indent(last)
    if not needs_more(text):
        return None
    indent = _indent(last)
    if last.rstrip().endswith(":"):
        indent += INDENT
    elif _ENDS_BODY.match(last):
        indent = indent[:-len(INDENT)] if indent.endswith(INDENT) else ""
    return "\n" + indent


def dedent_continuation(text: str) -> str:
    """``text`` with its last line moved one level out when it is ``else:``, ``except ...:`` and the like
    typed at the indentation of the line before it (where Enter put the cursor): it continues the
    statement that opened the block, not the block's body."""
    lines = text.split("\n")
    if len(lines) < 2 or not _CONTINUES_BLOCK.match(lines[-1].lstrip()):
        return text
    indent, previous = _indent(lines[-1]), _indent(lines[-2])
    if not indent.endswith(INDENT) or len(indent) < len(previous):
        return text
    return "\n".join(lines[:-1] + [lines[-1][len(INDENT):]])


def _indent(line: str) -> str:
    return line[: len(line) - len(line.lstrip())]


_UNDECODED = re.compile("[\udc80-\udcff]")  # what ``surrogateescape`` makes of a byte that is not UTF-8


def undecodable(text: str) -> str | None:
    """What is wrong with an input read with ``surrogateescape`` that held bytes that are not UTF-8 (the
    first such byte and where it is), or None when it decoded cleanly."""
    found = _UNDECODED.search(text)
    if found is None:
        return None
    before = text[: found.start()]
    line, column = before.count("\n") + 1, found.start() - (before.rfind("\n") + 1) + 1
    where = f"line {line}, column {column}" if "\n" in text else f"column {column}"
    return f"not valid UTF-8: byte 0x{ord(found.group()) - 0xdc00:02x} at {where}"
