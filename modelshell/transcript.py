"""Transcripts: tutorials in Markdown whose ``modelshell`` blocks replay as checks.

A transcript is prose with fenced blocks tagged ``modelshell``. In a block, a line starting with the
prompt ``ms> `` (continued by ``..> ``) is input, and the lines under it are the output it must give.
Replaying runs every input through the same ``Session.run_line`` the shell uses, renders the outcome as
plain text (fixed width, no colour, ASCII), normalises what changes from run to run (addresses,
durations, the temporary folder, versions) and matches it against the expected lines:

- literally first; then, per line, a ``(re)`` suffix is a regular expression and ``(glob)`` a glob;
- a line ``...`` matches any number of lines;
- a number matches to the precision written: ``0.01`` matches ``0.0123`` (runs of spaces around numbers
  may differ, since table columns widen with the digits).

One session per file: models loaded in one block are there in the next. Random numbers are seeded at the
start of each block (and a framework when first imported), the same in a replay and in a recording.
"""
from __future__ import annotations

import builtins
import contextlib
import difflib
import fnmatch
import os
import random
import re
import shutil
import sys
import tempfile
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from modelshell import __version__
from modelshell.safety.atomic import atomic_target
from modelshell.render.text import DEFAULT_WIDTH, outcome_text
from modelshell.core.results import Outcome

__all__ = [
    "PROMPT", "CONTINUATION", "Step", "Block", "Transcript", "Mismatch", "parse", "lines_match",
    "normalise", "Replayer", "replay_file", "update_file", "Recorder",
]

DEFAULT_SEED = 0
PROMPT = "ms> "
CONTINUATION = "..> "
_FENCE = re.compile(r"^(```+|~~~+)\s*modelshell\b(.*)$")
_OPTION = re.compile(r"(\w+)\s*:\s*([^,\s]+)")
_NUMBER = re.compile(r"[-+]?(?:\d[\d,]*\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_ADDRESS = re.compile(r"\b0x[0-9a-fA-F]{6,}\b")
_DURATION = re.compile(r"\b\d+(?:\.\d+)?\s?(?:ms|s|sec|seconds)\b")


@dataclass
class Step:
    """One input (its lines without prompts) and the output lines expected under it."""

    line: int  # 1-based line of the ``ms>`` in the file
    source: list[str]
    expected: list[str]
    prompt_lines: list[str]  # the input as written (with prompts), kept when rewriting

    @property
    def text(self) -> str:
        return "\n".join(self.source)


@dataclass
class Block:
    line: int  # the opening fence
    options: dict[str, str]
    steps: list[Step]
    end: int  # the closing fence

    @property
    def width(self) -> int:
        return int(self.options.get("width", DEFAULT_WIDTH))

    @property
    def seed(self) -> int:
        return int(self.options.get("seed", DEFAULT_SEED))

    @property
    def expects_error(self) -> bool:
        return self.options.get("expect") == "error"


@dataclass
class Transcript:
    path: Path
    lines: list[str]
    blocks: list[Block] = field(default_factory=list)


@dataclass
class Mismatch:
    """An input whose output did not match; ``diff`` is a unified diff headed by file:line."""

    path: Path
    step: Step
    actual: list[str]
    diff: str
    note: str = ""
    differs: bool = True  # False when the output matched and only the failing of the line is the matter


# --- reading ---------------------------------------------------------------------------------------------
def parse(path: Path) -> Transcript:
    """The blocks of a transcript file and the steps in each."""
    lines = path.read_text(encoding="utf8").splitlines()
    transcript = Transcript(path, lines)
    i = 0
    while i < len(lines):
        fence = _FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        closing = next((j for j in range(i + 1, len(lines)) if _closes(fence.group(1), lines[j])), len(lines))
        options = dict(_OPTION.findall(fence.group(2)))
        transcript.blocks.append(Block(i + 1, options, _steps(lines, i + 1, closing), closing + 1))
        i = closing + 1
    return transcript


def _closes(fence: str, line: str) -> bool:
    """As in CommonMark: the same character, at least as many, nothing after; so a block opened with four
    backticks can show output that holds three."""
    return re.fullmatch(re.escape(fence) + re.escape(fence[0]) + r"*\s*", line) is not None


def _steps(lines: list[str], start: int, end: int) -> list[Step]:
    steps: list[Step] = []
    i = start
    while i < end:
        if not _is_prompt(lines[i]):
            i += 1  # text before the first prompt is not checked
            continue
        step = Step(i + 1, [_unprompt(lines[i], PROMPT)], [], [lines[i]])
        i += 1
        while i < end and _is_continuation(lines[i]):
            step.source.append(_unprompt(lines[i], CONTINUATION))
            step.prompt_lines.append(lines[i])
            i += 1
        while i < end and not _is_prompt(lines[i]):
            step.expected.append(lines[i])
            i += 1
        while step.expected and not step.expected[-1].strip():
            step.expected.pop()
        steps.append(step)
    return steps


def _is_prompt(line: str) -> bool:
    return line == PROMPT.rstrip() or line.startswith(PROMPT)


def _is_continuation(line: str) -> bool:
    return line == CONTINUATION.rstrip() or line.startswith(CONTINUATION)


def _unprompt(line: str, prompt: str) -> str:
    return line[len(prompt):] if line.startswith(prompt) else ""


# --- matching -------------------------------------------------------------------------------------------
def normalise(text: str, temporary: str | None = None) -> list[str]:
    """Output lines with what changes between runs replaced by placeholders."""
    text = _ANSI.sub("", text)
    if temporary:
        text = text.replace(os.path.realpath(temporary), "$TMP").replace(temporary, "$TMP")
    text = _ADDRESS.sub("0x...", text)
    text = _DURATION.sub("<duration>", text)
    for version in _versions():
        # Whole versions only: a layer named ``blocks.0.1.0`` is not modelshell 0.1.0.
        text = re.sub(rf"(?<![\w.]){re.escape(version)}(?![\w+]|\.\w)", "<version>", text)
    return [line.rstrip() for line in text.splitlines()]


def _versions() -> list[str]:
    found = [__version__]
    for module in ("torch", "keras", "tensorflow", "numpy"):
        if module in sys.modules:
            version = getattr(sys.modules[module], "__version__", None)
            if isinstance(version, str):
                found.append(str(version))
    return sorted(set(found), key=len, reverse=True)


def lines_match(expected: list[str], actual: list[str]) -> bool:
    """Whether the actual lines satisfy the expected ones (with ``...``, ``(re)``, ``(glob)``, numbers).

    The set of actual lines each expected line could start at, carried forward line by line: no recursion,
    so an output of thousands of lines is as safe as a short one."""
    starts = {0}
    for line in expected:
        if line.strip() == "...":
            starts = set(range(min(starts), len(actual) + 1)) if starts else set()
        else:
            starts = {j + 1 for j in starts if j < len(actual) and line_matches(line, actual[j])}
        if not starts:
            return False
    return len(actual) in starts


def line_matches(expected: str, actual: str) -> bool:
    """One line: literal, ``(re)``, ``(glob)``, or equal but for numbers written less precisely. Trailing
    spaces never count: the actual lines have none, and an editor may leave some in the expected ones."""
    expected = expected.rstrip()
    if expected == actual:
        return True
    if expected.endswith(" (re)"):
        try:
            return re.fullmatch(expected[:-5], actual) is not None
        except re.error:
            return False
    if expected.endswith(" (glob)"):
        return fnmatch.fnmatchcase(actual, expected[:-7])
    return _numbers_match(expected, actual)


def _numbers_match(expected: str, actual: str) -> bool:
    exp_numbers, act_numbers = _NUMBER.findall(expected), _NUMBER.findall(actual)
    if not exp_numbers or len(exp_numbers) != len(act_numbers):
        return False
    if _between_numbers(expected) != _between_numbers(actual):
        return False
    return all(_number_matches(e, a) for e, a in zip(exp_numbers, act_numbers))


def _between_numbers(line: str) -> list[str]:
    """The text between the numbers, runs of spaces as one and none next to a number: a table column that
    widens with the digits, or a sign taking a padding space (``[ 1.5, -0.3]``), moves only those."""
    parts = [re.sub(r"\s+", " ", part) for part in _NUMBER.split(line)]
    for k in range(len(parts)):
        if k > 0:
            parts[k] = parts[k].lstrip()
        if k < len(parts) - 1:
            parts[k] = parts[k].rstrip()
    return parts


def _number_matches(expected: str, actual: str) -> bool:
    """``0.01`` matches ``0.0123`` and ``7.5e-09`` matches ``7.45e-09``: equal once the actual number is
    rounded to the digits the expected one shows."""
    if expected == actual:
        return True
    try:
        e_value, a_value = float(expected.replace(",", "")), float(actual.replace(",", ""))
    except ValueError:
        return False
    mantissa, _, exponent = expected.lower().partition("e")
    decimals = len(mantissa.split(".")[1]) if "." in mantissa else 0
    if "." not in mantissa and not exponent:
        return False  # an integer is written exactly
    scale = 10.0 ** (int(exponent) if exponent else 0)
    return abs(a_value - e_value) <= 0.5 * 10.0 ** (-decimals) * scale * (1 + 1e-9)


# --- seeding --------------------------------------------------------------------------------------------
_FRAMEWORKS = ("numpy", "torch", "keras")


class _Seeds:
    """Seeds Python's ``random``, numpy, torch and Keras so that random lines give the same numbers however
    the process came to them: at the start of a block every one imported so far, and any other the moment
    it is first imported. (Seeding after the line that imported it gave other numbers when an earlier file,
    or a test, had imported it already: ``pytest`` and ``modelshell replay`` disagreed.)"""

    def __init__(self) -> None:
        self.seed = 0
        self._done: set[str] = set()

    def start(self, seed: int) -> None:
        self.seed = seed
        self._done.clear()
        random.seed(seed)
        self.catch_up()

    def catch_up(self) -> None:
        """Seed the frameworks imported (completely: not one still running its ``__init__``) since."""
        for name in _FRAMEWORKS:
            module = sys.modules.get(name)
            if name in self._done or module is None or _initialising(module):
                continue
            self._done.add(name)
            if name == "numpy":
                module.random.seed(self.seed)
            elif name == "torch":
                module.manual_seed(self.seed)
            else:
                self._seed_keras(module)

    def _seed_keras(self, keras) -> None:
        """Keras reseeds ``random`` and numpy too; keep their state, so that importing Keras in the middle of
        a block does not rewind them (where Keras was imported before the block, it does not either)."""
        numpy = sys.modules.get("numpy")
        saved = random.getstate(), numpy.random.get_state() if numpy is not None else None
        keras.utils.set_random_seed(self.seed)
        random.setstate(saved[0])
        if numpy is not None:
            numpy.random.set_state(saved[1])

    @contextlib.contextmanager
    def watching_imports(self) -> Iterator[None]:
        """Seed each framework as soon as an ``import`` brings it in (``import_module`` is caught at the end)."""
        original = builtins.__import__

        def importing(*args, **kwargs):
            module = original(*args, **kwargs)
            self.catch_up()
            return module

        builtins.__import__ = importing
        try:
            yield
        finally:
            if builtins.__import__ is importing:
                builtins.__import__ = original
            self.catch_up()


def _initialising(module) -> bool:
    """Still running its ``__init__`` (an import inside it has just returned): not ready to seed yet."""
    return bool(getattr(getattr(module, "__spec__", None), "_initializing", False))


# --- replaying ------------------------------------------------------------------------------------------
class Replayer:
    """Replays one transcript in one session, in a temporary working folder of its own (removed with it)."""

    def __init__(self, transcript: Transcript) -> None:
        from modelshell.core.session import Session

        self.transcript = transcript
        self.session = Session()
        self.folder = tempfile.mkdtemp(prefix="modelshell-replay-")
        # Why the rest of the transcript is not replayed: a line needed a framework that is not installed
        # (a torch-only install replaying a Keras tutorial). Not a mismatch: nothing was compared.
        self.skipped: str | None = None
        self._seeds = _Seeds()
        weakref.finalize(self, shutil.rmtree, self.folder, ignore_errors=True)

    @contextlib.contextmanager
    def in_block(self, block: Block) -> Iterator[None]:
        """In the replay's folder, everything seeded with the block's seed."""
        previous = os.getcwd()
        os.chdir(self.folder)
        try:
            self._seeds.start(block.seed)
            yield
        finally:
            os.chdir(previous)

    def run(self, step: Step) -> Outcome:
        """One input, as the shell runs it (call inside ``in_block``)."""
        with self._seeds.watching_imports():
            return self.session.run_line(step.text)

    def run_step(self, step: Step, block: Block) -> tuple[list[str], bool]:
        """The normalised output lines of one input, and whether it failed."""
        outcome = self.run(step)
        return normalise(outcome_text(outcome, block.width), self.folder), not outcome.ok

    def run_block(self, block: Block) -> list[Mismatch]:
        """Every step of the block; the mismatches, in order. Once a line needed a missing framework,
        nothing more runs and ``skipped`` says why."""
        mismatches = []
        with self.in_block(block):
            for step in block.steps:
                if self.skipped:
                    break
                outcome = self.run(step)
                if outcome.missing:
                    self.skipped = f"line {step.line}: {outcome.error}"
                    break
                actual = normalise(outcome_text(outcome, block.width), self.folder)
                failed = not outcome.ok
                note = "the line failed" if failed and not block.expects_error else ""
                differs = not lines_match(step.expected, actual)
                if differs or note:
                    mismatches.append(_mismatch(self.transcript.path, step, actual, note, differs))
        return mismatches


def _mismatch(path: Path, step: Step, actual: list[str], note: str, differs: bool = True) -> Mismatch:
    """The diff compares the expected lines with the actual ones as ``--update`` would write them, so a line
    that still matches (a ``(re)``, a number written shorter) is not shown as a change."""
    header = f"{path}:{step.line}: {step.prompt_lines[0]}"
    body = difflib.unified_diff(step.expected, _merged(step.expected, actual), "expected", "actual", lineterm="", n=3)
    diff = "\n".join([header, *body] + ([f"({note})"] if note else []))
    return Mismatch(path, step, actual, diff, note, differs)


def replay_file(path: Path, skipped: list[str] | None = None) -> list[Mismatch]:
    """Replay every block of one transcript; the mismatches (none means it still holds). When a line
    needs a framework that is not installed, the rest is not replayed and the reason is appended to
    ``skipped``."""
    transcript = parse(path)
    replayer = Replayer(transcript)
    mismatches: list[Mismatch] = []
    for block in transcript.blocks:
        mismatches += replayer.run_block(block)
    if replayer.skipped and skipped is not None:
        skipped.append(replayer.skipped)
    return mismatches


def update_file(path: Path) -> int:
    """Rewrite the expected output of inputs that no longer match; keep every expected line that still
    matches its actual line (so ``(re)``, ``(glob)`` and placeholders survive). The count rewritten. A line
    that fails but prints what it should is left as it is: rewriting cannot make it pass."""
    transcript = parse(path)
    replayer = Replayer(transcript)
    replacements: dict[int, list[str]] = {}
    for block in transcript.blocks:
        for mismatch in replayer.run_block(block):
            if mismatch.differs:
                replacements[mismatch.step.line] = _merged(mismatch.step.expected, mismatch.actual)
    if not replacements:
        return 0
    lines = list(transcript.lines)
    for block in reversed(transcript.blocks):
        for step in reversed(block.steps):
            if step.line in replacements:
                start = step.line - 1 + len(step.prompt_lines)
                lines[start:start + len(step.expected)] = replacements[step.line]
    path.write_text("\n".join(lines) + "\n", encoding="utf8")
    return len(replacements)


_ALIGN_LIMIT = 100_000  # expected x actual lines beyond which lines are merged by position only


def _merged(expected: list[str], actual: list[str]) -> list[str]:
    """The actual lines as a transcript would hold them, keeping each expected line that still matches (a
    ``(re)``, a ``...``, a number written shorter). The two are aligned with the fewest changes, so one line
    added or removed does not turn every line after it into a change."""
    if (len(expected) + 1) * (len(actual) + 1) > _ALIGN_LIMIT:
        return [old if old.strip() != "..." and line_matches(old, new) else new
                for old, new in zip(expected + [""] * len(actual), actual)]
    moves = _alignment(expected, actual)
    merged, i, j = [], 0, 0
    while (i, j) != (len(expected), len(actual)):
        move = moves[i][j]
        if move in ("keep", "end"):
            merged.append(expected[i])
        elif move in ("replace", "add"):
            merged.append(actual[j])
        i += move in ("keep", "end", "replace", "drop")
        j += move in ("keep", "absorb", "replace", "add")
    return merged


def _alignment(expected: list[str], actual: list[str]) -> list[list[str]]:
    """The cheapest move from each (expected, actual) position: keeping a line that matches, or a ``...``
    absorbing lines, is free; replacing or adding a line costs 1, dropping an expected line 2 (so a changed
    line is replaced, not dropped with its new text added)."""
    n, m = len(expected), len(actual)
    cost = [[0] * (m + 1) for _ in range(n + 1)]
    moves = [[""] * (m + 1) for _ in range(n + 1)]
    for i in range(n, -1, -1):
        for j in range(m, -1, -1):
            if i == n and j == m:
                continue
            options = []
            if i < n and expected[i].strip() == "...":
                options.append((cost[i + 1][j], "end"))
                if j < m:
                    options.append((cost[i][j + 1], "absorb"))
            else:
                if i < n and j < m:
                    if line_matches(expected[i], actual[j]):
                        options.append((cost[i + 1][j + 1], "keep"))
                    options.append((cost[i + 1][j + 1] + 1, "replace"))
                if i < n:
                    options.append((cost[i + 1][j] + 2, "drop"))
            if j < m:
                options.append((cost[i][j + 1] + 1, "add"))
            cost[i][j], moves[i][j] = min(options, key=lambda option: option[0])
    return moves


# --- recording ------------------------------------------------------------------------------------------
class Recorder:
    """Writes every input and its normalised output to a transcript as the session goes (the whole file,
    after every input, so a crash or Ctrl-D never loses what was recorded). It observes the session
    (``line_done``); the session is not told it exists.

    What it writes replays as it was typed: random numbers are seeded as a replay seeds them, and once a
    line has failed the block is marked ``expect: error`` (a mistake made while recording is part of it)."""

    def __init__(self, path: Path, title: str | None = None, width: int = DEFAULT_WIDTH) -> None:
        self.path = path
        self.width = width
        self._header = [f"# {title or path.stem}", "", f"Recorded with modelshell {__version__}.", ""]
        self._steps: list[str] = []
        self._failed = False
        self._write()
        self._seeds = _Seeds()
        self._seeds.start(DEFAULT_SEED)
        self._watching = contextlib.ExitStack()
        self._watching.enter_context(self._seeds.watching_imports())

    def line_done(self, text: str, outcome: Outcome) -> None:
        """As a session's observer (``Session.observe``): the input and its output join the transcript."""
        self._seeds.catch_up()
        if _is_record_command(text):
            return  # a `record` that failed (already recording): about the recording, not part of it
        prompted = [PROMPT + text.split("\n")[0]] + [CONTINUATION + rest for rest in text.split("\n")[1:]]
        if len(prompted) > 1:
            prompted.append(CONTINUATION.rstrip())
        folder = os.getcwd()  # replay runs in a folder of its own, which it also writes as $TMP
        output = normalise(outcome_text(outcome, self.width), folder if len(folder) > 1 else None)
        self._steps += [line.rstrip() for line in prompted] + output
        self._failed = self._failed or not outcome.ok
        self._write()

    def close(self) -> None:
        self._watching.close()

    def _write(self) -> None:
        lines = list(self._header)
        if self._steps:
            # A fence longer than any run of backticks an output line starts with, so none closes the block.
            fence = "`" * max([3] + [len(line) - len(line.lstrip("`")) + 1 for line in self._steps])
            lines += [fence + "modelshell" + (" expect: error" if self._failed else ""), *self._steps, fence]
        with atomic_target(self.path) as temporary:
            temporary.write_text("\n".join(lines) + "\n", encoding="utf8")


def _is_record_command(text: str) -> bool:
    from modelshell.core.session import is_command_line

    return is_command_line(text, ("record",))
