"""A session: named models plus the Python namespace they live in, and the dispatcher for one line.

The core of modelshell: it knows nothing of terminals. The interactive shell, ``modelshell run`` and
transcript replay all feed lines to ``Session.run_line`` and draw the ``Outcome`` it returns. What the
session needs from outside it is given: the commands it runs (a ``CommandRegistry``), the sink a running
line's output goes to (``modelshell.core.output``), and observers it tells of each line (``record``).
"""
from __future__ import annotations

import builtins
import contextlib
import gc
import keyword
import re
import shlex
import sys
from collections.abc import Container, Iterable, Mapping
from typing import Any, Protocol

from modelshell.commands import CommandRegistry, default_registry
from modelshell.commands.registry import apply_listing_options
from modelshell.core.errors import ModelshellError, first_line
from modelshell.frameworks.base import ModelHandle
from modelshell.frameworks import quiet
from modelshell.frameworks.detect import framework_of, wrap_object
from modelshell.core.output import OutputSink, captured
from modelshell.core.python import PythonLines, error_line, formatted_traceback
from modelshell.core.results import Failed, Message, Outcome, Text

__all__ = ["Session", "LineObserver", "is_command_line", "shadows"]

_WORD = re.compile(r"^\s*([A-Za-z_]\w*)(.*)$", re.DOTALL)
# What makes `NAME rest` Python although NAME is a command: right after the name (no space) anything does
# (`help(len)`, `models.keys()`, `weights=3`); after a space, an assignment or comparison (`weights = 3`,
# `models == x`), a binary operator followed by a space (`weights * 2`), a bracket or comma (`help (len)`),
# or a keyword operator. Paths and options stay arguments: `load /tmp/x.pt`, `load ./x.pt`, `weights m -h`.
_OPERATOR = r"(?:\*\*|//|>>|<<|[-+*/%@&|^])"
_PYTHON_AFTER_SPACE = re.compile(
    rf"^\s+(?:[=<>!]=?|{_OPERATOR}=|{_OPERATOR}\s|[(\[,;:]|(?:and|or|in|is|not|if)\s)"
)
_HELP_SUFFIX = re.compile(r"^\s*\?\s*([A-Za-z_][\w.]*)\s*$|^\s*([A-Za-z_][\w.]*)\s*\?\s*$")
# `%NAME args` always runs the command NAME, as IPython's magics; `%tb` is short for `%traceback`.
_FORCED = re.compile(r"^\s*%([A-Za-z_]\w*)(.*)$", re.DOTALL)
_FORCED_ALIASES = {"tb": "traceback"}


def is_command_line(text: str, commands: Container[str], namespace: Mapping[str, Any] | None = None) -> bool:
    """True when the line is a shell command rather than Python: its first word is a command name,
    followed by nothing or by arguments (not by ``=``, ``(``, `` * 2``, ... which make it Python), or the
    line is ``%COMMAND ...``. Names first, as in IPython: a bare name bound in ``namespace`` is Python (it
    shows the variable) even where a command has that name. ``commands``: the names of the commands."""
    forced = _FORCED.match(text)
    if forced:
        return _FORCED_ALIASES.get(forced.group(1), forced.group(1)) in commands
    match = _WORD.match(text)
    if not match or match.group(1) not in commands:
        return False
    rest = match.group(2)
    if not rest.strip():
        return namespace is None or not shadows(match.group(1), namespace)
    return rest[0].isspace() and not _PYTHON_AFTER_SPACE.match(rest)


def shadows(name: str, namespace: Mapping[str, Any]) -> bool:
    """True when the user bound ``name`` (a command's) as a variable: the bare name shows the variable
    (``%NAME`` runs the command). What the session binds itself (Python's ``help``) does not count."""
    return name in namespace and namespace[name] is not _SESSION_BINDINGS.get(name)


class LineObserver(Protocol):
    """What watches a session (``record``'s transcript): told each input and its outcome once it has run."""

    def line_done(self, text: str, outcome: Outcome) -> None: ...

    def close(self) -> None: ...


class Session:
    """Named models and the namespace that Python lines run in.

    The namespace is the source of truth for what a name means: a handle is used only while its object is
    still bound to that name, and any torch module or Keras model a Python line binds becomes a model.
    """

    def __init__(self, debug: bool = False, commands: CommandRegistry | None = None,
                 output: OutputSink | None = None) -> None:
        self.debug = debug
        # The commands this session runs; `help` and completion read them from here.
        self.commands = default_registry() if commands is None else commands
        # Frameworks imported from now on (by a command or a Python line) keep their start-up chatter to
        # themselves; --debug shows it.
        quiet.install(show=debug)
        self.handles: dict[str, ModelHandle] = {}
        self.observers: list[LineObserver] = []  # told of every line: `record`'s transcript while it is on
        self.trust = False  # `trust on`: every following load is as if given --trust
        self.recent: list[str] = []  # model names, the one a command used last first (`models` marks two)
        self.namespace: dict[str, Any] = {"__name__": "__modelshell__", "__builtins__": builtins, **_SESSION_BINDINGS}
        self.python = PythonLines(self.namespace)
        # Where a Python line's output goes as it is written (the terminal, stdout of `run`); by default
        # nowhere: it is only kept in the outcome.
        self.output = OutputSink() if output is None else output
        self.last_traceback: str | None = None  # the last error's, for `traceback` (`%tb`)
        self._shadow_noted: set[str] = set()  # command names bound as variables, told once about `%NAME`

    # --- models -----------------------------------------------------------------------------------
    def add(self, name: str, handle: ModelHandle) -> None:
        self.handles[name] = handle
        self.namespace[name] = handle.obj
        self._used(name)

    def model(self, name: str, *, used: bool = True) -> ModelHandle:
        """The model bound to ``name``, wrapping a torch module or Keras model a Python line created.

        ``used`` records it as the model most recently worked on; ``models`` looks without touching."""
        handle = self._lookup(name)
        if used:
            self._used(name)
        return handle

    def _used(self, name: str) -> None:
        self.recent = [name] + [n for n in self.recent if n != name]

    def _lookup(self, name: str) -> ModelHandle:
        if name not in self.namespace:
            close = close_match(name, self.model_names(), 0.6)
            hint = f"did you mean {close!r}? " if close else ""
            raise ModelshellError(f"no model named {name!r}", hint + "`models` lists the models; `load PATH` adds one")
        obj = self.namespace[name]
        handle = self.handles.get(name)
        if handle is not None and handle.obj is obj:
            return handle
        handle = wrap_object(obj, source="Python variable")
        if handle is None:
            raise ModelshellError(f"{name} is {_a(type(obj).__name__)}, not a model (a torch module or Keras model)")
        self.handles[name] = handle
        return handle

    def model_names(self) -> list[str]:
        """Models in the order they arrived: loaded ones first, then models bound by Python lines."""
        names = [n for n, h in self.handles.items() if self.namespace.get(n, None) is h.obj]
        names += [
            n for n, obj in self.namespace.items()
            if n not in names and not n.startswith("_") and _is_model_object(obj)
        ]
        return names

    def unsaved(self) -> list[str]:
        """Models changed (copied into) since they were loaded or last saved: what leaving would lose."""
        return [n for n in self.model_names() if n in self.handles and self.handles[n].changed]

    def free_name(self, wanted: str) -> str:
        """``wanted``, or ``wanted_2``, ``wanted_3``... if a variable already has that name."""
        name, n = wanted, 2
        while name in self.namespace:
            name, n = f"{wanted}_{n}", n + 1
        return name

    # --- lines ------------------------------------------------------------------------------------
    def is_command(self, text: str, names_first: bool = True) -> bool:
        """True when ``text`` runs one of this session's commands rather than Python (see
        ``is_command_line``); ``names_first=False`` ignores the variables (a line typed so far)."""
        return is_command_line(text, self.commands, self.namespace if names_first else None)

    def command_words(self, text: str) -> list[str] | None:
        """The words of ``text`` (split at spaces, ``%`` dropped) when it runs a command, else None: for a
        front end that looks at what a line asks for (``--json``, ``--all``) without running it."""
        if not self.is_command(text):
            return None
        return text.strip().removeprefix("%").split()

    def needs_more(self, text: str) -> bool:
        """True when ``text`` is the start of a Python block (``for ...:``) that is not finished yet.

        Compiled as the Python REPL does ("single"): a compound statement stays open until a blank line,
        so ``for ...:`` and one body line do not run before the user could type a second one."""
        if self.is_command(text) or not text.strip():
            return False
        try:
            return self.python.incomplete(text)
        except (RecursionError, MemoryError):
            return False  # complete (if wrong): running it says what is wrong, in one line

    def run_line(self, text: str) -> Outcome:
        """Run one complete input (a command, or Python that may span lines) and say what it produced;
        then tell the observers that watched it from start to end (so the line that starts or stops
        `record` is not part of the recording). A memory-mapped file another program changed is said
        (and its models dropped when it was truncated unnoticed) before and after the line."""
        watching = list(self.observers)
        writes = None
        try:
            writes = self._writes()
            before = self._changed_files(_mapping_changes(take=False))  # truncated without a lease: dropped first
            outcome = self._run(text)
            outcome.results[:0] = before
            outcome.results += self._changed_files(_mapping_changes(take=True))
        except KeyboardInterrupt:  # before a command ran, or after it: say what it did (a Python line says itself)
            nothing = "interrupted (nothing changed)" if self.is_command(text.strip()) else "interrupted"
            outcome = Outcome(ok=False, error=nothing if writes is None else self._interrupted(writes, nothing))
        if text.strip():
            for observer in watching:
                if observer in self.observers:
                    observer.line_done(text, outcome)
        return outcome

    def observe(self, observer: LineObserver) -> None:
        self.observers.append(observer)

    def stop_observing(self, observer: LineObserver) -> None:
        """``observer`` hears of no further line, and is closed."""
        self.observers.remove(observer)
        observer.close()

    def close(self) -> None:
        """The session ends: every observer is closed (a recording has its last line written already)."""
        while self.observers:
            self.stop_observing(self.observers[-1])

    def _changed_files(self, changes: list) -> list[Message]:
        """Say which memory-mapped files another program changed, and what that did to their models:
        nothing (their values were moved into memory first), or they are dropped (truncated unnoticed)."""
        notes = []
        for change in changes:
            names = [n for n, h in self.handles.items() if h.source == change.path]
            if change.whole:
                kept = f"{', '.join(names) or 'its tensors'} kept the values loaded (moved into memory first)"
                notes.append(Message(f"note: {change.path} was changed on disk by another program; {kept}"))
                continue
            for name in names:
                self.handles.pop(name, None)
                self.namespace.pop(name, None)
            notes.append(Message(
                f"note: {change.path} was truncated by another program while mapped: "
                f"{', '.join(names) or 'its tensors'} no longer hold what was loaded and were dropped (load it again)"))
        return notes

    def _run(self, text: str) -> Outcome:
        stripped = text.strip()
        if not stripped or stripped.startswith("#"):
            return Outcome()
        if stripped in ("quit", "exit"):
            return Outcome(exit_requested=True)
        try:
            forced = _FORCED.match(stripped)
            if forced:
                return self._run_forced(*forced.groups())
            help_match = _HELP_SUFFIX.match(stripped)
            if help_match:
                target = help_match.group(1) or help_match.group(2)
                if target in self.commands and target not in self.namespace:  # `weights?` asks about the command
                    return self._run_command("help", [target])
                return self._run_command("doc", [target])
            if self.is_command(stripped):
                name, rest = _WORD.match(stripped).groups()  # any whitespace, a tab too, ends the name
                return self._run_command(name, _split_args(rest))
            return self._run_python(text)
        except ModelshellError as exc:
            return Outcome(ok=False, error=exc.one_line(), traceback=self._keep_traceback(_current_traceback()),
                           missing=getattr(exc, "package", None))
        except Exception as exc:  # noqa: BLE001 - the session must survive any bug, and say what happened
            package = quiet.missing_framework(exc)
            if package is not None:  # a command reached for a framework that is not installed
                missing = quiet.MissingFrameworkError(package, f"`{stripped.split()[0]}`")
                return Outcome(ok=False, error=missing.one_line(),
                               traceback=self._keep_traceback(_current_traceback()), missing=package)
            return Outcome(
                ok=False,
                error=f"internal error: {type(exc).__name__}: {first_line(exc)} (`%tb` shows the traceback)",
                traceback=self._keep_traceback(_current_traceback()),
            )

    def _keep_traceback(self, text: str) -> str | None:
        """Keep an error's traceback for `%tb`; it is printed with the error line only with --debug."""
        self.last_traceback = text
        return text if self.debug else None

    def _run_forced(self, word: str, rest: str) -> Outcome:
        """``%NAME args``: the command NAME, whatever the namespace binds to that name."""
        name = _FORCED_ALIASES.get(word, word)
        if name not in self.commands:
            close = _close_command(name, self.commands)
            hint = f"did you mean `%{close}`? `help` lists the commands" if close else "`help` lists the commands"
            raise ModelshellError(f"no command {name!r} to run with %", hint)
        return self._run_command(name, _split_args(rest))

    def _run_command(self, name: str, argv: list[str]) -> Outcome:
        command = self.commands[name]
        if "-h" in argv or "--help" in argv:  # before parsing: `weights --help` lacks the required NAME
            return self._run_command("help", [name])
        args = command.parser.parse_intermixed_args(argv)  # `load DIR --build as NAME`: options anywhere
        writes = self._writes()  # what Ctrl-C may have let finish
        try:
            with _collector_paused():
                produced = command.run(self, args)
            as_json = getattr(args, "json", False)
            if isinstance(produced, Failed):
                outcome = Outcome(results=produced.results, ok=False, error=produced.error, as_json=as_json)
            else:
                outcome = Outcome(results=produced if isinstance(produced, list) else [produced], as_json=as_json)
            return apply_listing_options(outcome, args)
        except KeyboardInterrupt:  # commands change nothing until they succeed (copy rolls back, save is atomic),
            # and one that came after the command's last write, while its result was being put together,
            # is told as such
            return Outcome(ok=False, error=self._interrupted(writes))

    def _is_command(self, text: str) -> bool:
        stripped = text.strip()
        return bool(_FORCED.match(stripped)) or is_command_line(stripped, self.namespace)

    def _writes(self) -> dict[str, int]:
        return {n: handle.writes for n, handle in self.handles.items()}

    def _interrupted(self, writes_before: dict[str, int], nothing: str = "interrupted (nothing changed)") -> str:
        """What a Ctrl-C during a command left: nothing, or (when it came after a write completed) the
        models written, which are then marked changed."""
        written = [n for n, h in self.handles.items() if h.writes > writes_before.get(n, 0)]
        for name in written:
            self.handles[name].changed = True
        if written:
            return f"interrupted after the copy into {', '.join(written)} had completed (it holds the new values)"
        return nothing

    def _run_python(self, source: str) -> Outcome:
        try:
            code = self.python.compile(source)
        except (RecursionError, MemoryError) as exc:
            raise _too_deep(source, exc) from exc
        except (SyntaxError, ValueError, OverflowError) as exc:  # ValueError: a NUL byte; Overflow: a huge literal
            _raise_if_unknown_command(source, self.namespace, self.commands)
            return self._python_failed(Outcome(), exc, source)
        kept: list[str] = []
        outcome = Outcome()
        try:
            with captured(kept, self.output):
                self.python.run(code)
        except SystemExit:
            outcome.exit_requested = True
        except KeyboardInterrupt:
            outcome.ok, outcome.error = False, "interrupted"
        except Exception as exc:  # noqa: BLE001 - user code errors are reported like the Python REPL does
            self._python_failed(outcome, exc, source)
        if kept:
            outcome.results.insert(0, Text("".join(kept), streamed=self.output.shows))
        self._note_shadowing(outcome)
        return outcome

    def _python_failed(self, outcome: Outcome, exc: BaseException, source: str) -> Outcome:
        """The REPL's last traceback line as the error; the whole traceback kept for `%tb`."""
        outcome.ok = False
        outcome.error = error_line(exc, source)
        close = _close_command(getattr(exc, "name", None) or "", self.commands) if isinstance(exc, NameError) else None
        if close:
            outcome.error += f" (did you mean the command `{close}`?)"
        outcome.missing = quiet.missing_framework(exc)
        if outcome.missing:
            outcome.error += f" ({quiet.EXTRAS[outcome.missing][1]})"
        outcome.traceback = self._keep_traceback(formatted_traceback(exc, own_frames=__file__))
        return outcome

    def _note_shadowing(self, outcome: Outcome) -> None:
        """Once a session, for each command name a Python line binds: the bare name now shows the value."""
        for name in self.commands:
            if name not in self._shadow_noted and shadows(name, self.namespace):
                self._shadow_noted.add(name)
                outcome.results.append(Message(f"note: `{name}` now shows your variable; `%{name}` runs the command"))


@contextlib.contextmanager
def _collector_paused():
    """Python's cyclic garbage collector off while a command runs. A command over 50,000 tensors makes
    hundreds of thousands of small objects, and each full collection walks every live object, the
    models' own included: time per tensor would grow with the model. Cycles a command leaves are
    collected after it, when the collector runs again. Python lines are never run with it off."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _too_deep(source: str, exc: BaseException) -> ModelshellError:
    """Python's compiler recurses once per operator of a chain (``1+1+...``): past a few thousand it gives up."""
    return ModelshellError(
        f"this line is too long or too deeply nested for Python to compile ({len(source):,} characters; "
        f"{type(exc).__name__})", "split it into several lines, or build the value in a loop")


def _close_command(word: str, commands: Iterable[str]) -> str | None:
    return close_match(word, commands, 0.75)


def close_match(word: str, choices: Iterable[str], cutoff: float) -> str | None:
    """The choice nearest ``word`` for a "did you mean" hint, if any is near enough. difflib is imported
    here, on a miss: a fresh process that never mistypes does not pay for it."""
    import difflib

    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=cutoff)
    return close[0] if close else None


def _mapping_changes(take: bool) -> list:
    """The memory-mapped files another program changed: ``take``, those its lease break reported during the
    line; else a truncation found without one. Only loading a mapped file (torch's ``mmap=True``) guards it,
    and so imports ``modelshell.safety.mapped``: until then nothing is mapped, and a session that lists
    a safetensors folder does not import the module."""
    mapped = sys.modules.get("modelshell.safety.mapped")
    if mapped is None:
        return []
    return mapped.take_changes() if take else mapped.check_files()


def _current_traceback() -> str:
    import traceback  # only when a line failed

    return traceback.format_exc()


def _raise_if_unknown_command(source: str, namespace: dict[str, Any], commands: Iterable[str]) -> None:
    """``wieghts torch_model`` is not Python: say it is an unknown command, not "invalid syntax"."""
    match = _WORD.match(source)
    if not match or "\n" in source.strip() or keyword.iskeyword(match.group(1)) or match.group(1) in namespace:
        return
    if not match.group(2)[:1].isspace() or _PYTHON_AFTER_SPACE.match(match.group(2)):
        return
    word = match.group(1)
    close = _close_command(word, commands)
    hint = f"did you mean `{close}`? `help` lists the commands" if close else "`help` lists the commands"
    raise ModelshellError(f"unknown command {word!r} (and not valid Python either)", hint)


def _python_help(*args: Any, **kwargs: Any) -> None:
    """Python's ``help(obj)``. Bare ``help()`` would start pydoc's interactive helper, a prompt of its own
    inside the shell's (in a script or a pipe it would read the next lines as topics); the commands'
    ``help`` is what a bare ``help`` means here, so it points there."""
    if not args and not kwargs:
        print("`help` (no parentheses) lists modelshell's commands; help(obj) shows Python's help on obj.")
        return
    builtins.help(*args, **kwargs)


_SESSION_BINDINGS = {"help": _python_help}


def _a(noun: str) -> str:
    return f"an {noun}" if noun[:1].lower() in "aeiou" else f"a {noun}"


MAX_COMMAND_CHARS = 100_000  # shlex takes time quadratic in a token's length: 2 MB would take minutes


def _split_args(rest: str) -> list[str]:
    if len(rest) > MAX_COMMAND_CHARS:
        raise ModelshellError(f"the command line is {len(rest):,} characters long; a command takes at most "
                              f"{MAX_COMMAND_CHARS:,}", "put long values in a file or a Python variable")
    try:
        return shlex.split(rest)
    except ValueError as exc:
        raise ModelshellError(f"cannot read the arguments: {exc}", "close the quote") from exc


def _is_model_object(obj: Any) -> bool:
    return framework_of(obj) is not None and not isinstance(obj, type) and not isinstance(obj, Mapping)

