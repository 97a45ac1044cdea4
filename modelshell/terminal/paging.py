"""The shell decides what goes to a pager: a drawn result taller than the terminal, unless the line said
``--all``. Results carry no flag for it: how tall a result is depends on the terminal it is drawn on, and
only the terminal front end has one (``run``, pipes, ``--json`` and transcripts never page).
"""
from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["Pager", "ALL_OPTION"]

ALL_OPTION = "--all"  # a listing command's option: every row on the terminal, for scroll-back and copying
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class Pager:
    """Pages text that would not fit on ``console``'s screen below the line that was typed."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def for_line(self, words: list[str] | None) -> Callable[[str], bool] | None:
        """What the printer is given for one line (``words``: the command's, None for Python): the pager,
        or None when the line said ``--all`` or the output is no terminal (nothing then pages)."""
        if not self.console.is_terminal or (words is not None and ALL_OPTION in words):
            return None
        return self.page

    def page(self, text: str) -> bool:
        """``text`` in the pager if it is taller than the screen less the prompt and the typed line; False
        when it fits, or there is no pager at all (the printer then writes it)."""
        if len(text.splitlines()) <= self.console.size.height - 2:
            return False
        return _page(text)


def _page(text: str) -> bool:
    """Show ``text`` in $MANPAGER or $PAGER (as pydoc would; plain, since the user's pager may not read
    colours), else ``less -R`` (colours kept). False when there is no pager at all."""
    import pydoc  # only when paging: it costs start-up time

    command = os.environ.get("MANPAGER") or os.environ.get("PAGER")
    if command:
        pydoc.pipepager(_ANSI.sub("", text), command)
    elif shutil.which("less"):
        pydoc.pipepager(text, "less -R")
    else:
        return False
    return True
