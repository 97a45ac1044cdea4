"""Tab completion for the shell: what a word can be is read from the command's own argparse parser, so
completion can never drift from what a command accepts; Python lines complete names, attributes and
dict keys.

Completion runs while the user waits for a key to answer, and on objects the user made, so it evaluates
nothing but attribute access (``name.attr.attr``, never a call or a subscript), reads dict keys only of
real dicts, and any exception means "no completions": a traceback on the prompt would be worse (it is
logged at debug level on the ``modelshell.terminal.completion`` logger, so a test or a developer can see it).

Tab completes in its key handler (``complete_now``), on the text the buffer holds when it is pressed.
"""
from __future__ import annotations

import argparse
import builtins
import contextlib
import io
import keyword
import logging
import os
import re
import warnings
from collections.abc import Callable, Collection, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from prompt_toolkit.application.current import get_app
from prompt_toolkit.buffer import Buffer, CompletionState
from prompt_toolkit.completion import CompleteEvent, Completer, Completion, PathCompleter, get_common_complete_suffix
from prompt_toolkit.document import Document
from prompt_toolkit.filters import Condition

from modelshell.commands.format import shape_text
from modelshell.commands.inspect import resolve_dotted
from modelshell.core.session import shadows
from modelshell.formats import FORMATS

if TYPE_CHECKING:
    from modelshell.core.session import Session

__all__ = ["SessionCompleter", "complete_now", "menu_while_typing", "wants_menu_while_typing"]

_log = logging.getLogger(__name__)

# What a positional argument holds, by its argparse dest; `filter` depends on the command (a member name
# for `members`, a tensor name for `weights`). A metavar naming PATH or FILE means a file path.
_KIND_BY_DEST = {
    "name": "model", "a": "model", "b": "model", "src": "model", "dst": "model",
    "tensor": "tensor", "target": "dotted", "topic": "command",
}
_FILTER_KIND = {"members": "member", "weights": "tensor"}
_CHAIN = r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*"
_FIRST_WORD = re.compile(r"\s*([A-Za-z_]\w*)?")
_ATTRIBUTE = re.compile(rf"({_CHAIN})\.(\w*)")
_IDENTIFIER = re.compile(r"[A-Za-z_]\w*")
_TAIL = re.compile(r"[\w.]*$")
# `name["par`, `name['`, or `name[` with nothing typed yet; not after `)`, `]`, `.` or a quote (a call,
# a subscript or a literal would have to be evaluated).
_KEY = re.compile(rf"(?<![\w.)\]'\"])({_CHAIN})\[(?:(['\"])([^'\"\\\]]*))?$")
_SHELL_SAFE = re.compile(r"[\w@%+=:,./~-]*")  # shlex.quote's safe characters, and ~ (load expands it)
_QUOTES = "'\""
_Given = dict[str, list[str]]  # argparse dest -> the words typed for it
_Slot = tuple[argparse.Action, int]  # an argument, and which of its words (for nargs="*")


class _Value(NamedTuple):
    """One argument value offered: ``final`` is False for a folder (a quote around it stays open)."""

    text: str
    final: bool = True
    meta: str | None = None
    display: str | None = None


class SessionCompleter(Completer):
    """Command names and Python names on the first word; a command's arguments by what its parser says
    each position holds; attributes and dict keys in Python lines."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def get_completions(self, document: Document, complete_event: CompleteEvent) -> Iterator[Completion]:
        try:
            with _quiet():  # a property that prints or warns must not scribble over the prompt
                found = list(self._complete(document.text_before_cursor, document.text_after_cursor))
        except Exception:  # noqa: BLE001 - no completions beats a traceback on the prompt
            _log.debug("no completions for %r", document.text_before_cursor, exc_info=True)
            return
        yield from found

    def _complete(self, before: str, after: str) -> Iterable[Completion]:
        if before.lstrip().startswith("?"):
            return self._help_suffix(before.lstrip()[1:].lstrip())
        forced = before.lstrip().startswith("%")  # `%NAME`: always the command, as a line runs it
        if forced:
            before = before.replace("%", " ", 1)
        first = _FIRST_WORD.fullmatch(before)
        if first:
            return self._first_word(first.group(1) or "", forced)
        if self.session.is_command(before, names_first=not forced):
            return self._arguments(before)
        return self._python(before, after)

    # --- the first word: a command, or the start of a Python line ------------------------------
    def _first_word(self, word: str, forced: bool = False) -> list[Completion]:
        namespace, commands = self.session.namespace, self.session.commands
        found = [Completion(n, -len(word), display_meta=c.summary if forced or not shadows(n, namespace)
                            else f"your variable (`%{n}` runs the command)")
                 for n, c in commands.items() if n.startswith(word)]
        if forced:
            return found
        names = [n for n in _python_names(namespace) if n not in commands]
        return found + [Completion(n, -len(word)) for n in _visible(word, names)]

    # --- command arguments -------------------------------------------------------------------
    def _arguments(self, before: str) -> list[Completion]:
        command = _FIRST_WORD.match(before)
        words = shell_words(before, command.end())
        word, start = words[-1]
        cmd = self.session.commands[command.group(1)]
        given, slot = _read_arguments(cmd.parser, [w for w, _ in words[:-1]])
        if word.startswith("-") or (slot is None and not word):
            values = _options(cmd.parser, given, word)
        elif slot is None:
            values = []
        else:
            values = self._values(cmd.name, *slot, given, word)
        raw = before[start:]
        return [_shell_completion(value, raw) for value in values]

    def _values(self, command: str, action: argparse.Action, index: int, given: _Given, word: str) -> list[_Value]:
        kind = _kind(command, action)
        literals = [*(action.choices or []), *(_metavar_words(action) if index == 0 else [])]
        found = [_Value(w) for w in dict.fromkeys(literals) if w.startswith(word)]
        if kind == "path":
            found += _paths(word, _PATH_FORMATS.get(command))
        elif kind == "model":
            found += [_Value(n) for n in self.session.model_names() if n.startswith(word)]
        elif kind == "command":
            found += [_Value(n, meta=c.summary) for n, c in self.session.commands.items() if n.startswith(word)]
        elif kind == "tensor":
            found += self._tensors(given, word)
        elif kind == "member":
            found += self._members(given, word)
        elif kind == "dotted":
            found += [_Value(full, display=attr) for full, attr in self._dotted(word)]
        return found

    def _model_given(self, given: _Given) -> str:
        """The model named before the current argument (the last of NAME, A, B, SRC, DST given)."""
        names = [values[0] for dest, values in given.items() if _KIND_BY_DEST.get(dest) == "model" and values]
        return names[-1]

    def _tensors(self, given: _Given, word: str) -> list[_Value]:
        handle = self.session.model(self._model_given(given), used=False)  # completing is not using it
        infos = {t.name: t for t in handle.tensors()}
        return [_Value(n, meta=shape_text(infos[n].shape)) for n in _by_prefix_else_substring(word, infos)]

    def _members(self, given: _Given, word: str) -> list[_Value]:
        obj = resolve_dotted(self.session.namespace, self._model_given(given))  # "no model named ..."
        private = "private" in given or word.startswith("_")
        names = [n for n in dir(obj) if private or not n.startswith("_")]
        return [_Value(n) for n in _by_prefix_else_substring(word, names)]

    # --- dotted members (`doc`, `?NAME`) and Python -------------------------------------------
    def _dotted(self, word: str) -> list[tuple[str, str]]:
        """``torch_model.sta`` -> (``torch_model.state_dict``, ``state_dict``), by getattr only."""
        if "." not in word:
            return [(n, n) for n in _visible(word, self.session.namespace) if n.isidentifier()]
        head, prefix = word.rsplit(".", 1)
        obj = resolve_dotted(self.session.namespace, head)
        return [(f"{head}.{n}", n) for n in _visible(prefix, dir(obj))]

    def _help_suffix(self, word: str) -> list[Completion]:
        return [Completion(full, -len(word), display=name) for full, name in self._dotted(word)]

    def _python(self, before: str, after: str) -> list[Completion]:
        key = _KEY.search(before)
        if key and (key.group(2) or key.group(3) is None):
            return self._keys(key.group(1), key.group(2) or "", key.group(3) or "", after)
        tail = _python_tail(before)
        if tail is None:
            return []
        attribute = _ATTRIBUTE.fullmatch(tail)
        if attribute:
            obj = resolve_dotted(self.session.namespace, attribute.group(1))
            names = _visible(attribute.group(2), dir(obj))
        elif tail == "" or _IDENTIFIER.fullmatch(tail):
            names = _visible(tail, _python_names(self.session.namespace))
        else:
            return []
        prefix = attribute.group(2) if attribute else tail
        return [Completion(n, -len(prefix)) for n in names if n.isidentifier()]

    def _keys(self, chain: str, quote: str, prefix: str, after: str) -> list[Completion]:
        """The string keys of a dict (through ``dict.keys``, so no code of a subclass runs), with the
        quote and bracket closed unless they already follow the cursor."""
        obj = resolve_dotted(self.session.namespace, chain)
        if not isinstance(obj, dict):
            return []
        mark = quote or '"'
        quote_follows = bool(quote) and after.startswith(quote)
        rest = after[1:] if quote_follows else after
        opening = "" if quote else mark
        closing = ("" if quote_follows else mark) + ("" if rest.startswith("]") else "]")
        found = []
        for key in dict.keys(obj):
            if isinstance(key, str) and key.startswith(prefix):
                escaped = key.replace("\\", "\\\\").replace(mark, "\\" + mark)
                found.append(Completion(opening + escaped + closing, -len(prefix), display=key))
        return found


def wants_menu_while_typing(session: Session, text_before_cursor: str) -> bool:
    """True after ``name.`` (and its partial attribute) in a Python line: there a menu that appears while
    typing helps to explore an object; on command words and arguments it would cover the screen on every
    key, and Tab is enough."""
    if session.is_command(text_before_cursor, names_first=False) or _KEY.search(text_before_cursor):
        return False
    return bool(_ATTRIBUTE.fullmatch(_python_tail(text_before_cursor) or ""))


def menu_while_typing(session: Session) -> Condition:
    """The filter that tells prompt_toolkit when to complete while typing: see wants_menu_while_typing."""
    return Condition(lambda: wants_menu_while_typing(session, get_app().current_buffer.document.text_before_cursor))


def complete_now(buffer: Buffer) -> None:
    """Tab: the next entry of a menu that is shown, else the completions of the text in the buffer now:
    the common part inserted, a single one applied, several shown in a menu.

    prompt_toolkit's own Tab only queues a completion task, and that task gives up when the buffer already
    has completions: after fast typing or a paste, the keys come in one read, each queues a menu-while-typing
    task, Tab's task runs after them and finds their menu, so ``torch_model.state_d`` stayed as it was with
    ``state_dict`` in the menu. Computing here, in the key handler, answers the text as it is when Tab is
    pressed; the completer is quick and never raises, as the menu while typing already relies on."""
    # Any change of the text resets the menu, and the menu while typing is computed in the event loop
    # (PromptSession's complete_in_thread is off), so a menu that is there is this text's, and whole.
    if buffer.complete_state is not None:
        buffer.complete_next()
        return
    if buffer.completer is None:
        return
    document = buffer.document
    found = list(buffer.completer.get_completions(document, CompleteEvent(completion_requested=True)))
    before = document.text_before_cursor
    if not found or (len(found) == 1 and before[len(before) + found[0].start_position:] == found[0].text):
        return  # nothing, or only what is typed already
    common = get_common_complete_suffix(document, found)
    if common:
        buffer.insert_text(common)  # resets the menu; with several left, show them from the new text on
        if len(found) > 1:
            _show(buffer, [c.new_completion_from_position(len(common)) for c in found])
    elif len(found) == 1:
        _show(buffer, found)
        buffer.go_to_completion(0)
    else:
        _show(buffer, found)


def _show(buffer: Buffer, completions: list[Completion]) -> None:
    buffer.complete_state = CompletionState(original_document=buffer.document, completions=completions)
    buffer.on_completions_changed.fire()


def _python_tail(before: str) -> str | None:
    """The dotted names the line ends with (``torch_model.sta``), or None right after a quote: inside or
    after a string literal there is nothing to complete without evaluating it."""
    tail = _TAIL.search(before).group()
    return None if before[: len(before) - len(tail)].endswith(tuple(_QUOTES)) else tail


def shell_words(text: str, start: int = 0) -> list[tuple[str, int]]:
    """The shell words of ``text[start:]`` (as ``shlex.split`` reads them) with the offset where each
    begins; the last is the word being typed: "" when the text ends in a space, and an unclosed quote is
    allowed, since it is still being typed."""
    words: list[tuple[str, int]] = []
    value, begin, quote, i = None, start, "", start
    while i < len(text):
        ch = text[i]
        if value is None and ch.isspace():
            i += 1
            continue
        if value is None:
            value, begin = "", i
        if quote and ch == quote:
            quote = ""
        elif not quote and ch in _QUOTES:
            quote = ch
        elif not quote and ch.isspace():
            words.append((value, begin))
            value = None
        elif ch == "\\" and quote != "'" and i + 1 < len(text):
            i += 1
            value += text[i]
        else:
            value += ch
        i += 1
    words.append((value, begin) if value is not None else ("", len(text)))
    return words


def _read_arguments(parser: argparse.ArgumentParser, values: list[str]) -> tuple[_Given, _Slot | None]:
    """What the typed words gave (dest -> values) and which (positional, index in it) the next word
    fills, or None; an option that takes a value makes the next word its value."""
    options = {s: a for a in parser._actions for s in a.option_strings}
    positionals = [a for a in parser._actions if not a.option_strings]
    given: _Given = {}
    pending, count = None, 0
    for value in values:
        if pending is not None:
            given[pending.dest] = [value]
            pending = None
        elif value.startswith("-") and value.split("=")[0] in options:
            action = options[value.split("=")[0]]
            given.setdefault(action.dest, [])
            pending = action if action.nargs != 0 and "=" not in value else None
        else:
            action, _ = _slot(positionals, count) or (None, 0)
            if action is not None:
                given.setdefault(action.dest, []).append(value)
            count += 1
    return given, ((pending, 0) if pending is not None else _slot(positionals, count))


def _slot(positionals: list[argparse.Action], index: int) -> _Slot | None:
    """The positional the index-th plain word belongs to, filled greedily as argparse does."""
    for action in positionals:
        if action.nargs in ("*", "+"):
            return action, index
        if index == 0:
            return action, 0
        index -= 1
    return None


def _metavar_words(action: argparse.Action) -> list[str]:
    """Lowercase words of a metavar are literal (``PATH|stop``, ``as NAME``); capitals are placeholders."""
    return re.findall(r"\b[a-z]+\b", action.metavar or "")


def _kind(command: str, action: argparse.Action) -> str | None:
    """What an argument holds, from its dest and metavar: new commands complete without code here."""
    if action.dest == "filter":
        return _FILTER_KIND.get(command)
    if action.dest in _KIND_BY_DEST:
        return _KIND_BY_DEST[action.dest]
    return "path" if re.search(r"PATH|FILE", action.metavar or "") else None


def _options(parser: argparse.ArgumentParser, given: _Given, word: str) -> list[_Value]:
    """The options not given yet, each by its longest spelling (``--help`` rather than ``-h``)."""
    found = []
    for action in parser._actions:
        if action.option_strings and action.dest not in given:
            option = max(action.option_strings, key=len)
            if option.startswith(word):
                found.append(_Value(option, meta=action.help))
    return found


def _paths(value: str, formats: Callable[[str], str | None] | None = None) -> list[_Value]:
    """Files and folders that complete ``value``; a folder ends in ``/``, so the next Tab goes inside it.
    Dotfiles only when the name typed starts with a dot, as in a Unix shell. With ``formats`` (``load``,
    ``save``), only the files it names a format for, that format shown beside each, and every folder (to
    go inside), a model folder marked as one."""
    typed = os.path.basename(value)
    found = []
    for c in PathCompleter(expanduser=True).get_completions(Document(value), CompleteEvent()):
        if c.display_text.startswith(".") and not typed.startswith("."):
            continue
        is_folder = c.display_text.endswith("/")
        full = value + c.text + ("/" if is_folder else "")
        meta = None
        if formats is not None:
            meta = _folder_format(full) if is_folder else formats(c.display_text)
            if meta is None and not is_folder:
                continue
        found.append(_Value(full, final=not is_folder, display=c.display_text, meta=meta))
    return found


def _folder_format(folder: str) -> str | None:
    form = FORMATS.for_folder(Path(os.path.expanduser(folder)))
    return f"{form.name} folder" if form is not None else None


# The files `load` and `save` complete: those whose suffix the registry reads, or writes.
_PATH_FORMATS: dict[str, Callable[[str], str | None]] = {"load": FORMATS.read_format, "save": FORMATS.write_format}


def _by_prefix_else_substring(word: str, names: Collection[str]) -> list[str]:
    """FILTER is a substring, so a word that begins no name completes the names that contain it."""
    found = [n for n in names if n.startswith(word)]
    lowered = word.lower()
    return found or [n for n in names if lowered in n.lower()]


def _shell_completion(value: _Value, raw: str) -> Completion:
    """Replace the raw word typed with the value, quoted when the word was or the value needs it; a
    folder's quote stays open, so typing or Tab goes on inside it."""
    quote = raw[0] if raw and raw[0] in _QUOTES else ""
    text = value.text
    if quote or not _SHELL_SAFE.fullmatch(text):
        quote = quote or ("'" if "'" not in text else '"')
        body = text.replace("\\", "\\\\").replace('"', '\\"') if quote == '"' else text
        text = quote + body + (quote if value.final else "")
    return Completion(text, -len(raw), display=value.display or value.text, display_meta=value.meta)


def _visible(prefix: str, names: Iterable[str]) -> list[str]:
    """Names that start with ``prefix``; ``_private`` ones only when the prefix starts with ``_``."""
    private = prefix.startswith("_")
    return [n for n in names if n.startswith(prefix) and (private or not n.startswith("_"))]


def _python_names(namespace: dict[str, Any]) -> list[str]:
    """The session's variables first (models among them), then keywords and builtins, each once."""
    return list(dict.fromkeys([*namespace, *keyword.kwlist, *dir(builtins)]))


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        with contextlib.redirect_stderr(io.StringIO()):
            yield
