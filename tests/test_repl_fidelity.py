"""Python lines behave as in CPython's REPL: a corpus of snippets replayed through ``code.InteractiveConsole``
(the reference, in this process) and through modelshell (``run FILE``, a pipe, and the tmux shell), with
the same output expected from both.

Normalisations, the only differences allowed (each one is a documented modelshell behaviour):

1. An error: the REPL prints a traceback, modelshell one line ``error: <the traceback's last line>``.
   The reference keeps only that last line (``traceback.format_exception_only``), written ``error: ...``.
2. An exception message of several lines: modelshell shows its first line; so does the reference here.
3. A SyntaxError in an input of several lines: modelshell adds `` (line N)``; dropped before comparing.
4. ``modelshell run FILE`` starts an error with ``FILE:N: `` (where the input starts); dropped.
5. Addresses (``0x7f...``) differ from process to process; both are written ``0x?``.
6. A class defined in the REPL belongs to the module ``__console__`` (its namespace's name), which the
   REPL writes before the class's name in a traceback; modelshell's namespace module is left out the same
   way the REPL leaves out ``__main__``. The reference's ``__console__.`` is dropped.

In the shell, lines are typed without their leading spaces: the shell's one multi-line buffer indents
(and dedents) each line itself, so the same code reaches the REPL and the shell.

Every snippet ends with a blank line, as the REPL needs after a block; an error, where a snippet has one,
is its last input (a pipe stops at the first error, as ``run`` does without ``--keep-going``).
"""
from __future__ import annotations

import code
import contextlib
import io
import os
import re
import shlex
import subprocess
import sys
import traceback
import warnings

import pytest

from tmux_terminal import MODELSHELL, STARTUP_TIMEOUT, TermPane

TIMEOUT = 120

CORPUS: list[str] = [
    # --- simple statements and what they print -------------------------------------------------------
    "x = 1\nx",
    "x = 2; y = 3; x + y",
    "print('hello')",
    "print('a', 'b', sep='-')",
    "print('no newline', end='')\nprint()",
    "import math\nmath.pi",
    "a, *b = [1, 2, 3]\nb",
    "assert 1 == 1\npass",
    "# only a comment",
    "x = 1  # a comment after code\nx",
    "def side():\n    print('side effect')\n    return None\n\nside()",
    "name = 'ms'; f'{name!r} {len(name)}'",
    "[y := 5, y ** 2]",
    "print(repr('a\\nb'))",
    # --- display of values ---------------------------------------------------------------------------
    "1 + 1",
    "'text'",
    "None",
    "True and None",
    "[1, 2, 3]",
    "{'a': 1, 'b': [2]}",
    "(1,)",
    "3.0 / 2",
    "b'bytes'",
    "1e300 * 10",
    "'a\\nb'",
    "[i * i for i in range(5)]",
    "range(3)",
    "type(1)",
    "import decimal\ndecimal.Decimal('1.5')",
    "lambda: 0",
    "class A:\n    def __repr__(self):\n        return 'A()'\n\nA()",
    "10 * 10\n_ + 1",
    "7\nz = 3\n_",
    "'s'\n_",
    # --- brackets, strings and lines that continue ---------------------------------------------------
    "(1 +\n 2)",
    "[\n1,\n2,\n]",
    "{\n'k': 1,\n}",
    "s = '''line one\nline two'''\ns",
    "'''a\n'''",
    "s = '''a\n\nb'''\ns",
    "1 + \\\n2",
    "print('one',\n      'two')",
    # --- compound statements on one line -------------------------------------------------------------
    "for i in range(3): print(i)",
    "if True: print('yes')",
    "if False: print('no')\nelse: print('else')",
    "n = 0\nwhile n < 3: n += 1\n\nn",
    "while True: break",
    "import contextlib\nwith contextlib.suppress(ZeroDivisionError): 1 / 0\n\nprint('after')",
    "try: 1 / 0\nexcept ZeroDivisionError: print('caught')",
    "try: pass\nfinally: print('finally')",
    "class B: pass\n\nB.__name__",
    "def one(): return 1\n\none()",
    "for i in range(3): i",
    # --- blocks --------------------------------------------------------------------------------------
    "for i in range(2):\n    print('row', i)",
    "for i in range(2):\n    for j in range(2):\n        print(i, j)",
    "def double(x):\n    return x * 2\n\ndouble(21)",
    "def deco(fn):\n    return lambda: 'decorated'\n\n@deco\ndef g(): pass\n\ng()",
    "if True:\n    print('a')\nelse:\n    print('b')",
    "match 3:\n    case 3: print('three')",
    "async def co():\n    return 1\n\nimport asyncio\nasyncio.run(co())",
    "total = 0\nfor k in range(4):\n    total += k\n\ntotal",
    "from __future__ import annotations\ndef h(a: undefined_name): pass\n\nh.__annotations__",
    "from __future__ import barry_as_FLUFL\n1 <> 2",
    # --- errors --------------------------------------------------------------------------------------
    "1 / 0",
    "undefined_name_here",
    "int('x')",
    "[][1]",
    "{}['k']",
    "'abc'.nosuch",
    "None()",
    "def f(:",
    "for x in:",
    "  x = 1",
    "for i in range(3):\nprint(i)",
    "return 1",
    "1 +",
    "print('unterminated",
    "raise RuntimeError('boom')",
    "raise ValueError",
    "class MyError(Exception): pass\n\nraise MyError('mine')",
    "import json\njson.loads('{')",
    "assert 1 == 2, 'one is not two'",
    "raise Exception('first line\\nsecond line')",
    "class R:\n    def __repr__(self):\n        raise TypeError('bad repr')\n\nR()",
    "print('before'); 1 / 0",
    "for i in range(3):\n    print(i); 1 / (1 - i)",
    "import no_such_module_here",
    "def f(): pass\n\nf(1)",
]

# The subset typed into the tmux shell: each kind once (one-liners, blocks, brackets, strings, errors).
SHELL_SUBSET = [
    "for i in range(3): print(i)", "if True: print('yes')", "try: 1 / 0\nexcept ZeroDivisionError: print('caught')",
    "def deco(fn):\n    return lambda: 'decorated'\n\n@deco\ndef g(): pass\n\ng()", "(1 +\n 2)",
    "s = '''a\n\nb'''\ns", "10 * 10\n_ + 1", "for i in range(3): i", "1 / 0", "class B: pass\n\nB.__name__",
]
_ERROR_LINE = re.compile(r"(?m)^error: ")


def _inputs(snippet: str) -> list[str]:
    return snippet.split("\n") + [""]


class _Reference(code.InteractiveConsole):
    """The REPL itself, writing into a buffer, its tracebacks cut to their last line (normalisations 1, 2)."""

    def __init__(self) -> None:
        super().__init__()
        self.printed = io.StringIO()

    def write(self, data: str) -> None:
        self.printed.write(data)

    def _error(self) -> None:
        kind, value, _ = sys.exc_info()
        shown = "".join(traceback.format_exception_only(kind, value)).rstrip("\n")
        if isinstance(value, SyntaxError):
            line = shown.splitlines()[-1]
        else:
            name, colon, message = shown.partition(": ")
            line = name + colon + message.strip().splitlines()[0] if message.strip() else name
        self.write(f"error: {line}\n")

    def showtraceback(self) -> None:
        self._error()

    def showsyntaxerror(self, filename=None, **kwargs) -> None:
        self._error()


def reference_outputs() -> list[str]:
    """Each snippet's output in ``code.InteractiveConsole``, all run in one console, in order."""
    console = _Reference()
    outputs = []
    for snippet in CORPUS:
        start = console.printed.tell()
        with contextlib.redirect_stdout(console.printed), warnings.catch_warnings():
            warnings.simplefilter("ignore", SyntaxWarning)  # `None()` warns as it compiles; not output
            for line in _inputs(snippet):
                console.push(line)
        outputs.append(_normalised(console.printed.getvalue()[start:]))
    return outputs


def _normalised(text: str, script: str = "") -> str:
    text = re.sub(r"\b0x[0-9a-fA-F]+\b", "0x?", text)  # 5
    text = text.replace("__console__.", "")  # 6
    if script:
        text = text.replace(f"error: {script}:", "error: ")
        text = re.sub(r"(?m)^error: \d+: ", "error: ", text)  # 4
    return re.sub(r"(?m)^(error: \w*(?:Syntax|Indentation)Error: .*) \(line \d+\)$", r"\1", text)  # 3


def _marked_script(snippets: list[tuple[int, str]]) -> str:
    """The snippets as one script, each after a line printing its number, so the output can be cut up."""
    lines = []
    for number, snippet in snippets:
        lines += [f"print('#{number}')", *_inputs(snippet)]
    return "\n".join(lines) + "\n"


def _cut(output: str) -> dict[int, str]:
    parts = re.split(r"(?m)^#(\d+)\n", output)
    return {int(number): text for number, text in zip(parts[1::2], parts[2::2])}


@pytest.fixture(scope="module")
def expected() -> list[str]:
    return reference_outputs()


def _modelshell(args: list[str], stdin: str = "") -> str:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONASYNCIODEBUG": ""}
    done = subprocess.run([MODELSHELL, *args], input=stdin, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=TIMEOUT, env=env)
    return done.stdout


def _assert_same(expected: list[str], got: dict[int, str], numbers: list[int]) -> None:
    differ = [(n, CORPUS[n], expected[n], got.get(n)) for n in numbers if got.get(n) != expected[n]]
    assert not differ, "\n\n".join(f"#{n} {s!r}\n  REPL:       {e!r}\n  modelshell: {g!r}" for n, s, e, g in differ)


def test_the_corpus_is_large_and_covers_errors_and_display(expected):
    assert len(CORPUS) >= 60
    errors = [n for n, out in enumerate(expected) if _ERROR_LINE.search(out)]
    assert len(errors) >= 15
    assert sum(1 for out in expected if out and not _ERROR_LINE.search(out)) >= 40  # most print something
    for number in errors:  # the error is the last thing a snippet shows (a pipe stops there)
        assert _ERROR_LINE.match(expected[number].rstrip("\n").split("\n")[-1]), CORPUS[number]


def test_run_file_prints_what_the_repl_prints(expected, tmp_path):
    script = tmp_path / "corpus.ms"
    script.write_text(_marked_script(list(enumerate(CORPUS))), encoding="utf8")
    output = _normalised(_modelshell(["run", "--keep-going", str(script)]), script=str(script))
    _assert_same(expected, _cut(output), list(range(len(CORPUS))))


def test_a_pipe_prints_what_the_repl_prints(expected):
    """Piped standard input stops at its first error: one pipe per run of snippets up to an error."""
    batches, batch = [], []
    for number, snippet in enumerate(CORPUS):
        batch.append((number, snippet))
        if _ERROR_LINE.search(expected[number]):
            batches.append(batch)
            batch = []
    batches.append(batch)
    got: dict[int, str] = {}
    for batch in filter(None, batches):
        got.update(_cut(_normalised(_modelshell([], stdin=_marked_script(batch)))))
    _assert_same(expected, got, list(range(len(CORPUS))))


_PROMPT_LINE = re.compile(r"^(ms>|\.\.>)( |$)")


def _type_input(pane: TermPane, line: str) -> None:
    """One line (without its indentation: the shell indents) and Enter, then wait until the shell has
    taken it: the screen changed, and an empty prompt (``ms>`` or ``..>``) waits at the bottom."""
    before = pane.lines()
    pane.enter(line.lstrip())
    pane.wait_for(lambda lines: lines != before and lines[-1] in ("ms>", "..>"), what=f"the shell to take {line!r}")


def test_the_shell_prints_what_the_repl_prints(expected):
    """Typed into the interactive shell line by line; the screen, less its prompt lines, is the output."""
    pane = TermPane(shlex.quote(MODELSHELL))
    try:
        pane.wait_for_prompt(timeout=STARTUP_TIMEOUT)
        got = {}
        for snippet in SHELL_SUBSET:
            number = CORPUS.index(snippet)
            pane.clear()
            for line in _inputs(snippet):
                _type_input(pane, line)
            shown = [line for line in pane.lines() if not _PROMPT_LINE.match(line)]
            got[number] = _normalised("".join(line + "\n" for line in shown))
        _assert_same(expected, got, sorted(got))
    finally:
        pane.close()
