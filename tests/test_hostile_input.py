"""Input that is not what a shell expects (issue 15): bytes that are not UTF-8 on a pipe or in a script,
and file names with spaces, quotes and unicode, in the session, in `run` scripts, on a pipe and in the
terminal (the quoting rules the README documents)."""
from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from modelshell.core.session import Session
from tests.test_formats import run_fail, run_ok

MODELSHELL = str(Path(sys.executable).parent / "modelshell")

# Each line's second word is a bad byte, or two; the lines around them must still run.
_BAD_LINES = b'print("first")\nprint("b\xff\xfe")\nprint("second")\nx = "\xc3"\nprint("third")\n'


def _shell(args: list[str], stdin: bytes, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([MODELSHELL, *args], input=stdin, capture_output=True, timeout=120, cwd=cwd)


@pytest.mark.parametrize("how", ["pipe", "run -", "run FILE"])
def test_lines_that_are_not_utf8_fail_one_by_one_and_the_rest_run(tmp_path, how):
    script = tmp_path / "bad.ms"
    script.write_bytes(_BAD_LINES)
    args = {"pipe": [], "run -": ["run", "-"], "run FILE": ["run", str(script)]}[how]
    result = _shell(args, b"" if how == "run FILE" else _BAD_LINES)
    assert result.stdout.decode().split() == ["first", "second", "third"], result
    errors = result.stderr.decode().splitlines()
    where = f"{script}:" if how == "run FILE" else "line "
    assert errors == [f"error: {where}2: not valid UTF-8: byte 0xff at column 9; not run",
                      f"error: {where}4: not valid UTF-8: byte 0xc3 at column 6; not run"], errors
    assert "Traceback" not in result.stderr.decode()
    assert result.returncode == 1


def test_an_undecodable_line_inside_a_block_names_its_line(tmp_path):
    result = _shell([], b'for i in range(2):\n    print(i, "\xc3")\n\nprint("after")\n')
    assert result.stdout.decode().split() == ["after"]
    assert result.stderr.decode().splitlines() == [
        "error: line 1: not valid UTF-8: byte 0xc3 at line 2, column 15; not run"]


# File names a user meets: spaces, both quotes, unicode; each with the way the README says to write it.
_NAMES = {
    "my model.pt": ("'my model.pt'", "my_model"),
    "it's.pt": ('"it\'s.pt"', "it_s"),
    'say "hi" now.pt': ("'say \"hi\" now.pt'", "say__hi__now"),
    "ünï côdé.pt": ("ünï\\ côdé.pt", "ünï_côdé"),
    "back slash's.pt": ("back\\ slash\\'s.pt", "back_slash_s"),
}


@pytest.fixture
def awkward_files(tmp_path) -> tuple[Path, dict[str, float]]:
    """One torch file per awkward name, each with its own values, so a test can tell which one loaded."""
    values = {}
    for i, name in enumerate(_NAMES):
        values[name] = 1.5 + i
        torch.save({"w": torch.full((3,), values[name])}, tmp_path / name)
    (tmp_path / "out dir").mkdir()
    return tmp_path, values


def _lines(folder: Path) -> list[str]:
    """Load every file by its quoted relative name, save one into a folder with a space, load that back."""
    lines = [f"load {quoted}" for quoted, _ in _NAMES.values()]
    lines += ["save it_s \"out dir/it's saved ü.pt\"", "load 'out dir/it'\\''s saved ü.pt' as back",
              "w = [float(back['w'][0])] + [float(" + "['w'][0]), float(".join(n for _, n in _NAMES.values())
              + "['w'][0])]", "print(w)"]
    return lines


def _expected(values: dict[str, float]) -> str:
    return str([values["it's.pt"], *values.values()])


def test_quoted_names_in_the_session(awkward_files, monkeypatch):
    folder, values = awkward_files
    monkeypatch.chdir(folder)
    session = Session()
    for line in _lines(folder)[:-1]:
        run_ok(session, line)
    assert [float(session.namespace[n]["w"][0]) for _, n in _NAMES.values()] == list(values.values())
    assert session.namespace["w"] == [values["it's.pt"], *values.values()]
    run_fail(session, "load my model.pt", "a path with spaces goes in quotes", "load 'my model.pt'")
    run_fail(session, "load 'my model.pt", "No closing quotation")


@pytest.mark.parametrize("how", ["run FILE", "pipe"])
def test_quoted_names_in_scripts_and_pipes(awkward_files, how):
    folder, values = awkward_files
    text = "\n".join(_lines(folder)) + "\n"
    script = folder / "names ü.ms"
    script.write_text(text, encoding="utf8")
    result = _shell(["run", script.name] if how == "run FILE" else [], text.encode("utf8") if how == "pipe" else b"",
                    cwd=folder)
    assert result.returncode == 0, result.stderr.decode()
    out = result.stdout.decode().splitlines()
    assert out[-1] == _expected(values), out
    assert [line.split(":")[0] for line in out if line.startswith("loaded")] == [
        f"loaded {n}" for _, n in _NAMES.values()] + ["loaded back"]


@pytest.mark.terminal
def test_quoted_names_in_the_terminal(awkward_files, tmux):
    from tests.tmux_terminal import TermPane, STARTUP_TIMEOUT

    folder, values = awkward_files
    pane = TermPane(shlex.quote(MODELSHELL), cwd=str(folder))
    try:
        pane.wait_for_prompt(timeout=STARTUP_TIMEOUT)
        for line in _lines(folder):
            pane.enter(line)
            pane.wait_for_prompt()
        pane.wait_for_text(_expected(values))
        shown = pane.text()
        assert "error" not in shown, shown
        for _, name in _NAMES.values():
            assert f"loaded {name}:" in shown, shown
    finally:
        pane.close()

