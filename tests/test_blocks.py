"""A block is one multi-line buffer in the shell, as in ptpython and IPython: Enter indents after `:`,
runs a complete input (a block once its last line is left empty), any line can be edited before it runs,
and history keeps the whole block. The Enter rule through a real Session, then the shell under tmux."""
from __future__ import annotations

import pytest

from modelshell.core.lines import after_enter, dedent_continuation


@pytest.mark.parametrize(("text", "inserted"), [
    ("for i in range(3):", "\n    "),  # a block opens: indent
    ("for i in range(3):\n    print(i)", "\n    "),  # the body goes on until a line is left empty
    ("for i in range(3):\n    print(i)\n    ", None),  # left empty: it runs
    ("for i in range(3):\n    if i:\n        print(i)", "\n        "),
    ("def f():\n    return 1", "\n"),  # nothing more in this body: one level out
    ("for i in range(3): print(i)", "\n"),  # the REPL waits for the empty line after a one-line block too
    ("for i in range(3): print(i)\n", None),
    ("x = (1,", "\n"),  # an open bracket
    ("s = '''a\n", "\n"),  # an empty line inside a string is part of it
    ("weights m", None), ("1 / 0", None), ("x = 1", None), ("", None),
    ("def f(:", None),  # an error runs, to be shown
])
def test_what_enter_does_at_the_end(session, text, inserted):
    assert after_enter(text, session.needs_more) == inserted


def test_else_moves_out_to_its_statement():
    assert dedent_continuation("if x:\n    y\n    else:") == "if x:\n    y\nelse:"
    assert dedent_continuation("for a in b:\n    if x:\n        y\n        else:") == "for a in b:\n    if x:\n        y\n    else:"
    assert dedent_continuation("try:\n    1\n    except E:") == "try:\n    1\nexcept E:"
    assert dedent_continuation("if x:\n    y\nelse:") == "if x:\n    y\nelse:"  # already out
    assert dedent_continuation("if x:\n    elsewhere = 1") == "if x:\n    elsewhere = 1"


def _last_is(pane, line: str) -> None:
    pane.wait_for(lambda lines: lines[-1] == line, what=repr(line))


def test_a_block_is_indented_edited_and_run_in_one_buffer(term_plain):
    pane = term_plain
    pane.enter("for i in range(2):")
    _last_is(pane, "..>")
    pane.enter("if i % 2:")  # indented by the shell
    pane.wait_for(lambda lines: lines[-2:] == ["..>     if i % 2:", "..>"], what="the if in the body")
    pane.enter("print('odd', i)")
    pane.enter("else:")  # typed where the body's lines start: moved out to its if
    pane.wait_for(lambda lines: lines[-3:] == ["..>         print('odd', i)", "..>     else:", "..>"],
                  what="else under its if")
    pane.type("print('even', i)")
    _last_is(pane, "..>         print('even', i)")
    pane.moves(*["Up"] * 4)  # up to the first line, still in the same buffer: nothing has run
    pane.keys("End", "BSpace", "BSpace", "BSpace")
    pane.type("3):")
    pane.wait_for(lambda lines: "ms> for i in range(3):" in lines, what="the first line edited")
    pane.moves(*["Down"] * 4)
    pane.keys("End", "Enter")
    _last_is(pane, "..>")
    pane.keys("Enter")  # the line left empty: the block runs
    pane.wait_for_prompt()
    assert pane.after("for i in range(3):") == [
        "..>     if i % 2:", "..>         print('odd', i)", "..>     else:", "..>         print('even', i)",
        "even 0", "odd 1", "even 2", "ms>"]


def test_history_holds_the_whole_block(term_plain):
    pane = term_plain
    pane.enter("for word in ('a', 'b'):")
    pane.enter("print(word * 2)")
    pane.enter("")
    pane.wait_for(lambda lines: lines[-2:] == ["bb", "ms>"], what="the block's output")
    pane.keys("Up")
    pane.wait_for(lambda lines: lines[-2:] == ["ms> for word in ('a', 'b'):", "..>     print(word * 2)"],
                  what="the whole block recalled")
    pane.keys("Enter")
    _last_is(pane, "..>")
    pane.keys("Enter")
    pane.wait_for(lambda lines: lines[-3:] == ["aa", "bb", "ms>"], what="the block run again")
