"""Results as rich renderables: tables, trees, text."""
from __future__ import annotations

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table as RichTable
from rich.text import Text as RichText
from rich.tree import Tree as RichTree

from modelshell.results import Message, Result, Table, Text, Tree, TreeNode

__all__ = ["to_renderable"]

# SIMPLE_HEAD (a rule under the header, nothing else) in ASCII, for transcripts.
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
    raise TypeError(f"no renderer for {type(result).__name__}")


def _table(result: Table, ascii_only: bool) -> RenderableType:
    table = RichTable(
        title=result.title or None,
        title_justify="left",
        box=_ASCII_SIMPLE_HEAD if ascii_only else box.SIMPLE_HEAD,
        header_style="bold",
        pad_edge=False,
    )
    for column in result.columns:
        table.add_column(column.header, justify=column.justify, no_wrap=column.no_wrap, overflow="fold")
    for row in result.rows:
        table.add_row(*row)
    return _with_footer(table, result.footer)


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
