"""Pairing that survives differences between the two models, each case proven by a copy and the test's
own forward passes.

Real models differ from their twins: a Keras subclass declares its layers in another order, blocks nest,
layers are renamed, one side has an extra layer, tf-keras names list items ``layer_._0``, and one side may
be a weights-only file with no architecture at all. For each case both models get independent random
weights, the outputs must differ before ``copy`` and agree to 1e-5 after it. Outputs are computed here
(torch ``eval()`` on channels-first input, Keras ``training=False`` on its channels-last transpose), never
by modelshell, so a bug shared by ``copy`` and ``verify`` cannot hide.
"""
from __future__ import annotations

import os
import re

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from typing import Any

import keras
import numpy as np
import pytest
import safetensors.torch
import tf_keras
import torch
from torch import nn

from modelshell.core.session import Session
from twins import randomize_torch_state

L = keras.layers
TOL = dict(atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------------------------------
# Weights, forward passes and the session, done here and not through modelshell


def randomize_torch(model: nn.Module, seed: int, scale: float = 0.3) -> nn.Module:
    """Every float parameter and buffer random, from ``seed``; the model in eval mode."""
    randomize_torch_state(model, np.random.default_rng(seed), scale, count=3)
    return model.eval()


def randomize_keras(model: Any, seed: int, scale: float = 0.3) -> Any:
    """Keras 3 or tf-keras: every variable random, biases and batch-norm statistics included."""
    rng = np.random.default_rng(seed)
    for v in model.weights:
        shape = tuple(int(d) for d in v.shape)
        name = getattr(v, "path", None) or v.name
        if "moving_variance" in name:
            v.assign(rng.uniform(0.5, 1.5, shape).astype(np.float32))
        else:
            v.assign(rng.normal(0.0, scale, shape).astype(np.float32))
    return model


def torch_out(model: nn.Module, x: np.ndarray) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def keras_out(model: Any, x: np.ndarray) -> np.ndarray:
    """``x`` is channels-first, as torch takes it; a 4-d input goes to Keras as NHWC."""
    if x.ndim == 4:
        x = x.transpose(0, 2, 3, 1)
    return np.asarray(model(x, training=False))


def images(channels: int = 3, size: int = 8, batch: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, channels, size, size)).astype(np.float32)


def keras_values(model: Any) -> list[np.ndarray]:
    return [np.array(v.numpy()) for v in model.weights]


def torch_values(model: nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def bind(**models: Any) -> Session:
    s = Session()
    s.namespace.update(models)
    return s


def run_ok(s: Session, line: str) -> Any:
    outcome = s.run_line(line)
    assert outcome.ok, f"{line}: {outcome.error}"
    return outcome.results[0].data if outcome.results else None


def pairs_by_name(plan: dict) -> dict[str, str]:
    return {p["a"]: p["b"] for p in plan["pairs"] if isinstance(p["a"], str)}


def assert_copy_makes_equal(s: Session, src: str, dst: str, out_src, out_dst, x: np.ndarray,
                            options: str = "") -> dict:
    before = out_dst(x)
    expected = out_src(x)
    assert np.abs(before - expected).max() > 1e-2, "the twins must differ before the copy"
    data = run_ok(s, f"copy {src} {dst} --json {options}".rstrip())
    np.testing.assert_allclose(out_dst(x), expected, **TOL)
    return data


def assert_copies_both_ways(s: Session, t: nn.Module, k: Any, x: np.ndarray, reseed: int) -> None:
    """``copy t k`` makes k compute what t does; then t, made different again, gets k's weights back."""
    assert_copy_makes_equal(s, "t", "k", lambda x: torch_out(t, x), lambda x: keras_out(k, x), x)
    randomize_torch(t, reseed)
    assert_copy_makes_equal(s, "k", "t", lambda x: keras_out(k, x), lambda x: torch_out(t, x), x)


# ----------------------------------------------------------------------------------------------------
# A Keras subclass that declares its layers in another order than the torch module


class TorchConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3)
        self.conv2 = nn.Conv2d(8, 8, 3)
        self.fc = nn.Linear(8 * 4 * 4, 8)

    def forward(self, x):
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.fc(torch.flatten(x, 1))


class KerasConvNet(keras.Model):
    """The same network; attributes created fc, conv2, conv1 (so ``model.layers`` lists them that way)."""

    def __init__(self) -> None:
        super().__init__(name="keras_conv_net")
        self.fc = L.Dense(8, name="fc")
        self.conv2 = L.Conv2D(8, 3, activation="relu", name="conv2")
        self.conv1 = L.Conv2D(8, 3, activation="relu", name="conv1")
        self.flatten = L.Flatten()

    def call(self, x):
        return self.fc(self.flatten(self.conv2(self.conv1(x))))


def keras_conv_net(seed: int) -> KerasConvNet:
    model = KerasConvNet()
    model(np.zeros((1, 8, 8, 3), np.float32))  # a subclass has no weights until it is called
    return randomize_keras(model, seed)


def test_subclassed_keras_model_pairs_by_name_whatever_its_attribute_order():
    t, k = randomize_torch(TorchConvNet(), 1), keras_conv_net(2)
    assert [layer.name for layer in k.layers][:3] == ["fc", "conv2", "conv1"]  # the premise of the test
    s = bind(t=t, k=k)
    plan = run_ok(s, "pair t k --json")
    assert pairs_by_name(plan) == {
        "conv1.weight": "keras_conv_net/conv1/kernel", "conv1.bias": "keras_conv_net/conv1/bias",
        "conv2.weight": "keras_conv_net/conv2/kernel", "conv2.bias": "keras_conv_net/conv2/bias",
        "fc.weight": "keras_conv_net/fc/kernel", "fc.bias": "keras_conv_net/fc/bias",
    }
    assert plan["missing"] == plan["unexpected"] == plan["mismatched"] == []
    x = images()
    assert_copies_both_ways(s, t, k, x, reseed=3)


# ----------------------------------------------------------------------------------------------------
# Nested blocks: a torch Sequential inside a module; Keras Sequential and functional sub-models


class TorchNested(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.block = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8, eps=1e-3), nn.ReLU(),
                                   nn.Conv2d(8, 16, 1))
        self.tail = nn.Sequential(nn.Linear(16, 16), nn.Tanh(), nn.Sequential(nn.Linear(16, 5)))

    def forward(self, x):
        x = self.block(torch.relu(self.stem(x)))
        return self.tail(x.mean((2, 3)))


def keras_nested(seed: int) -> keras.Model:
    block = keras.Sequential([L.Conv2D(8, 3, padding="same"), L.BatchNormalization(), L.ReLU(), L.Conv2D(16, 1)],
                             name="block")
    tail_in = keras.Input((16,))
    inner = keras.Sequential([L.Dense(5)], name="inner")
    tail = keras.Model(tail_in, inner(L.Dense(16, activation="tanh")(tail_in)), name="tail")
    inp = keras.Input((8, 8, 3))
    x = block(L.Conv2D(8, 3, padding="same", activation="relu", name="stem")(inp))
    return randomize_keras(keras.Model(inp, tail(L.GlobalAveragePooling2D()(x))), seed)


def test_nested_blocks_pair_through_every_level():
    t, k = randomize_torch(TorchNested(), 4), keras_nested(5)
    s = bind(t=t, k=k)
    plan = run_ok(s, "pair t k --json")
    pairs = pairs_by_name(plan)
    # Keras numbers unnamed layers per process (conv2d_7), so only the structure of the names is fixed; a
    # variable's path is where it was built ("inner/dense/kernel"), not where its layer sits in the tree.
    assert re.fullmatch(r"block/conv2d(_\d+)?/kernel", pairs["block.0.weight"])  # a Sequential in a functional
    assert re.fullmatch(r"block/batch_normalization(_\d+)?/moving_variance", pairs["block.1.running_var"])
    assert re.fullmatch(r"block/conv2d_\d+/kernel", pairs["block.3.weight"])
    assert pairs["block.3.weight"] != pairs["block.0.weight"]
    assert re.fullmatch(r"dense(_\d+)?/kernel", pairs["tail.0.weight"])  # a Dense in the functional sub-model
    assert re.fullmatch(r"inner/dense(_\d+)?/kernel", pairs["tail.2.0.weight"])  # a Sequential in that one
    assert plan["missing"] == plan["unexpected"] == plan["mismatched"] == []
    x = images()
    assert_copies_both_ways(s, t, k, x, reseed=6)


# ----------------------------------------------------------------------------------------------------
# Renamed layers and an extra layer on each side


class TorchWithAux(nn.Module):
    """``aux`` (an auxiliary head the Keras twin lacks) is registered between the two convolutions."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.aux = nn.Linear(8, 3)
        self.c2 = nn.Conv2d(8, 16, 3, padding=1)
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        x = torch.relu(self.c2(torch.relu(self.c1(x))))
        return self.fc(x.mean((2, 3)))


def keras_with_extra_bn(seed: int) -> keras.Model:
    """Every layer renamed, and a BatchNormalization torch lacks (left at its identity initial values)."""
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="encoder_conv_a")(inp)
    x = L.Conv2D(16, 3, padding="same", name="encoder_conv_b")(x)
    x = L.BatchNormalization(epsilon=1e-12, name="extra_bn")(x)
    x = L.GlobalAveragePooling2D()(L.ReLU()(x))
    model = keras.Model(inp, L.Dense(5, name="classifier")(x))
    bn = model.get_layer("extra_bn")
    randomize_keras(model, seed)
    for v, value in zip(bn.weights, (1.0, 0.0, 0.0, 1.0)):  # gamma, beta, mean, variance: identity
        v.assign(np.full(tuple(v.shape), value, np.float32))
    return model


def test_renamed_layers_and_extra_layers_are_reported_and_the_rest_copied():
    t, k = randomize_torch(TorchWithAux(), 7), keras_with_extra_bn(8)
    s = bind(t=t, k=k)
    plan = run_ok(s, "pair t k --json")
    assert pairs_by_name(plan) == {
        "c1.weight": "encoder_conv_a/kernel", "c1.bias": "encoder_conv_a/bias",
        "c2.weight": "encoder_conv_b/kernel", "c2.bias": "encoder_conv_b/bias",
        "fc.weight": "classifier/kernel", "fc.bias": "classifier/bias",
    }
    assert plan["unexpected"] == [{"name": n, "reason": "no layer of k pairs with aux (Linear)"}
                                  for n in ("aux.weight", "aux.bias")]
    assert [p["name"] for p in plan["missing"]] == [f"extra_bn/{r}" for r in
                                                    ("gamma", "beta", "moving_mean", "moving_variance")]
    assert all(p["reason"] == "no layer of t pairs with extra_bn (BatchNormalization)" for p in plan["missing"])
    assert plan["mismatched"] == []

    bn_before = [np.array(v.numpy()) for v in k.get_layer("extra_bn").weights]
    strict = s.run_line("copy t k")  # strict by default: the unpaired tensors refuse the copy, and say so
    assert not strict.ok and "6 tensors do not pair: extra_bn/gamma (dst)" in strict.error
    assert "--partial copies what pairs" in strict.error
    x = images()
    data = assert_copy_makes_equal(s, "t", "k", lambda x: torch_out(t, x), lambda x: keras_out(k, x), x,
                                   "--partial")
    assert data["tensors"] == 6 and [p["name"] for p in data["missing"]] == [p["name"] for p in plan["missing"]]
    for before, v in zip(bn_before, k.get_layer("extra_bn").weights):
        np.testing.assert_array_equal(v.numpy(), before)  # nothing from torch: kept as it was

    # The other way, the same layers are extra: aux gets nothing and keeps its values.
    randomize_torch(t, 9)
    aux_before = torch_values(t.aux)
    back = run_ok(s, "pair k t --json")
    assert [p["name"] for p in back["missing"]] == ["aux.weight", "aux.bias"]
    assert [p["name"] for p in back["unexpected"]] == [p["name"] for p in plan["missing"]]
    assert_copy_makes_equal(s, "k", "t", lambda x: keras_out(k, x), lambda x: torch_out(t, x), x, "--partial")
    for name, value in torch_values(t.aux).items():
        np.testing.assert_array_equal(value, aux_before[name])


# ----------------------------------------------------------------------------------------------------
# tf-keras (Keras 2) names ``layer_._0`` vs torch ``layer.0``, declared in another order


class TorchLayerList(nn.Module):
    """``head`` is registered before the list, so registration order pairs it with the wrong Dense; all
    three are Linear(8, 8), so only the names can tell them apart (the shapes all fit)."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(8, 8)
        self.layer = nn.ModuleList([nn.Linear(8, 8), nn.Linear(8, 8)])

    def forward(self, x):
        for layer in self.layer:
            x = torch.tanh(layer(x))
        return self.head(x)


def tf_keras_layer_list(seed: int):
    model = tf_keras.Sequential([
        tf_keras.Input((8,)),
        tf_keras.layers.Dense(8, activation="tanh", name="layer_._0"),
        tf_keras.layers.Dense(8, activation="tanh", name="layer_._1"),
        tf_keras.layers.Dense(8, name="head"),
    ])
    return randomize_keras(model, seed)


def test_tf_keras_list_names_pair_with_torch_module_list_names():
    t, k = randomize_torch(TorchLayerList(), 10), tf_keras_layer_list(11)
    assert [v.name for v in k.weights][:2] == ["layer_._0/kernel:0", "layer_._0/bias:0"]  # Keras 2 names
    s = bind(t=t, k=k)
    plan = run_ok(s, "pair t k --json")
    assert pairs_by_name(plan) == {
        "head.weight": "head/kernel", "head.bias": "head/bias",
        "layer.0.weight": "layer_._0/kernel", "layer.0.bias": "layer_._0/bias",
        "layer.1.weight": "layer_._1/kernel", "layer.1.bias": "layer_._1/bias",
    }
    x = np.random.default_rng(1).standard_normal((3, 8)).astype(np.float32)
    assert_copies_both_ways(s, t, k, x, reseed=12)


# ----------------------------------------------------------------------------------------------------
# Weights-only files on either side


class TorchFileNet(nn.Module):
    """Conv, batch norm, flatten, linear: the file lists batch norm before conv (alphabetical in a
    safetensors file and a Keras 3 .weights.h5), and the linear needs the flatten permutation."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8, eps=1e-3)
        self.fc = nn.Linear(8 * 4 * 4, 5)

    def forward(self, x):
        return self.fc(torch.flatten(torch.relu(self.bn(self.conv(x))), 1))


def keras_file_net(seed: int) -> keras.Model:
    return randomize_keras(keras.Sequential([
        keras.Input((4, 4, 3)), L.Conv2D(8, 3, padding="same", name="conv"), L.BatchNormalization(name="bn"),
        L.ReLU(), L.Flatten(), L.Dense(5, name="fc"),
    ], name="knet"), seed)


@pytest.fixture
def file_twins():
    return randomize_torch(TorchFileNet(), 13), keras_file_net(14), images(size=4)


def test_safetensors_of_a_torch_model_copies_into_keras(file_twins, tmp_path):
    t, k, x = file_twins
    safetensors.torch.save_file(t.state_dict(), str(tmp_path / "t.safetensors"))
    s = bind(k=k)
    run_ok(s, f"load {tmp_path / 't.safetensors'} as weights")
    plan = run_ok(s, "pair weights k --json")
    assert plan["missing"] == plan["unexpected"] == plan["mismatched"] == []
    by_a = {p["a"]: p for p in plan["pairs"] if isinstance(p["a"], str)}
    assert by_a["fc.weight"]["transform"].startswith("flatten-permute")  # a file has no layers, still caught
    assert by_a["conv.weight"]["b"] == "knet/conv/kernel"
    assert_copy_makes_equal(s, "weights", "k", lambda x: torch_out(t, x), lambda x: keras_out(k, x), x)


def test_torch_model_copies_into_a_keras_weights_file_that_keras_then_loads(file_twins, tmp_path):
    t, k, x = file_twins
    k.save_weights(str(tmp_path / "x.weights.h5"))
    original = (tmp_path / "x.weights.h5").read_bytes()
    s = bind(t=t)
    run_ok(s, f"load {tmp_path / 'x.weights.h5'} as x")
    plan = run_ok(s, "pair t x --json")
    assert plan["missing"] == plan["unexpected"] == plan["mismatched"] == []
    assert pairs_by_name(plan)["conv.weight"] == "layers/conv2d/vars/0"  # by kind, though listed after bn
    run_ok(s, "copy t x")
    run_ok(s, f"save x {tmp_path / 'out.weights.h5'}")
    assert (tmp_path / "x.weights.h5").read_bytes() == original  # the loaded file itself is never touched

    fresh = keras_file_net(15)
    assert np.abs(keras_out(fresh, x) - torch_out(t, x)).max() > 1e-2
    fresh.load_weights(str(tmp_path / "out.weights.h5"))  # Keras' own reader
    np.testing.assert_allclose(keras_out(fresh, x), torch_out(t, x), **TOL)


def test_keras_weights_file_copies_into_a_torch_model(file_twins, tmp_path):
    t, k, x = file_twins
    k.save_weights(str(tmp_path / "k.weights.h5"))
    s = bind(t=t)
    run_ok(s, f"load {tmp_path / 'k.weights.h5'} as kw")
    assert_copy_makes_equal(s, "kw", "t", lambda x: keras_out(k, x), lambda x: torch_out(t, x), x)
    assert int(t.bn.num_batches_tracked) == 0


def test_torch_state_dict_file_copies_into_keras(file_twins, tmp_path):
    t, k, x = file_twins
    torch.save(t.state_dict(), str(tmp_path / "t.pt"))
    s = bind(k=k)
    data = run_ok(s, f"load {tmp_path / 't.pt'} as sd --json")
    assert data["class"] == "state dict"
    assert_copy_makes_equal(s, "sd", "k", lambda x: torch_out(t, x), lambda x: keras_out(k, x), x)


# ----------------------------------------------------------------------------------------------------
# The pair --json schema and copy --dry-run


def test_pair_json_schema():
    t, k = randomize_torch(TorchWithAux(), 16), keras_with_extra_bn(17)
    t.c2 = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16))  # pairs with extra_bn
    s = bind(t=t, k=k)
    plan = run_ok(s, "pair t k --json")
    assert set(plan) == {"a", "b", "pairs", "missing", "unexpected", "mismatched", "warnings", "notes", "layers"}
    assert {layer["basis"] for layer in plan["layers"]} <= {"only fit", "names", "order", "--map"}
    assert (plan["a"], plan["b"]) == ("t", "k")
    assert plan["pairs"]
    for p in plan["pairs"]:
        assert set(p) == {"a", "b", "a_shape", "b_shape", "transform"}
        assert isinstance(p["transform"], str) and p["transform"]
        if isinstance(p["a"], str):
            assert isinstance(p["b"], str)
            assert all(isinstance(d, int) for d in p["a_shape"] + p["b_shape"])
        else:  # a step with several tensors, or none: names and shapes are parallel lists
            assert len(p["a"]) == len(p["a_shape"]) and len(p["b"]) == len(p["b_shape"])
    dropped = [p for p in plan["pairs"] if p["transform"] == "dropped"]
    assert dropped == [{"a": ["c2.1.num_batches_tracked"], "b": [], "a_shape": [[]], "b_shape": [],
                        "transform": "dropped"}]
    conv = next(p for p in plan["pairs"] if p["a"] == "c2.0.weight")
    assert (conv["b"], conv["a_shape"], conv["b_shape"], conv["transform"]) == (
        "encoder_conv_b/kernel", [16, 8, 3, 3], [3, 3, 8, 16], "transpose(2,3,1,0)")
    assert [p["name"] for p in plan["unexpected"]] == ["aux.weight", "aux.bias"]
    assert plan["missing"] == plan["mismatched"] == []
    assert plan["warnings"] == ["c2.1 eps=1e-05 but extra_bn epsilon=1e-12: outputs will differ; make them equal"]

    back = run_ok(s, "pair k t --json")
    assert [p["name"] for p in back["missing"]] == ["aux.weight", "aux.bias"]
    for key in ("missing", "unexpected", "mismatched"):
        for item in plan[key] + back[key]:
            assert set(item) == {"name", "reason"} and item["reason"]


@pytest.mark.parametrize("direction", ["t k", "k t"])
def test_copy_dry_run_writes_nothing(direction):
    t, k = randomize_torch(TorchConvNet(), 18), keras_conv_net(19)
    s = bind(t=t, k=k)
    dst = direction.split()[1]
    snapshot = (lambda: keras_values(k)) if dst == "k" else (lambda: list(torch_values(t).values()))
    before = snapshot()
    outcome = s.run_line(f"copy {direction} --dry-run")
    assert outcome.ok and "dry run, nothing written" in outcome.results[0].title
    assert len(outcome.results[0].data["pairs"]) == 6
    for was, now in zip(before, snapshot(), strict=True):
        np.testing.assert_array_equal(now, was)
    run_ok(s, f"copy {direction}")  # the same line without --dry-run does write: the check can see it
    assert any(not np.array_equal(now, was) for was, now in zip(before, snapshot()))


# ----------------------------------------------------------------------------------------------------
# Square kernels: every orientation has the shape, only the rule has the numbers


def test_square_kernel_pairs_by_kind_and_role_not_by_shape(tmp_path):
    t = randomize_torch(nn.Conv2d(16, 16, 3, padding=1), 20)
    k = randomize_keras(keras.Sequential([keras.Input((6, 6, 16)), L.Conv2D(16, 3, padding="same", name="conv")],
                                         name="square"), 21)
    x = images(channels=16, size=6)
    t_out = lambda x: torch_out(t, x).transpose(0, 2, 3, 1)  # noqa: E731 - NHWC, as Keras gives it
    k_out = lambda x: keras_out(k, x)  # noqa: E731
    s = bind(t=t, k=k)
    plan = run_ok(s, "pair t k --json")
    assert plan["pairs"][0] == {"a": "weight", "b": "square/conv/kernel", "a_shape": [16, 16, 3, 3],
                                "b_shape": [3, 3, 16, 16], "transform": "transpose(2,3,1,0)"}
    w = t.weight.detach().numpy()
    bias = t.bias.detach().numpy()
    # Orientations that fit (3, 3, 16, 16) just as well give other numbers: shape alone cannot decide.
    for wrong in (w.transpose(2, 3, 0, 1), w.reshape(3, 3, 16, 16)):
        k.get_layer("conv").set_weights([wrong, bias])
        assert np.abs(k_out(x) - t_out(x)).max() > 1e-2
    assert_copy_makes_equal(s, "t", "k", t_out, k_out, x)
    randomize_torch(t, 22)
    randomize_keras(k, 23)
    assert_copy_makes_equal(s, "k", "t", k_out, t_out, x)

    # From a weights-only file (no kind on the torch side), the Keras kind decides the same way.
    safetensors.torch.save_file(t.state_dict(), str(tmp_path / "conv.safetensors"))
    randomize_keras(k, 24)
    run_ok(s, f"load {tmp_path / 'conv.safetensors'} as f")
    assert_copy_makes_equal(s, "f", "k", t_out, k_out, x)


class TorchTwoSquareConvs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 3, 3, padding=1)
        self.conv2 = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x):
        return self.conv2(torch.relu(self.conv1(x)))


class KerasTwoSquareConvsUnnamed(keras.Model):
    """conv2 is created first and no layer is named: Keras calls them conv2d_N in creation order, and
    model.layers lists conv2 first. Every shape fits either way round, so only the attribute names can
    say which is which."""

    def __init__(self) -> None:
        super().__init__()
        self.conv2 = L.Conv2D(3, 3, padding="same")
        self.conv1 = L.Conv2D(3, 3, padding="same", activation="relu")

    def call(self, x):
        return self.conv2(self.conv1(x))


def test_unnamed_subclass_layers_pair_by_their_attribute_names():
    t = randomize_torch(TorchTwoSquareConvs(), 7)
    k = KerasTwoSquareConvsUnnamed()
    k(np.zeros((1, 8, 8, 3), np.float32))
    randomize_keras(k, 8)
    s = bind(t=t, k=k)
    plan = run_ok(s, "pair t k --json")
    by_layer = {p["a"]: p["b"] for p in plan["pairs"]}
    conv1_kernel, conv2_kernel = k.conv1.kernel.path, k.conv2.kernel.path
    assert by_layer["conv1.weight"] == conv1_kernel and by_layer["conv2.weight"] == conv2_kernel
    x = images()  # the outputs are feature maps: Keras's go back to channels first to compare
    assert_copy_makes_equal(s, "t", "k", lambda x: torch_out(t, x), lambda x: keras_out(k, x).transpose(0, 3, 1, 2), x)
