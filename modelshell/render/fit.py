"""How wide each column of a table may draw so that the table fits the terminal.

rich narrows a table that is too wide by shrinking its wrappable columns, down to nothing at all when
needed (columns silently vanish), then cuts every column evenly. The order here keeps every column
readable as long as it can: wrappable columns give way first, but not below a readable width; then the
no_wrap columns after the first (shapes), then the first column (the names that tell rows apart), and
only on a very narrow terminal everything evenly. A no_wrap column that must give way folds onto more
lines rather than being cut: a name with an ellipsis is ambiguous (every ``lenet5/conv…`` looks alike),
a folded one can still be read and copied.
"""
from __future__ import annotations

__all__ = ["column_limits", "READABLE"]

READABLE = 10  # a column is not narrowed below this (or its natural width) while another can give way


def column_limits(natural: list[int], no_wrap: list[bool], width: int) -> list[int | None]:
    """The widest each column may draw (None: as wide as it needs), from each column's natural width
    (its widest cell or header, padding excluded) and whether it may wrap."""
    # Our tables draw 3 characters between columns and one at either edge (SIMPLE_HEAD, no edge padding).
    excess = sum(natural) + 3 * len(natural) - 1 - width
    if excess <= 0:
        return [None] * len(natural)
    count = len(natural)
    readable = [min(w, READABLE) for w in natural]
    widths = list(natural)
    for which, floors in (
        ([not n for n in no_wrap], readable),  # text that wraps: docs, sources, transforms
        ([n and i > 0 for i, n in enumerate(no_wrap)], readable),  # shapes and the like
        ([i == 0 for i in range(count)], readable),  # the names
        ([True] * count, [1] * count),  # a very narrow terminal
    ):
        widths, excess = _narrow(widths, which, floors, excess)
    return [w if w < n else None for w, n in zip(widths, natural)]


def _narrow(widths: list[int], which: list[bool], floors: list[int], excess: int) -> tuple[list[int], int]:
    """Take ``excess`` characters off the widest of the ``which`` columns first, none below its floor;
    returns the widths and what could not be taken."""
    widths = list(widths)
    while excess > 0:
        candidates = [i for i, w in enumerate(widths) if which[i] and w > floors[i]]
        if not candidates:
            break
        widest = max(candidates, key=lambda i: widths[i])
        widths[widest] -= 1
        excess -= 1
    return widths, excess
