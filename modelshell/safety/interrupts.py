"""Take Ctrl-C only where a model is whole.

``copy`` is all or nothing because a failed or interrupted write restores what it changed (the backup of
each written tensor); a trace or a forward pass puts back what it set on the model (a layer's own
``call``, a module's hooks, training modes, the tensors ``functional_call`` swaps in). Python raises
KeyboardInterrupt at whatever bytecode the signal finds, so one Ctrl-C could land between a change and the
record that undoes it (a hook registered but not yet in the list that removes it), or at the top of the
``finally`` that undoes it, and a second one in the middle of the restoring, leaving the model half
restored (the copy interrupt test saw torch modules keep the tensors ``functional_call`` had swapped in,
which were views of the Keras model's memory, and Keras layers keep a wrapped ``call``).

So a change and its undoing both run inside ``deferred_interrupts``, where SIGINT is only noted: the body
takes it at the points it chooses (``check()``, between two tensors), and after the body it is raised,
when everything is back in place or complete. A long forward pass in the middle stays interruptible
through a gate (``interruptible``): while the model's own ``forward``/``call`` runs, the handler raises
at once, and it closes the gate itself before it raises, so the ``finally`` blocks that run after the
forward pass (the framework's and modelshell's) can be cut short by no second Ctrl-C. There is no
moment at which Python code that undoes a change can receive a KeyboardInterrupt.
"""
from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["Interrupts", "deferred_interrupts", "interruptible"]

_MISSING = object()


class Interrupts:
    """The SIGINTs noted while deferred; ``check()`` raises KeyboardInterrupt for one noted. While the
    gate is open (``opened``), one raises at once."""

    def __init__(self) -> None:
        self.pending = False
        self.open = False

    def note(self, signum, frame) -> None:
        if self.open:
            self.open = False  # before the raise: what runs after it (the undoing) is not interrupted again
            raise KeyboardInterrupt
        self.pending = True

    def check(self) -> None:
        if self.pending:
            self.pending = False
            raise KeyboardInterrupt

    def opened(self, call: Callable[..., Any]) -> Callable[..., Any]:
        """``call`` with the gate open while it runs: Ctrl-C interrupts it at once, and no longer once it
        has returned or raised."""
        def gated(*args: Any, **kwargs: Any) -> Any:
            self.check()
            self.open = True
            try:
                return call(*args, **kwargs)
            finally:
                self.open = False

        return gated


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


@contextlib.contextmanager
def interruptible(interrupts: Interrupts, owner: Any, method: str) -> Iterator[None]:
    """``owner.method`` (a model's ``forward`` or ``call``) opened to Ctrl-C on the instance for the body,
    then as it was (the class's, or what the instance had of its own). Used inside
    ``deferred_interrupts``: the framework's own entry and exit around the method (``__call__``, the
    tensors ``functional_call`` swaps in and back) stay where Ctrl-C is only noted. An object that takes
    no attribute of that name (a compiled TorchScript module) runs the body closed: Ctrl-C is taken after it."""
    own = vars(owner).get(method, _MISSING)
    try:
        object.__setattr__(owner, method, interrupts.opened(getattr(owner, method)))
    except (AttributeError, TypeError):
        yield
        return
    try:
        yield
    finally:
        if own is _MISSING:
            object.__delattr__(owner, method)
        else:
            object.__setattr__(owner, method, own)
