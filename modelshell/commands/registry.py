"""A small registry of shell commands: name -> (argparse parser, function, help facts).

Commands register with the ``@command`` decorator. The same parser parses a line, prints ``help CMD``
and ``CMD --help``, and feeds completion, so help can never drift from what a command accepts.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from modelshell.errors import ModelshellError

if TYPE_CHECKING:
    from modelshell.results import Result
    from modelshell.session import Session

__all__ = ["Command", "CommandParser", "arg", "command", "COMMANDS", "GROUPS"]

GROUPS = ("inspect", "transfer", "files", "session")


class CommandParser(argparse.ArgumentParser):
    """An ArgumentParser that reports bad arguments as a ModelshellError instead of exiting."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise ModelshellError(f"{self.prog}: {message}", f"see `help {self.prog}`")

    def exit(self, status: int = 0, message: str | None = None) -> None:  # type: ignore[override]
        raise ModelshellError(message.strip() if message else f"{self.prog}: bad arguments")


@dataclass
class Command:
    name: str
    group: str
    summary: str
    run: Callable[["Session", argparse.Namespace], "Result | list[Result]"]
    parser: CommandParser
    examples: list[str] = field(default_factory=list)
    details: str = ""

    def usage(self) -> str:
        return self.parser.format_usage().removeprefix("usage: ").strip()


COMMANDS: dict[str, Command] = {}


def arg(*names: str, **options: Any) -> tuple[tuple[str, ...], dict[str, Any]]:
    """One argparse argument, as ``arg("--atol", type=float, help=...)``."""
    return names, options


def command(
    name: str,
    group: str,
    summary: str,
    args: list[tuple[tuple[str, ...], dict[str, Any]]] = (),
    examples: list[str] = (),
    json: bool = False,
    details: str = "",
) -> Callable:
    """Register ``function(session, args) -> Result`` as the shell command ``name``."""
    if group not in GROUPS:
        raise ValueError(f"unknown command group {group!r}")

    def register(function: Callable) -> Callable:
        parser = CommandParser(prog=name, description=summary, add_help=False)
        for names, options in args:
            parser.add_argument(*names, **options)
        if json:
            parser.add_argument("--json", action="store_true", help="print one line of JSON instead of a table")
        parser.add_argument("-h", "--help", action="store_true", help="show this help")
        COMMANDS[name] = Command(name, group, summary, function, parser, list(examples), details)
        return function

    return register
