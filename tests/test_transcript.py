"""Transcripts: the matcher rule by rule, parsing, and then the real thing: ``modelshell replay`` passing
and failing with a diff, ``--update``, HTML and SVG, recording in a real terminal, and the pytest plugin.

The transcripts use the torch LeNet-5 of ``modelshell.demo`` only (no TensorFlow), so each replay in a
fresh process takes a few seconds.
"""
from __future__ import annotations

import html
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from modelshell import __version__, cli
from modelshell.render.text import outcome_text
from modelshell.core.session import Session
from modelshell.transcript import line_matches, lines_match, normalise, parse, replay_file, update_file
from tmux_terminal import TermPane

BIN = Path(sys.executable).parent
MODELSHELL = str(BIN / "modelshell")
TIMEOUT = 180

WEIGHTS = """\
torch_model: Sequential (torch)

 name        shape             dtype     params   trainable
 ----------------------------------------------------------
 0.weight    (6, 1, 5, 5)      float32      150   yes
 0.bias      (6,)              float32        6   yes
 3.weight    (16, 6, 5, 5)     float32    2,400   yes
 3.bias      (16,)             float32       16   yes
 6.weight    (120, 16, 5, 5)   float32   48,000   yes
 6.bias      (120,)            float32      120   yes
 9.weight    (84, 120)         float32   10,080   yes
 9.bias      (84,)             float32       84   yes
 11.weight   (10, 84)          float32      840   yes
 11.bias     (10,)             float32       10   yes

10 tensors, 61,706 parameters (61,706 trainable, 0 non-trainable)"""

# Prose, three blocks (the second uses the model the first loaded, and the folder it saves in), and a
# block whose failing line is expected.
GOOD = f"""\
# LeNet-5 in torch

Prose line that must survive.

```modelshell
ms> load modelshell.demo:torch_lenet5 as torch_model
loaded torch_model: torch Sequential, 61,706 parameters, from modelshell.demo:torch_lenet5
ms> weights torch_model
{WEIGHTS}
```

Between the blocks, more prose: the model is still there.

```modelshell
ms> total = sum(p.numel() for p in torch_model.parameters())
ms> total
61706
ms> torch_model[0].weight.shape
torch.Size([6, 1, 5, 5])
ms> torch_model[0].weight.mean().item()
-0.0068
ms> for name in ["a", "b"]:
..>     print(name)
..>
a
b
ms> save torch_model lenet.pt
saved torch_model to lenet.pt (* bytes) (glob)
ms> load lenet.pt as again
loaded again: torch state dict, no architecture, 61,706 parameters, from lenet.pt
ms> import os
ms> os.getcwd()
'$TMP'
```

A mistake, on purpose:

```modelshell expect: error
ms> weights nosuch
error: no model named 'nosuch' (`models` lists the models; `load PATH` adds one)
```

The end.
"""


def _changed(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


# The same transcript with one parameter count and one shape wrong, and the failing line in a block that
# does not expect it.
BAD = _changed(_changed(_changed(GOOD, "float32      150   yes", "float32      151   yes"),
                        "torch.Size([6, 1, 5, 5])", "torch.Size([6, 1, 5, 6])"),
               "```modelshell expect: error", "```modelshell")


def _line_of(text: str, line: str) -> int:
    """The 1-based number of the line of ``text`` that is exactly ``line``."""
    numbers = [n for n, candidate in enumerate(text.splitlines(), 1) if candidate == line]
    assert len(numbers) == 1, (line, numbers)
    return numbers[0]


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / "transcripts" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf8")
    return path


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT)


# --- the matcher ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("expected, actual, matches", [
    ("loaded m: torch Sequential", "loaded m: torch Sequential", True),
    ("loaded m: torch Sequential", "loaded m: torch Sequentia", False),
    ("loaded m: torch Sequential   ", "loaded m: torch Sequential", True),  # trailing spaces never count
    # (re): the whole line, and a broken expression matches nothing (it does not raise)
    (r"loaded m: \w+ Sequential (re)", "loaded m: torch Sequential", True),
    (r"loaded m: \w+ (re)", "loaded m: torch Sequential", False),
    (r"torch (re)", "loaded m: torch Sequential", False),
    (r"loaded m: ([ (re)", "loaded m: ([", False),
    (r"x (re)", "x (re)", True),  # a line that is literally so
    # (glob)
    ("saved m to m.pt (* bytes) (glob)", "saved m to m.pt (250,757 bytes)", True),
    ("saved m to m.pt (* bytes) (glob)", "saved m to m.safetensors (250,757 bytes)", False),
    ("weight?shape (glob)", "weight shape", True),
    ("weight?shape (glob)", "weights shape", False),
    # numbers to the precision written
    ("mean 0.01", "mean 0.0123", True),
    ("mean 0.01", "mean 0.0149", True),
    ("mean 0.01", "mean 0.016", False),
    ("mean 0.01", "mean 0.004", False),
    ("mean 0.01", "max 0.0123", False),  # the words around the numbers still count
    ("mean 0.01", "mean 0.0123 0.5", False),  # and how many numbers there are
    ("std 7.5e-09", "std 7.45e-09", True),
    ("std 7.5e-09", "std 7.56e-09", False),
    ("std 7.5e-09", "std 7.5e-08", False),
    ("10 tensors, 61,706 parameters", "10 tensors, 61,706 parameters", True),
    ("10 tensors, 61,706 parameters", "10 tensors, 61,707 parameters", False),  # integers are exact
    ("10 tensors, 61,706 parameters", "10 tensors, 61706 parameters", False),
    ("params 150", "params 150.2", False),
    # columns widen with their digits: the spaces around numbers may move, the text may not
    (" 0.weight    (6, 1, 5, 5)      float32      150   yes", " 0.weight  (6, 1, 5, 5)  float32  150  yes", True),
    (" 0.weight    (6, 1, 5, 5)      float32      150   yes", " 0.weight  (6, 1, 5, 5)  float64  150  yes", False),
    (" 0.weight    (6, 1, 5, 5)      float32      150   yes", " 0.weight  (6, 1, 5, 6)  float32  150  yes", False),
    ("mean   0.01    std 0.2", "mean 0.0123456   std   0.2049", True),
    ("tensor([1.5410, -0.2934])", "tensor([ 1.5410, -0.2934])", True),
    ("tensor([1.5410, -0.2934])", "tensor([ 1.5410,  0.2934])", False),
])
def test_line_matches(expected, actual, matches):
    assert line_matches(expected, actual) is matches


@pytest.mark.parametrize("expected, actual, matches", [
    (["a", "...", "z"], ["a", "z"], True),  # ... stands for no line
    (["a", "...", "z"], ["a", "b", "z"], True),  # one
    (["a", "...", "z"], ["a", "b", "c", "d", "z"], True),  # many
    (["...", "z"], ["x", "y", "z"], True),  # at the start
    (["a", "..."], ["a", "b", "c"], True),  # at the end
    (["..."], [], True),
    (["a", "...", "z"], ["a", "b"], False),
    (["a", "...", "z"], ["b", "z"], False),
    (["a", "..."], ["b", "a"], False),
    (["a", "b"], ["a"], False),  # without ..., every line is there, no more, no less
    (["a"], ["a", "b"], False),
    (["a", "...", "0.01", "..."], ["a", "x", "0.0123", "y"], True),  # the rules combine
])
def test_lines_match_with_ellipsis(expected, actual, matches):
    assert lines_match(expected, actual) is matches


def test_lines_match_survives_a_long_output():
    lines = [f"row {i}" for i in range(5000)]
    assert lines_match(lines, lines)
    assert not lines_match(lines, lines[:-1] + ["other"])
    assert lines_match(["row 0", "...", "row 4999"], lines)


def test_normalise_replaces_what_changes_between_runs(tmp_path):
    assert normalise("\x1b[1mweights\x1b[0m   \nnext\x1b[38;5;241m  ") == ["weights", "next"]
    assert normalise("<object at 0x7f3a2b1c4d50>") == ["<object at 0x...>"]
    assert normalise("mask 0x1f") == ["mask 0x1f"]  # a short hex number is no address
    assert normalise("took 1.25 s, then 350ms, then 3 seconds") == ["took <duration>, then <duration>, then <duration>"]
    assert normalise("10 tensors, 3 samples") == ["10 tensors, 3 samples"]
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    assert normalise(f"saved to {link}/m.pt and {real}/n.pt", str(link)) == ["saved to $TMP/m.pt and $TMP/n.pt"]
    assert normalise(f"modelshell {__version__}.") == ["modelshell <version>."]
    import torch

    assert normalise(f"torch {torch.__version__}") == ["torch <version>"]
    # Only whole versions: a layer path or a longer number that holds one stays as it is.
    assert normalise(f"blocks.{__version__}.weight 1{__version__}") == [f"blocks.{__version__}.weight 1{__version__}"]


# --- parsing --------------------------------------------------------------------------------------------
PARSED = """\
# Title

Prose, not checked.
ms> not in a block either

```modelshell
text before the first prompt is not checked
ms> x = 1
ms> for i in range(2):
..>     print(i)
..>
0
1

```

```modelshell width: 80, expect: error, seed: 3
ms> 1/0
error: ZeroDivisionError: division by zero
ms>
```

```python
ms> a python block is no transcript
```

````modelshell
ms> print("```")
```
````
"""


def test_parse_blocks_options_steps_and_line_numbers(tmp_path):
    path = tmp_path / "parsed.md"
    path.write_text(PARSED, encoding="utf8")
    transcript = parse(path)
    assert transcript.lines == PARSED.splitlines()
    assert [(b.line, b.end) for b in transcript.blocks] == [(6, 15), (17, 21), (27, 30)]
    first, second, third = transcript.blocks
    assert (first.options, first.width, first.expects_error, first.seed) == ({}, 100, False, 0)
    assert second.options == {"width": "80", "expect": "error", "seed": "3"}
    assert (second.width, second.expects_error, second.seed) == (80, True, 3)

    assign, loop = first.steps
    assert (assign.line, assign.source, assign.expected, assign.text) == (8, ["x = 1"], [], "x = 1")
    assert loop.line == 9
    assert loop.source == ["for i in range(2):", "    print(i)", ""]
    assert loop.text == "for i in range(2):\n    print(i)\n"
    assert loop.prompt_lines == ["ms> for i in range(2):", "..>     print(i)", "..>"]
    assert loop.expected == ["0", "1"]  # blank lines at the end of a block are dropped

    fails, empty = second.steps
    assert (fails.line, fails.text, fails.expected) == (18, "1/0", ["error: ZeroDivisionError: division by zero"])
    assert (empty.line, empty.text, empty.expected) == (20, "", [])
    # A four-backtick fence holds an output line of three backticks.
    assert [(s.line, s.text, s.expected) for s in third.steps] == [(28, 'print("```")', ["```"])]


# --- replaying ------------------------------------------------------------------------------------------
def test_a_correct_transcript_replays_with_no_difference(tmp_path):
    path = _write(tmp_path, "good.md", GOOD)
    done = _run(MODELSHELL, "replay", "transcripts/good.md", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == "transcripts/good.md: 12 inputs, 0 differ"
    # The models persisted between blocks, and `save` wrote into the replay's own folder, not here.
    assert not (tmp_path / "lenet.pt").exists() and not (tmp_path / "transcripts" / "lenet.pt").exists()
    assert path.read_text(encoding="utf8") == GOOD


def test_a_changed_number_or_shape_fails_with_a_diff_at_its_line(tmp_path):
    _write(tmp_path, "bad.md", BAD)
    done = _run(MODELSHELL, "replay", "transcripts/bad.md", cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    out = done.stdout.splitlines()
    assert out[-1] == "transcripts/bad.md: 12 inputs, 3 differ"

    weights = out.index(f"transcripts/bad.md:{_line_of(BAD, 'ms> weights torch_model')}: ms> weights torch_model")
    shape = out.index(f"transcripts/bad.md:{_line_of(BAD, 'ms> torch_model[0].weight.shape')}: "
                      "ms> torch_model[0].weight.shape")
    assert out[weights + 1:shape] == [  # a unified diff, three lines of context around the change
        "--- expected",
        "+++ actual",
        "@@ -2,7 +2,7 @@",
        " ",
        "  name        shape             dtype     params   trainable",
        "  ----------------------------------------------------------",
        "- 0.weight    (6, 1, 5, 5)      float32      151   yes",
        "+ 0.weight    (6, 1, 5, 5)      float32      150   yes",
        "  0.bias      (6,)              float32        6   yes",
        "  3.weight    (16, 6, 5, 5)     float32    2,400   yes",
        "  3.bias      (16,)             float32       16   yes",
    ]
    assert out[shape + 1:shape + 6] == ["--- expected", "+++ actual", "@@ -1 +1 @@",
                                        "-torch.Size([6, 1, 5, 6])", "+torch.Size([6, 1, 5, 5])"]
    # The number written short (-0.0068) matched and is not part of any diff.
    assert not any("0.0068" in line for line in out)

    # A failing line in a block without `expect: error` fails even though it printed what it should.
    failing = out.index(f"transcripts/bad.md:{_line_of(BAD, 'ms> weights nosuch')}: ms> weights nosuch")
    assert out[failing + 1] == "(the line failed)"


def test_update_rewrites_only_what_no_longer_matches(tmp_path):
    # Wrong: a count, a shape, a missing row and a last line after a `...`; still right: a (re) title, a
    # (glob) total, a number written short, a `...`, and all the prose.
    stale = _changed(GOOD, "float32      150   yes", "float32      151   yes")
    stale = _changed(stale, " 0.bias      (6,)              float32        6   yes\n", "")
    stale = _changed(stale, "torch_model: Sequential (torch)\n", "torch_model: \\w+ \\(torch\\) (re)\n")
    stale = _changed(stale, "10 tensors, 61,706 parameters (61,706 trainable, 0 non-trainable)",
                     "10 tensors, * parameters (*) (glob)")
    stale = _changed(stale, "torch.Size([6, 1, 5, 5])", "torch.Size([6, 1, 5, 6])")
    numbers = "ms> print('\\n'.join(map(str, range(6))))\n0\n...\n4\n{}\nms> import os\n"
    stale = _changed(stale, "ms> import os\n", numbers.format(6))
    fixed = _changed(GOOD, "torch_model: Sequential (torch)\n", "torch_model: \\w+ \\(torch\\) (re)\n")
    fixed = _changed(fixed, "10 tensors, 61,706 parameters (61,706 trainable, 0 non-trainable)",
                     "10 tensors, * parameters (*) (glob)")
    fixed = _changed(fixed, "ms> import os\n", numbers.format(5))  # the `...` stays

    path = _write(tmp_path, "stale.md", stale)
    done = _run(MODELSHELL, "replay", "--update", "transcripts/stale.md", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == "transcripts/stale.md: 3 outputs rewritten"
    assert path.read_text(encoding="utf8") == fixed

    assert replay_file(path) == []
    assert update_file(path) == 0  # nothing left to rewrite, and the file is left alone
    assert path.read_text(encoding="utf8") == fixed


def test_update_leaves_a_failing_line_that_printed_what_it_should(tmp_path):
    text = _changed(GOOD, "```modelshell expect: error", "```modelshell")
    path = _write(tmp_path, "fails.md", text)
    assert update_file(path) == 0
    assert path.read_text(encoding="utf8") == text
    [mismatch] = replay_file(path)
    assert mismatch.step.text == "weights nosuch" and mismatch.note == "the line failed"


def test_random_numbers_are_the_same_in_a_fresh_process_and_in_one_that_imported_torch(tmp_path):
    """`modelshell replay` starts fresh; pytest has imported torch and numpy long before a transcript."""
    text = """\
```modelshell
ms> load modelshell.demo:torch_lenet5 as torch_model
loaded torch_model: torch Sequential, 61,706 parameters, from modelshell.demo:torch_lenet5
ms> import torch
ms> torch.randn(3)
tensor([0.0, 0.0, 0.0])
ms> import numpy as np
ms> np.random.rand(2)
array([0.0, 0.0])
```

```modelshell seed: 5
ms> torch.randn(3)
tensor([0.0, 0.0, 0.0])
```
"""
    path = _write(tmp_path, "random.md", text)
    done = _run(MODELSHELL, "replay", "--update", str(path), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == f"{path}: 3 outputs rewritten"
    import numpy
    import torch

    assert "torch" in sys.modules and "numpy" in sys.modules
    torch.randn(7), numpy.random.rand(7)  # whatever state this process is in
    assert [m.diff for m in replay_file(path)] == []
    updated = path.read_text(encoding="utf8").splitlines()
    assert updated[11] == "```modelshell seed: 5" and updated[13] != updated[5]  # another seed, other numbers


def test_formats_render_prose_and_tables(tmp_path, capsys):
    path = _write(tmp_path, "good.md", GOOD)
    assert cli.main(["replay", str(path), "--format", "html"]) == 0
    page = capsys.readouterr().out
    assert page.lstrip().lower().startswith("<!doctype html>")
    assert "Prose line that must survive." in page and "0.weight" in page and "61,706" in page

    assert cli.main(["replay", str(path), "--format", "svg"]) == 0
    picture = capsys.readouterr().out
    assert picture.lstrip().startswith("<svg")
    shown = html.unescape(picture).replace("\xa0", " ")
    assert "Prose line that must survive." in shown and "0.weight" in shown and "'$TMP'" not in shown


# --- recording ------------------------------------------------------------------------------------------
@pytest.mark.terminal
def test_record_in_a_real_terminal_then_replay(tmp_path):
    path = tmp_path / "recorded.md"
    pane = TermPane(f"{shlex.quote(MODELSHELL)} record recorded.md --title 'LeNet in a terminal'",
                    data_home=str(tmp_path), cwd=str(tmp_path))

    def enter(text: str, shows: str = "") -> None:
        """Type a line, and wait until its output shows (if it prints) and the prompt is back."""
        pane.enter(text)
        if shows:
            pane.wait_for_text(shows, 60)
        pane.wait_for_prompt(60)

    try:
        pane.wait_for_prompt(timeout=60)
        assert path.read_text(encoding="utf8").startswith("# LeNet in a terminal\n")  # written from the start
        enter("load modelshell.demo:torch_lenet5 as m", "loaded m: torch Sequential, 61,706 parameters")
        enter("weights m", "10 tensors, 61,706 parameters")
        enter("sum(p.numel() for p in m.parameters())", "61706")
        enter("x = 2")
        enter("x", "ms> x\n2")
        enter("weights nosuch", "error: no model named 'nosuch'")  # a mistake is part of the recording
        enter("import torch")
        enter("torch.randn(3)", "tensor([")  # random, but seeded as the replay seeds it
        enter("print(__import__('os').getcwd())", str(tmp_path))  # the folder becomes $TMP
        pane.keys("C-d")
        pane.wait_for(lambda lines: "[exited with 0]" in lines, 60, "the shell to end")
    finally:
        pane.close()

    text = path.read_text(encoding="utf8")
    lines = text.splitlines()
    assert lines[0] == "# LeNet in a terminal"
    assert lines.count("```modelshell expect: error") == 1 and lines[-1] == "```"
    start = lines.index("```modelshell expect: error")
    assert lines[start + 1:start + 3] == [
        "ms> load modelshell.demo:torch_lenet5 as m",
        "loaded m: torch Sequential, 61,706 parameters, from modelshell.demo:torch_lenet5"]
    assert "ms> weights m" in lines and " 0.weight    (6, 1, 5, 5)      float32      150   yes" in lines
    assert lines[lines.index("ms> x") + 1] == "2"
    assert lines[lines.index("ms> sum(p.numel() for p in m.parameters())") + 1] == "61706"
    assert lines[-2] == "$TMP"
    assert not any(line.startswith("ms> record") for line in lines)

    done = _run(MODELSHELL, "replay", str(path), cwd=tmp_path)
    assert done.returncode == 0, text + done.stdout + done.stderr
    assert done.stdout.strip() == f"{path}: 9 inputs, 0 differ"


def test_record_and_record_stop_inside_the_shell(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    session = Session()
    path = tmp_path / "inside.md"
    assert outcome_text(session.run_line(f"record {path} --title Inside")) == f"recording to {path}"
    for line in ("load modelshell.demo:torch_lenet5 as m", "shapes m", "m[0]", "print('```')"):
        assert session.run_line(line).ok
    stopped = session.run_line("record stop")
    assert outcome_text(stopped) == f"recording stopped; replay it with `modelshell replay {path}`"
    assert session.run_line("x = 1").ok  # no longer recorded
    text = path.read_text(encoding="utf8")
    # An output line of three backticks: the block is fenced with four, so it does not end there.
    assert text.startswith(f"# Inside\n\nRecorded with modelshell {__version__}.\n\n````modelshell\n")
    assert [line for line in text.splitlines() if line.startswith("ms> ")] == [
        "ms> load modelshell.demo:torch_lenet5 as m", "ms> shapes m", "ms> m[0]", "ms> print('```')"]
    assert "Conv2d(1, 6, kernel_size=(5, 5), stride=(1, 1), padding=(2, 2))" in text
    assert text.endswith("ms> print('```')\n```\n````\n")
    assert replay_file(path) == []


def test_record_errors_are_one_line(tmp_path):
    session = Session()
    stop = session.run_line("record stop")
    assert not stop.ok and outcome_text(stop) == "error: not recording (`record PATH` starts)"

    missing = tmp_path / "nosuch" / "t.md"
    nowhere = session.run_line(f"record {missing}")
    assert not nowhere.ok and outcome_text(nowhere) == f"error: {missing.parent} is not a folder"
    assert not missing.parent.exists()

    first = tmp_path / "first.md"
    assert session.run_line(f"record {first}").ok
    try:
        again = session.run_line(f"record {tmp_path / 'second.md'}")
        assert not again.ok
        assert outcome_text(again) == f"error: already recording to {first} (`record stop` first)"
        assert not (tmp_path / "second.md").exists()
        assert session.run_line("x = 1").ok
    finally:
        assert session.run_line("record stop").ok
    # The refused `record` is about the recording, not part of it.
    assert [line for line in first.read_text().splitlines() if line.startswith("ms> ")] == ["ms> x = 1"]


# --- the pytest plugin ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_pytest_collects_transcript_blocks(tmp_path):
    """With the plugin asked for (`-p`), as a project does; tests/test_polish.py checks it is off otherwise."""
    _write(tmp_path / "passing", "good.md", GOOD)
    passing = _run(sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "modelshell.pytest_plugin",
                   "passing/transcripts", cwd=tmp_path)
    assert passing.returncode == 0, passing.stdout + passing.stderr
    assert "3 passed" in passing.stdout and "failed" not in passing.stdout

    _write(tmp_path / "failing", "bad.md", BAD)
    failing = _run(sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "modelshell.pytest_plugin",
                   "failing/transcripts", cwd=tmp_path)
    assert failing.returncode == 1, failing.stdout + failing.stderr
    out = failing.stdout
    assert "3 failed" in out  # every block has one difference: 151, the shape, the failing line
    first_fence = _line_of(BAD, "ms> load modelshell.demo:torch_lenet5 as torch_model") - 1
    assert f"FAILED failing/transcripts/bad.md::line {first_fence}" in out
    weights = _line_of(BAD, "ms> weights torch_model")
    assert f"bad.md:{weights}: ms> weights torch_model" in out
    assert "- 0.weight    (6, 1, 5, 5)      float32      151   yes" in out
    assert "+ 0.weight    (6, 1, 5, 5)      float32      150   yes" in out
    assert "-torch.Size([6, 1, 5, 6])" in out and "(the line failed)" in out
