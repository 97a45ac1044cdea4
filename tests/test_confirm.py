"""Interchangeable layer pairs decided by what they compute (issue 12, item 4).

Two models that run two same-shaped layers in the opposite order, under names that say nothing: order
pairs them crosswise and every shape fits. The pairing must run the destination with the converted values
(leaving both models untouched), find that the outputs part, try the other assignment and keep it; `pair`
says per layer how it was confirmed, and what nothing could confirm is never copied in silence.
Every copy is checked against the frameworks' own forward passes, and the outputs differ before it.
"""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import torch
from torch import nn

from modelshell.frameworks.keras import KerasModel
from modelshell.frameworks.torch import TorchModule
from modelshell.transfer.confirm import confirm
from test_porting import bind, randomize, torch_out

L = keras.layers


def randomize_keras(model, seed: int):
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        variable.assign(rng.normal(0, 0.5, tuple(variable.shape)).astype(np.float32))
    return model


class Gated(nn.Module):
    """``out(tanh(left(x)) * sigmoid(right(x)))``: left runs first."""

    def __init__(self) -> None:
        super().__init__()
        self.left = nn.Linear(8, 8)
        self.right = nn.Linear(8, 8)
        self.out = nn.Linear(8, 4)

    def forward(self, x):
        return self.out(torch.tanh(self.left(x)) * torch.sigmoid(self.right(x)))


def keras_gated(sigmoid_gate: bool = True):
    """The same function, the gate (torch's ``right``) computed first, names that share nothing."""
    inp = keras.Input((8,))
    gate = L.Dense(8, activation="sigmoid" if sigmoid_gate else "relu", name="gate")(inp)
    value = L.Dense(8, activation="tanh", name="value")(inp)
    return keras.Model(inp, L.Dense(4, name="mix")(L.Multiply()([gate, value])))


def keras_out(model, x):
    return np.asarray(model(x, training=False))


X = np.random.default_rng(7).standard_normal((5, 8)).astype(np.float32)


def test_the_two_models_run_the_interchangeable_layers_in_opposite_orders():
    """The premise: the trace pairs `left` with `gate` by order, which is wrong."""
    t, k = TorchModule(randomize(Gated(), 1), "t"), KerasModel(keras_gated(), "k")
    torch_calls, keras_calls = t.trace([X]), k.trace([X])
    assert torch_calls["left"].order < torch_calls["right"].order
    assert keras_calls["gate"].order < keras_calls["value"].order


def test_the_run_decides_the_pairing_both_ways_and_leaves_both_models_untouched():
    t, k = randomize(Gated(), 1), randomize_keras(keras_gated(), 2)
    before_t = {n: v.clone() for n, v in t.state_dict().items()}
    before_k = [v.numpy().copy() for v in k.weights]
    for a, b in ((TorchModule(t, "t"), KerasModel(k, "k")), (KerasModel(k, "k"), TorchModule(t, "t"))):
        found = confirm(a, b, "a", "b")
        pairs = {(m.a_path, m.b_path): m.confirmed for m in found.plan.matches}
        if a.framework == "torch":
            assert pairs == {("left", "value"): "outputs", ("right", "gate"): "outputs", ("out", "mix"): "outputs"}
        else:
            assert pairs == {("value", "left"): "outputs", ("gate", "right"): "outputs", ("mix", "out"): "outputs"}
        assert found.divergence is None and found.trials >= 2  # the order's pairing was run first, and parted
    assert all(torch.equal(before_t[n], v) for n, v in t.state_dict().items())
    assert all(np.array_equal(b, v.numpy()) for b, v in zip(before_k, k.weights))


def test_copy_takes_the_confirmed_pairing_and_is_right_both_ways():
    t, k = randomize(Gated(), 3), randomize_keras(keras_gated(), 4)
    session = bind(t=t, k=k)
    assert np.abs(keras_out(k, X) - torch_out(t, X)).max() > 1e-2
    done = session.run_line("copy t k")
    assert done.ok, done.error
    assert "outputs agree" in done.results[0].text
    np.testing.assert_allclose(keras_out(k, X), torch_out(t, X), atol=1e-5, rtol=1e-5)
    np.testing.assert_array_equal(k.get_layer("gate").kernel.numpy(), t.right.weight.detach().numpy().T)
    randomize(t, 5)
    assert np.abs(keras_out(k, X) - torch_out(t, X)).max() > 1e-2
    back = session.run_line("copy k t")
    assert back.ok, back.error
    np.testing.assert_allclose(torch_out(t, X), keras_out(k, X), atol=1e-5, rtol=1e-5)


def test_pair_shows_how_each_layer_pair_was_confirmed():
    session = bind(t=randomize(Gated(), 1), k=keras_gated())
    data = session.run_line("pair t k --json").results[0].data
    assert {(x["a"], x["b"], x["confirmed"]) for x in data["layers"]} == {
        ("left", "value", "outputs"), ("right", "gate", "outputs"), ("out", "mix", "outputs")}
    text = session.run_line("pair t k").results[0]
    assert "layer pairs confirmed by outputs: 3, by the only rule that fits: 0, not confirmed: 0" in text.footer
    assert text.columns[-1].header == "transform"  # all proven alike: the footer says it once


def test_pair_shows_per_row_how_it_was_confirmed_where_that_differs():
    session = bind(t=randomize(Gated(), 6), k=keras_gated(sigmoid_gate=False))
    table = session.run_line("pair t k").results[0]
    assert table.columns[-1].header == "confirmed"
    proofs = {row[0].split(".")[0]: row[-1] for row in table.rows}
    assert proofs["left"] == "NO" and proofs["right"] == "NO", proofs


def test_models_that_compute_differently_leave_the_interchangeable_pairs_unconfirmed_and_say_so():
    """The Keras gate uses relu, not sigmoid: no assignment agrees, the copy is written, fails its line,
    and names the pairs nothing confirmed."""
    t, k = randomize(Gated(), 6), keras_gated(sigmoid_gate=False)
    session = bind(t=t, k=k)
    data = session.run_line("pair t k --json").results[0].data
    assert {x["confirmed"] for x in data["layers"] if x["a"] in ("left", "right")} == {None}
    copied = session.run_line("copy t k")
    assert not copied.ok
    assert "outputs differ" in copied.error and "not confirmed by any run" in copied.error, copied.error


def test_a_copy_from_a_file_that_cannot_run_warns_of_pairs_only_order_decided(tmp_path):
    """A weights-only source cannot be run: the pairs only order decided are copied with a warning that
    names them (and `--map` pins them), never in silence."""
    t, k = randomize(Gated(), 8), keras_gated()
    torch.save(t.state_dict(), tmp_path / "gated.pt")
    session = bind(k=k)
    assert session.run_line(f"load {tmp_path / 'gated.pt'} as sd").ok
    copied = session.run_line("copy sd k")
    assert copied.ok, copied.error
    text = copied.results[0].text
    assert "interchangeable layer pairs were decided by their order alone and not confirmed" in text, text
    pinned = session.run_line("copy sd k --map left=value --map right=gate")
    assert pinned.ok and "not confirmed" not in pinned.results[0].text, pinned.results[0].text


def test_no_verify_runs_nothing_and_says_what_it_did_not_confirm():
    t, k = randomize(Gated(), 9), keras_gated()
    session = bind(t=t, k=k)
    copied = session.run_line("copy t k --no-verify")
    assert copied.ok
    assert "not confirmed by running them (--no-verify)" in copied.results[0].text


def test_the_check_after_a_copy_is_the_confirming_run_once_the_tensors_read_back_as_run(monkeypatch):
    """The confirmation ran the destination with the very values the copy writes, so after the write the
    check reads every tensor back instead of running both models again: one run of each model per copy."""
    import modelshell.transfer.verify as verify

    runs = []
    original = verify._run
    monkeypatch.setattr(verify, "_run", lambda handle, *args, **kwargs: runs.append(handle.framework)
                        or original(handle, *args, **kwargs))
    t, k = randomize(Gated(), 10), randomize_keras(keras_gated(), 11)
    session = bind(t=t, k=k)
    done = session.run_line("copy t k")
    assert done.ok and "outputs agree" in done.results[0].text, done.error
    np.testing.assert_allclose(keras_out(k, X), torch_out(t, X), atol=1e-5, rtol=1e-5)
    # torch once for the reference; Keras once per assignment tried (the order's parts, the other agrees)
    assert runs.count("torch") == 1 and runs.count("keras") == 2, runs


def test_a_write_that_is_not_what_the_check_ran_with_fails_the_copy_and_names_the_tensor(monkeypatch):
    """A fault in the write (injected into modelshell's own Keras adapter: one kernel written transposed,
    a bug the confirming run, made before the write, cannot see) is caught by the read-back."""
    t, k = randomize(Gated(), 12), randomize_keras(keras_gated(), 13)
    original = KerasModel.write

    def faulty(self, values):
        name = next(n for n in values if n.startswith("gate") and "kernel" in n)
        values[name] = np.ascontiguousarray(np.asarray(values[name]).T)
        return original(self, values)

    monkeypatch.setattr(KerasModel, "write", faulty)
    copied = bind(t=t, k=k).run_line("copy t k")
    assert not copied.ok
    assert "gate" in copied.error and "does not hold the value the check ran with" in copied.error, copied.error
