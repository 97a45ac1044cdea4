"""The gate of ``modelshell.safety.interrupts`` with real SIGINTs (``signal.raise_signal``) and a real
torch module run through ``torch.func.functional_call``: Ctrl-C interrupts the model's own ``forward``
at once, and no second one cuts short what runs after it (functional_call swapping the module's own
tensors back, modelshell's ``finally`` blocks). tests/test_copy_interrupts.py does the same at random
moments of whole copies; these are the moments it can only hit by chance.
"""
from __future__ import annotations

import signal
import sys

import numpy as np
import pytest
import torch

from modelshell.safety.interrupts import deferred_interrupts, interruptible


class _CtrlCInForward(torch.nn.Module):
    """A Linear whose forward gets a Ctrl-C halfway (after its first operation), inside a block whose
    ``finally`` puts something back, as a framework's own call does (Keras resets its call context in
    one); a second Ctrl-C comes while that ``finally`` runs."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(2, 2)
        self.reached_the_end = False
        self.put_back = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        try:
            y = self.linear(x)
            signal.raise_signal(signal.SIGINT)
            y = y * 2  # Python takes the signal at the first bytecode after it: never reached
            self.reached_the_end = True
            return y
        finally:
            signal.raise_signal(signal.SIGINT)
            self.put_back = True


@pytest.fixture()
def python_sigint():
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_in_the_forward_raises_there_and_a_second_one_waits_for_the_undoing(python_sigint):
    model = _CtrlCInForward()
    own = dict(model.named_parameters())
    substitutes = {name: torch.randn_like(t) for name, t in own.items()}
    undone = []
    with pytest.raises(KeyboardInterrupt):
        with deferred_interrupts() as interrupts:
            try:
                with interruptible(interrupts, model, "forward"):
                    torch.func.functional_call(model, substitutes, (torch.ones(1, 2),))
            finally:
                signal.raise_signal(signal.SIGINT)  # a second Ctrl-C while the undoing runs
                undone.append("hooks removed")
                undone.append("modes restored")
    assert not model.reached_the_end and model.put_back
    assert undone == ["hooks removed", "modes restored"]
    assert all(t is own[name] for name, t in model.named_parameters())  # functional_call swapped them back
    assert "forward" not in vars(model)


def test_ctrl_c_before_or_after_the_forward_is_taken_when_it_can_be(python_sigint):
    model = torch.nn.Linear(2, 2)
    ran = []
    with pytest.raises(KeyboardInterrupt):  # noted during the set-up: raised as the forward starts
        with deferred_interrupts() as interrupts:
            signal.raise_signal(signal.SIGINT)
            ran.append("set up")
            with interruptible(interrupts, model, "forward"):
                model(torch.ones(1, 2))
                ran.append("forward returned")
    assert ran == ["set up"]
    with pytest.raises(KeyboardInterrupt):  # after the forward returned: raised once the region is left
        with deferred_interrupts() as interrupts:
            with interruptible(interrupts, model, "forward"):
                model(torch.ones(1, 2))
            signal.raise_signal(signal.SIGINT)
            ran.append("undone")
    assert ran == ["set up", "undone"] and "forward" not in vars(model)


def test_a_method_the_instance_had_of_its_own_is_put_back(python_sigint):
    model = torch.nn.Linear(2, 2)
    own_forward = model.forward
    object.__setattr__(model, "forward", own_forward)  # as hooks of other libraries set it
    with deferred_interrupts() as interrupts, interruptible(interrupts, model, "forward"):
        assert vars(model)["forward"] is not own_forward
        model(torch.ones(1, 2))
    assert vars(model)["forward"] is own_forward


class _CtrlCInTheSwap(torch.nn.Module):
    """Two Linears; the second one's lookup gets one Ctrl-C when torch's ``functional_call`` looks it up
    to swap tensors in (``NamedMemberAccessor.get_submodule``), after the first one's were swapped: the
    moment the copy interrupt test hit by chance, when the module kept the substitutes (views of the
    other model's memory)."""

    def __init__(self) -> None:
        super().__init__()
        self.first = torch.nn.Linear(2, 2)
        self.second = torch.nn.Linear(2, 2)
        self.armed = False

    def __getattr__(self, name: str):
        if name == "second" and self.__dict__.get("armed") and sys._getframe(1).f_code.co_name == "get_submodule":
            self.__dict__["armed"] = False
            signal.raise_signal(signal.SIGINT)
        return super().__getattr__(name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(self.first(x))


def test_ctrl_c_inside_functional_calls_swap_leaves_the_module_its_own_tensors(python_sigint):
    from modelshell.frameworks.detect import wrap_object

    model = _CtrlCInTheSwap()
    own = {name: (t, t.detach().clone()) for name, t in model.named_parameters()}
    handle = wrap_object(model, "t")
    values = {name: np.full(tuple(t.shape), 7.0, np.float32) for name, (t, _) in own.items()}
    model.armed = True
    with pytest.raises(KeyboardInterrupt):
        handle.forward_with_taps([np.ones((1, 2), np.float32)], ["first"], values)
    assert not model.armed  # the Ctrl-C came, inside the swap
    for name, t in model.named_parameters():
        assert t is own[name][0] and torch.equal(t, own[name][1]), name
    assert not model.first._forward_hooks and "forward" not in vars(model) and model.training
