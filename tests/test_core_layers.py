"""The layers of issue 13: a core that knows no terminal, a command registry each session owns, a sink the
session writes live output to, observers it tells about each line, and paging decided by the terminal."""
from __future__ import annotations

import subprocess
import sys

import pytest

from modelshell.commands import FAMILIES, default_registry, meta
from modelshell.commands.registry import CommandRegistry, arg, command
from modelshell.core.results import Message, Text
from modelshell.core.session import Session


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
