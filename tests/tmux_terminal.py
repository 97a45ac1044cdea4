"""A real pseudo-terminal for the shell's tests: tmux runs ``modelshell``, tests type keys and read the
screen, as a user would. The fixtures ``term_demo``, ``term_shell`` and ``term_plain`` (in conftest.py) are
built on ``TermPane``.

The prompt shows the number of models (``ms[2]> ``); ``TermPane.lines`` writes every prompt as the bare
``ms> `` so that tests of other things need not care, and ``TermPane.raw_lines`` keeps it as shown.

Every wait is for the effect of the keys sent last, never for a state that may hold already: ``type`` and
``keys`` wait until the screen has changed, ``wait_for_text`` until the text shows more often than it did
when the last key was sent, ``wait_for_prompt`` until a prompt newer than that key. The timeouts are
generous (a loaded machine), and a passing test waits only as long as the shell takes.
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
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import pytest

MODELSHELL = str(Path(sys.executable).parent / "modelshell")
# A private tmux server on its own socket: the user's sessions are untouched, and nothing is left behind.
SOCKET_DIR = tempfile.mkdtemp(prefix="ms-tmux-")
SOCKET = os.path.join(SOCKET_DIR, "tmux.sock")
STARTUP_TIMEOUT = 60
_SUGGESTION = re.compile(r"\x1b\[38;5;241m(?:\x1b\[[0-9;]*m)*[^\x1b\n]*")
_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
STEP_TIMEOUT = 20
_COUNTED_PROMPT = re.compile(r"^ms\[\d+\]>", re.MULTILINE)
# The server's own settings: scroll-back far beyond any test's output, so counting what the pane has shown
# (``wait_for_text``, ``wait_for_prompt``) never loses lines off the top; and the server stays up with no
# session (term_server stops it), or a pane started as the last one closes can find it exiting ("server
# exited unexpectedly").
CONFIG = os.path.join(SOCKET_DIR, "tmux.conf")
Path(CONFIG).write_text("set-option -g history-limit 200000\nset-option -s exit-empty off\n")
NEEDS_TMUX = "this test runs the shell in a real terminal and needs tmux: apt-get install tmux"


def require_tmux() -> None:
    """Fail the test in one line when tmux is missing (collection does not need it)."""
    if shutil.which("tmux") is None:
        pytest.fail(NEEDS_TMUX, pytrace=False)


def _tmux(*args: str) -> str:
    done = subprocess.run(["tmux", "-f", CONFIG, "-S", SOCKET, *args], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"tmux {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


class _Look(NamedTuple):
    alternate: bool  # a full-screen program (the pager) holds the terminal
    lines: list[str]  # the visible screen, as TermPane.lines gives it
    held: str  # everything the pane holds, scroll-back and screen (of the pager: its screen), as lines


_SPLIT = "=== ms-tmux-capture-split ==="


class TermPane:
    """One tmux session running one command in a terminal of 120x40 characters unless told otherwise."""

    def __init__(self, command: str, data_home: str = SOCKET_DIR, width: int = 120, height: int = 40,
                 cwd: str | None = None) -> None:
        require_tmux()
        # Keep the pane after the command ends, and say how it ended, so exits can be checked. History
        # goes to a folder of the test's own, never to the user's ~/.local/share.
        # COLUMNS and LINES are dropped: under pytest they say 80x24 (set by readline), tmux would pass them
        # on, and rich believes them over the real terminal size.
        wrapped = (f"unset COLUMNS LINES; XDG_DATA_HOME={shlex.quote(data_home)} {command}; "
                   "echo \"[exited with $?]\"; sleep 120")
        if cwd is not None:
            wrapped = f"cd {shlex.quote(cwd)} && {wrapped}"
        self._new_session = ["new-session", "-d", "-x", str(width), "-y", str(height), "sh", "-c", wrapped]
        self.ready: Callable[[TermPane], object] = lambda pane: pane.wait_for_prompt(timeout=STARTUP_TIMEOUT)
        self._start()

    def _start(self) -> None:
        self.name = f"ms-{uuid.uuid4().hex[:8]}"
        self._sent = _Look(False, [], "")  # what the pane held when the last key was sent: nothing yet
        _tmux(*self._new_session[:6], "-s", self.name, *self._new_session[6:])

    def restart(self) -> None:
        """The same command in a new terminal, made ready as at first (``ready``): a shell shared by a
        module's tests starts afresh after a failed test, so one failure does not take the next ones."""
        self.close()
        self._start()
        self.ready(self)

    def lines(self) -> list[str]:
        """The visible screen, wrapped lines joined, trailing blanks dropped, prompts as ``ms> ``."""
        return [_COUNTED_PROMPT.sub("ms>", line) for line in self.raw_lines()]

    def raw_lines(self) -> list[str]:
        """The visible screen as shown (the prompt with its model count), without colours."""
        return _plain(_tmux("capture-pane", "-p", "-e", "-J", "-t", self.name)).splitlines()

    def _look(self) -> _Look:
        """The visible screen and everything the pane holds, from one tmux call (one moment)."""
        out = _tmux("display-message", "-p", "-t", self.name, "#{alternate_on}", ";",
                    "capture-pane", "-p", "-e", "-J", "-t", self.name, ";", "display-message", "-p", _SPLIT, ";",
                    "capture-pane", "-p", "-e", "-J", "-S", "-", "-t", self.name)
        flag, _, rest = out.partition("\n")
        screen, _, held = rest.partition(_SPLIT + "\n")
        return _Look(flag == "1", _COUNTED_PROMPT.sub("ms>", _plain(screen)).splitlines(),
                     _COUNTED_PROMPT.sub("ms>", _plain(held)))

    def _new(self, look: _Look, count: Callable[[str], int]) -> bool:
        """True when ``count`` of what the pane holds exceeds that of when the last key was sent. Entering
        or leaving the pager starts the count afresh: that screen is another one."""
        before = count(self._sent.held) if look.alternate == self._sent.alternate else 0
        return count(look.held) > before

    def in_pager(self) -> bool:
        """Whether a full-screen program (the pager) holds the terminal."""
        return self._look().alternate

    def text(self) -> str:
        return "\n".join(self.lines())

    def wait_for(self, condition, timeout: float = STEP_TIMEOUT, what: str = "") -> list[str]:
        """Until ``condition(lines)`` holds on the visible screen. It must be an effect of the keys sent,
        false before them: the helpers below are, and so should a test's own condition be."""
        return self._wait(lambda look: condition(look.lines), timeout, what or str(condition))

    def _wait(self, check: Callable[[_Look], bool], timeout: float, what: str) -> list[str]:
        deadline = time.monotonic() + timeout
        while True:
            look = self._look()
            if check(look):
                return look.lines
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; the screen:\n" + "\n".join(look.lines))
            time.sleep(0.1)

    def wait_for_text(self, text: str, timeout: float = STEP_TIMEOUT) -> list[str]:
        """Until ``text`` is on the screen (lines joined by ``\\n``) and the pane has shown it once more
        than when the last key was sent."""
        return self._wait(lambda look: text in "\n".join(look.lines) and self._new(look, lambda held: held.count(text)),
                          timeout, repr(text))

    def wait_for_prompt(self, timeout: float = STEP_TIMEOUT) -> list[str]:
        """Until the last line is an empty ``ms>`` prompt (capture-pane drops its trailing space) drawn
        after the last key was sent: the prompt a line was typed at does not count."""
        return self._wait(lambda look: look.lines[-1:] == ["ms>"] and self._new(look, _prompts),
                          timeout, "a new empty ms> prompt")

    def type(self, text: str) -> None:
        """Type ``text`` and wait until it shows."""
        if text:
            self._send("-l", text)

    def keys(self, *keys: str) -> None:
        """Press keys (tmux key names; other words are typed as they are), all in one write to the
        terminal, and wait until the screen has changed. A key that may change nothing (a Tab with nothing
        to complete) is followed by typing a mark, and the test waits for the mark."""
        self._send(*keys)

    def moves(self, *keys: str) -> None:
        """Press keys that only move the cursor (Up and Down inside a block), which change no text on the
        screen and so cannot be waited for: the terminal hands input over in order, so the next key's
        wait (or the next check of the screen) is after them."""
        self._sent = self._look()
        _tmux("send-keys", "-t", self.name, *keys)

    def _send(self, *args: str) -> None:
        before = self.lines()
        self._sent = self._look()
        _tmux("send-keys", "-t", self.name, *args)
        self.wait_for(lambda lines: lines != before, what=f"the screen to change after {args[-1]!r}")

    def enter(self, text: str) -> None:
        self.type(text)
        self.keys("Enter")

    def clear(self) -> None:
        """A clean screen with only the prompt: Ctrl-L (prompt_toolkit's clear-screen), then no history."""
        if self.lines() != ["ms>"]:
            self.wait_for(lambda lines: bool(lines) and lines[-1] == "ms>", what="an empty ms> prompt")
            self.keys("C-l")
            self.wait_for(lambda lines: lines == ["ms>"], what="a cleared screen")
        _tmux("clear-history", "-t", self.name)
        self._sent = _Look(self._sent.alternate, [], "")  # the prompt on the screen is the newest

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


def _plain(text: str) -> str:
    """A capture without colours, trailing blanks or the grey suggestion from history (prompt_toolkit's
    auto-suggest, colour 241): that is not typed text, and a test of what was typed or completed must not
    see it."""
    lines = [line.rstrip() for line in _ESCAPE.sub("", _SUGGESTION.sub("", text)).splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines)


def _prompts(text: str) -> int:
    """How many prompt lines ``text`` holds, typed on or not."""
    return sum(1 for line in text.splitlines() if line == "ms>" or line.startswith("ms> "))


FAILED = pytest.StashKey[bool]()  # set on a test's item by conftest.py when the test itself failed


def start_afresh_after_a_failure(pane: TermPane, request: pytest.FixtureRequest) -> None:
    """For a fixture that hands a module's shared shell to one test: after that test failed, the shell
    may be anywhere (a pager, a half-typed line); the next test gets a new one."""
    if request.node.stash.get(FAILED, False):
        pane.restart()


@pytest.fixture(scope="session", autouse=True)
def term_server():
    """Stop the private tmux server (ours alone, started by these tests) when the test run is done."""
    yield
    if shutil.which("tmux") is not None:
        subprocess.run(["tmux", "-S", SOCKET, "kill-server"], capture_output=True, timeout=30)
    shutil.rmtree(SOCKET_DIR, ignore_errors=True)


@pytest.fixture(scope="session")
def tmux() -> None:
    """What every terminal test stands on (conftest.py marks them ``terminal`` by it): tmux, or a clear
    one-line failure."""
    require_tmux()


@pytest.fixture(scope="module")
def term_demo(tmux):
    pane = TermPane(f"{shlex.quote(MODELSHELL)} --demo")
    try:
        lines = pane.wait_for_prompt(timeout=STARTUP_TIMEOUT)
        assert any(line.startswith("modelshell: `help` lists the commands") for line in lines), lines
        yield pane
    finally:
        pane.close()


@pytest.fixture
def term_shell(term_demo, request):
    term_demo.clear()
    yield term_demo
    start_afresh_after_a_failure(term_demo, request)


@pytest.fixture
def term_plain(tmux):
    """A shell without the demo: no framework to import, so it starts at once."""
    pane = TermPane(shlex.quote(MODELSHELL))
    try:
        pane.wait_for_prompt(timeout=STARTUP_TIMEOUT)
        yield pane
    finally:
        pane.close()
