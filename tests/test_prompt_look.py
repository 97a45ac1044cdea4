"""The prompt's model count, the F2 toolbar, colours of the typed line, and `models` marking the two
models used last: in a real terminal (tmux), and the marks also through the session."""
from __future__ import annotations

import re

from modelshell.core.results import Table
from tmux_terminal import _tmux

_ANSI = re.compile(r"\x1b\[([0-9;]*)m")


def _models_marks(session) -> dict[str, str]:
    outcome = session.run_line("models")
    assert outcome.ok, outcome.error
    table = outcome.results[0]
    assert isinstance(table, Table)
    headers = [c.header for c in table.columns]
    return {row[headers.index("name")]: row[headers.index("")] for row in table.rows}


def test_models_marks_the_two_models_used_last(demo_session):
    assert _models_marks(demo_session) == {"torch_model": "+", "keras_model": "*"}  # loaded in that order
    assert demo_session.run_line("weights torch_model").ok
    assert _models_marks(demo_session) == {"torch_model": "*", "keras_model": "+"}
    assert demo_session.run_line("import torch; third = torch.nn.Linear(2, 2)").ok
    assert demo_session.run_line("shapes third").ok
    marks = _models_marks(demo_session)
    assert marks == {"torch_model": "+", "keras_model": "", "third": "*"}
    # Looking at the list is not using a model: the marks stay as they were.
    assert _models_marks(demo_session) == marks
    assert demo_session.run_line("pair keras_model torch_model").ok
    assert _models_marks(demo_session) == {"torch_model": "*", "keras_model": "+", "third": ""}


def test_models_json_says_which_was_used_last(demo_session):
    import json

    demo_session.run_line("weights keras_model")
    outcome = demo_session.run_line("models --json")
    from modelshell.render.json import to_json_line

    data = json.loads(to_json_line(outcome.results[0]))
    assert {m["name"]: m["recent"] for m in data["models"]} == {"torch_model": 2, "keras_model": 1}


def _styled(pane) -> str:
    return _tmux("capture-pane", "-p", "-e", "-t", pane.name)


def _style_before(screen: str, word: str) -> str:
    """The SGR codes in force where ``word`` starts on the last line that has it."""
    line = [line for line in screen.splitlines() if word in _ANSI.sub("", line)][-1]
    codes, plain = [], ""
    for piece in re.split(r"(\x1b\[[0-9;]*m)", line):
        match = _ANSI.fullmatch(piece)
        if match:
            codes = [] if match.group(1) in ("", "0") else codes + [match.group(1)]
        elif word in plain + piece:
            start = (plain + piece).index(word)
            if start >= len(plain):
                return ";".join(codes)
            plain += piece
        else:
            plain += piece
    raise AssertionError(f"{word!r} not found")


def _foreground(codes: str) -> str:
    """The foreground colour those SGR codes leave: "32", "38;5;70", or "" for the terminal's own."""
    params, colour, i = [p for p in codes.split(";") if p], "", 0
    while i < len(params):
        p = params[i]
        if p == "38":
            colour, i = ";".join(params[i:i + 3]), i + 3
            continue
        if p == "39":
            colour = ""
        elif len(p) == 2 and p[0] in "39" and p[1] in "01234567":
            colour = p
        i += 1
    return colour


def test_prompt_counts_the_models(term_plain):
    assert term_plain.raw_lines()[-1] == "ms>"  # no model: the bare prompt
    term_plain.enter("import torch; a = torch.nn.Linear(2, 2)")
    term_plain.wait_for(lambda lines: term_plain.raw_lines()[-1] == "ms[1]>", timeout=60, what="ms[1]>")
    term_plain.enter("b = torch.nn.Linear(2, 2); c = 3")  # only models count, not other variables
    term_plain.wait_for(lambda lines: term_plain.raw_lines()[-1] == "ms[2]>", what="ms[2]>")
    term_plain.enter("del a")
    term_plain.wait_for(lambda lines: term_plain.raw_lines()[-1] == "ms[1]>", what="ms[1]> after del")


def test_demo_prompt_and_toolbar_with_framework_versions(term_shell):
    assert term_shell.raw_lines()[-1] == "ms[2]>"
    term_shell.enter("import torch, keras, tensorflow; print('V', torch.__version__, keras.__version__, tensorflow.__version__)")
    lines = term_shell.wait_for(lambda lines: any(line.startswith("V ") for line in lines), what="the versions")
    _, torch_v, keras_v, tf_v = [line for line in lines if line.startswith("V ")][0].split()
    term_shell.wait_for_prompt()
    assert not any("F2 hides" in line for line in term_shell.lines())  # off until asked for
    term_shell.keys("F2")
    lines = term_shell.wait_for_text("F2 hides this bar")
    bar = lines[-1]
    assert bar.startswith(" 2 models: torch_model, keras_model |"), bar
    assert f"torch {torch_v}" in bar and f"keras {keras_v}" in bar and f"TensorFlow {tf_v}" in bar
    term_shell.keys("F2")
    term_shell.wait_for(lambda lines: not any("F2 hides" in line for line in lines), what="the bar gone")


def test_typed_lines_are_coloured(term_shell):
    term_shell.type("weights torch_model --stats")
    term_shell.wait_for(lambda lines: lines[-1] == "ms> weights torch_model --stats", what="the typed command")
    screen = _styled(term_shell)
    command, model, flag = (_style_before(screen, w) for w in ("weights", "torch_model", "--stats"))
    assert "36" in command.split(";") and "1" in command.split(";")  # bold cyan
    assert _foreground(command) == "36" and _foreground(model) == "32" and _foreground(flag) == "33"
    term_shell.keys("C-u")
    term_shell.type("for i in range(3): x = 'word'")
    term_shell.wait_for(lambda lines: lines[-1] == "ms> for i in range(3): x = 'word'", what="the Python line")
    screen = _styled(term_shell)
    keyword, string, name = (_style_before(screen, w) for w in ("for", "'word'", " x "))
    keyword, string, name = _foreground(keyword), _foreground(string), _foreground(name)
    assert keyword and string and keyword != string  # Python is highlighted: keywords and strings differ
    assert name == ""  # plain names keep the terminal's own colour
    term_shell.keys("C-u")
    term_shell.wait_for(lambda lines: lines[-1] == "ms>", what="the line cleared")
