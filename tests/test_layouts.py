"""Every rule of modelshell.transfer.rules proven on real twin layers, in both directions.

For each rule: a torch module and a Keras layer with matching config; random weights in the source; the
rule moves them; both run on the same numbers (NCHW for torch, NHWC for Keras) and must agree to 1e-5.
Before the copy they must disagree, so a test cannot pass because nothing happened.
"""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
import pytest
import torch
from torch import nn

from modelshell.transfer import rules as layouts
from modelshell.transfer.rules import LayerRule, keras_to_torch, torch_to_keras

L = keras.layers
TOL = dict(atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------------------------------
# Moving arrays in and out of real layers


def torch_arrays(module: nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()}


def load_torch(module: nn.Module, arrays: dict[str, np.ndarray]) -> None:
    module.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in arrays.items()}, strict=True)


def keras_role(rule: LayerRule, variable: Any) -> str:
    """The rule's role for a Keras variable, by the end of its path: proves the role names are real."""
    matches = [r.name for r in rule.keras_roles if variable.path.endswith("/" + r.name)]
    assert len(matches) == 1, f"{variable.path} matches roles {matches} of {rule.key}"
    return matches[0]


def keras_arrays(layer: keras.layers.Layer, rule: LayerRule) -> dict[str, np.ndarray]:
    return {keras_role(rule, v): np.array(w) for v, w in zip(layer.weights, layer.get_weights())}


def load_keras(layer: keras.layers.Layer, rule: LayerRule, arrays: dict[str, np.ndarray]) -> None:
    roles = [keras_role(rule, v) for v in layer.weights]
    assert list(arrays) == roles, "converted roles must come in layer.weights order"
    layer.set_weights([arrays[r] for r in roles])


def shapes(arrays: dict[str, np.ndarray]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in arrays.items()}


def randomize_torch(module: nn.Module, rng: np.random.Generator) -> None:
    state = module.state_dict()
    for name, t in state.items():
        if not t.is_floating_point():
            continue
        if name.endswith("running_var"):
            values = rng.uniform(0.5, 1.5, t.shape)
        else:
            values = rng.normal(0.0, 0.4, t.shape)
        state[name] = torch.from_numpy(values.astype(np.float32))
    module.load_state_dict(state)


def randomize_keras(layer: keras.layers.Layer, rng: np.random.Generator) -> None:
    new = []
    for v in layer.weights:
        shape = tuple(v.shape)
        if v.path.endswith("moving_variance"):
            new.append(rng.uniform(0.5, 1.5, shape).astype(np.float32))
        else:
            new.append(rng.normal(0.0, 0.4, shape).astype(np.float32))
    layer.set_weights(new)


def channels_last(x: np.ndarray) -> np.ndarray:
    return np.moveaxis(x, 1, -1)


def channels_first(x: np.ndarray) -> np.ndarray:
    return np.moveaxis(x, -1, 1)


def run_torch(module: nn.Module, x: np.ndarray, call: Callable[..., Any] | None = None) -> np.ndarray:
    module.eval()
    with torch.no_grad():
        t = torch.from_numpy(x)
        y = call(module, t) if call else module(t)
    if isinstance(y, tuple):
        y = y[0]
    return y.numpy()


def run_keras(layer: keras.layers.Layer, x: np.ndarray, call: Callable[..., Any] | None = None) -> np.ndarray:
    y = call(layer, x) if call else layer(x, training=False)
    return np.asarray(keras.ops.convert_to_numpy(y))


def assert_differ(a: np.ndarray, b: np.ndarray) -> None:
    assert a.shape == b.shape
    assert np.max(np.abs(a - b)) > 1e-3, "outputs already match before the copy: the test proves nothing"


# ----------------------------------------------------------------------------------------------------
# The twins


@dataclass
class Twin:
    key: str
    make_torch: Callable[[], nn.Module]
    make_keras: Callable[[], keras.layers.Layer]
    keras_input: tuple[int | None, ...]  # build shape
    make_input: Callable[[np.random.Generator], np.ndarray]  # torch layout
    channels: bool = False  # move the channel axis between torch and Keras
    params: dict[str, int] = field(default_factory=dict)  # dims for torch -> keras
    config: dict[str, int] = field(default_factory=dict)  # the torch layer's settings the rule reads, both ways
    torch_call: Callable[..., Any] | None = None
    keras_call: Callable[..., Any] | None = None
    id: str = ""

    def build_keras(self) -> keras.layers.Layer:
        layer = self.make_keras()
        if self.keras_call is None:
            layer.build(self.keras_input)
        else:  # MultiHeadAttention builds on its first call
            self.keras_call(layer, np.zeros((1, *self.keras_input[1:]), np.float32))
        assert layer.weights, "Keras layer has no weights: build it first"
        return layer

    def outputs(self, module: nn.Module, layer: keras.layers.Layer, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        yt = run_torch(module, x, self.torch_call)
        xk = channels_last(x) if self.channels else x
        yk = run_keras(layer, xk, self.keras_call)
        return yt, (channels_first(yk) if self.channels else yk)


def normal(*shape: int) -> Callable[[np.random.Generator], np.ndarray]:
    return lambda rng: rng.normal(0.0, 1.0, shape).astype(np.float32)


class Separable(nn.Module):
    """The torch side of SeparableConv2D: a depthwise conv then a 1x1 conv."""

    def __init__(self, c: int, m: int, out: int, k: int, dw_bias: bool = False) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(c, c * m, k, groups=c, bias=dw_bias)
        self.pointwise = nn.Conv2d(c * m, out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


def _mha_torch(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return m(x, x, x, need_weights=False)[0]


def _mha_keras(layer: keras.layers.Layer, x: np.ndarray) -> Any:
    return layer(x, x, training=False)


def _hf_conv1d() -> nn.Module:
    from transformers.pytorch_utils import Conv1D  # GPT-2's projection: weight (in, out)

    return Conv1D(4, 6)


def _heads_out(layer: keras.layers.Layer, x: np.ndarray) -> Any:  # (N, T, H, D) -> (N, T, H*D), as torch gives it
    y = layer(x, training=False)
    return keras.ops.reshape(y, (x.shape[0], x.shape[1], -1))


def _heads_in(layer: keras.layers.Layer, x: np.ndarray) -> Any:  # (N, T, H*D) -> (N, T, H, D), as Keras takes it
    return layer(keras.ops.reshape(x, (x.shape[0], x.shape[1], 2, 3)), training=False)


def _as_1x1_map(layer: keras.layers.Layer, x: np.ndarray) -> Any:  # (N, C) -> (N, 1, 1, C) and back
    return keras.ops.reshape(layer(keras.ops.reshape(x, (x.shape[0], 1, 1, -1)), training=False), (x.shape[0], -1))


class Parts(L.Layer):
    """The Keras side of a fused rule: P layers (named 0, 1, ...) run on the same input, their outputs
    side by side, as the one torch layer gives them (q, k, v of a fused attention projection)."""

    def __init__(self, make: Callable[[], keras.layers.Layer], count: int = 3, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.parts = [make() for _ in range(count)]
        for p, layer in enumerate(self.parts):
            layer.name = str(p)  # so a variable's path ends in 0/kernel, the rule's role

    def build(self, shape: tuple) -> None:
        for layer in self.parts:
            layer.build(shape)

    def call(self, x: Any) -> Any:
        flat = [keras.ops.reshape(layer(x), (x.shape[0], x.shape[1], -1)) for layer in self.parts]
        return keras.ops.concatenate(flat, axis=-1)


class WeightNormConv1D(L.Layer):
    """A weight-normalised Conv1D as transformers' TF Wav2Vec2 keeps it: ``weight_v`` in torch's layout
    (cout, cin/g, K), ``weight_g`` per kernel position (K, 1, 1), the norm over the other two axes."""

    def __init__(self, filters: int, kernel: int, groups: int, pad: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.filters, self.kernel, self.groups, self.pad = filters, kernel, groups, pad

    def build(self, shape: tuple) -> None:
        cin_g = shape[-1] // self.groups
        self.weight_v = self.add_weight(name="weight_v", shape=(self.filters, cin_g, self.kernel))
        self.weight_g = self.add_weight(name="weight_g", shape=(self.kernel, 1, 1), initializer="ones")
        self.bias = self.add_weight(name="bias", shape=(self.filters,), initializer="zeros")

    def call(self, x: Any) -> Any:
        ops = keras.ops
        v = self.weight_v
        kernel = v / ops.sqrt(ops.sum(v * v, axis=(0, 1), keepdims=True)) * ops.transpose(self.weight_g)
        x = ops.pad(x, ((0, 0), (self.pad, self.pad), (0, 0)))
        y = ops.conv(x, ops.transpose(kernel), padding="valid") if self.groups == 1 else ops.concatenate(
            [ops.conv(xg, ops.transpose(kg)) for xg, kg in zip(
                ops.split(x, self.groups, axis=-1), ops.split(kernel, self.groups, axis=0))], axis=-1)
        return y + self.bias


def _weight_norm_conv1d() -> nn.Module:
    """torch's weight norm over all axes but the kernel's (dim=2), as transformers' Wav2Vec2 uses it; the
    older API, whose tensors are weight_g and weight_v (the adapter names parametrizations' so too)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return nn.utils.weight_norm(nn.Conv1d(4, 6, 5, padding=2, groups=2), name="weight", dim=2)


def _hf_fused(out: int) -> Callable[[], nn.Module]:
    def make() -> nn.Module:
        from transformers.pytorch_utils import Conv1D

        return Conv1D(out, 6)
    return make


class OffsetPositions(nn.Embedding):
    """A learned position table whose positions start at row ``offset``, as transformers' BART keeps it:
    position p reads row p + offset, and the rows before are never read."""

    def __init__(self, positions: int, dim: int, offset: int = 2) -> None:
        super().__init__(positions + offset, dim)
        self.offset = offset

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        return super().forward(positions + self.offset)


def _heads_dense() -> keras.layers.Layer:
    return L.EinsumDense("abc,cde->abde", output_shape=(None, 2, 3), bias_axes="de")


TWINS = [
    Twin("linear", lambda: nn.Linear(6, 4), lambda: L.Dense(4), (None, 6), normal(3, 6)),
    Twin("conv1d", lambda: nn.Conv1d(3, 4, 3), lambda: L.Conv1D(4, 3), (None, 7, 3), normal(2, 3, 7), True),
    Twin("conv2d", lambda: nn.Conv2d(3, 4, 3), lambda: L.Conv2D(4, 3), (None, 6, 6, 3), normal(2, 3, 6, 6), True),
    Twin(
        "conv2d", lambda: nn.Conv2d(4, 6, 3, groups=2), lambda: L.Conv2D(6, 3, groups=2),
        (None, 5, 5, 4), normal(2, 4, 5, 5), True, id="conv2d-groups2",
    ),
    Twin("conv3d", lambda: nn.Conv3d(2, 3, 2), lambda: L.Conv3D(3, 2), (None, 4, 4, 4, 2), normal(2, 2, 4, 4, 4), True),
    Twin(
        "conv_transpose1d", lambda: nn.ConvTranspose1d(3, 4, 3, stride=2), lambda: L.Conv1DTranspose(4, 3, strides=2),
        (None, 5, 3), normal(2, 3, 5), True,
    ),
    Twin(
        "conv_transpose2d", lambda: nn.ConvTranspose2d(3, 4, 3), lambda: L.Conv2DTranspose(4, 3),
        (None, 4, 4, 3), normal(2, 3, 4, 4), True,
    ),
    Twin(
        "conv_transpose3d", lambda: nn.ConvTranspose3d(2, 3, 2), lambda: L.Conv3DTranspose(3, 2),
        (None, 3, 3, 3, 2), normal(2, 2, 3, 3, 3), True,
    ),
    Twin(
        "depthwise_conv2d", lambda: nn.Conv2d(3, 6, 3, groups=3), lambda: L.DepthwiseConv2D(3, depth_multiplier=2),
        (None, 6, 6, 3), normal(2, 3, 6, 6), True, params={"C": 3},
    ),
    Twin(
        "depthwise_conv1d", lambda: nn.Conv1d(3, 6, 3, groups=3), lambda: L.DepthwiseConv1D(3, depth_multiplier=2),
        (None, 7, 3), normal(2, 3, 7), True, params={"M": 2},
    ),
    Twin(
        "separable_conv2d", lambda: Separable(3, 2, 4, 3), lambda: L.SeparableConv2D(4, 3, depth_multiplier=2),
        (None, 6, 6, 3), normal(2, 3, 6, 6), True, params={"C": 3},
    ),
    Twin(
        "batch_norm", lambda: nn.BatchNorm1d(5, eps=1e-3), lambda: L.BatchNormalization(epsilon=1e-3),
        (None, 5), normal(4, 5), id="batch_norm-1d",
    ),
    Twin(
        "batch_norm", lambda: nn.BatchNorm2d(3), lambda: L.BatchNormalization(epsilon=1e-5),
        (None, 4, 4, 3), normal(2, 3, 4, 4), True, id="batch_norm-2d",
    ),
    Twin(
        "batch_norm", lambda: nn.BatchNorm3d(2), lambda: L.BatchNormalization(epsilon=1e-5),
        (None, 3, 3, 3, 2), normal(2, 2, 3, 3, 3), True, id="batch_norm-3d",
    ),
    Twin(
        "layer_norm", lambda: nn.LayerNorm(6), lambda: L.LayerNormalization(epsilon=1e-5), (None, 3, 6), normal(2, 3, 6)
    ),
    Twin(
        "embedding", lambda: nn.Embedding(10, 4), lambda: L.Embedding(10, 4), (None, 5),
        lambda rng: rng.integers(0, 10, (2, 5)).astype(np.int64),
    ),
    Twin(
        "simple_rnn", lambda: nn.RNN(3, 4, batch_first=True), lambda: L.SimpleRNN(4, return_sequences=True),
        (None, 5, 3), normal(2, 5, 3),
    ),
    Twin(
        "lstm", lambda: nn.LSTM(3, 4, batch_first=True), lambda: L.LSTM(4, return_sequences=True),
        (None, 5, 3), normal(2, 5, 3),
    ),
    Twin(
        "gru", lambda: nn.GRU(3, 4, batch_first=True), lambda: L.GRU(4, return_sequences=True, reset_after=True),
        (None, 5, 3), normal(2, 5, 3),
    ),
    Twin(
        "multi_head_attention", lambda: nn.MultiheadAttention(6, 2, batch_first=True),
        lambda: L.MultiHeadAttention(num_heads=2, key_dim=3), (None, 4, 6), normal(2, 4, 6),
        params={"H": 2}, torch_call=_mha_torch, keras_call=_mha_keras,
    ),
    Twin(
        "linear_einsum_heads", lambda: nn.Linear(6, 6),
        lambda: L.EinsumDense("abc,cde->abde", output_shape=(None, 2, 3), bias_axes="de"),
        (None, 4, 6), normal(2, 4, 6), params={"H": 2}, keras_call=_heads_out,
    ),
    Twin(
        "linear_einsum_merge", lambda: nn.Linear(6, 5),
        lambda: L.EinsumDense("abcd,cde->abe", output_shape=(None, 5), bias_axes="e"),
        (None, 4, 6), normal(2, 4, 6), params={"H": 2}, keras_call=_heads_in,
    ),
    Twin("hf_conv1d", _hf_conv1d, lambda: L.Dense(4), (None, 6), normal(3, 6)),
    Twin("linear_conv1x1", lambda: nn.Linear(3, 4), lambda: L.Conv2D(4, 1), (None, 3), normal(2, 3),
         keras_call=_as_1x1_map),
    Twin("rms_norm", lambda: nn.RMSNorm(6, eps=1e-6), lambda: L.RMSNormalization(epsilon=1e-6), (None, 3, 6),
         normal(2, 3, 6)),
    Twin("hf_conv1d_fused_heads", _hf_fused(18), lambda: Parts(_heads_dense), (None, 4, 6), normal(2, 4, 6),
         params={"H": 2}),
    Twin("linear_fused_heads", lambda: nn.Linear(6, 18), lambda: Parts(_heads_dense), (None, 4, 6), normal(2, 4, 6),
         params={"D": 3}),
    Twin("hf_conv1d_fused_dense", _hf_fused(15), lambda: Parts(lambda: L.Dense(5)), (None, 4, 6), normal(2, 4, 6)),
    Twin("linear_fused_dense", lambda: nn.Linear(6, 15), lambda: Parts(lambda: L.Dense(5)), (None, 4, 6),
         normal(2, 4, 6)),
    Twin("hf_conv1d_einsum_merge", _hf_fused(5),
         lambda: L.EinsumDense("abcd,cde->abe", output_shape=(None, 5), bias_axes="e"),
         (None, 4, 6), normal(2, 4, 6), params={"H": 2}, keras_call=_heads_in),
    Twin("linear_einsum_heads_first", lambda: nn.Linear(6, 6),
         lambda: L.EinsumDense("btd,ndh->btnh", output_shape=(None, 2, 3), bias_axes="nh"),
         (None, 4, 6), normal(2, 4, 6), params={"H": 2}, keras_call=_heads_out),
    Twin("linear_einsum_2d", lambda: nn.Linear(6, 5),
         lambda: L.EinsumDense("btd,df->btf", output_shape=(None, 5), bias_axes="f"),
         (None, 4, 6), normal(2, 4, 6)),
    Twin("embedding_offset", lambda: OffsetPositions(6, 4), lambda: L.Embedding(6, 4), (None, 5),
         lambda rng: rng.integers(0, 6, (2, 5)).astype(np.int64), config={"offset": 2}),
    Twin("conv1d_weight_norm", _weight_norm_conv1d, lambda: WeightNormConv1D(6, 5, 2, 2), (None, 9, 4),
         normal(2, 4, 9), True),
]
for _t in TWINS:
    _t.id = _t.id or _t.key


@pytest.mark.parametrize("twin", TWINS, ids=lambda t: t.id)
def test_torch_to_keras(twin: Twin) -> None:
    rng = np.random.default_rng(0)
    rule = layouts.rule(twin.key)
    module = twin.make_torch()
    randomize_torch(module, rng)
    layer = twin.build_keras()
    x = twin.make_input(rng)
    assert_differ(*twin.outputs(module, layer, x))

    converted = torch_to_keras(rule, torch_arrays(module), expect=shapes(keras_arrays(layer, rule)), **twin.params,
                               **twin.config)
    load_keras(layer, rule, converted)
    yt, yk = twin.outputs(module, layer, x)
    np.testing.assert_allclose(yk, yt, **TOL)


@pytest.mark.parametrize("twin", TWINS, ids=lambda t: t.id)
def test_keras_to_torch(twin: Twin) -> None:
    rng = np.random.default_rng(1)
    rule = layouts.rule(twin.key)
    layer = twin.build_keras()
    randomize_keras(layer, rng)
    module = twin.make_torch()
    x = twin.make_input(rng)
    assert_differ(*twin.outputs(module, layer, x))

    converted = keras_to_torch(rule, keras_arrays(layer, rule), expect=shapes(torch_arrays(module)), **twin.config)
    load_torch(module, converted)
    yt, yk = twin.outputs(module, layer, x)
    np.testing.assert_allclose(yt, yk, **TOL)


def rule_for(torch_class: str, keras_class: str, *, after_flatten: int = 0) -> LayerRule:
    """The table's rule for a torch class and a Keras class (the pairing looks rules up by kind too)."""
    found = [r for r in layouts.RULES if torch_class in r.torch_classes and r.keras_kind == keras_class
             and r.after_flatten == after_flatten]
    if not found:
        raise layouts.LayoutError(f"no layout rule pairs torch {torch_class} with Keras {keras_class}")
    return found[0]


def test_every_rule_has_a_twin() -> None:
    proven = {t.key for t in TWINS} | {"flatten_linear", "flatten_linear_1d"}  # flattens: tests below
    assert {r.key for r in layouts.RULES} == proven
    pairs = {(c, r.keras_kind) for r in layouts.RULES for c in r.torch_classes}
    for pair in [
        ("Linear", "Dense"), ("Conv1d", "Conv1D"), ("Conv2d", "Conv2D"), ("Conv3d", "Conv3D"),
        ("ConvTranspose1d", "Conv1DTranspose"), ("ConvTranspose2d", "Conv2DTranspose"), ("Conv2d", "DepthwiseConv2D"),
        ("BatchNorm1d", "BatchNormalization"), ("BatchNorm2d", "BatchNormalization"),
        ("BatchNorm3d", "BatchNormalization"),
        ("LayerNorm", "LayerNormalization"), ("Embedding", "Embedding"), ("RNN", "SimpleRNN"), ("LSTM", "LSTM"),
        ("GRU", "GRU"), ("MultiheadAttention", "MultiHeadAttention"),
    ]:
        assert pair in pairs
        assert rule_for(*pair).keras_kind == pair[1]
    assert rule_for("Linear", "Dense").key == "linear"
    assert rule_for("Linear", "Dense", after_flatten=2).key == "flatten_linear"
    assert rule_for("Linear", "Dense", after_flatten=1).key == "flatten_linear_1d"


def test_module_is_pure_numpy() -> None:
    code = "import sys, modelshell.transfer.rules; print(sorted({'torch', 'keras', 'tensorflow'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ----------------------------------------------------------------------------------------------------
# Flatten after a convolution


def _flatten_twins(rank: int) -> tuple[nn.Module, keras.Model, np.ndarray, dict[str, int]]:
    rng = np.random.default_rng(2)
    if rank == 2:
        tm = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 4 * 5, 5))
        km = keras.Sequential([keras.Input((6, 7, 3)), L.Conv2D(4, 3), L.Flatten(), L.Dense(5)])
        x = rng.normal(size=(2, 3, 6, 7)).astype(np.float32)
        return tm, km, x, {"C": 4, "H": 4, "W": 5}
    tm = nn.Sequential(nn.Conv1d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 6, 5))
    km = keras.Sequential([keras.Input((8, 3)), L.Conv1D(4, 3), L.Flatten(), L.Dense(5)])
    x = rng.normal(size=(2, 3, 8)).astype(np.float32)
    return tm, km, x, {"C": 4, "L": 6}


def _run_pair(tm: nn.Module, km: keras.Model, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return run_torch(tm, x), run_keras(km, channels_last(x))


@pytest.mark.parametrize("rank", [2, 1], ids=["CHW", "CL"])
def test_flatten_after_conv_both_ways(rank: int) -> None:
    conv = layouts.rule("conv2d" if rank == 2 else "conv1d")
    flat = rule_for("Linear", "Dense", after_flatten=rank)
    plain = layouts.rule("linear")

    tm, km, x, dims = _flatten_twins(rank)
    randomize_torch(tm, np.random.default_rng(3))
    assert_differ(*_run_pair(tm, km, x))
    t = torch_arrays(tm)
    conv_t = {k.split(".", 1)[1]: v for k, v in t.items() if k.startswith("0.")}
    dense_t = {k.split(".", 1)[1]: v for k, v in t.items() if k.startswith("2.")}
    kconv, kdense = km.layers[0], km.layers[2]
    load_keras(kconv, conv, torch_to_keras(conv, conv_t, expect=shapes(keras_arrays(kconv, conv))))

    # A plain .T has the destination's shapes exactly and gives the wrong numbers.
    wrong = torch_to_keras(plain, dense_t, expect=shapes(keras_arrays(kdense, plain)))
    load_keras(kdense, plain, wrong)
    assert_differ(*_run_pair(tm, km, x))

    right = torch_to_keras(flat, dense_t, expect=shapes(keras_arrays(kdense, flat)), **dims)
    load_keras(kdense, flat, right)
    np.testing.assert_allclose(*_run_pair(tm, km, x)[::-1], **TOL)

    # And back: Keras weights into a fresh torch twin.
    tm2, km2, _, _ = _flatten_twins(rank)
    randomize_keras(km2.layers[0], np.random.default_rng(4))
    randomize_keras(km2.layers[2], np.random.default_rng(5))
    assert_differ(*_run_pair(tm2, km2, x))
    back = {"0." + k: v for k, v in keras_to_torch(conv, keras_arrays(km2.layers[0], conv)).items()}
    back.update({"2." + k: v for k, v in keras_to_torch(flat, keras_arrays(km2.layers[2], flat), **dims).items()})
    load_torch(tm2, back)
    np.testing.assert_allclose(*_run_pair(tm2, km2, x), **TOL)


def test_flatten_permutation_matches_layouts_formula() -> None:
    rng = np.random.default_rng(6)
    out, C, H, W = 5, 3, 2, 4
    w = rng.normal(size=(out, C * H * W))
    k = w[:, layouts.flatten_permutation((C, H, W), "keras")].T
    np.testing.assert_array_equal(k, w.reshape(out, C, H, W).transpose(2, 3, 1, 0).reshape(H * W * C, out))
    back = k[layouts.flatten_permutation((C, H, W), "torch")].T
    np.testing.assert_array_equal(back, k.reshape(H, W, C, out).transpose(3, 2, 0, 1).reshape(out, C * H * W))
    np.testing.assert_array_equal(back, w)
    L_ = 6
    w1 = rng.normal(size=(out, C * L_))
    k1 = layouts.torch_to_keras("flatten_linear_1d", {"weight": w1}, C=C)  # L is solved from the shape
    np.testing.assert_array_equal(k1["kernel"], w1.reshape(out, C, L_).transpose(2, 1, 0).reshape(L_ * C, out))
    # A feature map of one pixel needs no permutation: the plain rule is right there.
    np.testing.assert_array_equal(layouts.flatten_permutation((7, 1, 1)), np.arange(7))


# ----------------------------------------------------------------------------------------------------
# Traps and refusals


def test_gru_needs_reset_after() -> None:
    rule = layouts.rule("gru")
    module = nn.GRU(3, 4, batch_first=True)
    layer = L.GRU(4, return_sequences=True, reset_after=False)
    layer.build((None, 5, 3))
    with pytest.raises(ValueError, match=r"'bias' has shape \(12,\), the rule gives \(2, 12\)"):
        torch_to_keras(rule, torch_arrays(module), expect=shapes(keras_arrays(layer, rule)))
    with pytest.raises(ValueError, match=r"'bias' has shape \(12,\), expected 2 axes \(2, 3\*H\) = \(2, 12\)"):
        keras_to_torch(rule, keras_arrays(layer, rule))


def test_separable_folds_a_torch_depthwise_bias() -> None:
    rule = layouts.rule("separable_conv2d")
    rng = np.random.default_rng(7)
    module = Separable(3, 2, 4, 3, dw_bias=True)
    randomize_torch(module, rng)
    layer = L.SeparableConv2D(4, 3, depth_multiplier=2)
    layer.build((None, 6, 6, 3))
    x = rng.normal(size=(2, 3, 6, 6)).astype(np.float32)
    twin = TWINS[[t.key for t in TWINS].index("separable_conv2d")]
    assert_differ(*twin.outputs(module, layer, x))
    load_keras(layer, rule, torch_to_keras(rule, torch_arrays(module), expect=shapes(keras_arrays(layer, rule)), C=3))
    np.testing.assert_allclose(*twin.outputs(module, layer, x)[::-1], **TOL)
    # Back, Keras has no depthwise bias to give: a torch depthwise conv with a bias is refused.
    with pytest.raises(ValueError, match="destination has torch 'depthwise.bias'"):
        keras_to_torch(rule, keras_arrays(layer, rule), expect=shapes(torch_arrays(module)))


def test_batch_norm_drops_and_recreates_num_batches_tracked() -> None:
    rule = layouts.rule("batch_norm")
    bn = nn.BatchNorm2d(3)
    bn.num_batches_tracked += 7
    k = torch_to_keras(rule, torch_arrays(bn))
    assert list(k) == ["gamma", "beta", "moving_mean", "moving_variance"]
    t = keras_to_torch(rule, k)
    assert t["num_batches_tracked"].shape == () and t["num_batches_tracked"] == 0
    assert t["num_batches_tracked"].dtype == np.int64


def test_wrong_shapes_are_refused_with_expected_and_actual() -> None:
    rng = np.random.default_rng(8)
    w = rng.normal(size=(4, 6)).astype(np.float32)
    with pytest.raises(ValueError, match=r"'bias' has shape \(5,\), expected \(out,\) = \(4,\)"):
        torch_to_keras("linear", {"weight": w, "bias": np.zeros(5, np.float32)})
    with pytest.raises(ValueError, match=r"'weight' has shape \(8, 3, 3\), expected 4 axes"):
        torch_to_keras("conv2d", {"weight": np.zeros((8, 3, 3), np.float32)})
    # A square kernel fits the wrong destination only by shape; the destination's shapes are checked.
    conv = nn.Conv2d(4, 4, 3)
    with pytest.raises(ValueError, match=r"'kernel' has shape \(3, 3, 8, 4\), the rule gives \(3, 3, 4, 4\)"):
        torch_to_keras("conv2d", torch_arrays(conv), expect={"kernel": (3, 3, 8, 4), "bias": (4,)})
    # A bias on one side only.
    with pytest.raises(ValueError, match="source gives keras 'bias'"):
        torch_to_keras("conv2d", torch_arrays(conv), expect={"kernel": (3, 3, 4, 4)})
    # Heads that do not divide the embedding.
    mha = nn.MultiheadAttention(6, 2, batch_first=True)
    with pytest.raises(ValueError, match=r"in_proj_weight' has shape \(18, 6\)"):
        torch_to_keras("multi_head_attention", torch_arrays(mha), H=4)
    # The RNN biases are added in one direction: one without the other is refused.
    rnn = torch_arrays(nn.RNN(3, 4, batch_first=True))
    del rnn["bias_hh_l0"]
    with pytest.raises(ValueError, match="some but not all"):
        torch_to_keras("simple_rnn", rnn)


def test_missing_unknown_and_underdetermined_are_refused() -> None:
    dw = torch_arrays(nn.Conv2d(3, 6, 3, groups=3))
    with pytest.raises(ValueError, match="cannot tell C, M") as info:
        torch_to_keras("depthwise_conv2d", dw)
    assert info.value.hint == "pass C=... or M=..."
    with pytest.raises(ValueError, match="cannot tell D, H"):
        torch_to_keras("multi_head_attention", torch_arrays(nn.MultiheadAttention(6, 2)))
    with pytest.raises(ValueError, match="unknown parameter heads"):
        torch_to_keras("multi_head_attention", torch_arrays(nn.MultiheadAttention(6, 2)), heads=2)
    with pytest.raises(ValueError, match="unknown torch role"):
        torch_to_keras("linear", {"weight": np.zeros((2, 2)), "weights": np.zeros(2)})
    with pytest.raises(ValueError, match="weight missing"):
        torch_to_keras("linear", {"bias": np.zeros(2)})
    with pytest.raises(ValueError, match="no layout rule pairs torch Conv2d with Keras Dense"):
        rule_for("Conv2d", "Dense")


def test_weight_norm_over_another_axis_is_refused() -> None:
    """torch's default weight norm (dim=0: one g per output channel, shape (cout, 1, 1)) computes another
    function than a norm per kernel position: its g has another shape, and the rule says which."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        per_channel = nn.utils.weight_norm(nn.Conv1d(4, 6, 5, padding=2, groups=2), name="weight", dim=0)
    layer = WeightNormConv1D(6, 5, 2, 2)
    layer.build((None, 9, 4))
    rule = layouts.rule("conv1d_weight_norm")
    with pytest.raises(ValueError, match=r"'weight_g' has shape \(6, 1, 1\), expected \(1, 1, kl\)"):
        torch_to_keras(rule, torch_arrays(per_channel), expect=shapes(keras_arrays(layer, rule)))


def test_fused_parts_are_split_in_order_and_by_head() -> None:
    """The fused rule's split, stated by index: part p, head h, position d of the Keras kernels is column
    p*H*D + h*D + d of a Conv1D weight (in, out), and the way back joins them again."""
    E, H, D = 6, 2, 3
    w = np.arange(E * 3 * H * D, dtype=np.float32).reshape(E, 3 * H * D)
    out = torch_to_keras("hf_conv1d_fused_heads", {"weight": w}, H=H)
    for p in range(3):
        for h in range(H):
            for d in range(D):
                np.testing.assert_array_equal(out[f"{p}/kernel"][:, h, d], w[:, p * H * D + h * D + d])
    np.testing.assert_array_equal(keras_to_torch("hf_conv1d_fused_heads", out)["weight"], w)
    assert layouts.parts("hf_conv1d_fused_heads") == 3 and layouts.parts("linear") == 1


def test_a_position_table_with_an_offset_is_sliced_by_the_offset_only() -> None:
    """`n+offset` rows against `n`: the offset is the torch layer's own setting, never what the shapes
    leave over; a table with other rows than `n + offset` is refused, with the shape it should have."""
    rule = layouts.rule("embedding_offset")
    table = np.arange(8 * 3, dtype=np.float32).reshape(8, 3)
    out = torch_to_keras(rule, {"weight": table}, expect={"embeddings": (6, 3)}, offset=2)
    np.testing.assert_array_equal(out["embeddings"], table[2:])
    back = keras_to_torch(rule, out, expect={"weight": (8, 3)}, offset=2)
    np.testing.assert_array_equal(back["weight"][2:], table[2:])
    np.testing.assert_array_equal(back["weight"][:2], np.zeros((2, 3), np.float32))
    assert layouts.expected_shapes(rule, {"weight": (8, 3)}, "torch->keras", offset=2) == {"embeddings": (6, 3)}
    with pytest.raises(layouts.LayoutError, match=r"has shape \(8, 3\), expected \(n\+offset, d\) = \(7, "):
        torch_to_keras(rule, {"weight": table}, offset=2, n=5)  # a keras table of 5 rows: 8 is not 5 + 2
    with pytest.raises(layouts.LayoutError, match="offset"):
        layouts.expected_shapes(rule, {"embeddings": (6, 3)}, "keras->torch")  # no offset: cannot tell
