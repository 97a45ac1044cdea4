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

One session per file: models loaded in one block are there in the next.
"""
from __future__ import annotations

import contextlib
import difflib
import fnmatch
import os
import random
import re
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from modelshell import __version__
from modelshell.render.text import DEFAULT_WIDTH, outcome_text

__all__ = [
    "PROMPT", "CONTINUATION", "Step", "Block", "Transcript", "Mismatch", "parse", "lines_match",
    "normalise", "Replayer", "replay_file", "update_file", "Recorder",
]

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
        return int(self.options.get("seed", 0))

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
        closing = next((j for j in range(i + 1, len(lines)) if lines[j].startswith(fence.group(1)[:3])), len(lines))
        options = dict(_OPTION.findall(fence.group(2)))
        transcript.blocks.append(Block(i + 1, options, _steps(lines, i + 1, closing), closing + 1))
        i = closing + 1
    return transcript


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
        text = text.replace(version, "<version>")
    return [line.rstrip() for line in text.splitlines()]


def _versions() -> list[str]:
    found = [__version__]
    for module in ("torch", "keras", "tensorflow", "numpy"):
        if module in sys.modules:
            version = getattr(sys.modules[module], "__version__", None)
            if isinstance(version, str):
                found.append(version)
    return sorted(set(found), key=len, reverse=True)


def lines_match(expected: list[str], actual: list[str]) -> bool:
    """Whether the actual lines satisfy the expected ones (with ``...``, ``(re)``, ``(glob)``, numbers)."""
    memo: dict[tuple[int, int], bool] = {}

    def match(i: int, j: int) -> bool:
        if (i, j) in memo:
            return memo[(i, j)]
        if i == len(expected):
            result = j == len(actual)
        elif expected[i].strip() == "...":
            result = any(match(i + 1, k) for k in range(j, len(actual) + 1))
        else:
            result = j < len(actual) and line_matches(expected[i], actual[j]) and match(i + 1, j + 1)
        memo[(i, j)] = result
        return result

    return match(0, 0)


def line_matches(expected: str, actual: str) -> bool:
    """One line: literal, ``(re)``, ``(glob)``, or equal but for numbers written less precisely."""
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
    if _squeeze(_NUMBER.split(expected)) != _squeeze(_NUMBER.split(actual)):
        return False
    return all(_number_matches(e, a) for e, a in zip(exp_numbers, act_numbers))


def _squeeze(parts: list[str]) -> list[str]:
    return [re.sub(r"\s+", " ", part) for part in parts]


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


# --- replaying ------------------------------------------------------------------------------------------
class Replayer:
    """Replays one transcript in one session, in a temporary working folder of its own."""

    def __init__(self, transcript: Transcript) -> None:
        from modelshell.session import Session

        self.transcript = transcript
        self.session = Session()
        self.folder = tempfile.mkdtemp(prefix="modelshell-replay-")
        self._seeded: set[str] = set()

    @contextlib.contextmanager
    def _in_folder(self) -> Iterator[None]:
        previous = os.getcwd()
        os.chdir(self.folder)
        try:
            yield
        finally:
            os.chdir(previous)

    def run_block(self, block: Block) -> list[Mismatch]:
        """Every step of the block; the mismatches, in order."""
        mismatches = []
        with self._in_folder():
            self._seed(block.seed, everything=True)
            for step in block.steps:
                actual, failed = self.run_step(step, block)
                note = ""
                if failed and not block.expects_error:
                    note = "the line failed"
                if not lines_match(step.expected, actual) or note:
                    mismatches.append(_mismatch(self.transcript.path, step, actual, note))
        return mismatches

    def run_step(self, step: Step, block: Block) -> tuple[list[str], bool]:
        outcome = self.session.run_line(step.text)
        self._seed(block.seed, everything=False)
        return normalise(outcome_text(outcome, block.width), self.folder), not outcome.ok

    def _seed(self, seed: int, everything: bool) -> None:
        """Seed numpy, random, and every framework loaded so far; after a line, only frameworks that the
        line imported for the first time, so their first random numbers are reproducible too."""
        if everything:
            random.seed(seed)
            if "numpy" in sys.modules:
                sys.modules["numpy"].random.seed(seed)
        for name in ("torch", "keras"):
            if name in sys.modules and (everything or name not in self._seeded):
                self._seeded.add(name)
                if name == "torch":
                    sys.modules["torch"].manual_seed(seed)
                else:
                    sys.modules["keras"].utils.set_random_seed(seed)


def _mismatch(path: Path, step: Step, actual: list[str], note: str) -> Mismatch:
    header = f"{path}:{step.line}: {step.prompt_lines[0]}"
    body = difflib.unified_diff(step.expected, actual, "expected", "actual", lineterm="", n=3)
    diff = "\n".join([header, *body] + ([f"({note})"] if note else []))
    return Mismatch(path, step, actual, diff, note)


def replay_file(path: Path) -> list[Mismatch]:
    """Replay every block of one transcript; the mismatches (none means it still holds)."""
    transcript = parse(path)
    replayer = Replayer(transcript)
    mismatches: list[Mismatch] = []
    for block in transcript.blocks:
        mismatches += replayer.run_block(block)
    return mismatches


def update_file(path: Path) -> int:
    """Rewrite the expected output of inputs that no longer match; keep every expected line that still
    matches its actual line (so ``(re)``, ``(glob)`` and placeholders survive). The count rewritten."""
    transcript = parse(path)
    replayer = Replayer(transcript)
    replacements: dict[int, list[str]] = {}
    for block in transcript.blocks:
        for mismatch in replayer.run_block(block):
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


def _merged(expected: list[str], actual: list[str]) -> list[str]:
    kept = []
    for index, line in enumerate(actual):
        old = expected[index] if index < len(expected) else None
        kept.append(old if old is not None and old.strip() != "..." and line_matches(old, line) else line)
    return kept


# --- recording ------------------------------------------------------------------------------------------
class Recorder:
    """Writes every input and its normalised output to a transcript as the session goes, so a crash or
    Ctrl-D never loses what was recorded."""

    def __init__(self, path: Path, title: str | None = None, width: int = DEFAULT_WIDTH) -> None:
        self.path = path
        self.width = width
        header = f"# {title or path.stem}\n\nRecorded with modelshell {__version__}.\n\n```modelshell\n"
        path.write_text(header, encoding="utf8")

    def add(self, text: str, outcome) -> None:
        prompted = [PROMPT + text.split("\n")[0]] + [CONTINUATION + rest for rest in text.split("\n")[1:]]
        if len(prompted) > 1:
            prompted.append(CONTINUATION.rstrip())
        folder = os.getcwd()  # replay runs in a folder of its own, which it also writes as $TMP
        output = normalise(outcome_text(outcome, self.width), folder if len(folder) > 1 else None)
        with open(self.path, "a", encoding="utf8") as handle:
            handle.write("\n".join([line.rstrip() for line in prompted] + output) + "\n")

    def close(self) -> None:
        with open(self.path, "a", encoding="utf8") as handle:
            handle.write("```\n")
