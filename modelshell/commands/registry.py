"""The shell's commands: name -> (argparse parser, function, help facts), in a registry a session owns.

A command is declared where it is written, with the ``@command`` decorator; that only marks the function.
A ``CommandRegistry`` takes the marked functions of the command families it is given (``add_family``), in
the order they are written, so what a session can run never depends on which module some other code
imported first, and two sessions (or a test) can hold different commands. The same parser parses a line,
prints ``help CMD`` and ``CMD --help``, and feeds completion, so help can never drift from what a command
accepts.
"""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from collections.abc import Iterator
from types import ModuleType
from typing import TYPE_CHECKING, Any, Callable

from modelshell.core.errors import ModelshellError
from modelshell.core.results import Outcome, Table, Tree, TreeNode

if TYPE_CHECKING:
    from modelshell.core.results import Result
    from modelshell.core.session import Session

__all__ = ["Command", "CommandParser", "CommandRegistry", "arg", "command", "GROUPS", "apply_listing_options"]

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
    build_parser: Callable[[], CommandParser]  # called once, when the parser is first needed
    examples: list[str] = field(default_factory=list)
    details: str = ""
    _parser: CommandParser | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def parser(self) -> CommandParser:
        """Built on first use: a script runs a few of the commands, and building every parser at start-up
        (argparse asks the terminal its size for each argument) is a fresh process's largest cost after
        Python and numpy."""
        if self._parser is None:
            self._parser = self.build_parser()
        return self._parser

    def usage(self) -> str:
        return self.parser.format_usage().removeprefix("usage: ").strip()


_MARK = "__modelshell_command__"  # the attribute ``@command`` puts the Command on


class CommandRegistry:
    """The commands one session runs, by name, in the order they were added (``help`` lists them so).

    Read like a mapping: ``name in registry``, ``registry[name]``, ``registry.items()``."""

    def __init__(self) -> None:
        self._commands: dict[str, Command] = {}

    def add(self, cmd: Command) -> None:
        if cmd.name in self._commands:
            raise ValueError(f"two commands named {cmd.name!r}")
        self._commands[cmd.name] = cmd

    def add_function(self, function: Callable) -> None:
        """The command that ``@command`` declared on ``function``."""
        cmd = getattr(function, _MARK, None)
        if not isinstance(cmd, Command):
            raise ValueError(f"{function!r} was not declared with @command")
        self.add(cmd)

    def add_family(self, family: ModuleType) -> None:
        """Every function of ``family`` (a module of commands) that ``@command`` marked, in file order."""
        for value in vars(family).values():
            if hasattr(value, _MARK) and getattr(value, "__module__", None) == family.__name__:  # not imported
                self.add_function(value)

    def remove(self, name: str) -> Command:
        return self._commands.pop(name)

    def __contains__(self, name: object) -> bool:
        return name in self._commands

    def __getitem__(self, name: str) -> Command:
        return self._commands[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._commands)

    def __len__(self) -> int:
        return len(self._commands)

    def items(self) -> Iterator[tuple[str, Command]]:
        return iter(self._commands.items())


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
    listing: bool = False,
) -> Callable:
    """Declare ``function(session, args) -> Result`` as the shell command ``name`` (a registry adds it with
    ``add_family``; the function itself is returned unchanged). ``listing``: its table or tree can run to
    thousands of rows, so it takes ``--limit N`` and ``--all``."""
    if group not in GROUPS:
        raise ValueError(f"unknown command group {group!r}")

    def build_parser() -> CommandParser:
        parser = CommandParser(prog=name, description=summary, add_help=False)
        for names, options in args:
            parser.add_argument(*names, **options)
        if json:
            parser.add_argument("--json", action="store_true", help="print one line of JSON instead of a table")
        if listing:
            _add_listing_options(parser)
        parser.add_argument("-h", "--help", action="store_true", help="show this help")
        return parser

    def register(function: Callable) -> Callable:
        setattr(function, _MARK, Command(name, group, summary, function, build_parser, list(examples), details))
        return function

    return register


def _add_listing_options(parser: CommandParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--limit", type=_positive, metavar="N",
                       help="show the first N rows and say how many were left out (--json keeps every row)")
    group.add_argument("--all", action="store_true",
                       help="every row on the terminal, never in the pager (for scroll-back and copying)")


def _positive(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of rows, 1 or more, got {text!r}")
    return number


def apply_listing_options(outcome: Outcome, args: argparse.Namespace) -> Outcome:
    """``--limit N`` and ``--all``, for every listing command alike, on what the command returned.

    The limit shortens only what people read: ``--json`` is for scripts, which want every row, and a
    table that was cut says so under it. ``--all`` changes nothing here: the terminal, which decides
    paging, reads it from the line (``modelshell.terminal.paging``)."""
    limit = getattr(args, "limit", None)
    if limit is not None and not outcome.as_json:
        outcome.results = [_first_rows(result, limit) for result in outcome.results]
    return outcome


def _first_rows(result: Result, limit: int) -> Result:
    if isinstance(result, Table) and len(result.rows) > limit:
        note = _left_out_note(limit, len(result.rows), "rows")
        return dataclasses.replace(result, rows=result.rows[:limit], footer=[note, *result.footer])
    if isinstance(result, Tree):
        total = _count_nodes(result.root) - 1  # the model itself is not one of its layers
        if total > limit:
            root, _ = _first_nodes(result.root, limit + 1)
            return dataclasses.replace(result, root=root, footer=[_left_out_note(limit, total, "layers"),
                                                                  *result.footer])
    return result


def _left_out_note(limit: int, total: int, noun: str) -> str:
    return f"showing {limit:,} of {total:,} {noun}; {total - limit:,} more with --all or a larger --limit"


def _count_nodes(node: TreeNode) -> int:
    return 1 + sum(_count_nodes(child) for child in node.children)


def _first_nodes(node: TreeNode, budget: int) -> tuple[TreeNode, int]:
    """The tree cut to its first ``budget`` nodes in the order they are drawn; and how many it kept."""
    kept, children = 1, []
    for child in node.children:
        if kept >= budget:
            break
        cut, used = _first_nodes(child, budget - kept)
        children.append(cut)
        kept += used
    return dataclasses.replace(node, children=children), kept
