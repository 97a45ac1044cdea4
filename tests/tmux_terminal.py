"""A real pseudo-terminal for the shell's tests: tmux runs ``modelshell``, tests type keys and read the
screen, as a user would. The fixtures ``term_demo``, ``term_shell`` and ``term_plain`` (in conftest.py) are
built on ``TermPane``.

The prompt shows the number of models (``ms[2]> ``); ``TermPane.lines`` writes every prompt as the bare
``ms> `` so that tests of other things need not care, and ``TermPane.raw_lines`` keeps it as shown.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

MODELSHELL = str(Path(sys.executable).parent / "modelshell")
# A private tmux server on its own socket: the user's sessions are untouched, and nothing is left behind.
SOCKET_DIR = tempfile.mkdtemp(prefix="ms-tmux-")
SOCKET = os.path.join(SOCKET_DIR, "tmux.sock")
STARTUP_TIMEOUT = 60
_SUGGESTION = re.compile(r"\x1b\[38;5;241m(?:\x1b\[[0-9;]*m)*[^\x1b\n]*")
_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
STEP_TIMEOUT = 20
_COUNTED_PROMPT = re.compile(r"^ms\[\d+\]>")

if shutil.which("tmux") is None:  # pragma: no cover - the test environment installs tmux
    raise RuntimeError("these tests need tmux")


def _tmux(*args: str) -> str:
    done = subprocess.run(["tmux", "-S", SOCKET, *args], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"tmux {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


class TermPane:
    """One tmux session running one command in a terminal of 120x40 characters unless told otherwise."""

    def __init__(self, command: str, data_home: str = SOCKET_DIR, width: int = 120, height: int = 40,
                 cwd: str | None = None) -> None:
        self.name = f"ms-{uuid.uuid4().hex[:8]}"
        # Keep the pane after the command ends, and say how it ended, so exits can be checked. History
        # goes to a folder of the test's own, never to the user's ~/.local/share.
        # COLUMNS and LINES are dropped: under pytest they say 80x24 (set by readline), tmux would pass them
        # on, and rich believes them over the real terminal size.
        wrapped = (f"unset COLUMNS LINES; XDG_DATA_HOME={shlex.quote(data_home)} {command}; "
                   "echo \"[exited with $?]\"; sleep 120")
        if cwd is not None:
            wrapped = f"cd {shlex.quote(cwd)} && {wrapped}"
        _tmux("new-session", "-d", "-x", str(width), "-y", str(height), "-s", self.name, "sh", "-c", wrapped)

    def lines(self) -> list[str]:
        """The visible screen, wrapped lines joined, trailing blanks dropped, prompts as ``ms> ``."""
        return [_COUNTED_PROMPT.sub("ms>", line) for line in self.raw_lines()]

    def raw_lines(self) -> list[str]:
        """The visible screen as shown (the prompt with its model count), without colours."""
        text = _tmux("capture-pane", "-p", "-e", "-J", "-t", self.name)
        # Drop the grey suggestion from history (prompt_toolkit's auto-suggest, colour 241): it is not
        # typed text, and a test of what was typed or completed must not see it. Then drop all styling.
        text = _ESCAPE.sub("", _SUGGESTION.sub("", text))
        lines = [line.rstrip() for line in text.splitlines()]
        while lines and not lines[-1]:
            lines.pop()
        return lines

    def text(self) -> str:
        return "\n".join(self.lines())

    def wait_for(self, condition, timeout: float = STEP_TIMEOUT, what: str = "") -> list[str]:
        deadline = time.monotonic() + timeout
        while True:
            lines = self.lines()
            if condition(lines):
                return lines
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what or condition}; the screen:\n" + "\n".join(lines))
            time.sleep(0.1)

    def wait_for_text(self, text: str, timeout: float = STEP_TIMEOUT) -> list[str]:
        return self.wait_for(lambda lines: text in "\n".join(lines), timeout, repr(text))

    def wait_for_prompt(self, timeout: float = STEP_TIMEOUT) -> list[str]:
        """Until the last line is an empty ``ms>`` prompt (capture-pane drops its trailing space)."""
        return self.wait_for(lambda lines: bool(lines) and lines[-1] == "ms>", timeout, "an empty ms> prompt")

    def type(self, text: str) -> None:
        _tmux("send-keys", "-t", self.name, "-l", text)

    def keys(self, *keys: str) -> None:
        _tmux("send-keys", "-t", self.name, *keys)

    def enter(self, text: str) -> None:
        self.type(text)
        self.keys("Enter")

    def clear(self) -> None:
        """A clean screen with only the prompt: Ctrl-L (prompt_toolkit's clear-screen), then no history."""
        self.wait_for_prompt()
        self.keys("C-l")
        self.wait_for(lambda lines: lines == ["ms>"], what="a cleared screen")
        _tmux("clear-history", "-t", self.name)

    def after(self, typed: str) -> list[str]:
        """Screen lines after the last prompt line showing ``typed``."""
        lines = self.lines()
        marks = [i for i, line in enumerate(lines) if line == f"ms> {typed}".rstrip()]
        assert marks, f"no prompt line with {typed!r}:\n" + "\n".join(lines)
        return lines[marks[-1] + 1:]

    def close(self) -> None:
        try:
            _tmux("kill-session", "-t", self.name)
        except RuntimeError:
            pass  # already gone


@pytest.fixture(scope="session", autouse=True)
def term_server():
    """Stop the private tmux server (ours alone, started by these tests) when the test run is done."""
    yield
    subprocess.run(["tmux", "-S", SOCKET, "kill-server"], capture_output=True, timeout=30)
    shutil.rmtree(SOCKET_DIR, ignore_errors=True)


@pytest.fixture(scope="module")
def term_demo():
    pane = TermPane(f"{shlex.quote(MODELSHELL)} --demo")
    try:
        lines = pane.wait_for_prompt(timeout=STARTUP_TIMEOUT)
        assert any(line.startswith("modelshell: `help` lists the commands") for line in lines), lines
        yield pane
    finally:
        pane.close()


@pytest.fixture
def term_shell(term_demo):
    term_demo.clear()
    return term_demo


@pytest.fixture
def term_plain():
    """A shell without the demo: no framework to import, so it starts at once."""
    pane = TermPane(shlex.quote(MODELSHELL))
    try:
        pane.wait_for_prompt(timeout=STARTUP_TIMEOUT)
        yield pane
    finally:
        pane.close()


