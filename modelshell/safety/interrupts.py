"""Take Ctrl-C only where a model is whole.

``copy`` is all or nothing because a failed or interrupted write restores what it changed (the backup of
each written tensor); a trace or a forward pass puts back what it set on the model (a layer's own
``call``, a module's hooks and training modes). Python raises KeyboardInterrupt at whatever bytecode the
signal finds, so one Ctrl-C could land between a change and the record that undoes it (a hook
registered but not yet in the list that removes it), and a second one in the middle of the restoring,
leaving the model half restored. Inside ``deferred_interrupts`` SIGINT is only noted: the body takes it
at the points it chooses (``check()``, between two tensors), and after the body it is raised, when
everything is back in place or complete.
"""
from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

__all__ = ["Interrupts", "deferred_interrupts"]


class Interrupts:
    """The SIGINTs noted while deferred; ``check()`` raises KeyboardInterrupt for one noted."""

    def __init__(self) -> None:
        self.pending = False

    def note(self, signum, frame) -> None:
        self.pending = True

    def check(self) -> None:
        if self.pending:
            self.pending = False
            raise KeyboardInterrupt


@contextlib.contextmanager
def deferred_interrupts() -> Iterator[Interrupts]:
    """Run the body with SIGINT noted instead of raised; afterwards an interrupt the body did not take is
    handed to the handler that was there before (Python's raises KeyboardInterrupt). Outside the main
    thread, where Python delivers no signals, the body just runs."""
    interrupts = Interrupts()
    if threading.current_thread() is not threading.main_thread():
        yield interrupts
        return
    previous = signal.signal(signal.SIGINT, interrupts.note)
    try:
        yield interrupts
    finally:
        signal.signal(signal.SIGINT, previous)
    if interrupts.pending and callable(previous):
        previous(signal.SIGINT, None)
