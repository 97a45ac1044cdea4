"""How numbers and shapes read in tables, shared by every command."""
from __future__ import annotations

__all__ = ["shape_text", "count_text", "matches"]

import fnmatch


def shape_text(shape: tuple[int, ...]) -> str:
    """``(6, 1, 5, 5)``, and ``(10,)`` for one dimension, as Python and numpy print shapes."""
    return str(tuple(int(d) for d in shape))


def count_text(n: int) -> str:
    return f"{n:,}"


def matches(name: str, pattern: str | None) -> bool:
    """FILTER as users expect: a glob when it has ``*?[``, otherwise a case-insensitive substring (the
    tutorial's ``[n for n in dir(m) if 'state' in n]``)."""
    if not pattern:
        return True
    if any(ch in pattern for ch in "*?["):
        return fnmatch.fnmatchcase(name.lower(), pattern.lower())
    return pattern.lower() in name.lower()
