"""Renderers draw results and never compute: rich for people, JSON lines for scripts.

``Printer.show(outcome)`` is the one place that writes a line's outcome to the terminal or a pipe.
"""
from __future__ import annotations

from modelshell.render.printer import Printer

__all__ = ["Printer"]
