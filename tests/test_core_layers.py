"""The layers of issue 13: a core that knows no terminal, a command registry each session owns, a sink the
session writes live output to, observers it tells about each line, and paging decided by the terminal."""
from __future__ import annotations

import ast
import dataclasses
import io
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

import modelshell.core

from modelshell.commands import FAMILIES, default_registry, meta
from modelshell.commands.registry import CommandRegistry, arg, command
from modelshell.core.output import OutputSink, StreamSink
from modelshell.core.results import Message, Text
from modelshell.core.session import Session
from modelshell.render import Printer
from modelshell.terminal.paging import Pager


def _registry(*families) -> CommandRegistry:
    registry = CommandRegistry()
    for family in families:
        registry.add_family(family)
    return registry


# --- the command registry ---------------------------------------------------------------------------------
def test_each_session_runs_the_commands_of_its_own_registry():
    small = Session(commands=_registry(meta))  # help, models, traceback, trust, record only
    full = Session()
    assert "weights" in full.commands and "weights" not in small.commands
    overview = small.run_line("help").results[0].text
    assert "  models" in overview and "  weights" not in overview and "  load" not in overview
    assert "  weights" in full.run_line("help").results[0].text
    outcome = small.run_line("weights m")
    assert not outcome.ok and outcome.error.startswith("unknown command 'weights'")
    assert not small.is_command("load x.pt") and full.is_command("load x.pt")


def test_a_command_added_to_one_session_is_that_sessions_alone():
    @command("shout", "session", "say it loud", args=[arg("word")])
    def shout(session, args):
        return Message(args.word.upper())

    one, other = Session(), Session()
    one.commands.add_function(shout)
    assert one.run_line("shout hey").results[0].text == "HEY"
    assert "shout" in one.run_line("help").results[0].text
    assert one.run_line("help shout").results[0].text.startswith("usage: shout [-h] word")
    assert not other.run_line("shout hey").ok  # `shout hey` is neither its command nor Python
    assert "shout" not in other.commands and "shout" not in default_registry()


def test_the_registry_follows_the_families_in_file_order_whatever_was_imported_first():
    """A fresh interpreter that imports the families backwards builds the same registry."""
    code = ("import modelshell.commands.transfer, modelshell.commands.stats, modelshell.commands.meta\n"
            "from modelshell.commands import default_registry\nprint(' '.join(default_registry()))")
    backwards = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert backwards == list(default_registry())
    assert backwards[:2] == ["load", "save"]  # files first, as FAMILIES lists it
    order = [f.__name__ for f in FAMILIES]
    families = [order.index(default_registry()[name].run.__module__) for name in backwards]
    assert families == sorted(families) and len(set(families)) == len(FAMILIES)  # family by family


def test_a_name_taken_twice_is_refused():
    registry = _registry(meta)
    with pytest.raises(ValueError, match="two commands named 'help'"):
        registry.add_family(meta)
    with pytest.raises(ValueError, match="not declared with @command"):
        registry.add_function(len)


# --- the output sink ------------------------------------------------------------------------------------
class _Collecting(OutputSink):
    """A sink that shows: every write with its stream, and the moments it was told a line started or wrote."""

    shows = True

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def line_started(self) -> None:
        self.events.append(("started", ""))

    def before_first_write(self) -> None:
        self.events.append(("first", ""))

    def write(self, text: str, err: bool) -> None:
        self.events.append(("err" if err else "out", text))


def test_the_session_writes_to_the_sink_it_is_given_in_order_and_keeps_stdout(capsys):
    sink = _Collecting()
    session = Session(output=sink)
    outcome = session.run_line("import sys\nfor i in range(2):\n    print(i); print(f'e {i}', file=sys.stderr)\n")
    assert outcome.ok
    written = [(kind, text) for kind, text in sink.events if text.strip()]
    assert written == [("out", "0"), ("err", "e 0"), ("out", "1"), ("err", "e 1")]
    assert sink.events[:2] == [("started", ""), ("first", "")]  # told once, before the first write
    assert [kind for kind, _ in sink.events].count("first") == 1
    assert outcome.results[0] == Text("0\n1\n", streamed=True)  # stdout kept for transcripts, marked shown
    assert capsys.readouterr() == ("", "")  # nothing went around the sink


def test_a_session_without_a_sink_shows_nothing_and_keeps_stdout(capsys):
    outcome = Session().run_line("print('kept')")
    assert outcome.results == [Text("kept\n", streamed=False)]
    assert capsys.readouterr().out == ""


def test_stream_sink_follows_the_streams_of_the_moment(capsys):
    session = Session(output=StreamSink())
    session.run_line("print('through')")
    assert capsys.readouterr().out == "through\n"


# --- observers ------------------------------------------------------------------------------------------
class _Watcher:
    def __init__(self) -> None:
        self.seen: list[tuple[str, bool]] = []
        self.closed = False

    def line_done(self, text: str, outcome) -> None:
        self.seen.append((text, outcome.ok))

    def close(self) -> None:
        self.closed = True


def test_observers_hear_every_line_they_watched_from_start_to_end():
    session, watcher = Session(), _Watcher()
    session.observe(watcher)
    session.run_line("x = 1")
    session.run_line("")  # nothing typed: nothing to tell
    session.run_line("1/0")
    session.run_line("models")
    assert watcher.seen == [("x = 1", True), ("1/0", False), ("models", True)]
    session.stop_observing(watcher)
    session.run_line("y = 2")
    assert watcher.closed and len(watcher.seen) == 3


def test_record_is_an_observer_and_the_session_closes_it(tmp_path):
    session = Session()
    assert session.run_line(f"record {tmp_path / 'r.md'}").ok
    (recorder,) = session.observers
    session.run_line("print(6 * 7)")
    session.close()
    assert session.observers == []
    text = (tmp_path / "r.md").read_text()
    assert "ms> print(6 * 7)\n42\n" in text and "ms> record" not in text
    assert not session.run_line("record stop").ok  # closed: no longer recording


# --- paging is the terminal's -----------------------------------------------------------------------------
def test_no_result_and_no_outcome_carries_a_pager_flag():
    from modelshell.core import results

    for name in results.__all__:
        kind = getattr(results, name)
        if dataclasses.is_dataclass(kind):
            assert not [f.name for f in dataclasses.fields(kind) if "page" in f.name], name


def _terminal(height: int) -> Console:
    return Console(file=io.StringIO(), force_terminal=True, width=80, height=height)


def test_the_pager_takes_what_is_taller_than_the_terminal_and_nothing_else(tmp_path, monkeypatch):
    paged = tmp_path / "paged.txt"
    monkeypatch.setenv("PAGER", f"cat > {paged}")  # a real pager command, run by pydoc as a user's would be
    monkeypatch.delenv("MANPAGER", raising=False)
    pager = Pager(_terminal(height=12))
    assert pager.page("\n".join(f"row {i}" for i in range(10)) + "\n") is False  # fits (12 less 2 lines)
    assert not paged.exists()
    tall = "\n".join(f"row {i}" for i in range(11)) + "\n"
    assert pager.page(tall) is True
    assert paged.read_text() == tall


def test_the_printer_pages_only_through_the_pager_it_is_given(tmp_path, monkeypatch):
    paged = tmp_path / "paged.txt"
    monkeypatch.setenv("PAGER", f"cat > {paged}")
    monkeypatch.delenv("MANPAGER", raising=False)
    session = Session()
    session.run_line("import torch; m = torch.nn.Sequential(*[torch.nn.Linear(2, 2) for _ in range(20)])")
    out = io.StringIO()
    printer = Printer(out=out, err=io.StringIO())
    printer._console = _terminal(height=20)  # a terminal of 20 lines, drawing into `out`
    printer._console.file = out
    pager = Pager(printer.console)
    printer.show(session.run_line("weights m"), pager.for_line(session.command_words("weights m")))
    assert "19.bias" in paged.read_text() and "19.bias" not in out.getvalue()  # 40 rows: paged
    paged.unlink()
    printer.show(session.run_line("weights m --all"), pager.for_line(session.command_words("weights m --all")))
    assert not paged.exists() and "19.bias" in out.getvalue()  # --all: on the terminal
    printer.show(session.run_line("weights m 0."), pager.for_line(session.command_words("weights m 0.")))
    assert not paged.exists()  # two rows fit
    assert Pager(Console(file=io.StringIO(), width=80, height=20)).for_line(["weights", "m"]) is None  # no tty


# --- the core knows no terminal ----------------------------------------------------------------------------
def test_the_core_imports_no_terminal_code():
    """The session, run and transcripts work without prompt_toolkit: importing the core (and running a
    command and a Python line) loads none of it, nor the terminal package, nor rich's live display."""
    code = (
        "import sys\n"
        "from modelshell.core.session import Session\n"
        "from modelshell.core.output import StreamSink\n"
        "s = Session(output=StreamSink())\n"
        "assert s.run_line('help').ok and s.run_line('x = 1').ok and s.run_line('models').ok\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] == 'prompt_toolkit'\n"
        "             or m.startswith('modelshell.terminal') or m in ('rich.live', 'pygments'))\n"
        "print(bad)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout
    # the positive control: the terminal's own modules do bring prompt_toolkit in
    control = subprocess.run([sys.executable, "-c", "import sys, modelshell.terminal.shell; "
                              "print('prompt_toolkit' in sys.modules)"], capture_output=True, text=True, check=True)
    assert control.stdout.strip() == "True"


def test_no_core_module_imports_the_terminal():
    """Not even a lazy import inside a function: no import statement of the core names the front end."""
    core = Path(modelshell.core.__file__).parent
    banned = ("prompt_toolkit", "modelshell.terminal", "rich", "pygments")
    for path in sorted(core.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            assert not [n for n in names if n.split(".")[0] in banned or n.startswith(banned)], (path.name, names)
