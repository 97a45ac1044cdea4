"""The pairing that issue 12 asked for, on small models built to hold each trap: a head after a global pool
whose input count is a multiple of the last conv's channels (DenseNet's case), an in-place activation
after a tapped layer, a swap of two same-shaped layers, `--map`, `--values` and `--partial`.

Every copy is checked against an independent forward pass (the frameworks' own calls), and the outputs
must differ before it.
"""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from modelshell.core.session import Session

L = keras.layers


def bind(**models) -> Session:
    session = Session()
    session.namespace.update(models)
    return session


def randomize(module: nn.Module, seed: int) -> nn.Module:
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for tensor in module.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(torch.from_numpy(rng.normal(0, 0.3, tuple(tensor.shape)).astype(np.float32)))
    return module.eval()


def torch_out(module: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return module(torch.from_numpy(x)).numpy()


def keras_out(model, x: np.ndarray) -> np.ndarray:
    return np.asarray(model(np.ascontiguousarray(x.transpose(0, 2, 3, 1)), training=False))


class TwoBranches(nn.Module):
    """Two 32-channel convs concatenated to 64 channels, pooled by a function (not a module), then a
    Linear(64, 5): 64 is twice the last conv's 32 channels, so a guess from shapes would permute rows."""

    def __init__(self) -> None:
        super().__init__()
        self.left = nn.Conv2d(3, 32, 3, padding=1)
        self.right = nn.Conv2d(3, 32, 3, padding=1)
        self.head = nn.Linear(64, 5)

    def forward(self, x):
        features = torch.cat([F.relu(self.left(x)), F.relu(self.right(x))], dim=1)
        return self.head(torch.flatten(F.adaptive_avg_pool2d(features, 1), 1))


def keras_two_branches():
    inp = keras.Input((6, 6, 3))
    left = L.Conv2D(32, 3, padding="same", activation="relu", name="left")(inp)
    right = L.Conv2D(32, 3, padding="same", activation="relu", name="right")(inp)
    pooled = L.GlobalAveragePooling2D()(L.Concatenate()([left, right]))
    return keras.Model(inp, L.Dense(5, name="head")(pooled))


def test_a_head_after_a_global_pool_gets_a_plain_transpose_both_ways():
    t, k = randomize(TwoBranches(), 1), keras_two_branches()
    x = np.random.default_rng(0).standard_normal((2, 3, 6, 6)).astype(np.float32)
    session = bind(t=t, k=k)
    plan = session.run_line("pair t k --json").results[0].data
    head = [p for p in plan["pairs"] if p["a"] == "head.weight"]
    assert head and head[0]["transform"] == ".T", plan["pairs"]
    assert np.abs(keras_out(k, x) - torch_out(t, x)).max() > 1e-2
    assert session.run_line("copy t k").ok
    np.testing.assert_allclose(keras_out(k, x), torch_out(t, x), atol=1e-5, rtol=1e-5)
    randomize(t, 2)
    assert np.abs(keras_out(k, x) - torch_out(t, x)).max() > 1e-2
    assert session.run_line("copy k t").ok
    np.testing.assert_allclose(torch_out(t, x), keras_out(k, x), atol=1e-5, rtol=1e-5)


class Chain(nn.Module):
    """Two Linear(8, 8) in a row: the same kind and shape, so only order (or names) tell them apart."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Linear(8, 8)
        self.second = nn.Linear(8, 8)

    def forward(self, x):
        return self.second(torch.tanh(self.first(x)))


def keras_chain():
    inp = keras.Input((8,))
    return keras.Model(inp, L.Dense(8, name="second")(L.Dense(8, activation="tanh", name="first")(inp)))


def test_a_deliberately_swapped_pair_of_same_shaped_layers_is_caught_by_the_check_after_the_copy():
    t, k = randomize(Chain(), 3), keras_chain()
    session = bind(t=t, k=k)
    swapped = session.run_line("copy t k --map first=second --map second=first")
    assert not swapped.ok
    assert "outputs differ" in swapped.error and "first ~ " in swapped.error, swapped.error
    right = session.run_line("copy t k")
    assert right.ok, right.error
    x = np.random.default_rng(1).standard_normal((4, 8)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(k(x, training=False)), torch_out(t, x), atol=1e-5, rtol=1e-5)


def test_map_pairs_what_the_user_says_and_checks_it_like_any_pair():
    t, k = randomize(Chain(), 4), keras_chain()
    session = bind(t=t, k=k)
    plan = session.run_line("pair t k --map 'f*=first' --json").results[0].data
    assert {"a": "first", "b": "first", "basis": "--map", "confirmed": "outputs"} in plan["layers"]
    bad = session.run_line("pair t k --map first=nowhere")
    assert not bad.ok and bad.error.startswith("--map first=nowhere: no layer or tensor of k matches 'nowhere'")
    wrong_kind = bind(t=t, c=keras.Sequential([keras.Input((4, 8)), L.LayerNormalization(name="norm")]))
    refused = wrong_kind.run_line("pair t c --map first=norm")
    assert not refused.ok and "no layout rule pairs first (Linear) with norm (LayerNormalization)" in refused.error


def test_values_says_which_tensors_already_agree():
    t, k = randomize(Chain(), 5), keras_chain()
    session = bind(t=t, k=k)
    before = session.run_line("pair t k --values --json").results[0].data
    assert all(p["max_abs_diff"] > 0 for p in before["pairs"])
    assert session.run_line("copy t k").ok
    after = session.run_line("pair t k --values --json").results[0].data
    assert all(p["max_abs_diff"] == 0 for p in after["pairs"])
    expected = np.abs(t.first.weight.detach().numpy().T - k.get_layer("first").kernel.numpy()).max()
    assert expected == 0


def test_verify_layers_agrees_on_a_model_with_in_place_activations():
    t = randomize(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(4, 4, 3, padding=1),
                                nn.ReLU(inplace=True)), 6)
    k = keras.Sequential([keras.Input((6, 6, 3)), L.Conv2D(4, 3, padding="same", activation="relu", name="a"),
                          L.Conv2D(4, 3, padding="same", activation="relu", name="b")])
    session = bind(t=t, k=k)
    assert session.run_line("copy t k").ok
    verified = session.run_line("verify t k --layers --json")
    assert verified.ok, verified.error
    data = verified.results[0].data
    assert [layer["ok"] for layer in data["layers"]] == [True, True]  # recorded before ReLU(inplace) ran


def test_a_strict_copy_refuses_a_head_of_another_size_and_partial_copies_the_rest():
    t = randomize(nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)), 7)
    k = keras.Sequential([keras.Input((4,)), L.Dense(6, activation="tanh", name="body"), L.Dense(4, name="head")])
    session = bind(t=t, k=k)
    head_before = k.get_layer("head").kernel.numpy().copy()
    strict = session.run_line("copy t k")
    assert not strict.ok and strict.error.startswith("cannot copy: 2.weight: 2 -> head: Linear <-> Dense")
    np.testing.assert_array_equal(k.get_layer("head").kernel.numpy(), head_before)
    partial = session.run_line("copy t k --partial")
    assert partial.ok, partial.error
    assert "every paired layer agrees" in partial.results[0].text
    np.testing.assert_allclose(k.get_layer("body").kernel.numpy(), t[0].weight.detach().numpy().T)
    np.testing.assert_array_equal(k.get_layer("head").kernel.numpy(), head_before)


class NotYetBuilt(keras.Model):
    """A subclassed Keras model makes its weights at its first call (transformers' TF classes too)."""

    def __init__(self) -> None:
        super().__init__(name="lazy")
        self.dense = L.Dense(8)

    def call(self, x):
        return self.dense(x)


def test_a_keras_model_not_yet_built_is_one_clear_line_and_models_still_lists_the_rest():
    session = bind(t=randomize(Chain(), 6), k=NotYetBuilt())
    for line in ("weights k", "pair t k", "copy t k"):
        outcome = session.run_line(line)
        assert not outcome.ok and outcome.error.startswith("lazy has no weights yet: Keras makes them at the "
                                                           "model's first call"), (line, outcome.error)
    listed = session.run_line("models --json")
    assert listed.ok, listed.error
    rows = {m["name"]: m["params"] for m in listed.results[0].data["models"]}
    assert rows == {"t": 144, "k": None}
