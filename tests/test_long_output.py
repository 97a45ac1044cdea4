"""Long and wide output: tables taller than the terminal page (unless `--all`), `--limit N` shows the first
N rows and says what it left out, and tables wider than the terminal fold instead of wrapping garbage.

The terminal tests run a shell of their own (no demo: torch only, so it starts fast) with the user's
PAGER, MANPAGER and LESS unset, so that the pager is the `less -R` modelshell chooses.
"""
from __future__ import annotations

import contextlib
import io
import json
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from rich.console import Console

from modelshell.render import Printer
from modelshell.terminal.paging import Pager
from modelshell.render.fit import column_limits
from modelshell.render.rich import _rich_table, to_renderable
from modelshell.core.results import Column, Table
from tmux_terminal import MODELSHELL, STARTUP_TIMEOUT, TermPane, _tmux, start_afresh_after_a_failure

# COLUMNS and LINES too: under pytest, readline puts 80x24 in the environment, and rich would believe
# them over the terminal's real size.
SHELL = f"env -u PAGER -u MANPAGER -u LESS -u COLUMNS -u LINES {shlex.quote(MODELSHELL)}"
# 1000 tensors: far taller than the terminal, and within tmux's 2000 lines of scroll-back
BIG = "import torch; big = torch.nn.Sequential(*[torch.nn.Linear(4, 4) for _ in range(500)])"
LONG_NAMES = (
    "import torch, collections; wide = torch.nn.Sequential(collections.OrderedDict("
    "encoder_block_with_a_rather_long_name=torch.nn.Linear(3, 4), "
    "decoder_block_with_a_rather_long_name=torch.nn.Conv2d(4, 8, 3)))"
)


@contextlib.contextmanager
def shell_after(line: str, width: int = 120, height: int = 40) -> Iterator[TermPane]:
    """A shell (see SHELL) that has run the Python ``line``, for a module's tests; closed afterwards."""
    pane = TermPane(SHELL, width=width, height=height)

    def ready(pane: TermPane) -> None:
        pane.wait_for_prompt(timeout=STARTUP_TIMEOUT)
        run_python(pane, line)

    pane.ready = ready  # and again after a failed test: see start_afresh_after_a_failure
    try:
        ready(pane)
        yield pane
    finally:
        pane.close()


def run_to_prompt(pane: TermPane, line: str, shows: str, timeout: float = STARTUP_TIMEOUT) -> list[str]:
    """Type a line and wait until it has run: what it ``shows`` is on the screen and a prompt under it.
    (Waiting for a prompt alone could see the one the line was typed at.)"""
    pane.enter(line)
    pane.wait_for_text(shows, timeout)
    return pane.wait_for_prompt(timeout)


def clear(pane: TermPane) -> TermPane:
    """``pane.clear()``, a moment after the prompt shows: a prompt starts by asking the terminal where the
    cursor is, and a Ctrl-L that comes before the answer can make the answer echo as text (``^[[1;1R``;
    prompt_toolkit does so without modelshell's changes too)."""
    pane.wait_for_prompt()
    time.sleep(0.5)
    pane.clear()
    return pane


def run_python(pane: TermPane, line: str) -> list[str]:
    """A Python line that prints a mark once it is done, to wait for."""
    return run_to_prompt(pane, f"{line}; print('ran', 'it')", "ran it")


@pytest.fixture(scope="module")
def term_big(tmux):
    """A 120x40 shell holding `big`, a torch model with 1000 tensors."""
    with shell_after(BIG) as pane:
        yield pane


@pytest.fixture
def big_shell(term_big, request):
    yield clear(term_big)
    start_afresh_after_a_failure(term_big, request)


def output(lines: list[str]) -> list[str]:
    """The screen lines under the last line typed at a prompt: what it printed, and the new prompt.
    (Found by the prompt, not by the typed text, which the shell colours and the helper may not keep.)"""
    typed = max(i for i, line in enumerate(lines[:-1]) if line.startswith("ms> "))
    return lines[typed + 1:]


def _scrollback(pane: TermPane) -> list[str]:
    """Everything the terminal holds, scrolled off the screen too, wrapped lines joined."""
    return _tmux("capture-pane", "-p", "-J", "-S", "-", "-t", pane.name).splitlines()


# --- paging in the terminal ----------------------------------------------------------------------------


def test_a_table_taller_than_the_terminal_is_paged_in_colour_then_the_prompt_returns(big_shell):
    big_shell.enter("weights big")
    lines = big_shell.wait_for_text("0.weight")
    assert "ms> weights big" not in lines  # the pager holds the whole screen
    assert lines[-1] != "ms>"
    raw = _tmux("capture-pane", "-p", "-e", "-t", big_shell.name)
    assert "\x1b[1m" in raw  # the bold header reaches the screen as a style: less -R passes colours through
    assert "ESC[" not in raw  # (a pager without -R would show the escape codes as text)
    rows = [line.split() for line in lines]
    assert ["0.weight", "(4,", "4)", "float32", "16", "yes"] in rows
    big_shell.keys("G")  # the end of the table, in the pager
    big_shell.wait_for_text("1000 tensors, 10,000 parameters")
    assert ["499.bias", "(4,)", "float32", "4", "yes"] in [line.split() for line in big_shell.lines()]
    big_shell.keys("q")
    big_shell.wait_for_prompt()
    big_shell.enter("len(big)")  # the session is as it was
    big_shell.wait_for_text("500\nms>")


def test_all_prints_every_row_without_the_pager(big_shell):
    big_shell.enter("weights big --all")
    big_shell.wait_for_text("1000 tensors, 10,000 parameters")
    lines = big_shell.wait_for_prompt()
    assert lines[-2:] == ["1000 tensors, 10,000 parameters (10,000 trainable, 0 non-trainable)", "ms>"]
    kept = [line.split()[0] for line in _scrollback(big_shell) if re.match(r" \d+\.(weight|bias) ", line)]
    assert len(kept) == 1000 and kept[0] == "0.weight" and kept[-1] == "499.bias"


def test_limit_shows_the_first_rows_and_says_how_to_see_the_rest(big_shell):
    big_shell.enter("weights big --limit 4")
    big_shell.wait_for_text("1000 tensors")
    out = output(big_shell.wait_for_prompt())
    names = [line.split()[0] for line in out if re.match(r" \d+\.", line)]
    assert names == ["0.weight", "0.bias", "1.weight", "1.bias"]
    assert "showing 4 of 1,000 rows; 996 more with --all or a larger --limit" in out
    assert "1000 tensors, 10,000 parameters (10,000 trainable, 0 non-trainable)" in out  # totals still count all
    big_shell.enter("shapes big --limit 2")
    big_shell.wait_for_text("showing 2 of 500 layers")
    out = output(big_shell.wait_for_prompt())
    assert [line.split()[:3] for line in out[2:4]] == [["├──", "0", "Linear"], ["└──", "1", "Linear"]], out


def test_short_tables_json_and_bad_limits_never_page(big_shell):
    big_shell.enter("weights big 499.")  # two rows: no pager
    big_shell.wait_for_text("2 tensors of 1000 matching '499.'")
    big_shell.wait_for_prompt()
    big_shell.enter("weights big --json")  # one line of JSON, every row, however long
    big_shell.wait_for_text('"totals"')
    big_shell.wait_for_prompt()
    line = next(line for line in _scrollback(big_shell) if line.startswith('{"model": "big"'))
    assert len(json.loads(line)["weights"]) == 1000
    big_shell.enter("weights big --limit 0")
    big_shell.wait_for_text("error: weights: argument --limit: expected a whole number of rows, 1 or more, got '0'")
    big_shell.wait_for_prompt()


@pytest.mark.terminal
@pytest.mark.parametrize("how", ["run", "pipe"])
def test_scripts_and_pipes_print_every_row_and_never_page(tmp_path, how):
    """On a terminal too: `modelshell run` and piped input have no one to press q."""
    script = tmp_path / "long.ms"
    script.write_text(f"{BIG}\nweights big\nprint('after the table')\n")
    command = (f"{SHELL} run {shlex.quote(str(script))}" if how == "run"
               else f"cat {shlex.quote(str(script))} | {SHELL}")
    pane = TermPane(command)
    try:
        pane.wait_for_text("[exited with 0]", timeout=STARTUP_TIMEOUT)
        every = _scrollback(pane)
        assert "after the table" in every
        assert sum(1 for line in every if re.match(r" \d+\.(weight|bias) ", line)) == 1000
    finally:
        pane.close()


# --- narrow terminals -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def narrow(tmux):
    """A shell 60 columns wide with `wide`, a torch model whose tensor names are 42 characters long."""
    with shell_after(LONG_NAMES, width=60) as pane:
        yield pane


@pytest.mark.parametrize("line, shows", [
    ("weights wide", "4 tensors"), ("members wide load", "members matching"), ("pair wide wide", "4 pairs"),
    ("models", "Python"), ("shapes wide", "tensors"),
])
def test_a_narrow_terminal_gets_tables_that_fit_and_lose_no_column(narrow, line, shows):
    clear(narrow)
    out = run_to_prompt(narrow, line, shows)
    assert all(len(row) <= 60 for row in out), "\n".join(row for row in out if len(row) > 60)
    assert not any(row.startswith("error") for row in out), out
    if line == "weights wide":
        header = next(row for row in out if row.lstrip().startswith("name"))
        assert header.split() == ["name", "shape", "dtype", "params", "trainable"]
        rows = [row for row in out if "float32" in row]
        assert len(rows) == 4 and all(row.rstrip().endswith("yes") for row in rows)
        # Names fold onto a second line rather than being cut: each can still be read whole.
        first_column = [row[1:].split(" ")[0] for row in out[out.index(header) + 2:] if row[1:2].strip()]
        assert "".join(first_column).count("encoder_block_with_a_rather_long_name.weight") == 1


# --- what the terminal tests rely on, at function level --------------------------------------------------


def _table(rows: int) -> Table:
    return Table("t", [Column("name", no_wrap=True), Column("shape", no_wrap=True), Column("dtype"),
                       Column("params", justify="right"), Column("note")],
                 [[f"layer_{i}.weight", f"({i}, 4)", "float32", f"{4 * i:,}", "tied" * (i % 2)] for i in range(rows)],
                 footer=[f"{rows} tensors"])


@pytest.mark.parametrize("ascii_only", [False, True])
@pytest.mark.parametrize("width", [100, 60])
def test_rows_drawn_without_rich_are_the_characters_rich_draws(ascii_only, width):
    """Tables that fit have their rows drawn by modelshell (rich takes ~0.5 ms a row); the result must be
    what rich itself would draw, for people and for transcripts."""
    table = _table(30)
    ours, rich = (Console(file=io.StringIO(), width=width, color_system=None) for _ in range(2))
    ours.print(to_renderable(table, ascii_only))
    rich.print(_rich_table(table, ascii_only, [None] * 5))
    rich.print(table.footer[0])
    assert ours.file.getvalue() == rich.file.getvalue()


def test_thousands_of_rows_are_all_drawn():
    """Every row of a 20,000-row table, in order; how fast against rich is measured side by side in
    benchmarks/bench_interactive.py, not bounded here."""
    out = io.StringIO()
    Printer(out=out, width=120).show(_outcome_of(_table(20000)))
    drawn = re.findall(r"layer_(\d+)\.weight", out.getvalue())
    assert drawn == [str(i) for i in range(20000)]
    assert "20000 tensors" in out.getvalue()


def _outcome_of(table: Table):
    from modelshell.core.results import Outcome

    return Outcome(results=[table])


def test_cells_are_text_not_markup():
    """A doc line's "[batch, time]" is text: rich would take it for a style tag (and "[/]" for an error)."""
    table = Table("t", [Column("name"), Column("doc")], [["a", "x of shape [batch, time]"], ["b", "[/]odd"]])
    out = io.StringIO()
    Printer(out=out, width=40).show(_outcome_of(table))  # wraps: drawn by rich
    assert "[batch," in out.getvalue() and "[/]odd" in out.getvalue()


@pytest.mark.parametrize("width", [20, 40, 60, 80, 100])
def test_column_limits_fit_the_width_and_narrow_names_last(width):
    natural, no_wrap = [42, 14, 7, 6, 9], [True, True, False, False, False]
    limits = column_limits(natural, no_wrap, width)
    drawn = [n if limit is None else limit for n, limit in zip(natural, limits)]
    assert sum(drawn) + 3 * len(drawn) - 1 <= width
    assert all(d >= 1 for d in drawn)
    if width in (60, 80):  # room for every column at a readable width: the names give way after the shape
        assert drawn[2:] == natural[2:] and drawn[1] == 10 and drawn[0] > 10
    if width == 100:
        assert limits == [None] * 5


def test_limit_and_all_apply_to_every_listing_command_and_not_to_json(demo_session):
    for line in ("members torch_model --limit 2", "models --limit 1", "pair keras_model torch_model --limit 3",
                 "copy keras_model torch_model --dry-run --limit 3",
                 "verify torch_model keras_model --layers --limit 2"):
        outcome = demo_session.run_line(line)
        table = outcome.results[0]
        assert re.match(r"showing \d+ of \d+ rows; \d+ more with --all", table.footer[0]), (line, table.footer)
        assert len(table.rows) == int(line.split("--limit ")[1])
    full = demo_session.run_line("weights torch_model --json --limit 2")
    assert len(full.results[0].data["weights"]) == 10  # scripts get every row
    terminal = Pager(Console(file=io.StringIO(), force_terminal=True, width=100, height=30))
    assert terminal.for_line(demo_session.command_words("weights torch_model --all")) is None
    assert terminal.for_line(demo_session.command_words("%weights torch_model --all")) is None
    assert terminal.for_line(demo_session.command_words("weights torch_model")) == terminal.page
    unknown = demo_session.run_line("load x.pt --limit 2")
    assert not unknown.ok and "unrecognized arguments: --limit 2" in unknown.error


def test_run_prints_a_limited_table_the_same_as_the_shell(tmp_path):
    script = tmp_path / "s.ms"
    script.write_text(f"{BIG}\nweights big --limit 2\n")
    done = subprocess.run([sys.executable, "-m", "modelshell", "run", str(script)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "showing 2 of 1,000 rows; 998 more with --all or a larger --limit" in done.stdout
    assert done.stdout.count(".weight") == 1 and done.stdout.count(".bias") == 1
