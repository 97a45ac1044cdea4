"""A bias one side's layer has and the other's lacks, folded into the BatchNorm after it (issue 12).

Twin stacks, as in test_layouts.py: a torch ``Conv2d(bias=False)`` (or ``Linear(bias=False)``) +
``BatchNorm`` + ``ReLU`` against a Keras ``Conv2D`` (``Dense``) with a bias + ``BatchNormalization`` +
``ReLU``. Every tensor that starts constant is made random on both sides (biases, gamma, beta, running
mean and variance), the outputs differ before the copy, and after it the frameworks' own forward passes
agree, both ways. Where the biased layer's output is also read elsewhere (a residual add before the norm)
the fold would be wrong, and shown to be: there the copy keeps refusing with the reason it had.
"""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import pytest
import torch
from torch import nn

from modelshell.core.session import Session
from modelshell.frameworks.keras import KerasModel
from modelshell.frameworks.torch import TorchModule

L = keras.layers
EPS = 1e-5  # the same epsilon both sides: the test is about the bias, not the epsilon


def randomize_torch(module: nn.Module, seed: int) -> nn.Module:
    rng = np.random.default_rng(seed)
    state = module.state_dict()
    for name, tensor in state.items():
        if tensor.is_floating_point():
            values = rng.uniform(0.5, 1.5, tensor.shape) if name.endswith("running_var") \
                else rng.normal(0.0, 0.5, tensor.shape)
            state[name] = torch.from_numpy(values.astype(np.float32))
    module.load_state_dict(state)
    return module.eval()


def randomize_keras(model: keras.Model, seed: int) -> keras.Model:
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        shape = tuple(variable.shape)
        values = rng.uniform(0.5, 1.5, shape) if "variance" in variable.path else rng.normal(0.0, 0.5, shape)
        variable.assign(values.astype(np.float32))
    return model


def torch_stack(kind: str) -> nn.Module:
    if kind == "conv":
        return nn.Sequential(nn.Conv2d(3, 6, 3, bias=False), nn.BatchNorm2d(6, eps=EPS), nn.ReLU(), nn.Conv2d(6, 4, 1))
    return nn.Sequential(nn.Linear(5, 6, bias=False), nn.BatchNorm1d(6, eps=EPS), nn.ReLU(), nn.Linear(6, 4))


def keras_stack(kind: str) -> keras.Model:
    inp = keras.Input((8, 8, 3) if kind == "conv" else (5,))
    x = L.Conv2D(6, 3, name="conv")(inp) if kind == "conv" else L.Dense(6, name="dense")(inp)
    x = L.ReLU(name="relu")(L.BatchNormalization(epsilon=EPS, name="bn")(x))
    x = L.Conv2D(4, 1, name="head")(x) if kind == "conv" else L.Dense(4, name="head")(x)
    return keras.Model(inp, x)


class Shortcut(nn.Module):
    """``relu(bn(conv(x)) + conv(x))``: the conv's output is read twice, by the norm and by the add."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, bias=False)
        self.bn = nn.BatchNorm2d(6, eps=EPS)

    def forward(self, x):
        y = self.conv(x)
        return torch.relu(self.bn(y) + y)


def keras_shortcut() -> keras.Model:
    inp = keras.Input((8, 8, 3))
    y = L.Conv2D(6, 3, name="conv")(inp)
    return keras.Model(inp, L.ReLU(name="relu")(L.Add(name="add")([L.BatchNormalization(epsilon=EPS, name="bn")(y), y])))


def inputs(kind: str) -> tuple[np.ndarray, np.ndarray]:
    """(torch's input, Keras's): NCHW and NHWC of the same numbers."""
    rng = np.random.default_rng(11)
    if kind == "conv":
        x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
        return x, x.transpose(0, 2, 3, 1).copy()
    x = rng.standard_normal((3, 5)).astype(np.float32)
    return x, x


def outputs(t: nn.Module, k: keras.Model, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Each framework's own forward pass; torch's output in Keras's layout."""
    xt, xk = inputs(kind)
    with torch.no_grad():
        out_t = t.eval()(torch.from_numpy(xt)).numpy()
    out_k = np.asarray(k(xk, training=False))
    return (out_t.transpose(0, 2, 3, 1) if out_t.ndim == 4 else out_t), out_k


def assert_agree(a: np.ndarray, b: np.ndarray) -> None:
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * float(np.abs(b).max()))


def assert_differ(a: np.ndarray, b: np.ndarray) -> None:
    assert float(np.abs(a - b).max()) > 1e-2 * float(np.abs(b).max()), "the outputs agree before the copy"


def twins(kind: str, seed: int = 0) -> tuple[nn.Module, keras.Model]:
    t, k = randomize_torch(torch_stack(kind), seed), randomize_keras(keras_stack(kind), seed + 1)
    assert_differ(*outputs(t, k, kind))
    return t, k


def run(t: nn.Module, k: keras.Model, line: str):
    session = Session()
    session.namespace.update(t=t, k=k)
    return session.run_line(line)


def keras_values(k: keras.Model) -> dict[str, np.ndarray]:
    return {v.path: np.array(v.numpy()) for v in k.weights}


@pytest.mark.parametrize("kind", ["conv", "linear"])
def test_keras_bias_folds_into_the_torch_running_mean(kind: str) -> None:
    t, k = twins(kind)
    layer = "conv" if kind == "conv" else "dense"
    bias, mean = keras_values(k)[f"{layer}/bias"], keras_values(k)["bn/moving_mean"]
    assert np.abs(bias).min() > 0  # a random bias, so a bias dropped on the way cannot pass

    shown = run(t, k, "pair k t")
    assert shown.ok, shown.error
    rows = {row[0]: row for row in shown.results[0].rows}
    assert rows[f"{layer}/bias"][2:] == ["1.running_mean", "(6,)", "bias folded into 1.running_mean"]
    assert rows["bn/moving_mean"][4] == f"as is, less {layer}/bias"
    assert any(line.startswith("note: 1 bias of k folded into the running mean") for line in shown.results[0].footer)

    copied = run(t, k, "copy k t")
    assert copied.ok, copied.error
    assert "1 bias of k folded" in copied.results[0].text and "outputs agree" in copied.results[0].text
    np.testing.assert_array_equal(t.state_dict()["1.running_mean"].numpy(), np.subtract(mean, bias))
    assert_agree(*outputs(t, k, kind))
    verified = run(t, k, "verify k t --layers")
    assert verified.ok, verified.error


@pytest.mark.parametrize("kind", ["conv", "linear"])
def test_torch_without_bias_gives_keras_a_zero_bias(kind: str) -> None:
    t, k = twins(kind)
    layer = "conv" if kind == "conv" else "dense"
    shown = run(t, k, "pair t k")
    assert shown.ok, shown.error
    rows = {row[2]: row for row in shown.results[0].rows}
    assert rows[f"{layer}/bias"][0] == "-" and rows[f"{layer}/bias"][4].startswith("0 (0 has no bias")
    assert any("1 layer of k gets a zero bias" in line for line in shown.results[0].footer)

    copied = run(t, k, "copy t k")
    assert copied.ok, copied.error
    values = keras_values(k)
    np.testing.assert_array_equal(values[f"{layer}/bias"], np.zeros(6, np.float32))
    np.testing.assert_array_equal(values["bn/moving_mean"], t.state_dict()["1.running_mean"].numpy())
    assert_agree(*outputs(t, k, kind))


def test_the_trace_shows_where_each_output_goes() -> None:
    """The premise of the fold, read from both traces: the conv's output goes into the norm alone, and
    the norm reads nothing else; with a shortcut, the conv's output is read by the add as well."""
    xt, xk = inputs("conv")
    straight_t = TorchModule(torch_stack("conv"), "t").trace([xt])
    straight_k = KerasModel(keras_stack("conv"), "k").trace([xk])
    assert straight_t["0"].readers == {"1"} and straight_t["1"].fed_by == {"0"}
    assert straight_k["conv"].readers == {"bn"} and straight_k["bn"].fed_by == {"conv"}
    shortcut_t = TorchModule(Shortcut(), "t").trace([xt])
    shortcut_k = KerasModel(keras_shortcut(), "k").trace([xk])
    assert shortcut_t["conv"].readers == {"bn", ""}  # "": the block's own `+`, no module
    assert shortcut_k["conv"].readers == {"bn", "add"}


def _shortcut_twins() -> tuple[nn.Module, keras.Model]:
    t, k = randomize_torch(Shortcut(), 0), randomize_keras(keras_shortcut(), 1)
    assert_differ(*outputs(t, k, "conv"))
    return t, k


def test_a_fold_where_the_output_is_also_read_elsewhere_would_be_wrong() -> None:
    """Why the trace must be asked: folded by hand (kernels moved, the torch mean less the Keras bias)
    a model whose conv output also feeds a shortcut computes something else."""
    t, k = _shortcut_twins()
    values = keras_values(k)
    state = t.state_dict()
    state["conv.weight"] = torch.from_numpy(values["conv/kernel"].transpose(3, 2, 0, 1).copy())
    state["bn.weight"], state["bn.bias"] = torch.from_numpy(values["bn/gamma"]), torch.from_numpy(values["bn/beta"])
    state["bn.running_mean"] = torch.from_numpy(values["bn/moving_mean"] - values["conv/bias"])
    state["bn.running_var"] = torch.from_numpy(values["bn/moving_variance"])
    t.load_state_dict(state)
    assert_differ(*outputs(t, k, "conv"))


@pytest.mark.parametrize("line", ["copy k t", "copy t k"])
def test_no_fold_where_the_output_is_also_read_elsewhere(line: str) -> None:
    t, k = _shortcut_twins()
    before_t, before_k = {n: v.clone() for n, v in t.state_dict().items()}, keras_values(k)
    shown = run(t, k, line.replace("copy", "pair"))
    assert shown.ok, shown.error
    assert not any("folded" in row[4] or row[4].startswith("0 (") for row in shown.results[0].rows)
    refused = run(t, k, line)
    assert not refused.ok
    if line == "copy k t":
        assert refused.error.startswith("cannot copy: conv:bias: conv -> conv: Conv2d has no bias to receive it")
    else:
        assert "the destination has keras 'bias' (6,) but the source gives none" in refused.error
    assert all(torch.equal(v, before_t[n]) for n, v in t.state_dict().items())
    assert all(np.array_equal(v, before_k[n]) for n, v in keras_values(k).items())


def test_no_fold_through_a_fused_activation() -> None:
    """A Keras conv with ``activation="relu"`` feeds the norm relu(W x + b), not W x + b."""
    inp = keras.Input((8, 8, 3))
    x = L.BatchNormalization(epsilon=EPS, name="bn")(L.Conv2D(6, 3, activation="relu", name="conv")(inp))
    k = randomize_keras(keras.Model(inp, L.Conv2D(4, 1, name="head")(L.ReLU(name="relu")(x))), 1)
    t = randomize_torch(torch_stack("conv"), 0)
    refused = run(t, k, "copy k t")
    assert not refused.ok and "Conv2d has no bias to receive it" in refused.error


class SubclassedStack(keras.Model):
    """The same stack, called by a model's own code: no graph says where the conv's output goes."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = L.Conv2D(6, 3, name="conv"), L.BatchNormalization(epsilon=EPS, name="bn")
        self.relu, self.head = L.ReLU(name="relu"), L.Conv2D(4, 1, name="head")

    def call(self, x, training=False):
        return self.head(self.relu(self.bn(self.conv(x), training=training)))


def test_no_fold_where_the_trace_cannot_tell() -> None:
    k = SubclassedStack()
    k(inputs("conv")[1])
    k = randomize_keras(k, 1)
    t = randomize_torch(torch_stack("conv"), 0)
    assert KerasModel(k, "k").trace([inputs("conv")[1]])["conv"].readers is None
    refused = run(t, k, "copy k t")
    assert not refused.ok and "Conv2d has no bias to receive it" in refused.error


@pytest.mark.parametrize("line", ["copy k t", "copy t k"])
def test_a_stride_one_side_lacks_is_named_where_the_outputs_part(line: str) -> None:
    """Two stacks alike but for the conv's stride: the outputs part at that conv, whose own output is
    not compared (a folded bias, or other shapes), and the copy names it with the stride as the cause."""
    t = randomize_torch(torch_stack("conv"), 0)
    inp = keras.Input((8, 8, 3))
    x = L.ReLU(name="relu")(L.BatchNormalization(epsilon=EPS, name="bn")(L.Conv2D(6, 3, strides=2, name="conv")(inp)))
    k = randomize_keras(keras.Model(inp, L.Conv2D(4, 1, name="head")(x)), 1)
    shown = run(t, k, line.replace("copy", "pair"))
    assert "warning: 0 stride=[1, 1] but conv strides=[2, 2]: the outputs differ in size, and the function with them" \
        in shown.results[0].footer
    copied = run(t, k, line)
    assert not copied.ok
    pair = "conv ~ 0" if line == "copy k t" else "0 ~ conv"
    assert f"outputs differ (max abs diff" in copied.error and f"from layer {pair}; likely cause: 0 stride=[1, 1]" \
        in copied.error, copied.error
