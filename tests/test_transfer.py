"""`pair`, `copy` and `verify` on whole twin models, proven by the test's own forward passes.

For every row of LAYOUTS.md there is a model written in both frameworks. Both get independent random
weights (so any destination tensor that `copy` forgot keeps a wrong value and shows); the outputs must
differ before `copy SRC DST` and agree to 1e-5 after it, in each direction. The outputs are computed
here (torch eval() + no_grad on channels-first input, Keras training=False on the channels-last
transpose), never by modelshell's `verify`, so a bug shared by `copy` and `verify` cannot hide.
"""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import pytest
import torch
from torch import nn

from modelshell import demo
from modelshell.core.session import Session
from twins import randomize_torch_state

L = keras.layers
TOL = dict(atol=1e-5, rtol=1e-5)
T2K, K2T = "torch->keras", "keras->torch"


# ----------------------------------------------------------------------------------------------------
# Weights and forward passes, done here and not through modelshell


def randomize_torch(model: nn.Module, rng: np.random.Generator, scale: float = 0.4) -> None:
    """Every parameter and buffer random, a non-zero batch count."""
    randomize_torch_state(model, rng, scale, count=7)


def randomize_keras(model: keras.Model, rng: np.random.Generator, scale: float = 0.4) -> None:
    new = []
    for v in model.weights:
        shape = tuple(v.shape)
        if v.path.endswith("moving_variance"):
            new.append(rng.uniform(0.5, 1.5, shape).astype(np.float32))
        else:
            new.append(rng.normal(0.0, scale, shape).astype(np.float32))
    model.set_weights(new)


def torch_state(model: nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


def keras_state(model: keras.Model) -> dict[str, np.ndarray]:
    return {v.path: np.array(v.numpy()) for v in model.weights}


def assert_same_state(before: dict[str, np.ndarray], after: dict[str, np.ndarray]) -> None:
    assert list(before) == list(after)
    for name in before:
        np.testing.assert_array_equal(after[name], before[name], err_msg=name)


def run_torch(model: nn.Module, x: np.ndarray) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def run_keras(model: keras.Model, x: np.ndarray) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(model(x, training=False)))


def channels_last(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.moveaxis(x, 1, -1))


def channels_first(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.moveaxis(x, -1, 1))


def assert_differ(a: np.ndarray, b: np.ndarray) -> None:
    assert a.shape == b.shape
    assert np.max(np.abs(a - b)) > 1e-3, "outputs already match before the copy: the test would prove nothing"


# ----------------------------------------------------------------------------------------------------
# The twins: one full model per framework for each row


class SequenceOut(nn.Module):
    """A torch recurrent layer as a model that returns only the sequence output, as Keras does with
    return_sequences=True."""

    def __init__(self, rnn: nn.Module) -> None:
        super().__init__()
        self.rnn = rnn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rnn(x)[0]


class SelfAttention(nn.Module):
    def __init__(self, embed: int, heads: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(embed, heads, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(x, x, x)[0]


def keras_self_attention(steps: int, embed: int, heads: int) -> keras.Model:
    x = keras.Input((steps, embed))
    return keras.Model(x, L.MultiHeadAttention(num_heads=heads, key_dim=embed // heads)(x, x))


def seq(input_shape: tuple[int, ...], *layers: keras.layers.Layer, name: str | None = None) -> keras.Model:
    return keras.Sequential([keras.Input(input_shape), *layers], name=name)


def normal(*shape: int) -> Callable[[np.random.Generator], np.ndarray]:
    return lambda rng: rng.normal(0.0, 1.0, shape).astype(np.float32)


@dataclass
class Twin:
    id: str
    make_torch: Callable[[], nn.Module]
    make_keras: Callable[[], keras.Model]
    make_input: Callable[[np.random.Generator], np.ndarray]  # in torch's layout
    channels_in: bool = False  # Keras gets the channels-last transpose
    channels_out: bool = False  # and gives channels-last outputs back
    scale: float = 0.4

    def outputs(self, tm: nn.Module, km: keras.Model, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        yt = run_torch(tm, x)
        yk = run_keras(km, channels_last(x) if self.channels_in else x)
        return yt, channels_first(yk) if self.channels_out else yk


def image(id: str, make_torch, make_keras, shape: tuple[int, ...], out_channels: bool = True, **kw) -> Twin:
    return Twin(id, make_torch, make_keras, normal(2, *shape), True, out_channels, **kw)


TWINS = [
    Twin(
        "dense", lambda: nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 4)),
        lambda: seq((6,), L.Dense(8, activation="relu"), L.Dense(4)), normal(3, 6),
    ),
    image("conv1d", lambda: nn.Sequential(nn.Conv1d(3, 4, 3)), lambda: seq((7, 3), L.Conv1D(4, 3)), (3, 7)),
    image(
        "conv2d", lambda: nn.Sequential(nn.Conv2d(3, 4, 3, padding=1)),
        lambda: seq((6, 6, 3), L.Conv2D(4, 3, padding="same", name="conv2d"), name="net"), (3, 6, 6),
    ),
    image("conv3d", lambda: nn.Sequential(nn.Conv3d(2, 3, 2)), lambda: seq((4, 4, 4, 2), L.Conv3D(3, 2)), (2, 4, 4, 4)),
    image(
        "conv1d_transpose", lambda: nn.Sequential(nn.ConvTranspose1d(3, 4, 3, stride=2)),
        lambda: seq((5, 3), L.Conv1DTranspose(4, 3, strides=2)), (3, 5),
    ),
    image(
        "conv2d_transpose", lambda: nn.Sequential(nn.ConvTranspose2d(3, 4, 3)),
        lambda: seq((4, 4, 3), L.Conv2DTranspose(4, 3)), (3, 4, 4),
    ),
    image(
        "depthwise_conv2d", lambda: nn.Sequential(nn.Conv2d(3, 6, 3, groups=3)),
        lambda: seq((6, 6, 3), L.DepthwiseConv2D(3, depth_multiplier=2)), (3, 6, 6),
    ),
    image(
        "separable_conv2d",
        lambda: nn.Sequential(nn.Conv2d(3, 6, 3, groups=3, bias=False), nn.Conv2d(6, 5, 1)),
        lambda: seq((6, 6, 3), L.SeparableConv2D(5, 3, depth_multiplier=2)), (3, 6, 6),
    ),
    image(  # two BNs: each Keras BN lists its non-trainable statistics after gamma and beta
        "batch_norm",
        lambda: nn.Sequential(
            nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, eps=1e-3), nn.ReLU(), nn.Conv2d(4, 5, 1), nn.BatchNorm2d(5, eps=1e-3),
        ),
        lambda: seq(
            (6, 6, 3), L.Conv2D(4, 3), L.BatchNormalization(epsilon=1e-3), L.ReLU(), L.Conv2D(5, 1),
            L.BatchNormalization(epsilon=1e-3),
        ),
        (3, 6, 6),
    ),
    Twin(
        "batch_norm_1d", lambda: nn.Sequential(nn.Linear(6, 5), nn.BatchNorm1d(5, eps=1e-3)),
        lambda: seq((6,), L.Dense(5), L.BatchNormalization(epsilon=1e-3)), normal(4, 6),
    ),
    Twin(
        "layer_norm", lambda: nn.Sequential(nn.LayerNorm(6, eps=1e-3)),
        lambda: seq((3, 6), L.LayerNormalization(epsilon=1e-3)), normal(2, 3, 6),
    ),
    Twin(
        "embedding", lambda: nn.Sequential(nn.Embedding(10, 4)), lambda: seq((5,), L.Embedding(10, 4)),
        lambda rng: rng.integers(0, 10, (2, 5)).astype(np.int64),
    ),
    Twin(
        "simple_rnn", lambda: SequenceOut(nn.RNN(3, 4, batch_first=True)),
        lambda: seq((5, 3), L.SimpleRNN(4, return_sequences=True)), normal(2, 5, 3),
    ),
    Twin(
        "lstm", lambda: SequenceOut(nn.LSTM(3, 4, batch_first=True)),
        lambda: seq((5, 3), L.LSTM(4, return_sequences=True)), normal(2, 5, 3),
    ),
    Twin(
        "gru", lambda: SequenceOut(nn.GRU(3, 4, batch_first=True)),
        lambda: seq((5, 3), L.GRU(4, return_sequences=True, reset_after=True)), normal(2, 5, 3),
    ),
    Twin("multi_head_attention", lambda: SelfAttention(8, 2), lambda: keras_self_attention(4, 8, 2), normal(2, 4, 8)),
    image(
        "flatten_after_conv",
        lambda: nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 4 * 4, 5)),
        lambda: seq((4, 4, 3), L.Conv2D(16, 3, padding="same", activation="relu"), L.Flatten(), L.Dense(5)),
        (3, 4, 4), out_channels=False,
    ),
    image("lenet5", demo.torch_lenet5, demo.keras_lenet5, (1, 28, 28), out_channels=False, scale=0.2),
]
BY_ID = {t.id: t for t in TWINS}


def make_session(tm: nn.Module, km: keras.Model) -> Session:
    session = Session()
    session.namespace["pt"] = tm
    session.namespace["ks"] = km
    return session


def built(twin: Twin, seed: int) -> tuple[nn.Module, keras.Model, np.ndarray]:
    """Both models with independent random weights, and an input in torch's layout."""
    rng = np.random.default_rng(seed)
    tm, km = twin.make_torch(), twin.make_keras()
    randomize_torch(tm, rng, twin.scale)
    randomize_keras(km, rng, twin.scale)
    return tm, km, twin.make_input(rng)


def expected_counts(tm: nn.Module, km: keras.Model, direction: str) -> tuple[int, int]:
    """Every destination tensor is written: torch's whole state_dict, or every Keras variable."""
    if direction == T2K:
        return len(km.weights), sum(int(np.prod(v.shape)) for v in km.weights)
    state = tm.state_dict()
    return len(state), sum(v.numel() for v in state.values())


# ----------------------------------------------------------------------------------------------------
# Every row, both directions


@pytest.mark.parametrize("direction", [T2K, K2T])
@pytest.mark.parametrize("twin", TWINS, ids=lambda t: t.id)
def test_copy_makes_twins_compute_the_same(twin: Twin, direction: str) -> None:
    tm, km, x = built(twin, seed=0 if direction == T2K else 1)
    session = make_session(tm, km)
    assert_differ(*twin.outputs(tm, km, x))
    tensors, params = expected_counts(tm, km, direction)

    outcome = session.run_line("copy pt ks" if direction == T2K else "copy ks pt")

    assert outcome.ok, outcome.error
    data = outcome.results[0].data
    assert (data["tensors"], data["params"]) == (tensors, params)
    assert data["missing"] == [] and data["warnings"] == []
    yt, yk = twin.outputs(tm, km, x)
    np.testing.assert_allclose(yk, yt, **TOL)


@pytest.mark.parametrize(
    ("twin_id", "t2k", "k2t"),
    [
        ("dense", (4, 92), (4, 92)),
        # torch -> Keras drops num_batches_tracked; back, it is written (as 0), one more tensor.
        ("batch_norm", (12, 173), (14, 175)),
        # Keras has one recurrent bias, torch two (b_hh written as 0).
        ("simple_rnn", (3, 32), (4, 36)),
        # One Keras layer, two torch layers: the depthwise conv has no bias.
        ("separable_conv2d", (3, 89), (3, 89)),
        ("multi_head_attention", (8, 288), (4, 288)),
        ("lenet5", (10, 61706), (10, 61706)),
    ],
)
def test_copy_counts(twin_id: str, t2k: tuple[int, int], k2t: tuple[int, int]) -> None:
    """The message's counts, written out by hand for the rows where the two sides count differently."""
    twin = BY_ID[twin_id]
    tm, km, _ = built(twin, seed=2)
    session = make_session(tm, km)
    for line, want in (("copy pt ks", t2k), ("copy ks pt", k2t)):
        outcome = session.run_line(line)
        assert outcome.ok, outcome.error
        data = outcome.results[0].data
        assert (data["tensors"], data["params"]) == want
        assert f"copied {want[0]} tensors" in outcome.results[0].text


def test_batch_norm_copies_running_statistics_and_resets_the_count() -> None:
    tm, km, _ = built(BY_ID["batch_norm"], seed=3)
    session = make_session(tm, km)
    assert session.run_line("copy ks pt").ok
    for bn, kbn in ((tm[1], km.layers[1]), (tm[4], km.layers[4])):
        np.testing.assert_array_equal(bn.running_mean.numpy(), kbn.moving_mean.numpy())
        np.testing.assert_array_equal(bn.running_var.numpy(), kbn.moving_variance.numpy())
        np.testing.assert_array_equal(bn.weight.detach().numpy(), kbn.gamma.numpy())
        assert int(bn.num_batches_tracked) == 0
        assert np.std(bn.running_var.numpy()) > 0.05  # non-trivial statistics, not the 1s of a fresh layer


# ----------------------------------------------------------------------------------------------------
# pair


def pair_data(session: Session, line: str) -> dict[str, Any]:
    outcome = session.run_line(line)
    assert outcome.ok, outcome.error
    return outcome.results[0].data


def test_pair_json_has_the_documented_keys() -> None:
    tm, km, _ = built(BY_ID["conv2d"], seed=4)
    outcome = make_session(tm, km).run_line("pair pt ks --json")
    assert outcome.ok and outcome.as_json
    data = outcome.results[0].data
    assert {"pairs", "missing", "unexpected", "mismatched", "warnings"} <= set(data)
    assert data["missing"] == data["unexpected"] == data["mismatched"] == data["warnings"] == []
    assert data["pairs"] == [
        {"a": "0.weight", "b": "net/conv2d/kernel", "a_shape": [4, 3, 3, 3], "b_shape": [3, 3, 3, 4],
         "transform": "transpose(2,3,1,0)"},
        {"a": "0.bias", "b": "net/conv2d/bias", "a_shape": [4], "b_shape": [4], "transform": "as is"},
    ]


def test_pair_transforms() -> None:
    tm, km, _ = built(BY_ID["dense"], seed=4)
    data = pair_data(make_session(tm, km), "pair pt ks")
    assert [p["transform"] for p in data["pairs"]] == [".T", "as is", ".T", "as is"]

    tm, km, _ = built(BY_ID["conv2d"], seed=4)
    back = pair_data(make_session(tm, km), "pair ks pt")["pairs"]
    assert (back[0]["a"], back[0]["b"]) == ("net/conv2d/kernel", "0.weight")
    assert back[0]["transform"] == "transpose(3,2,0,1)"

    tm, km, _ = built(BY_ID["flatten_after_conv"], seed=4)
    pairs = pair_data(make_session(tm, km), "pair pt ks")["pairs"]
    dense = [p for p in pairs if p["a"] == "3.weight"]
    assert len(dense) == 1 and dense[0]["transform"].startswith("flatten-permute C=16 ")
    assert dense[0]["a_shape"] == [5, 256] and dense[0]["b_shape"] == [256, 5]


def test_pair_separable_pairs_one_keras_layer_with_two_torch_layers() -> None:
    tm, km, _ = built(BY_ID["separable_conv2d"], seed=4)
    data = pair_data(make_session(tm, km), "pair pt ks")
    assert data["missing"] == data["unexpected"] == data["mismatched"] == []
    targets = {p["a"]: p["b"] for p in data["pairs"] if isinstance(p["a"], str)}
    assert targets["0.weight"].endswith("depthwise_kernel")
    assert targets["1.weight"].endswith("pointwise_kernel")


# ----------------------------------------------------------------------------------------------------
# verify


@pytest.mark.parametrize("twin_id", ["dense", "conv2d", "conv3d", "batch_norm", "flatten_after_conv", "lenet5"])
def test_verify_fails_before_and_passes_after_copy(twin_id: str) -> None:
    tm, km, _ = built(BY_ID[twin_id], seed=5)
    session = make_session(tm, km)
    before = session.run_line("verify pt ks")
    assert not before.ok
    assert before.error and "\n" not in before.error and "differ" in before.error
    assert session.run_line("copy pt ks").ok
    after = session.run_line("verify pt ks")
    assert after.ok, after.error
    assert after.results[0].data["ok"] is True


# ----------------------------------------------------------------------------------------------------
# Refusals and traps


@pytest.mark.parametrize("direction", [T2K, K2T])
def test_copy_that_cannot_fit_writes_nothing(direction: str) -> None:
    tm = nn.Sequential(nn.Linear(8, 4))
    km = seq((8,), L.Dense(5))
    rng = np.random.default_rng(6)
    randomize_torch(tm, rng)
    randomize_keras(km, rng)
    session = make_session(tm, km)
    before_t, before_k = torch_state(tm), keras_state(km)

    outcome = session.run_line("copy pt ks" if direction == T2K else "copy ks pt")

    assert not outcome.ok
    assert outcome.error.startswith("cannot copy") and "\n" not in outcome.error
    assert "(8, 5)" in outcome.error or "(4, 8)" in outcome.error  # names the shape that does not fit
    assert_same_state(before_t, torch_state(tm))
    assert_same_state(before_k, keras_state(km))


def test_batch_norm_epsilon_mismatch_is_a_warning() -> None:
    tm = nn.Sequential(nn.BatchNorm2d(4))  # eps 1e-5
    km = seq((5, 5, 4), L.BatchNormalization())  # epsilon 1e-3
    session = make_session(tm, km)
    warnings = pair_data(session, "pair pt ks")["warnings"]
    assert len(warnings) == 1 and "eps" in warnings[0] and "epsilon" in warnings[0]

    outcome = session.run_line("copy pt ks")
    assert outcome.ok, outcome.error
    assert outcome.results[0].data["warnings"] == warnings
    assert "warning:" in outcome.results[0].text and "epsilon" in outcome.results[0].text


@pytest.mark.parametrize("direction", [T2K, K2T])
def test_gru_without_reset_after_is_reported_and_refused(direction: str) -> None:
    tm = SequenceOut(nn.GRU(3, 4, batch_first=True))
    km = seq((5, 3), L.GRU(4, return_sequences=True, reset_after=False))
    rng = np.random.default_rng(7)
    randomize_torch(tm, rng)
    randomize_keras(km, rng)
    session = make_session(tm, km)
    src, dst = ("pt", "ks") if direction == T2K else ("ks", "pt")

    data = pair_data(session, f"pair {src} {dst}")
    assert data["mismatched"]
    assert any("reset_after" in w for w in data["warnings"])

    before_t, before_k = torch_state(tm), keras_state(km)
    outcome = session.run_line(f"copy {src} {dst}")
    assert not outcome.ok
    assert outcome.error.startswith("cannot copy") and "\n" not in outcome.error
    assert "(2, 12)" in outcome.error  # the (2, 3H) bias of reset_after=True that is not there
    assert_same_state(before_t, torch_state(tm))
    assert_same_state(before_k, keras_state(km))


def test_plain_transpose_of_the_flatten_case_is_wrong_and_copy_is_right() -> None:
    twin = BY_ID["flatten_after_conv"]
    tm, km, x = built(twin, seed=8)
    conv, dense = km.layers[0], km.layers[2]
    conv.set_weights([tm[0].weight.detach().numpy().transpose(2, 3, 1, 0), tm[0].bias.detach().numpy()])
    naive = [tm[3].weight.detach().numpy().T, tm[3].bias.detach().numpy()]
    dense.set_weights(naive)
    assert dense.kernel.shape == naive[0].shape  # the naive copy fits ...
    assert_differ(*twin.outputs(tm, km, x))  # ... and gives the wrong numbers

    assert make_session(tm, km).run_line("copy pt ks").ok
    np.testing.assert_allclose(*twin.outputs(tm, km, x)[::-1], **TOL)
    assert not np.allclose(dense.kernel.numpy(), naive[0])


def test_copy_with_nothing_to_pair_is_an_error_not_a_silent_success() -> None:
    torch_model = torch.nn.Sequential(torch.nn.Linear(4, 3))
    keras_model = keras.Sequential([keras.Input((4,), dtype="int32"), keras.layers.Embedding(10, 3)])
    session = make_session(torch_model, keras_model)
    before = [v.numpy().copy() for v in keras_model.weights]
    outcome = session.run_line("copy pt ks")
    assert not outcome.ok
    assert outcome.error == (
        "cannot copy pt into ks: 3 tensors do not pair: sequential_48/embedding_2/embeddings (dst); 0.weight (src); "
        "0.bias (src); nothing was copied (`pair pt ks` shows why; --partial copies what pairs)"
    ) or (outcome.error.startswith("cannot copy pt into ks: 3 tensors do not pair: ") and "nothing was copied" in outcome.error)
    partial = session.run_line("copy pt ks --partial")
    assert not partial.ok and partial.error == "nothing in pt pairs with ks; nothing was copied (`pair pt ks` shows why)"
    for old, new in zip(before, keras_model.weights):
        np.testing.assert_array_equal(old, new.numpy())


def test_a_torch_safetensors_file_pairs_in_model_order_and_carries_a_copy(tmp_path) -> None:
    """safetensors sorts names as text (0, 11, 3, ...): the file must still pair with its own model
    (by name) and with the Keras twin (in numeric order), and carry a copy through save and load."""
    tm, km, x = built(BY_ID["lenet5"], seed=6)
    session = make_session(tm, km)
    assert session.run_line(f"save pt {tmp_path / 'pt.safetensors'}").ok
    assert session.run_line(f"load {tmp_path / 'pt.safetensors'} as st").ok
    own = session.run_line("pair pt st --json").results[0].data
    assert len(own["pairs"]) == 10 and not own["missing"] and not own["unexpected"]
    assert all(p["a"] == p["b"] and p["transform"] == "as is" for p in own["pairs"])
    assert session.run_line("copy ks st").ok
    assert session.run_line(f"save st {tmp_path / 'copied.safetensors'}").ok
    fresh = BY_ID["lenet5"].make_torch()
    session.namespace["fresh"] = fresh
    assert session.run_line(f"load {tmp_path / 'copied.safetensors'} as copied").ok
    copied = session.run_line("copy copied fresh")
    assert copied.ok and copied.results[0].data["tensors"] == 10
    with torch.no_grad():
        yt = fresh.eval()(torch.from_numpy(x)).numpy()
    yk = np.asarray(km(np.transpose(x, (0, 2, 3, 1)), training=False))
    np.testing.assert_allclose(yt, yk, atol=1e-5, rtol=1e-5)


def test_stride_2_same_padding_against_symmetric_padding_is_warned_and_really_differs() -> None:
    torch.manual_seed(0)
    tm = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1))
    km = keras.Sequential([keras.Input((8, 8, 3)), L.Conv2D(4, 3, strides=2, padding="same")])
    session = make_session(tm, km)
    plan = session.run_line("pair pt ks --json").results[0].data
    assert any("stride-2 'same'" in w and "padding=[1, 1]" in w for w in plan["warnings"]), plan["warnings"]
    assert not plan["mismatched"]
    copied = session.run_line("copy pt ks")  # the weights are right; the check after the copy says why outputs differ
    assert not copied.ok and "stride-2 'same'" in copied.results[0].text
    assert "outputs differ" in copied.error and "likely cause: conv2d" in copied.error and "stride-2 'same'" in copied.error
    # Same shapes, different numbers: Keras pads (0, 1) where torch pads (1, 1).
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype("float32")
    with torch.no_grad():
        yt = tm.eval()(torch.from_numpy(x)).numpy()
    yk = np.asarray(km(np.transpose(x, (0, 2, 3, 1)), training=False)).transpose(0, 3, 1, 2)
    assert yt.shape == yk.shape and np.abs(yt - yk).max() > 1e-3


class TiedLM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(10, 4)
        self.decoder = nn.Linear(4, 10, bias=False)
        self.decoder.weight = self.embedding.weight  # the output projection is the embedding

    def forward(self, ids):
        return self.decoder(self.embedding(ids))


def test_tied_weights_are_reported_and_copied_once() -> None:
    torch.manual_seed(1)
    tm = TiedLM()
    km = keras.Sequential([keras.Input((5,), dtype="int32"), L.Embedding(10, 4), L.Dense(10, use_bias=False)])
    session = make_session(tm, km)
    plan = session.run_line("pair pt ks --json").results[0].data
    assert "pt: decoder.weight is tied to embedding.weight (one tensor, copied once)" in plan["warnings"]
    ids = np.random.default_rng(0).integers(0, 10, (2, 5))
    # torch -> Keras: both Keras variables get the one tensor (the Dense kernel transposed).
    assert session.run_line("copy pt ks").ok
    with torch.no_grad():
        yt = tm(torch.from_numpy(ids)).numpy()
    np.testing.assert_allclose(np.asarray(km(ids.astype("int32"), training=False)), yt, atol=1e-5)
    # Keras -> torch: the tie holds one tensor, written once, from the embedding.
    rng = np.random.default_rng(2)
    for variable in km.weights:
        variable.assign(rng.standard_normal(tuple(variable.shape)).astype("float32"))
    embeddings = km.weights[0].numpy()
    # The Keras twin is untied (its Dense kernel is not the embedding), so its two tensors would give torch's
    # one tensor two values: the copy refuses before writing, and the torch model is as it was.
    before = tm.embedding.weight.detach().numpy().copy()
    untied = session.run_line("copy ks pt")
    assert not untied.ok and "one tied tensor" in untied.error, untied.error
    np.testing.assert_array_equal(tm.embedding.weight.detach().numpy(), before)
    assert tm.decoder.weight.data_ptr() == tm.embedding.weight.data_ptr()
    # Tied in Keras too (the kernel is the embedding's transpose): it copies, written once, from the embedding.
    km.weights[1].assign(embeddings.T)
    assert session.run_line("copy ks pt").ok
    np.testing.assert_array_equal(tm.embedding.weight.detach().numpy(), embeddings)
    assert tm.decoder.weight.data_ptr() == tm.embedding.weight.data_ptr()
    with torch.no_grad():
        yt = tm(torch.from_numpy(ids)).numpy()
    np.testing.assert_allclose(yt, embeddings[ids] @ embeddings.T, atol=1e-5)


def test_a_plain_and_a_depthwise_torch_conv_are_told_apart_in_one_model() -> None:
    """Both are Conv2d with 4-d weights; only groups says which Keras kind each pairs with. A depthwise
    conv must not pair with a plain Conv2D (and then fail on shapes): it has no partner there."""
    torch.manual_seed(3)
    tm = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1, groups=4))
    plain = keras.Sequential([keras.Input((6, 6, 4)), L.Conv2D(4, 3, padding="same", name="c0"),
                              L.Conv2D(4, 3, padding="same", name="c1")])
    session = make_session(tm, plain)
    plan = session.run_line("pair pt ks --json").results[0].data
    assert not plan["mismatched"], plan["mismatched"]
    assert [p["name"] for p in plan["unexpected"]] == ["1.weight", "1.bias"]
    assert len(plan["missing"]) == 2 and len(plan["pairs"]) == 2
    km = keras.Sequential([keras.Input((6, 6, 4)), L.Conv2D(4, 3, padding="same"),
                           L.DepthwiseConv2D(3, padding="same")])
    session = make_session(tm, km)
    plan = session.run_line("pair pt ks --json").results[0].data
    assert not plan["missing"] and not plan["unexpected"] and not plan["mismatched"], plan
    assert session.run_line("copy pt ks").ok
    x = np.random.default_rng(0).standard_normal((2, 4, 6, 6)).astype("float32")
    with torch.no_grad():
        yt = tm.eval()(torch.from_numpy(x)).numpy()
    yk = np.asarray(km(np.transpose(x, (0, 2, 3, 1)), training=False)).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(yk, yt, atol=1e-5, rtol=1e-5)


def test_a_bfloat16_torch_model_reads_copies_and_verifies(session):
    """numpy has no bfloat16: reading widens to float32 (exact), and verify feeds the model its own dtype."""
    assert session.run_line("import torch, keras; torch.manual_seed(0); m = torch.nn.Linear(3, 2).to(torch.bfloat16)").ok
    assert session.run_line("k = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])").ok
    outcome = session.run_line("copy m k")
    assert outcome.ok, outcome.error
    torch_model, keras_model = session.namespace["m"], session.namespace["k"]
    kernel, bias = keras_model.get_weights()
    np.testing.assert_array_equal(kernel, torch_model.weight.detach().float().numpy().T)
    np.testing.assert_array_equal(bias, torch_model.bias.detach().float().numpy())
    assert session.run_line("verify m k --atol 0.05").ok  # bfloat16 keeps ~3 digits
    strict = session.run_line("verify m k")
    assert not strict.ok and "differ" in strict.error


@pytest.mark.slow
def test_a_copy_from_keras_to_torch_says_nothing_on_stderr(tmp_path):
    """Keras values are read as read-only views of snapshots (no copy); torch must not warn about them.
    In a fresh process, since torch warns only once per process."""
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "copy.ms"
    script.write_text("copy keras_model torch_model\nverify keras_model torch_model\n")
    done = subprocess.run([str(Path(sys.executable).parent / "modelshell"), "run", "--demo", str(script)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "copied 10 tensors" in done.stdout and "ok: max abs diff" in done.stdout
    assert done.stderr == ""
