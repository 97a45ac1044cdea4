"""Results as rich renderables: tables, trees, text, histograms."""
from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator

from rich import box
from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, Group, RenderableType
from rich.measure import Measurement
from rich.segment import Segment
from rich.table import Table as RichTable
from rich.text import Text as RichText
from rich.tree import Tree as RichTree

from modelshell.render.bars import histogram_renderable, with_sparklines_drawn
from modelshell.render.fit import column_limits
from modelshell.core.results import Histogram, Message, Result, Table, Text, Tree, TreeNode

__all__ = ["to_renderable"]

# SIMPLE_HEAD (a rule under the header, nothing else) in ASCII, for transcripts.
_AFTER_SEPARATOR = re.compile(r"(?<=[/._])")
_ASCII_SIMPLE_HEAD = box.Box("    \n    \n -- \n    \n    \n    \n    \n    \n", ascii=True)


def to_renderable(result: Result, ascii_only: bool = False) -> RenderableType:
    """The rich view of one result. ``ascii_only`` draws boxes and guides in plain ASCII (transcripts)."""
    if isinstance(result, Table):
        return _table(result, ascii_only)
    if isinstance(result, Tree):
        return _tree(result, ascii_only)
    if isinstance(result, Text):
        return RichText(result.text.rstrip("\n"))
    if isinstance(result, Message):
        return RichText(result.text)
    if isinstance(result, Histogram):
        return histogram_renderable(result, ascii_only)
    raise TypeError(f"no renderer for {type(result).__name__}")


def _table(result: Table, ascii_only: bool) -> RenderableType:
    result = with_sparklines_drawn(result, ascii_only)  # the glyphs are chosen here; every cell is text after
    return _with_footer(_FittedTable(result, ascii_only), result.footer)


class _FittedTable:
    """A table built at the width it is drawn at, so that it never draws wider than the terminal
    (``fit.column_limits`` says how each column gives way).

    A table that fits as it is, one line a cell, has its rows drawn here rather than by rich, which
    takes half a millisecond a row: a model's thousands of tensors list at once. Title, header and
    rule are still rich's, and the rows are the same characters rich would draw."""

    def __init__(self, result: Table, ascii_only: bool) -> None:
        self.result = result
        self.ascii_only = ascii_only

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> Iterator[RenderableType | Segment]:
        result = self.result
        natural = [max(_cell_width(cell) for cell in [column.header, *(row[i] for row in result.rows)])
                   for i, column in enumerate(result.columns)]
        limits = column_limits(natural, [column.no_wrap for column in result.columns], options.max_width)
        if any(limits) or any("\n" in cell for row in result.rows for cell in row):
            yield _rich_table(result, self.ascii_only, limits)
            return
        head = _rich_table(dataclasses.replace(result, rows=[]), self.ascii_only, limits, widths=natural)
        *top, bottom = Segment.split_lines(console.render(head, options))
        for line in top:
            yield from line
            yield Segment.line()
        justify = [column.justify for column in result.columns]
        for row in result.rows:
            yield Segment(_row_line(row, natural, justify))
            yield Segment.line()
        yield from bottom
        yield Segment.line()

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        unlimited = [None] * len(self.result.columns)
        return Measurement.get(console, options, _rich_table(self.result, self.ascii_only, unlimited))


def _row_line(row: list[str], widths: list[int], justify: list[str]) -> str:
    """One row as rich draws it in our tables: an edge, cells padded to their columns, 3 spaces between."""
    cells = []
    for cell, width, how in zip(row, widths, justify):
        space = width - cell_len(cell)
        left = {"right": space, "center": space // 2}.get(how, 0)
        cells.append(" " * left + cell + " " * (space - left))
    return " " + "   ".join(cells) + " "


def _cell_width(cell: str) -> int:
    return max(cell_len(line) for line in cell.split("\n"))


def _rich_table(result: Table, ascii_only: bool, limits: list[int | None],
                widths: list[int] | None = None) -> RichTable:
    table = RichTable(
        title=result.title or None,
        title_justify="left",
        box=_ASCII_SIMPLE_HEAD if ascii_only else box.SIMPLE_HEAD,
        header_style="bold",
        pad_edge=False,
    )
    for i, (column, limit) in enumerate(zip(result.columns, limits)):  # a no_wrap column that must give way folds
        table.add_column(column.header, justify=column.justify, no_wrap=column.no_wrap and limit is None,
                         max_width=limit, overflow="fold", width=widths[i] if widths else None)
    for row in result.rows:  # cells are text, never markup: a doc line's "[batch, time]" stays as it is
        table.add_row(*(RichText(_broken_at_separators(cell, limit) if limit else cell)
                        for cell, limit in zip(row, limits)))
    return table


def _broken_at_separators(cell: str, width: int) -> str:
    """A name wider than its column, broken after a ``/``, ``.`` or ``_`` where the width allows, so that
    ``lenet5/conv2d_1/kernel`` folds as ``lenet5/`` + ``conv2d_1/kernel``, not mid-word; a part still
    too wide is folded by rich. Text with spaces is left to rich, which wraps at them."""
    if cell_len(cell) <= width or any(char.isspace() for char in cell):
        return cell
    lines, line = [], ""
    for part in _AFTER_SEPARATOR.split(cell):
        if line and cell_len(line) + cell_len(part) > width:
            lines.append(line)
            line = part
        else:
            line += part
    return "\n".join(lines + [line])


def _tree(result: Tree, ascii_only: bool) -> RenderableType:
    tree = RichTree(_label(result.root), guide_style="dim")
    _add_children(tree, result.root)
    if result.title:
        tree = Group(RichText(result.title, style="italic"), tree)
    return _with_footer(tree, result.footer)


def _add_children(branch: RichTree, node: TreeNode) -> None:
    for child in node.children:
        _add_children(branch.add(_label(child)), child)


def _label(node: TreeNode) -> RichText:
    label = RichText(node.label, style="bold")
    if node.detail:
        label.append("  " + node.detail)
    return label


def _with_footer(renderable: RenderableType, footer: list[str]) -> RenderableType:
    if not footer:
        return renderable
    return Group(renderable, *(RichText(line) for line in footer))
