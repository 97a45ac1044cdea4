"""Plain results that commands return and renderers draw.

Commands compute these and never print; ``modelshell.render`` turns them into rich output for people,
one JSON line for scripts (``--json``), or fixed-width text for transcripts. Each result carries the
``data`` it prints as JSON, so the JSON view never has to re-derive anything from the table.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union

__all__ = [
    "Column", "Sparkline", "Cell", "Table", "TreeNode", "Tree", "Text", "Message", "Histogram", "Result", "Failed",
    "Outcome",
]


@dataclass(frozen=True)
class Column:
    header: str
    justify: str = "left"  # "right" for numbers
    no_wrap: bool = False


@dataclass(frozen=True)
class Sparkline:
    """A table cell that is a tiny histogram: one character a bin, its height the bin's count. Commands
    give the counts; each renderer picks its glyphs (block characters for people, an ASCII ramp for
    transcripts)."""

    counts: tuple[int, ...]


Cell = Union[str, Sparkline]


@dataclass
class Table:
    """Rows of cells (already formatted as strings, or sparklines) with totals or notes shown under them."""

    title: str
    columns: list[Column]
    rows: list[list[Cell]]
    footer: list[str] = field(default_factory=list)
    data: Any = None


@dataclass
class TreeNode:
    label: str
    detail: str = ""
    children: list["TreeNode"] = field(default_factory=list)


@dataclass
class Tree:
    title: str
    root: TreeNode
    footer: list[str] = field(default_factory=list)
    data: Any = None


@dataclass
class Text:
    """Free text such as ``doc`` output or what a Python line printed. ``streamed``: the text went out as
    it was written (a Python line's live output); a printer that shows the outcome afterwards leaves it
    out, a transcript keeps it. (No result says whether to page: the terminal decides, by its height.)"""

    text: str
    data: Any = None
    streamed: bool = False


@dataclass
class Message:
    """A one-line confirmation ("loaded ..."); ``data`` is what ``--json`` prints, if the command has it."""

    text: str
    data: Any = None


@dataclass
class Histogram:
    """Counts of values in bins, drawn as one horizontal bar a bin. ``edges`` has one more entry than
    ``counts``, as ``np.histogram`` returns them: bin i holds edges[i] <= x < edges[i + 1], the last one
    closed. The renderer fits the bars to the width it has."""

    title: str
    edges: list[float]
    counts: list[int]
    footer: list[str] = field(default_factory=list)
    data: Any = None


Result = Union[Table, Tree, Text, Message, Histogram]


@dataclass
class Failed:
    """What a command returns when it has something to show and the line must still fail (``verify``
    finding a mismatch shows its table, and ``run`` exits 1)."""

    results: list[Result]
    error: str


@dataclass
class Outcome:
    """What one input line produced: results to draw, and whether the line failed (exit status in ``run``)."""

    results: list[Result] = field(default_factory=list)
    ok: bool = True
    error: str | None = None
    as_json: bool = False
    exit_requested: bool = False
    traceback: str | None = None
    missing: str | None = None  # the package a failed line needed and did not find (replay skips on it)
