"""How the interactive prompt looks: the prompt with its model count, the bottom toolbar, colours for
the line being typed. Only the interactive shell uses this; scripts, pipes and transcripts never do.

The prompt is ``ms> `` with no model and ``ms[2]> `` with two, so a glance says what the session holds
(IPython's ``In [3]:`` habit); transcripts keep the bare ``ms> `` so that they read the same whatever was
loaded before a block.
"""
from __future__ import annotations

import sys
from typing import Callable

from prompt_toolkit.document import Document
from prompt_toolkit.formatted_text import StyleAndTextTuples
from prompt_toolkit.lexers import Lexer, PygmentsLexer
from prompt_toolkit.styles import Style, merge_styles, style_from_pygments_cls

from modelshell.core.session import Session

__all__ = ["prompt_message", "toolbar_text", "ShellLexer", "shell_style"]

# Frameworks whose versions the toolbar shows once something imported them (never imported for it).
_FRAMEWORKS = (("torch", "torch"), ("keras", "keras"), ("tensorflow", "TensorFlow"))


def prompt_message(session: Session) -> Callable[[], StyleAndTextTuples]:
    """The prompt, recomputed at every redraw so the count follows loads and Python bindings."""

    def message() -> StyleAndTextTuples:
        count = len(session.model_names())
        if not count:
            return [("class:prompt", "ms> ")]
        return [("class:prompt", "ms"), ("class:prompt.count", f"[{count}]"), ("class:prompt", "> ")]

    return message


def toolbar_text(session: Session) -> str:
    """The models and the frameworks loaded so far with their versions: what a bug report needs."""
    names = session.model_names()
    models = f"{len(names)} model{'' if len(names) == 1 else 's'}"
    if names:
        models += ": " + ", ".join(names[:4]) + (" ..." if len(names) > 4 else "")
    versions = [f"{label} {getattr(sys.modules[module], '__version__', '?')}"
                for module, label in _FRAMEWORKS if module in sys.modules]
    frameworks = " · ".join(versions) if versions else "no framework loaded yet"
    return f" {models} | {frameworks} | F2 hides this bar "


class ShellLexer(Lexer):
    """Commands in one colour and their flags in another; Python lines highlighted as Python."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self._python: PygmentsLexer | None = None  # built at the first Python text: not on the way to the prompt

    def lex_document(self, document: Document) -> Callable[[int], StyleAndTextTuples]:
        if not document.text.strip():
            return lambda number: []
        if not self.session.is_command(document.text):  # a bound name is Python
            return self._python_lexer().lex_document(document)
        models = set(self.session.model_names())
        lines = [_command_tokens(line, models) for line in document.lines]
        return lambda number: lines[number] if number < len(lines) else []


    def _python_lexer(self) -> PygmentsLexer:
        if self._python is None:
            from pygments.lexers.python import PythonLexer

            self._python = PygmentsLexer(PythonLexer)
        return self._python


def _command_tokens(line: str, models: set[str]) -> StyleAndTextTuples:
    tokens: StyleAndTextTuples = []
    first = True
    for word, space in _words(line):
        if first and word:
            style, first = "class:command", False
        elif word.startswith("-"):
            style = "class:flag"
        elif word in models:
            style = "class:model"
        else:
            style = ""
        tokens += [(style, word), ("", space)]
    return tokens


def _words(line: str) -> list[tuple[str, str]]:
    """``line`` cut into (word, following spaces) pairs that join back into exactly ``line``."""
    pairs, word, space = [], "", ""
    for char in line:
        if char.isspace():
            space += char
            continue
        if space:
            pairs.append((word, space))
            word, space = "", ""
        word += char
    pairs.append((word, space))
    return pairs


def shell_style() -> Style:
    """Pygments' "native" colours for Python (readable on dark and light terminals) and ours for commands."""
    from pygments.styles import get_style_by_name

    ours = Style.from_dict({
        "pygments": "fg:ansidefault",  # plain text in the terminal's own colour, not native's light grey
        "pygments.text.whitespace": "fg:ansidefault",  # not grey: the grey of history suggestions is theirs alone
        "prompt": "bold",
        "prompt.count": "bold ansicyan",
        "command": "bold ansicyan",
        "flag": "ansiyellow",
        "model": "ansigreen",
        "bottom-toolbar": "noreverse bg:#303030 #d0d0d0",
    })
    return merge_styles([style_from_pygments_cls(get_style_by_name("native")), ours])
