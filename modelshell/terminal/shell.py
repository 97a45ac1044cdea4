"""The interactive prompt_toolkit loop over a Session. Thin: all the work is in ``Session.run_line``."""
from __future__ import annotations

import os
from pathlib import Path

from prompt_toolkit import PromptSession
from prompt_toolkit.auto_suggest import AutoSuggestFromHistory
from prompt_toolkit.document import Document
from prompt_toolkit.filters import emacs_insert_mode, is_searching, vi_insert_mode
from prompt_toolkit.history import FileHistory, InMemoryHistory, ThreadedHistory
from prompt_toolkit.key_binding import KeyBindings

from modelshell.terminal.completion import SessionCompleter, complete_now, menu_while_typing
from modelshell.core.lines import after_enter, dedent_continuation
from modelshell.terminal.prompt_look import ShellLexer, prompt_message, shell_style, toolbar_text
from modelshell.terminal.live import TerminalOutput
from modelshell.terminal.paging import Pager
from modelshell.terminal.progress import spinner
from modelshell.render import Printer
from modelshell.core.results import Message, Outcome
from modelshell.core.session import Session

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
    _block_bindings(bindings, session)
    return PromptSession(
        completer=SessionCompleter(session),
        complete_while_typing=menu_while_typing(session),  # a menu pops up by itself only after `name.` in Python
        history=_history(),
        auto_suggest=AutoSuggestFromHistory(),  # fish-style grey suggestion; the right arrow accepts it
        lexer=ShellLexer(session),
        style=shell_style(),
        include_default_pygments_style=False,
        key_bindings=bindings,
        bottom_toolbar=lambda: toolbar_text(session) if toolbar_shown[0] else None,
        multiline=True,  # a block is one buffer: every line can be edited before it runs; Enter decides
        prompt_continuation=_continuation,
    )


def _continuation(width: int, line_number: int, wrap_count: int) -> str:
    """``..> `` before each further line of a block, padded to the prompt's width so the code lines up;
    nothing before the rest of a line too long for the screen, which goes on at the left edge."""
    if wrap_count:
        return ""
    return CONTINUATION.rstrip().ljust(max(width - 1, 3)) + " "


def _block_bindings(bindings: KeyBindings, session: Session) -> None:
    """Enter in the one multi-line buffer, as ptpython and IPython have it: at the end of a complete input
    it runs the input (a block once its last line is left empty, which is then dropped); otherwise it
    starts a new line, indented for the block. In the middle of a block it splits the line there.
    Escape then Enter runs the buffer as it is."""

    @bindings.add("enter", filter=~is_searching)
    def _enter(event) -> None:
        buffer = event.current_buffer
        document = buffer.document
        if "\n" in document.text and not document.is_cursor_at_the_end:
            buffer.insert_text("\n" + document.leading_whitespace_in_current_line)
            return
        if document.text != dedent_continuation(document.text):  # `else:` where the body's lines start
            buffer.document = document = Document(dedent_continuation(document.text))
        inserted = after_enter(document.text, session.needs_more)
        if inserted is not None:
            buffer.insert_text(inserted)
            return
        *before, last = document.text.split("\n")
        if before and not last.strip():
            buffer.document = Document("\n".join(before))
        buffer.validate_and_handle()

    @bindings.add("escape", "enter", filter=~is_searching)
    def _run_as_it_is(event) -> None:
        event.current_buffer.validate_and_handle()


def run_interactive(session: Session) -> int:
    """Read, run and print until ``quit``, ``exit`` or Ctrl-D. Ctrl-C on the prompt clears the line."""
    printer = Printer()
    pager = Pager(printer.console)
    output = TerminalOutput()
    session.output = output  # a line's output goes to the terminal as it is written
    prompt = _prompt_session(session)
    printer.console.print("modelshell: `help` lists the commands; any other line is Python. F2 shows a toolbar; Ctrl-D quits.")
    while True:
        try:
            text = prompt.prompt(prompt_message(session))  # a whole block: see _block_bindings
        except KeyboardInterrupt:
            continue
        except EOFError:
            if _may_leave(session, printer):
                return 0
            continue
        outcome = _run_and_show(session, output, printer, pager, text)
        if outcome.exit_requested and _may_leave(session, printer):
            return 0


def _run_and_show(session: Session, output: TerminalOutput, printer: Printer, pager: Pager, text: str) -> Outcome:
    """One line, with a spinner while it runs long. Ctrl-C while it runs cancels it (the session turns
    the interrupt into an error line); one that comes in between, or while the output is drawn, only
    cuts the output short: the prompt comes back either way."""
    outcome = None
    try:
        words = session.command_words(text)
        with spinner(printer.console, text, words) as stop_spinner:
            output.stop_spinner = stop_spinner  # the line's own output takes the screen
            outcome = session.run_line(text)
        printer.show(outcome, pager.for_line(words))
        return outcome
    except KeyboardInterrupt:  # once the line has run, say how it ended, not only that the output was cut
        done = None if outcome is None else outcome.error or next(
            (r.text for r in outcome.results if isinstance(r, Message)), "done")
        printer.show(Outcome(ok=False, error="interrupted" if done is None else f"output cut short by Ctrl-C; {done}"))
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
