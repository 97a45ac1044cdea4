"""help and models: what the shell can do, and what the session holds."""
from __future__ import annotations

import argparse
from pathlib import Path

from modelshell.commands.format import count_text
from modelshell.commands.registry import GROUPS, CommandRegistry, arg, command
from modelshell.core.errors import ModelshellError
from modelshell.core.results import Column, Message, Table, Text

__all__: list[str] = []

_PYTHON_NOTE = (
    "Any other line is Python, run in the session namespace where every model is a variable by its name;\n"
    "a torch module or Keras model you bind there is usable by the commands. `?NAME` shows `doc NAME`.\n"
    "`quit`, `exit` or Ctrl-D leaves."
)


@command(
    "help",
    "session",
    "the commands, or one command's usage, options and examples",
    args=[arg("topic", nargs="?", metavar="COMMAND", help="a command name")],
    examples=["help", "help weights"],
)
def help_(session, args: argparse.Namespace) -> Text:
    if args.topic is None:
        return Text(_overview(session.commands))
    if args.topic not in session.commands:
        raise ModelshellError(f"no command {args.topic!r}", "`help` lists the commands")
    return Text(command_help(session.commands, args.topic))


def _overview(commands: CommandRegistry) -> str:
    """The session's commands by group, each with its summary."""
    width = max(len(name) for name in commands)
    lines = []
    for group in GROUPS:
        names = [n for n, c in commands.items() if c.group == group]
        if names:
            lines.append(f"{group}:")
            lines += [f"  {n:<{width}}  {commands[n].summary}" for n in names]
    lines += ["", _PYTHON_NOTE, "`help COMMAND` or `COMMAND --help` shows one command's usage, options and examples."]
    return "\n".join(lines)


def command_help(commands: CommandRegistry, name: str) -> str:
    """Usage, options and examples, generated from the command's own parser so it is always true."""
    cmd = commands[name]
    lines = [f"usage: {cmd.usage()}", "", cmd.summary + "."]
    if cmd.details:
        lines += ["", cmd.details]
    options = [a for a in cmd.parser._actions if a.help]
    if options:
        lines += ["", "arguments:"]
        for action in options:
            label = ", ".join(action.option_strings) or (action.metavar or action.dest)
            lines.append(f"  {label:<18} {action.help}")
    if cmd.examples:
        lines += ["", "examples:"] + [f"  {example}" for example in cmd.examples]
    return "\n".join(lines)


_RECENT_MARKS = {1: "*", 2: "+"}  # the two models a command used last: the usual pair for `copy`/`verify`


@command(
    "models",
    "session",
    "the models: name, framework, class, parameters, whether loaded trusted, source",
    examples=["models", "models --json"],
    json=True,
    listing=True,
)
def models(session, args: argparse.Namespace) -> Table | Message:
    found = []
    names = session.model_names()
    if not names:  # the message alone: a table header over no rows says nothing
        return Message("no models yet: `load PATH` adds one, or `help load`", data={"models": []})
    recent = [n for n in session.recent if n in names][:2]
    footer = []
    for name in names:
        handle = session.model(name, used=False)
        try:  # one model that cannot list its tensors (a Keras model not yet built) does not hide the rest
            params, summary = handle.param_counts()["total"], handle.summary()
        except ModelshellError as exc:
            params, summary = None, [exc.message]
        found.append({"name": name, "framework": handle.framework, "class": handle.class_name,
                      "params": params, "source": handle.source, "trusted": handle.trusted,
                      "recent": recent.index(name) + 1 if name in recent else None})
        footer += [f"{name}: {line}" for line in summary]
    rows = [[_RECENT_MARKS.get(m["recent"], ""), m["name"], m["framework"], m["class"],
             "-" if m["params"] is None else count_text(m["params"]), m["source"]] for m in found]
    trusted = [m["name"] for m in found if m["trusted"]]
    if recent:
        footer.append("* used last, + the one before")
    if trusted:  # a line of its own, not a column: the table keeps its width at 100 columns
        footer.append(f"loaded trusted (code in them may have run): {', '.join(trusted)}")
    return Table(
        title="models",
        columns=[Column(""), Column("name", no_wrap=True), Column("framework"), Column("class"),
                 Column("params", justify="right"), Column("source")],
        rows=rows,
        footer=footer,
        data={"models": found},
    )


@command(
    "traceback",
    "session",
    "the full traceback of the last error (a Python line's or a command's); `%tb` for short",
    examples=["traceback", "%tb"],
    details="Errors show one line; this shows the whole traceback of the last one, in the session, "
    "without restarting with --debug.",
)
def traceback_(session, args: argparse.Namespace) -> Text | Message:
    if session.last_traceback is None:
        return Message("no error yet in this session")
    return Text(session.last_traceback.rstrip("\n"))


@command(
    "trust",
    "session",
    "`trust on`: load every following file as with --trust (code in it may run); `trust off` ends it",
    args=[arg("state", nargs="?", choices=["on", "off"], metavar="on|off", help="on or off (default: show)")],
    examples=["trust on", "trust off", "trust"],
    details="Trusted loading unpickles whole torch modules and turns Keras safe_mode off: a file can then "
    "run any code as you. `models` shows which models were loaded trusted. See SECURITY.md.",
)
def trust(session, args: argparse.Namespace) -> Message:
    if args.state is not None:
        session.trust = args.state == "on"
    if session.trust:
        return Message("trust is on: every load runs code the file holds (pickles, Lambda layers); `trust off` ends it")
    return Message("trust is off: files that would run code are refused unless loaded with --trust")


@command(
    "record",
    "session",
    "write every following input and its output to a transcript; `record stop` ends it",
    args=[
        arg("path", metavar="PATH|stop", help="the transcript to write (Markdown), or `stop`"),
        arg("--title", help="the transcript's title (default: the file name)"),
    ],
    examples=["record lenet5.md --title 'LeNet-5 from Keras to torch'", "record stop"],
    details="`modelshell replay PATH` replays the transcript and checks every output; `--update` rewrites "
    "what changed.",
)
def record(session, args: argparse.Namespace) -> Message:
    from modelshell.transcript import Recorder

    recording = next((o for o in session.observers if isinstance(o, Recorder)), None)
    if args.path == "stop":
        if recording is None:
            raise ModelshellError("not recording", "`record PATH` starts")
        session.stop_observing(recording)
        return Message(f"recording stopped; replay it with `modelshell replay {recording.path}`")
    if recording is not None:
        raise ModelshellError(f"already recording to {recording.path}", "`record stop` first")
    path = Path(args.path).expanduser()
    if not path.parent.is_dir():
        raise ModelshellError(f"{path.parent} is not a folder")
    try:
        session.observe(Recorder(path, args.title))
    except OSError as exc:
        raise ModelshellError(f"cannot write {path}: {exc.strerror or exc}") from exc
    return Message(f"recording to {path}")
