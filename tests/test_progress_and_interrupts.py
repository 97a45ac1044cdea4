"""Lines that take long: a spinner says what runs (in the interactive shell only, and only after a second),
and Ctrl-C cancels the line and gives the prompt back with the session whole: an interrupted `load` adds
no model, an interrupted `copy` leaves its destination exactly as it was.

The terminal tests type and press keys in a real shell under tmux; the copy's rollback is also checked
in this process with real SIGINTs landing inside the adapters' `write`, which a terminal cannot aim at.
"""
from __future__ import annotations

import inspect
import os
import re
import shlex
import signal
import threading
import time
import traceback
from pathlib import Path

import pytest

from test_long_output import SHELL, clear, output, run_python, run_to_prompt, shell_after
from tmux_terminal import SOCKET_DIR, STARTUP_TIMEOUT, TermPane, start_afresh_after_a_failure

# The terminal sends the SIGINT of a Ctrl-C pressed while a line runs to the whole foreground group: the
# pane's own `sh -c` too, which then ends when modelshell does, before it can say how modelshell ended. For
# a pane whose exit status counts, that sh catches SIGINT (a handler, which modelshell does not inherit).
TRAPPED = f"true; trap true INT; XDG_DATA_HOME={shlex.quote(SOCKET_DIR)} {SHELL}"
SPINNING = "Ctrl-C cancels"  # what the spinner line always says
_BRAILLE = re.compile("[\u2800-\u28ff]")  # the spinner's frames
SLOW_FACTORIES = '''
import os
import time

import torch


class SlowNet(torch.nn.Module):
    """A real forward pass that takes long: one small layer, a million times over."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 4)

    def forward(self, x):
        for _ in range(1_000_000):
            x = torch.tanh(self.lin(x))
        return x


def slow_net():
    return SlowNet()


def sleepy():
    time.sleep(60)
    return torch.nn.Linear(4, 4)


def late():
    time.sleep(2.5)
    return torch.nn.Linear(4, 4)


def held():
    """Until the test has seen the spinner and made the file `go` beside this one."""
    go = os.path.join(os.path.dirname(__file__), "go")
    while not os.path.exists(go):
        time.sleep(0.05)
    return torch.nn.Linear(4, 4)
'''


@pytest.fixture(scope="module")
def factories(tmp_path_factory):
    path = tmp_path_factory.mktemp("factories") / "slow.py"
    path.write_text(SLOW_FACTORIES)
    return path


# `hold(path)` runs until the test makes the file: the spinner shows for as long as the test looks at it.
HOLD = r"import os, time, torch; exec('def hold(path):\n while not os.path.exists(path):\n  time.sleep(0.05)')"


@pytest.fixture(scope="module")
def term_torch(tmux):
    with shell_after(HOLD) as pane:
        yield pane


@pytest.fixture
def term(term_torch, request):
    yield clear(term_torch)
    start_afresh_after_a_failure(term_torch, request)


def watch(pane: TermPane, until: str, timeout: float = STARTUP_TIMEOUT) -> list[str]:
    """Every screen line seen, polled 20 times a second, until ``until`` shows (the line has run)."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        lines = pane.lines()
        seen += lines
        if until in "\n".join(lines):
            return seen
        assert time.monotonic() < deadline, f"timed out waiting for {until!r}:\n" + "\n".join(lines)
        time.sleep(0.05)


def spinner_line(pane: TermPane, timeout: float = STARTUP_TIMEOUT) -> str:
    lines = pane.wait_for_text(SPINNING, timeout)
    return next(line for line in lines if SPINNING in line)


def interrupt(pane: TermPane, error: str) -> list[str]:
    """Ctrl-C once the spinner shows; the error line and a prompt must follow within seconds."""
    spinner_line(pane)
    pane.keys("C-c")
    pane.wait_for_text(error, timeout=10)
    lines = pane.wait_for_prompt(timeout=10)
    assert not any(SPINNING in line or _BRAILLE.search(line) for line in lines), lines
    return lines


# --- the spinner ---------------------------------------------------------------------------------------


def go_file(name: str) -> Path:
    """A file for ``hold`` to wait for, at a short path: the spinner line shows it, and must fit."""
    return Path(SOCKET_DIR) / f"go-{name}"


def test_a_long_line_shows_a_spinner_saying_what_runs_then_leaves_nothing(term):
    go = go_file("long")
    run_python(term, f"go = '{go}'")
    term.enter("hold(go); print('held', 'long')")
    line = spinner_line(term)
    assert _BRAILLE.match(line), line
    assert re.fullmatch(r". hold\(go\); print\('held', 'long'\)  [12] s, Ctrl-C cancels", line), line
    go.touch()
    term.wait_for_text("held long")
    lines = term.wait_for_prompt()
    assert lines[-3].startswith("ms> hold(") and lines[-2:] == ["held long", "ms>"], lines  # erased
    assert not any(SPINNING in line for line in lines)


def test_a_quick_line_shows_no_spinner(term):
    term.enter("time.sleep(0.2); print('quick', 'line')")  # well under the spinner's second
    seen = watch(term, "quick line")
    assert not any(SPINNING in line or _BRAILLE.search(line) for line in seen)


def test_a_command_s_spinner_names_the_file_not_its_folder(term, factories):
    term.enter(f"load {factories}:held as held_one")
    assert re.fullmatch(r". load slow\.py:held as held_one  \d s, Ctrl-C cancels", spinner_line(term))
    (factories.parent / "go").touch()
    term.wait_for_text("loaded held_one")


def test_json_lines_show_no_spinner(term, factories):
    term.enter(f"load {factories}:late as late_json --json")
    seen = watch(term, '"name": "late_json"')
    assert not any(SPINNING in line or _BRAILLE.search(line) for line in seen)


def test_a_recorded_transcript_keeps_no_spinner(term, tmp_path):
    transcript = tmp_path / "slow.md"
    run_to_prompt(term, f"record {transcript}", "recording to")
    go = go_file("recorded")
    term.enter(f"hold('{go}'); print('recorded', 'line')")
    spinner_line(term)
    go.touch()
    term.wait_for_text("recorded line")
    run_to_prompt(term, "record stop", "recording stopped")
    text = transcript.read_text()
    assert "recorded line" in text
    assert SPINNING not in text and not _BRAILLE.search(text)


@pytest.mark.terminal
@pytest.mark.parametrize("how", ["run", "pipe"])
def test_run_and_piped_input_show_no_spinner_on_a_terminal(tmp_path, how):
    script = tmp_path / "slow.ms"
    script.write_text("import time\ntime.sleep(2.5)\nprint('script', 'done')\n")
    command = (f"{SHELL} run {shlex.quote(str(script))}" if how == "run"
               else f"cat {shlex.quote(str(script))} | {SHELL}")
    pane = TermPane(command)
    try:
        seen = watch(pane, "[exited with 0]")
        assert "script done" in seen
        assert not any(SPINNING in line or _BRAILLE.search(line) for line in seen)
    finally:
        pane.close()


# --- Ctrl-C --------------------------------------------------------------------------------------------


def test_ctrl_c_cancels_a_long_python_line_and_keeps_the_session(term):
    run_python(term, "kept = [1, 2, 3]; lin = torch.nn.Linear(2, 2)")
    term.enter("time.sleep(60)")
    interrupt(term, "error: interrupted")  # within seconds, not after the minute
    run_to_prompt(term, "print(kept, type(lin).__name__, 'after')", "[1, 2, 3] Linear after")


def test_ctrl_c_cancels_a_long_forward_pass(term, factories):
    run_to_prompt(term, f"load {factories}:slow_net as slow", "loaded slow")
    run_python(term, "fast = torch.nn.Sequential(torch.nn.Linear(4, 4))")
    term.enter("slow(torch.zeros(1, 4))")  # a forward pass from Python
    interrupt(term, "error: interrupted")
    term.enter("verify slow fast")  # and from a command
    assert "verify slow fast" in spinner_line(term)
    interrupt(term, "error: interrupted (nothing changed)")
    run_to_prompt(term, "print(slow.training, 'training mode is back')", "True training mode is back")


def test_ctrl_c_cancels_a_load_and_adds_no_model(term, factories):
    run_python(term, "present = torch.nn.Linear(1, 1)")
    term.enter(f"load {factories}:sleepy as never")
    assert "load slow.py:sleepy as never" in spinner_line(term)
    interrupt(term, "error: interrupted (nothing changed)")
    run_to_prompt(term, "print('never' in dir(), 'is bound')", "False is bound")
    listed = output(run_to_prompt(term, "models", "present"))
    assert not any(re.search(r"\bnever\b", line) for line in listed), listed


@pytest.mark.terminal
def test_ctrl_c_during_a_copy_leaves_the_destination_then_ctrl_c_and_ctrl_d_on_the_prompt():
    """A copy of 20,000 tensors runs for seconds; Ctrl-C in the middle changes nothing in `b` (and `b` is
    not marked changed: Ctrl-D then leaves without asking). Ctrl-C on the prompt still clears the line."""
    pane = TermPane(TRAPPED)
    try:
        pane.wait_for_prompt(timeout=STARTUP_TIMEOUT)
        layers = "torch.nn.Sequential(*[torch.nn.Linear(2, 2) for _ in range(10000)])"
        run_python(pane, f"import torch; a = {layers}; b = {layers}")
        run_python(pane, "before = [t.clone() for t in b.state_dict().values()]")
        pane.enter("copy a b")
        interrupt(pane, "error: interrupted (nothing changed)")
        same = "all(torch.equal(x, y) for x, y in zip(before, b.state_dict().values()))"
        run_to_prompt(pane, f"print({same}, 'unchanged')", "True unchanged")
        pane.type("copy a")
        pane.wait_for(lambda lines: lines[-1].startswith("ms> copy"), what="the half-typed line")
        pane.keys("C-c")
        pane.wait_for_prompt()
        pane.keys("C-d")
        lines = pane.wait_for_text("[exited with ")
        assert "[exited with 0]" in lines and not any("Leave anyway" in line for line in lines)
    finally:
        pane.close()


# --- the rollback, where a terminal cannot aim ---------------------------------------------------------


def _torch_pair(count: int):
    import torch

    return (torch.nn.Sequential(*[torch.nn.Linear(3, 2) for _ in range(count)]),
            torch.nn.Sequential(*[torch.nn.Linear(3, 2) for _ in range(count)]))


def _keras_destination(count: int):
    import keras
    import torch

    source = torch.nn.Sequential(*[torch.nn.Linear(3, 3) for _ in range(count)])
    destination = keras.Sequential([keras.Input((3,))] + [keras.layers.Dense(3) for _ in range(count)])
    return source, destination


def _write_loop_lines(handle) -> range:
    """The lines of the adapter's ``write`` inside its try block: where each tensor is backed up and
    overwritten, so an interrupt there is one the rollback must undo."""
    source, first = inspect.getsourcelines(type(handle).write)
    body = "".join(source)
    start = body[: body.index("try:")].count("\n") + first + 1
    end = body[: body.index("except BaseException")].count("\n") + first
    return range(start, end)


def _interrupted_at(handle, values, after: float) -> int | None:
    """Write ``values`` with a real SIGINT ``after`` seconds; the line of ``write`` it landed on, or None
    when the write was done first (the signal then lands while waiting here, and is caught here too)."""
    timer = threading.Timer(after, os.kill, (os.getpid(), signal.SIGINT))
    try:
        timer.start()
        handle.write(values)
        timer.join()
        time.sleep(0.2)
    except KeyboardInterrupt as exc:
        timer.join()
        writes = [line for frame, line in traceback.walk_tb(exc.__traceback__) if frame.f_code.co_name == "write"]
        return writes[0] if writes else None
    return None


def test_an_interrupted_write_puts_back_every_tensor_it_had_written():
    """A Keras destination, written variable by variable with a backup of each: a real SIGINT in the
    middle rolls back what was written."""
    from modelshell.frameworks.detect import wrap_object
    from modelshell.transfer.plan import converted_values, make_plan

    source, destination = _keras_destination(300)
    a, b = wrap_object(source, "a"), wrap_object(destination, "b")
    plan = make_plan(a, b, "a", "b")
    names = [t.name for t in b.tensors()]
    before = {name: array.copy() for name, array in zip(names, b.iter_arrays(names))}
    started = time.perf_counter()
    b.write(converted_values(plan, a))
    took = time.perf_counter() - started
    b.write({name: value.copy() for name, value in before.items()})  # back to the start
    in_loop = _write_loop_lines(b)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C's own handler
    landed = []
    try:
        for fraction in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9):
            line = _interrupted_at(b, converted_values(plan, a), took * fraction)
            if line in in_loop:
                landed.append(line)
                now = dict(zip(names, b.iter_arrays(names)))
                assert all((now[name] == value).all() for name, value in before.items()), fraction
            b.write({name: value.copy() for name, value in before.items()})
    finally:
        signal.signal(signal.SIGINT, previous)
    assert landed, "no interrupt landed while tensors were being written; the test proved nothing"


def test_an_interrupt_during_a_torch_write_is_held_until_the_copy_is_complete():
    """A torch destination whose values are plain copies is written with no backup: a real SIGINT that
    lands while its tensors are written is held until the last one, so the model is never half written;
    the interrupt then comes with every tensor new and the write counted (the session says the copy had
    completed). One that lands before the writes leaves every tensor as it was."""
    import numpy as np

    from modelshell.frameworks.detect import wrap_object
    from modelshell.transfer.plan import converted_values, make_plan

    source, destination = _torch_pair(3000)
    a, b = wrap_object(source, "a"), wrap_object(destination, "b")
    plan = make_plan(a, b, "a", "b")
    names = [t.name for t in b.tensors()]
    before = {name: array.copy() for name, array in zip(names, b.iter_arrays(names))}
    new = {name: array.copy() for name, array in zip(names, a.iter_arrays(names))}
    assert not any(np.array_equal(before[n], new[n]) for n in names)
    started = time.perf_counter()
    b.write(converted_values(plan, a))
    took = time.perf_counter() - started
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    completed = 0
    try:
        for fraction in (0.2, 0.4, 0.6, 0.8, 0.9, 0.95):
            b.write({name: value.copy() for name, value in before.items()})
            writes = b.writes
            timer = threading.Timer(took * fraction, os.kill, (os.getpid(), signal.SIGINT))
            interrupted = False
            try:
                timer.start()
                b.write(converted_values(plan, a))
                timer.join()
                time.sleep(0.2)
            except KeyboardInterrupt:
                timer.join()
                interrupted = True
            now = dict(zip(names, b.iter_arrays(names)))
            all_new = all(np.array_equal(now[n], new[n]) for n in names)
            assert all_new or all(np.array_equal(now[n], before[n]) for n in names), fraction
            assert (b.writes == writes + 1) == all_new, fraction
            completed += interrupted and all_new
    finally:
        signal.signal(signal.SIGINT, previous)
    assert completed, "no interrupt landed while tensors were being written; the test proved nothing"
