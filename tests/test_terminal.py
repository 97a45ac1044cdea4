"""The interactive shell in a real pseudo-terminal: tmux runs ``modelshell``, the tests type keys and
read the screen, as a user would.

One demo shell (TensorFlow makes its start-up ~10 s) serves the tests that keep the shell running; each
of those starts from a cleared screen. Leaving the shell (``quit``, Ctrl-D) is tested on shells without
the demo, which start in well under a second.
"""
from __future__ import annotations

import shlex
import time

import pytest

from tmux_terminal import MODELSHELL, STARTUP_TIMEOUT, STEP_TIMEOUT, TermPane, _tmux

def test_weights_table_in_the_terminal(term_shell):
    term_shell.enter("weights torch_model")
    term_shell.wait_for_text("61,706 parameters")
    term_shell.wait_for_prompt()
    out = term_shell.after("weights torch_model")
    rows = [line.split() for line in out]
    assert ["0.weight", "(6,", "1,", "5,", "5)", "float32", "150", "yes"] in rows
    assert ["11.bias", "(10,)", "float32", "10", "yes"] in rows
    assert "10 tensors, 61,706 parameters (61,706 trainable, 0 non-trainable)" in out
    assert out[-1] == "ms>"


def test_an_error_is_one_line_then_the_prompt(term_shell):
    term_shell.enter("weights nosuch")
    term_shell.wait_for_text("error:")
    term_shell.wait_for_prompt()
    assert term_shell.after("weights nosuch") == [
        "error: no model named 'nosuch' (`models` lists the models; `load PATH` adds one)", "ms>"]
    term_shell.enter("1/0")
    term_shell.wait_for_text("ZeroDivisionError")
    term_shell.wait_for_prompt()
    assert term_shell.after("1/0") == ["error: ZeroDivisionError: division by zero", "ms>"]
    assert "Traceback" not in term_shell.text()


def test_ctrl_c_clears_a_half_typed_line(term_shell):
    term_shell.type("weights tor")
    term_shell.wait_for(lambda lines: lines[-1] == "ms> weights tor", what="the half-typed line")
    term_shell.keys("C-c")
    term_shell.wait_for_prompt()
    term_shell.enter("models")
    term_shell.wait_for_text("keras_model")
    term_shell.wait_for_prompt()
    out = term_shell.after("models")
    rows = [line.split() for line in out]
    assert any(row[row.index("torch_model"):][:4] == ["torch_model", "torch", "Sequential", "61,706"]
               for row in rows if "torch_model" in row)
    assert not any(line.startswith("error") for line in out)


def test_ctrl_c_abandons_an_unfinished_block(term_shell):
    term_shell.enter("for i in range(3):")
    term_shell.wait_for(lambda lines: lines[-1] == "..>", what="the continuation prompt")
    term_shell.keys("C-c")
    term_shell.wait_for_prompt()
    term_shell.enter("print('fresh start')")
    term_shell.wait_for_text("fresh start\nms>")
    assert "error" not in term_shell.text()


def test_tab_completes_commands_and_model_names(term_shell):
    term_shell.type("wei")
    term_shell.keys("Tab")
    term_shell.wait_for(lambda lines: lines[-1] == "ms> weights", what="weights completed")
    term_shell.type(" torch_")
    term_shell.keys("Tab")
    term_shell.wait_for(lambda lines: lines[-1] == "ms> weights torch_model", what="the model name completed")
    term_shell.keys("Enter")
    term_shell.wait_for_text("61,706 parameters")
    term_shell.wait_for_prompt()
    term_shell.type("shapes ker")
    term_shell.keys("Tab")
    term_shell.wait_for(lambda lines: lines[-1] == "ms> shapes keras_model", what="keras_model completed")
    term_shell.keys("C-c")
    term_shell.wait_for_prompt()


def test_python_block_runs_after_a_blank_line(term_shell):
    term_shell.enter("for i in range(2):")
    term_shell.wait_for(lambda lines: lines[-1] == "..>", what="the continuation prompt")
    term_shell.enter("print(i)")  # indented by the shell
    # The block stays open for more lines, as in the Python REPL, until an empty line.
    term_shell.wait_for(lambda lines: lines[-2:] == ["..>        print(i)", "..>"], what="a second continuation")
    term_shell.keys("Enter")
    term_shell.wait_for_prompt()
    assert term_shell.after("for i in range(2):") == ["..>        print(i)", "0", "1", "ms>"]


def test_python_values_and_long_output(term_shell):
    term_shell.enter('x = torch_model.state_dict()["0.weight"].shape')
    term_shell.wait_for_prompt()
    term_shell.enter("x")
    term_shell.wait_for_text("torch.Size([6, 1, 5, 5])")
    term_shell.wait_for_prompt()
    assert term_shell.after("x") == ["torch.Size([6, 1, 5, 5])", "ms>"]


def test_quit_ends_the_shell(term_plain):
    term_plain.enter("quit")
    lines = term_plain.wait_for_text("[exited with ")
    assert "[exited with 0]" in lines


def test_ctrl_d_ends_the_shell(term_plain):
    term_plain.enter("print('still here')")
    term_plain.wait_for_text("\nstill here")
    term_plain.wait_for_prompt()
    term_plain.keys("C-d")
    lines = term_plain.wait_for_text("[exited with ")
    assert "[exited with 0]" in lines


def test_long_doc_is_paged_then_the_prompt_returns(term_shell):
    term_shell.enter("doc torch_model")
    # The pager holds the screen: the help text shows, and no prompt until it is left with q.
    lines = term_shell.wait_for_text("class Sequential")
    assert lines[-1] != "ms>", lines
    assert "ms> doc torch_model" not in lines  # a pager takes the whole screen
    term_shell.keys("q")
    term_shell.wait_for_prompt()
    term_shell.enter("print('back')")
    term_shell.wait_for_text("back\nms>")


@pytest.mark.terminal
def test_history_is_kept_across_sessions_searchable_and_suggested(tmp_path):
    data_home = str(tmp_path)
    first = TermPane(shlex.quote(MODELSHELL), data_home)
    try:
        first.wait_for_prompt(timeout=STARTUP_TIMEOUT)
        first.enter("print('remembered' + '!')")
        first.wait_for_text("remembered!")
        first.wait_for_prompt()
        first.keys("C-d")
        first.wait_for_text("[exited with 0]")
    finally:
        first.close()
    history = (tmp_path / "modelshell" / "history").read_text()
    assert "print('remembered' + '!')" in history

    second = TermPane(shlex.quote(MODELSHELL), data_home)
    try:
        second.wait_for_prompt(timeout=STARTUP_TIMEOUT)
        # The previous session's line comes back. History is read in a thread, so that a long one does not
        # hold the prompt up: an Up pressed before it is read finds nothing yet, and is pressed again.
        def recalled(lines):
            if lines[-1] != "ms> print('remembered' + '!')":
                second.keys("Up")
                return False
            return True

        second.wait_for(recalled, what="the recalled line")
        second.keys("C-u")
        second.type("print('rem")  # the rest is suggested from history, in grey, and Right accepts it
        grey_rest = "\x1b[38;5;241membered' + '!')"
        deadline = time.monotonic() + STEP_TIMEOUT
        while grey_rest not in _tmux("capture-pane", "-p", "-e", "-t", second.name):
            assert time.monotonic() < deadline, "no grey suggestion from history"
            time.sleep(0.1)
        assert second.lines()[-1] == "ms> print('rem"  # the suggestion is not typed text until accepted
        second.keys("Right")
        second.wait_for(lambda lines: lines[-1] == "ms> print('remembered' + '!')", what="the accepted suggestion")
        second.keys("Enter")
        second.wait_for(lambda lines: lines.count("remembered!") == 1, what="the accepted suggestion's output")
        second.wait_for_prompt()
        second.keys("C-r")
        second.type("rememb")  # Ctrl-R searches backwards through history
        second.wait_for_text("print('remembered' + '!')")
        second.keys("Enter")
        second.keys("Enter")
        second.wait_for(lambda lines: lines.count("remembered!") == 2, what="the searched line's output")
    finally:
        second.close()


def test_leaving_with_changed_unsaved_models_asks_first(term_plain, tmp_path):
    """`copy` into a model marks it changed; `exit` and Ctrl-D then ask, N (the default) stays, and once
    it is saved the shell leaves without asking."""
    term_plain.enter("import torch; a = torch.nn.Linear(2, 2); b = torch.nn.Linear(2, 2)")
    term_plain.wait_for_prompt(timeout=STARTUP_TIMEOUT)
    term_plain.enter("copy a b")
    term_plain.wait_for_text("copied 2 tensors")
    term_plain.wait_for_prompt()
    term_plain.enter("exit")
    term_plain.wait_for_text("1 model changed and not saved: b. Leave anyway? [y/N]")
    term_plain.enter("")  # the default: stay
    term_plain.wait_for_text("staying")
    term_plain.wait_for_prompt()
    term_plain.keys("C-d")
    term_plain.wait_for(lambda lines: lines[-1].endswith("Leave anyway? [y/N]"), what="the question again")
    term_plain.enter("n")
    term_plain.wait_for_prompt()
    term_plain.enter(f"save b {tmp_path / 'b.pt'}")
    term_plain.wait_for_text("saved b to")
    term_plain.wait_for_prompt()
    term_plain.enter("copy a b")
    term_plain.wait_for_prompt()
    term_plain.enter("quit")
    term_plain.wait_for_text("Leave anyway? [y/N]")
    term_plain.enter("y")
    lines = term_plain.wait_for_text("[exited with ")
    assert "[exited with 0]" in lines and (tmp_path / "b.pt").exists()


def test_leaving_after_saving_does_not_ask(term_plain, tmp_path):
    term_plain.enter("import torch; a = torch.nn.Linear(2, 2); b = torch.nn.Linear(2, 2)")
    term_plain.wait_for_prompt(timeout=STARTUP_TIMEOUT)
    term_plain.enter("copy a b")
    term_plain.wait_for_prompt()
    term_plain.enter(f"save b {tmp_path / 'b.pt'}")
    term_plain.wait_for_text("saved b to")
    term_plain.wait_for_prompt()
    term_plain.enter("exit")
    lines = term_plain.wait_for_text("[exited with ")
    assert "[exited with 0]" in lines and not any("Leave anyway" in line for line in lines)


def test_help_groups_commands_and_shows_usage_and_examples(term_shell):
    term_shell.enter("help")
    term_shell.wait_for_text("`help COMMAND` or `COMMAND --help`")
    term_shell.wait_for_prompt()
    out = term_shell.after("help")
    groups = [line for line in out if line in ("inspect:", "transfer:", "files:", "session:")]
    assert groups == ["inspect:", "transfer:", "files:", "session:"]
    assert any(line.split()[:1] == ["hist"] for line in out) and any(line.split()[:1] == ["copy"] for line in out)
    for typed in ("help weights", "weights --help"):
        term_shell.clear()
        term_shell.enter(typed)
        term_shell.wait_for_text("examples:")
        term_shell.wait_for_prompt()
        out = term_shell.after(typed)
        assert out[0].startswith("usage: weights ") and out[0].endswith("name [filter]")
        examples = out[out.index("examples:") + 1:-1]
        assert [line.strip() for line in examples][:2] == ["weights torch_model", "weights keras_model kernel --json"]


def test_question_mark_shows_doc(term_shell):
    term_shell.enter("torch_model.eval?")
    term_shell.wait_for_text("Help on method eval")
    if term_shell.in_pager():  # paged when taller than the screen: q leaves the pager
        term_shell.keys("q")
    term_shell.wait_for_prompt()
    assert "Set the module in evaluation mode." in term_shell.text()


def test_underscore_holds_the_last_value(term_shell):
    term_shell.enter("6 * 7")
    term_shell.wait_for_text("42")
    term_shell.wait_for_prompt()
    term_shell.enter("_ + 1")
    term_shell.wait_for_text("43")
    term_shell.wait_for_prompt()
    assert term_shell.after("_ + 1") == ["43", "ms>"]


def test_models_marks_the_two_used_last_in_the_terminal(term_shell):
    term_shell.enter("shapes keras_model --limit 1")
    term_shell.wait_for_text("parameters in")
    term_shell.wait_for_prompt()
    term_shell.clear()
    term_shell.enter("weights torch_model --limit 1")
    term_shell.wait_for_text("10 tensors")
    term_shell.wait_for_prompt()
    term_shell.clear()
    term_shell.enter("models")
    term_shell.wait_for_text("* used last, + the one before")
    term_shell.wait_for_prompt()
    rows = {line.split()[1]: line.split()[0] for line in term_shell.after("models")
            if line.split()[:1] in (["*"], ["+"]) and "used last" not in line}
    assert rows == {"torch_model": "*", "keras_model": "+"}
