"""Sparklines and histogram bars: counts drawn as heights or lengths of characters.

Commands hand over plain counts (``Sparkline`` cells, ``Histogram`` results); the glyphs are chosen here,
block characters for people and an ASCII ramp for transcripts (``ascii_only``), so the same result reads
in a terminal and replays as a test.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterator

from rich.console import Console, ConsoleOptions, Group, RenderableType
from rich.text import Text as RichText

from modelshell.core.results import Cell, Histogram, Sparkline, Table

__all__ = ["sparkline_text", "with_sparklines_drawn", "histogram_renderable"]

# Heights, an empty bin first: a blank only ever means "no value here".
_SPARK = " ▁▂▃▄▅▆▇█"
_ASCII_SPARK = " .:-=+*#"
_EIGHTHS = " ▏▎▍▌▋▊▉"  # a bar's last, partial character, in eighths of a cell
_MIN_BAR = 10  # however narrow the console, a bar this long still tells bins apart


def sparkline_text(counts: tuple[int, ...] | list[int], ascii_only: bool = False) -> str:
    """One character a bin, scaled to the fullest bin; a bin with any value at all never looks empty."""
    ramp = _ASCII_SPARK if ascii_only else _SPARK
    peak = max(counts, default=0)
    top = len(ramp) - 1
    return "".join(ramp[max(1, round(c / peak * top)) if c > 0 else 0] for c in counts)


def with_sparklines_drawn(table: Table, ascii_only: bool) -> Table:
    """The table with every sparkline cell turned into its characters, so that table drawing (and its
    width fitting) sees only strings."""
    if not any(isinstance(cell, Sparkline) for row in table.rows for cell in row):
        return table
    rows = [[_cell_text(cell, ascii_only) for cell in row] for row in table.rows]
    return dataclasses.replace(table, rows=rows)


def _cell_text(cell: Cell, ascii_only: bool) -> str:
    return sparkline_text(cell.counts, ascii_only) if isinstance(cell, Sparkline) else cell


def histogram_renderable(result: Histogram, ascii_only: bool) -> RenderableType:
    """Title, one bar a bin, then the footer lines, spaced as a table is."""
    parts: list[RenderableType] = [RichText(result.title, style="italic")] if result.title else []
    if result.counts:
        parts += [RichText(""), _Bars(result.edges, result.counts, ascii_only), RichText("")]
    parts += [RichText(line) for line in result.footer]
    return Group(*parts)


class _Bars:
    """One line a bin: its interval, its count, and a bar as long as the console leaves room for."""

    def __init__(self, edges: list[float], counts: list[int], ascii_only: bool) -> None:
        self.labels = _bin_labels(edges)
        self.counts = counts
        self.ascii_only = ascii_only

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> Iterator[RichText]:
        numbers = [f"{c:,}" for c in self.counts]
        label_width = max(map(len, self.labels))
        count_width = max(map(len, numbers))
        room = max(_MIN_BAR, options.max_width - label_width - count_width - 5)
        peak = max(self.counts)
        for label, number, count in zip(self.labels, numbers, self.counts):
            line = RichText(f" {label:<{label_width}}  {number:>{count_width}}  ")
            line.append(_bar(count / peak * room if peak else 0.0, count > 0, self.ascii_only), style="cyan")
            yield line


def _bar(length: float, any_value: bool, ascii_only: bool) -> str:
    """``length`` cells of bar: whole characters, then eighths (``#`` only, in ASCII); at least a sliver
    for a bin that holds anything, so one outlier still shows next to a bin of millions."""
    if ascii_only:
        return "#" * max(int(any_value), round(length))
    eighths = max(int(any_value), round(length * 8))
    return "█" * (eighths // 8) + _EIGHTHS[eighths % 8].strip()


def _bin_labels(edges: list[float]) -> list[str]:
    """``[a, b)`` for each bin and ``[a, b]`` for the last (np.histogram's bins), with as many
    significant digits as it takes for neighbouring edges to read differently."""
    texts = _distinct_texts(edges)
    left, right = texts[:-1], texts[1:]
    left_width, right_width = max(map(len, left)), max(map(len, right))
    closing = [")"] * (len(left) - 1) + ["]"]
    return [f"[{a:>{left_width}}, {b:>{right_width}}{c}" for a, b, c in zip(left, right, closing)]


def _distinct_texts(values: list[float]) -> list[str]:
    for digits in range(3, 18):
        texts = [f"{v:.{digits}g}" for v in values]
        if len(set(texts)) == len(set(values)):
            return texts
    return [repr(v) for v in values]
