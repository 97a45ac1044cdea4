"""Plain results that commands return and renderers draw.

Commands compute these and never print; ``modelshell.render`` turns them into rich output for people,
one JSON line for scripts (``--json``), or fixed-width text for transcripts. Each result carries the
``data`` it prints as JSON, so the JSON view never has to re-derive anything from the table.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union

__all__ = ["Column", "Table", "TreeNode", "Tree", "Text", "Message", "Result", "Failed", "Outcome"]


@dataclass(frozen=True)
class Column:
    header: str
    justify: str = "left"  # "right" for numbers
    no_wrap: bool = False


@dataclass
class Table:
    """Rows of cells (already formatted as strings) with totals or notes shown under them."""

    title: str
    columns: list[Column]
    rows: list[list[str]]
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
    """Free text such as ``doc`` output or what a Python line printed. ``page`` asks for a pager when long."""

    text: str
    page: bool = False
    data: Any = None


@dataclass
class Message:
    """A one-line confirmation ("loaded ..."); ``data`` is what ``--json`` prints, if the command has it."""

    text: str
    data: Any = None


Result = Union[Table, Tree, Text, Message]


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
