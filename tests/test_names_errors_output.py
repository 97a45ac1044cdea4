"""Names first (a variable named like a command shows its value; ``%NAME`` runs the command), the last
error's traceback on demand (``%tb``), and live output (a running line's prints reach the output as they
are written, in ``run``, pipes and the shell; ``input()`` works in the shell).

Session-level checks run a real Session; the live output is checked on real subprocesses (the first line
is read from the pipe while the script still waits for a marker file the test writes only then) and in a
real terminal under tmux.
"""
from __future__ import annotations

import io
import re
import subprocess
from pathlib import Path

import pytest
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document

from modelshell.terminal.completion import SessionCompleter
from modelshell.core.output import StreamSink
from modelshell.terminal.prompt_look import ShellLexer
from modelshell.core.results import Message, Table, Text
from modelshell.core.session import Session
from tmux_terminal import MODELSHELL

TIMEOUT = 120


def _printed(outcome) -> str:
    return "".join(r.text for r in outcome.results if isinstance(r, Text))


def _notes(outcome) -> list[str]:
    return [r.text for r in outcome.results if isinstance(r, Message)]


# --- names first -------------------------------------------------------------------------------------
def test_a_bound_name_shows_its_value_and_percent_runs_the_command(session):
    assert session.run_line("models").results[0].text.startswith("no models yet")  # the command, while unbound
    bound = session.run_line("models = 5")
    assert bound.ok and _notes(bound) == ["note: `models` now shows your variable; `%models` runs the command"]
    shown = session.run_line("models")
    assert shown.ok and _printed(shown) == "5\n" and not _notes(shown)
    assert _notes(session.run_line("models = 6")) == []  # said once
    assert _printed(session.run_line("models")) == "6\n"
    forced = session.run_line("%models")
    assert forced.ok and forced.results[0].text.startswith("no models yet")
    assert session.run_line("import torch; lin = torch.nn.Linear(2, 3)").ok
    table = session.run_line("%models --json")
    assert table.ok and table.as_json and table.results[0].data["models"][0]["name"] == "lin"
    assert session.run_line("weights = 1").ok
    assert isinstance(session.run_line("weights lin").results[0], Table)  # with arguments it is the command


def test_help_stays_the_command_and_percent_needs_a_command(session):
    assert session.run_line("help").results[0].text.startswith("inspect:")  # the session's own help() binding
    assert _notes(session.run_line("x = 1")) == []
    failed = session.run_line("%wieghts")
    assert not failed.ok and failed.error == "no command 'wieghts' to run with % (did you mean `%weights`? " \
                                             "`help` lists the commands)"


def test_completion_and_colours_follow_names_first(session):
    completer, lexer = SessionCompleter(session), ShellLexer(session)

    def completions(text):
        return {c.text: c.display_meta_text for c in completer.get_completions(Document(text), CompleteEvent())}

    def first_style(text):
        return lexer.lex_document(Document(text))(0)[0][0]

    assert first_style("models") == "class:command"
    assert "your variable" not in completions("mod")["models"]
    session.run_line("models = 5")
    assert first_style("models") != "class:command" and first_style("models").startswith("class:pygments")
    assert first_style("%models") == "class:command"
    assert completions("mod")["models"] == "your variable (`%models` runs the command)"
    assert completions("%wei") == {"weights": completions("%wei")["weights"]}
    assert "tensor" in completions("%wei")["weights"]  # the command's own summary after %
    assert "--json" in completions("%models --")


# --- %tb -----------------------------------------------------------------------------------------------
def test_tb_shows_the_last_python_error_in_full(session):
    assert session.run_line("%tb").results[0].text == "no error yet in this session"
    assert session.run_line("import numpy as np").ok
    failed = session.run_line("np.testing.assert_allclose(np.zeros(3), np.ones(3))")
    assert failed.error == "AssertionError: Not equal to tolerance rtol=1e-07, atol=0" and failed.traceback is None
    shown = session.run_line("%tb")
    assert shown.ok
    text = shown.results[0].text
    assert re.match(r'Traceback \(most recent call last\):\n  File "<modelshell-input-\d+>", line 1, in <module>\n'
                    r'    np\.testing\.assert_allclose\(np\.zeros\(3\), np\.ones\(3\)\)\n', text), text
    assert "Mismatched elements: 3 / 3 (100%)" in text and "Max absolute difference" in text
    assert "session.py" not in text and "python.py" not in text  # modelshell's own frames left out
    assert session.run_line("traceback").results[0].text == text  # the command, by its full name too


def test_tb_shows_command_and_syntax_errors(session):
    assert not session.run_line("weights nosuch").ok
    text = session.run_line("%tb").results[0].text
    assert "ModelshellError: no model named 'nosuch'" in text and "Traceback" in text
    assert not session.run_line("def f(:").ok
    assert session.run_line("%tb").results[0].text.endswith("def f(:\n          ^\nSyntaxError: invalid syntax")
    assert session.run_line("print('fine')").ok  # a line that works keeps the last error's traceback
    assert session.run_line("%tb").results[0].text.endswith("SyntaxError: invalid syntax")


def test_tb_in_the_terminal(term_plain):
    term_plain.enter("def inner(): return 1 / 0")
    term_plain.enter("")
    term_plain.enter("inner()")
    term_plain.wait_for_text("error: ZeroDivisionError: division by zero")
    term_plain.wait_for_prompt()
    term_plain.enter("%tb")
    term_plain.wait_for(lambda lines: lines[-2:] == ["ZeroDivisionError: division by zero", "ms>"]
                        and "%tb" in lines[-9], what="%tb")
    assert term_plain.after("%tb") == [  # each frame with its line, from the input that defined it
        "Traceback (most recent call last):", '  File "<modelshell-input-2>", line 1, in <module>', "    inner()",
        '  File "<modelshell-input-1>", line 1, in inner', "    def inner(): return 1 / 0",
        "                        ~~^~~", "ZeroDivisionError: division by zero", "ms>"]


# --- live output -------------------------------------------------------------------------------------
def _waits_for(marker: Path) -> list[str]:
    """Lines that print, then wait (up to a minute) for ``marker``: output held back until the line ends
    would reach the test only after the wait gave up, and then say so."""
    return [
        "import os, sys, time",
        "print('first', flush=True); n = sys.stderr.write('to stderr\\n'); sys.stderr.flush()",
        f"for _ in range(600):\n    if os.path.exists({str(marker)!r}): break\n    time.sleep(0.1)\n"
        "else:\n    print('gave up')",
        "",
        "print('second')",
    ]


def _first_lines_then_rest(args: list[str], marker: Path, stdin: str | None) -> tuple[list[str], str, str]:
    process = subprocess.Popen([MODELSHELL, *args], stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if stdin is not None:
        process.stdin.write(stdin)
        process.stdin.close()
    early = [process.stdout.readline(), process.stderr.readline()]  # blocks until the line writes them
    marker.write_text("go")
    rest, err = process.stdout.read(), process.stderr.read()
    assert process.wait(timeout=TIMEOUT) == 0, err
    return early, rest, err


def test_run_and_pipes_write_output_while_the_line_runs(tmp_path):
    lines = _waits_for(tmp_path / "go")
    script = tmp_path / "live.ms"
    script.write_text("\n".join(lines) + "\n")
    for args, stdin in ((["run", str(script)], None), ([], "\n".join(lines) + "\n")):
        (tmp_path / "go").unlink(missing_ok=True)
        early, rest, err = _first_lines_then_rest(args, tmp_path / "go", stdin)
        assert early == ["first\n", "to stderr\n"]
        assert rest == "second\n" and err == ""  # nothing printed twice, and the wait did not give up


def test_output_is_written_through_and_kept_in_order_for_transcripts(tmp_path):
    sink = io.StringIO()
    session = Session(output=StreamSink(out=sink, err=sink))
    assert session.run_line(f"record {tmp_path / 'r.md'}").ok
    outcome = session.run_line("for i in range(3): print('line', i)")
    assert sink.getvalue() == "line 0\nline 1\nline 2\n"
    assert [r.streamed for r in outcome.results] == [True]
    assert session.run_line("record stop").ok
    recorded = (tmp_path / "r.md").read_text()
    assert "ms> for i in range(3): print('line', i)\nline 0\nline 1\nline 2\n" in recorded


def test_the_shell_shows_output_at_once_and_the_spinner_never_over_it(term_plain):
    term_plain.enter("import time")
    term_plain.wait_for_prompt()
    term_plain.enter("time.sleep(1.5); print('late', flush=True); time.sleep(1.5); print('end')")
    term_plain.wait_for_text("Ctrl-C cancels")  # the spinner, while nothing was written
    lines = term_plain.wait_for(lambda lines: "late" in lines, what="late")  # the spinner went before it
    assert not any("Ctrl-C cancels" in line for line in lines), lines
    term_plain.wait_for(lambda lines: lines[-2:] == ["end", "ms>"], what="end and the prompt")
    assert term_plain.after("time.sleep(1.5); print('late', flush=True); time.sleep(1.5); print('end')") == [
        "late", "end", "ms>"]


def test_input_works_in_the_shell(term_plain):
    term_plain.enter("name = input('your name? ')")
    term_plain.wait_for(lambda lines: lines[-1] == "your name?", what="the input() prompt")
    term_plain.enter("Ada")
    term_plain.wait_for_prompt()
    term_plain.enter("name")
    term_plain.wait_for_text("'Ada'\nms>")
    assert term_plain.after("name") == ["'Ada'", "ms>"]


def test_breakpoint_and_getpass_work_in_the_shell(term_plain):
    term_plain.enter("def f(x): y = x * 2; breakpoint(); return y")
    term_plain.enter("")
    term_plain.wait_for_prompt()
    term_plain.enter("f(21)")
    term_plain.wait_for(lambda lines: lines[-1] == "(Pdb)", what="the pdb prompt")
    term_plain.enter("p y + 1")
    term_plain.wait_for(lambda lines: lines[-2:] == ["43", "(Pdb)"], what="pdb's answer")
    term_plain.enter("c")
    term_plain.wait_for(lambda lines: lines[-2:] == ["42", "ms>"], what="the value after pdb")
    term_plain.enter("import getpass; secret = getpass.getpass('secret? ')")
    term_plain.wait_for(lambda lines: lines[-1] == "secret?", what="getpass's prompt")
    term_plain.enter("hidden")
    term_plain.wait_for_prompt()
    assert "hidden" not in term_plain.text()  # not echoed
    term_plain.enter("secret")
    term_plain.wait_for(lambda lines: lines[-2:] == ["'hidden'", "ms>"], what="the secret's value")


def test_the_last_three_values_are_kept_as_in_ipython(session):
    for value in ("1", "'two'", "[3]"):
        assert session.run_line(value).ok
    assert _printed(session.run_line("(_, __, ___)")) == "([3], 'two', 1)\n"
    assert session.run_line("x = 4").ok and _printed(session.run_line("_")) == "([3], 'two', 1)\n"  # no value, no move


# --- progress bars of real libraries, live ---------------------------------------------------------------
# Each script is lines of one line each (a compound statement on one line, then the blank line that ends
# it), so the shell takes them as typed; `hold(on)` waits, while `on`, until the test writes the marker.
def _hold(marker: Path) -> list[str]:
    return ["import os, time",
            f"hold = lambda on: [time.sleep(0.1) for _ in range(600) if on and not os.path.exists({str(marker)!r})]"]


def _tqdm_lines(marker: Path, stream: str = "stderr") -> list[str]:
    """A tqdm loop that stops on its second item until ``marker`` exists (at most a minute), its bar on
    ``stream`` (tqdm's own default is stderr)."""
    return _hold(marker) + ["import sys; from tqdm import tqdm",
                            f"for i in tqdm(range(3), mininterval=0, ascii=True, ncols=60, file=sys.{stream}): "
                            "hold(i == 1)", "",
                            "print('done')"]


def _keras_fit_lines(marker: Path) -> list[str]:
    """Keras ``fit`` with its progress bar, waiting at the end of the first of two epochs for ``marker``."""
    return _hold(marker) + [
        "import numpy as np, keras",
        "model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)]); model.compile('sgd', 'mse')",
        "wait = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: hold(epoch == 0))",
        "history = model.fit(np.zeros((8, 3)), np.zeros((8, 1)), epochs=2, verbose=1, callbacks=[wait])",
        "print('done')",
    ]


def _read_until(stream, wanted: str, timeout: float = TIMEOUT) -> str:
    """What ``stream`` (a pipe) gives until ``wanted`` is in it: it must come while the line still waits
    for the marker, so output held back until the line ends would never arrive."""
    import os
    import select
    import time

    seen, deadline = "", time.monotonic() + timeout
    while wanted not in seen:
        ready, _, _ = select.select([stream], [], [], max(deadline - time.monotonic(), 0))
        chunk = os.read(stream.fileno(), 4096).decode() if ready else ""
        assert chunk, f"{wanted!r} did not come while the line ran; got {seen!r}"
        seen += chunk
    return seen


def _live_in_run_and_pipe(tmp_path: Path, lines: list[str], stream: str, wanted: str, final: str) -> None:
    marker = tmp_path / "go"
    script = tmp_path / "live.ms"
    script.write_text("\n".join(lines) + "\n")
    for args, stdin in ((["run", str(script)], None), ([], "\n".join(lines) + "\n")):
        marker.unlink(missing_ok=True)
        process = subprocess.Popen([MODELSHELL, *args], stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if stdin is not None:
            process.stdin.write(stdin.encode())
            process.stdin.close()
            process.stdin = None  # all of it is written: communicate() has nothing more to send
        early = _read_until(getattr(process, stream), wanted)
        assert final not in early  # the rest is still to come: the line waits
        marker.write_text("go")
        out, err = process.communicate(timeout=TIMEOUT)
        assert process.returncode == 0, err
        rest = (out if stream == "stdout" else err).decode()
        assert final in rest and "done" in (early + out.decode() if stream == "stdout" else out.decode())


@pytest.mark.parametrize("stream", ["stderr", "stdout"])
def test_tqdm_progress_shows_while_the_loop_runs_in_run_and_pipes(tmp_path, stream):
    _live_in_run_and_pipe(tmp_path, _tqdm_lines(tmp_path / "go", stream), stream, "1/3", "3/3")


def test_keras_fit_progress_shows_while_fit_runs_in_run_and_pipes(tmp_path):
    _live_in_run_and_pipe(tmp_path, _keras_fit_lines(tmp_path / "go"), "stdout", "Epoch 1/2", "Epoch 2/2")


def test_tqdm_and_keras_fit_show_while_they_run_in_the_shell(term_plain, tmp_path):
    for lines, wanted, final in ((_tqdm_lines(tmp_path / "go"), "1/3", "3/3"),
                                 (_keras_fit_lines(tmp_path / "go"), "Epoch 1/2", "Epoch 2/2")):
        (tmp_path / "go").unlink(missing_ok=True)
        term_plain.clear()
        *setup, running = [line for line in lines[:-1] if line]
        for line in setup:
            term_plain.enter(line)
            term_plain.wait_for_prompt(timeout=TIMEOUT)
        term_plain.enter(running)
        if running.startswith("for "):
            term_plain.enter("")  # the blank line that ends the one-line block
        screen = term_plain.wait_for(lambda shown: any(wanted in s for s in shown), what=wanted, timeout=TIMEOUT)
        assert not any(final in s for s in screen) and not any("Ctrl-C cancels" in s for s in screen)
        (tmp_path / "go").write_text("go")
        term_plain.wait_for(lambda shown: any(final in s for s in shown) and shown[-1] == "ms>", what=final,
                            timeout=TIMEOUT)
