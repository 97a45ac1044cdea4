"""The interactive prompt_toolkit loop over a Session. Thin: all the work is in ``Session.run_line``."""
from __future__ import annotations

import os
from pathlib import Path

from prompt_toolkit import PromptSession
from prompt_toolkit.auto_suggest import AutoSuggestFromHistory
from prompt_toolkit.completion import Completer, Completion
from prompt_toolkit.history import FileHistory, InMemoryHistory, ThreadedHistory

from modelshell.commands import COMMANDS
from modelshell.render import Printer
from modelshell.session import Session

__all__ = ["run_interactive", "history_path", "PROMPT", "CONTINUATION"]

PROMPT = "ms> "
CONTINUATION = "..> "


class _SessionCompleter(Completer):
    """Command names first on a line, model names after a command."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def get_completions(self, document, complete_event):
        before = document.text_before_cursor
        words = before.split()
        word = document.get_word_before_cursor(WORD=True)
        if len(words) <= 1 and not before.endswith(" "):
            candidates = list(COMMANDS) + self.session.model_names()
        elif words and words[0] in COMMANDS:
            candidates = self.session.model_names()
        else:
            return
        for candidate in candidates:
            if candidate.startswith(word):
                yield Completion(candidate, start_position=-len(word))


def history_path() -> Path:
    """Where input history is kept across sessions: ``$XDG_DATA_HOME/modelshell/history``."""
    data_home = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(data_home) / "modelshell" / "history"


def _history():
    """History in a file (read in a thread, so a long one does not delay the prompt); in memory only when
    the folder cannot be made, so a read-only home never stops the shell."""
    path = history_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(exist_ok=True)
    except OSError:
        return InMemoryHistory()
    return ThreadedHistory(FileHistory(str(path)))


def run_interactive(session: Session) -> int:
    """Read, run and print until ``quit``, ``exit`` or Ctrl-D. Ctrl-C on the prompt clears the line."""
    printer = Printer(interactive=True)
    prompt = PromptSession(
        completer=_SessionCompleter(session),
        complete_while_typing=False,
        history=_history(),
        auto_suggest=AutoSuggestFromHistory(),  # fish-style grey suggestion; the right arrow accepts it
    )
    printer.console.print("modelshell: `help` lists the commands; any other line is Python. Ctrl-D quits.")
    while True:
        try:
            text = prompt.prompt(PROMPT)
            while session.needs_more(text):
                more = prompt.prompt(CONTINUATION)
                if not more.strip():
                    break
                text += "\n" + more
        except KeyboardInterrupt:
            continue
        except EOFError:
            if _may_leave(session, printer):
                return 0
            continue
        outcome = session.run_line(text)
        printer.show(outcome)
        if outcome.exit_requested and _may_leave(session, printer):
            return 0


def _may_leave(session: Session, printer: Printer) -> bool:
    """True when no model was changed since it was loaded and not saved, or the user says to leave anyway.
    Only the interactive shell asks: a `run` script has no one to answer."""
    unsaved = session.unsaved()
    if not unsaved:
        return True
    count = f"{len(unsaved)} model{'s' if len(unsaved) > 1 else ''}"
    question = f"{count} changed and not saved: {', '.join(unsaved)}. Leave anyway? [y/N] "
    try:
        answer = PromptSession().prompt(question)
    except (KeyboardInterrupt, EOFError):
        answer = ""
    if answer.strip().lower() in ("y", "yes"):
        return True
    printer.console.print("staying; `save NAME PATH` keeps a model")
    return False
