"""The interactive prompt_toolkit loop over a Session. Thin: all the work is in ``Session.run_line``."""
from __future__ import annotations

import os
from pathlib import Path

from prompt_toolkit import PromptSession
from prompt_toolkit.auto_suggest import AutoSuggestFromHistory
from prompt_toolkit.filters import emacs_insert_mode, vi_insert_mode
from prompt_toolkit.history import FileHistory, InMemoryHistory, ThreadedHistory
from prompt_toolkit.key_binding import KeyBindings

from modelshell.completion import SessionCompleter, complete_now, menu_while_typing
from modelshell.prompt_look import ShellLexer, prompt_message, shell_style, toolbar_text
from modelshell.progress import spinner
from modelshell.render import Printer
from modelshell.results import Outcome
from modelshell.session import Session

__all__ = ["run_interactive", "history_path", "PROMPT", "CONTINUATION"]

PROMPT = "ms> "
CONTINUATION = "..> "


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


def _prompt_session(session: Session) -> PromptSession:
    """The prompt: completion, history with grey suggestions, colours, and a toolbar that F2 shows."""
    bindings = KeyBindings()

    @bindings.add("f2")
    def _toggle_toolbar(event) -> None:
        toolbar_shown[0] = not toolbar_shown[0]

    @bindings.add("tab", filter=emacs_insert_mode | vi_insert_mode)  # where prompt_toolkit binds Tab
    def _complete(event) -> None:  # in the handler, on the text as it is now: see complete_now
        complete_now(event.current_buffer)

    toolbar_shown = [False]  # off at first: the screen is the user's; F2 shows models and framework versions
    return PromptSession(
        completer=SessionCompleter(session),
        complete_while_typing=menu_while_typing,  # a menu pops up by itself only after `name.` in Python
        history=_history(),
        auto_suggest=AutoSuggestFromHistory(),  # fish-style grey suggestion; the right arrow accepts it
        lexer=ShellLexer(session),
        style=shell_style(),
        include_default_pygments_style=False,
        key_bindings=bindings,
        bottom_toolbar=lambda: toolbar_text(session) if toolbar_shown[0] else None,
    )


def run_interactive(session: Session) -> int:
    """Read, run and print until ``quit``, ``exit`` or Ctrl-D. Ctrl-C on the prompt clears the line."""
    printer = Printer(interactive=True)
    prompt = _prompt_session(session)
    printer.console.print("modelshell: `help` lists the commands; any other line is Python. F2 shows a toolbar; Ctrl-D quits.")
    while True:
        try:
            text = prompt.prompt(prompt_message(session))
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
        outcome = _run_and_show(session, printer, text)
        if outcome.exit_requested and _may_leave(session, printer):
            return 0


def _run_and_show(session: Session, printer: Printer, text: str) -> Outcome:
    """One line, with a spinner while it runs long. Ctrl-C while it runs cancels it (the session turns
    the interrupt into an error line); one that comes in between, or while the output is drawn, only
    cuts the output short: the prompt comes back either way."""
    try:
        with spinner(printer.console, text):
            outcome = session.run_line(text)
        printer.show(outcome)
        return outcome
    except KeyboardInterrupt:
        printer.show(Outcome(ok=False, error="interrupted"))
        return Outcome(ok=False)


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
