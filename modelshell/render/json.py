"""Results as JSON Lines: exactly one line per result, so scripts can parse output line by line."""
from __future__ import annotations

import json
from typing import Any

from modelshell.core.results import Result

__all__ = ["to_json_line"]


def to_json_line(result: Result) -> str:
    data = result.data if result.data is not None else {"text": getattr(result, "text", "")}
    return json.dumps(data, default=_plain, ensure_ascii=False)


def _plain(value: Any) -> Any:
    """numpy scalars, tuples of numpy ints and the like, as the JSON they stand for."""
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)
