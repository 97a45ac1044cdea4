"""The interactive prompt_toolkit loop over a Session. Thin: all the work is in ``Session.run_line``."""
from __future__ import annotations

from prompt_toolkit import PromptSession
from prompt_toolkit.completion import Completer, Completion

from modelshell.commands import COMMANDS
from modelshell.render import Printer
from modelshell.session import Session

__all__ = ["run_interactive", "PROMPT", "CONTINUATION"]

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


def run_interactive(session: Session) -> int:
    """Read, run and print until ``quit``, ``exit`` or Ctrl-D. Ctrl-C on the prompt clears the line."""
    printer = Printer(interactive=True)
    prompt = PromptSession(completer=_SessionCompleter(session), complete_while_typing=False)
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
            return 0
        outcome = session.run_line(text)
        printer.show(outcome)
        if outcome.exit_requested:
            return 0
