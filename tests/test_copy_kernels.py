"""How the Keras adapter writes: one copy of each value into a buffer the variable then owns alone.

`copy` into Keras makes its own aligned copy of every value (through torch's copy kernel when torch is
loaded, numpy's otherwise) and hands it to TensorFlow through DLPack, so the assign keeps that buffer
instead of copying it again. These tests pin what that must never cost: a wrong value, a value shared
with the torch model it came from, a misaligned buffer, a dtype conversion numpy would have done
differently. Every expectation is computed here with numpy, not by modelshell.
"""
from __future__ import annotations

import os
import subprocess
import sys
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import pytest
import tensorflow as tf
import torch

from modelshell.frameworks import torch as torch_adapter  # lends torch's copy kernel, as loading a torch model does
from modelshell.frameworks.copying import copy_into
from modelshell.core.session import Session

RNG = np.random.default_rng(7)
BIG = RNG.normal(size=(384, 1024)).astype(np.float32)  # 1.5 MiB: above the size worth torch's kernel


def _views() -> dict[str, np.ndarray]:
    read_only = BIG.copy()
    read_only.flags.writeable = False
    return {
        "transposed": BIG.T,
        "permuted 3-d": BIG.reshape(384, 16, 64).transpose(1, 2, 0),
        "contiguous": BIG,
        "reversed rows (negative stride)": BIG[::-1],
        "read-only": read_only.T,
        "every other column": BIG[:, ::2],
        "small": BIG[:4, :5].T,
    }


@pytest.mark.parametrize("name", list(_views()))
def test_copy_into_gives_what_numpy_gives(name):
    value = _views()[name]
    out = np.empty(value.shape, np.float32)
    copy_into(out, value)
    np.testing.assert_array_equal(out, np.array(value))


@pytest.mark.parametrize("name, taken", [
    ("transposed", True), ("permuted 3-d", True), ("contiguous", True),
    ("reversed rows (negative stride)", False), ("read-only", True), ("small", False),
])
def test_torch_s_kernel_takes_what_it_can_wrap_and_leaves_the_rest_untouched(name, taken):
    """A read-only source (a Keras snapshot) is taken: torch only reads it, and says nothing of it."""
    value = _views()[name]
    out = np.full(value.shape, -1.0, np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch_adapter._copy_with_torch(out, value) is taken
    if taken:
        np.testing.assert_array_equal(out, value)
    else:
        assert (out == -1.0).all()


def test_torch_s_kernel_never_writes_a_read_only_destination():
    out = np.full(BIG.T.shape, -1.0, np.float32)
    out.flags.writeable = False
    assert torch_adapter._copy_with_torch(out, BIG.T) is False
    assert (out == -1.0).all()


def test_a_conversion_between_dtypes_is_numpy_s_not_torch_s():
    """float64 -> float16 overflows to inf and int casts truncate, as np.asarray(value, dtype) does."""
    wide = np.concatenate([RNG.normal(size=(400, 1000)), [[1e6] * 1000]]).T  # float64, transposed, > 1 MiB
    out16 = np.empty(wide.shape, np.float16)
    with np.errstate(over="ignore"):  # the overflow is the point
        copy_into(out16, wide)
        np.testing.assert_array_equal(out16, wide.astype(np.float16))
    assert np.isinf(out16[:, -1]).all()
    out_int = np.empty(wide.shape, np.int32)
    copy_into(out_int, wide)
    np.testing.assert_array_equal(out_int, wide.astype(np.int32))


def _linear_twins(dtype: str = "float32"):
    torch.manual_seed(0)
    t = torch.nn.Sequential(torch.nn.Linear(512, 768), torch.nn.Tanh(), torch.nn.Linear(768, 256))
    k = keras.Sequential([keras.Input((512,)), keras.layers.Dense(768, activation="tanh", dtype=dtype),
                          keras.layers.Dense(256, dtype=dtype)])
    return t, k


def _expected_keras_weights(t: torch.nn.Module) -> list[np.ndarray]:
    state = {k: v.detach().numpy().copy() for k, v in t.state_dict().items()}
    return [state["0.weight"].T, state["0.bias"], state["2.weight"].T, state["2.bias"]]


def test_after_a_copy_the_keras_variables_share_nothing_with_the_torch_model():
    t, k = _linear_twins()
    session = Session()
    session.namespace.update(t=t, k=k)
    assert session.run_line("copy t k").ok
    expected = _expected_keras_weights(t)
    for got, want in zip(k.get_weights(), expected):
        np.testing.assert_array_equal(got, want)
    with torch.no_grad():
        for parameter in t.parameters():
            parameter.mul_(3.0).add_(1.0)  # in place: a Keras variable aliasing torch memory would change too
    for got, want in zip(k.get_weights(), expected):
        np.testing.assert_array_equal(got, want)


def test_the_written_variables_are_aligned_and_compute_the_torch_model_s_outputs():
    t, k = _linear_twins()
    session = Session()
    session.namespace.update(t=t, k=k)
    assert session.run_line("copy t k").ok
    for variable in k.weights:
        address = np.asarray(tf.convert_to_tensor(variable.value)).ctypes.data
        assert address % 64 == 0, variable.path
    x = RNG.normal(size=(5, 512)).astype(np.float32)
    w1, b1, w2, b2 = _expected_keras_weights(t)
    by_hand = np.tanh(x @ w1 + b1) @ w2 + b2  # numpy, from torch's own state_dict
    np.testing.assert_allclose(np.asarray(k(x, training=False)), by_hand, atol=1e-5, rtol=1e-5)
    k.weights[0].assign(np.zeros(k.weights[0].shape, np.float32))  # the variable stays an ordinary one
    np.testing.assert_array_equal(k.get_weights()[0], 0.0)


def test_a_float16_keras_model_gets_numpy_s_float16_of_torch_s_float32():
    t, k = _linear_twins("float16")
    session = Session()
    session.namespace.update(t=t, k=k)
    assert session.run_line("copy t k").ok
    for variable, want in zip(k.weights, _expected_keras_weights(t)):
        assert variable.dtype == "float16"
        np.testing.assert_array_equal(np.asarray(variable.numpy()), want.astype(np.float16))


def test_importing_the_copy_module_imports_no_framework_and_no_numpy():
    code = "import sys, modelshell.frameworks.copying; print(sorted({'torch', 'tensorflow', 'keras', 'numpy'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_keras_model_trains_on_the_buffers_a_copy_handed_over():
    """Optimizers update variables in place; on a buffer TensorFlow did not allocate that must still work."""
    t, k = _linear_twins()
    session = Session()
    session.namespace.update(t=t, k=k)
    assert session.run_line("copy t k").ok
    copied = k.get_weights()
    k.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1), loss="mse")
    x, y = RNG.normal(size=(32, 512)).astype(np.float32), RNG.normal(size=(32, 256)).astype(np.float32)
    gradient_step = k.train_on_batch(x, y)
    assert np.isfinite(gradient_step)
    assert all(not np.array_equal(new, old) for new, old in zip(k.get_weights(), copied))
    np.testing.assert_array_equal(copied[0], _expected_keras_weights(t)[0])  # the torch model is not touched


# --- a reshape that no view can take, made only when it is written -----------------------------------------
def _flatten_view() -> np.ndarray:
    """A torch Linear weight (out, C*H*W) seen as Keras's (H, W, C, out): the first Dense after a flatten."""
    return RNG.normal(size=(24, 8 * 3 * 5)).astype(np.float32).reshape(24, 8, 3, 5).transpose(2, 3, 1, 0)


def test_reshaped_is_a_view_where_numpy_makes_one_and_never_a_copy():
    from modelshell.frameworks.copying import Reshaped, reshaped

    contiguous = BIG.reshape(384, 16, 64)
    view = reshaped(contiguous, (384, -1))
    assert isinstance(view, np.ndarray) and np.shares_memory(view, BIG) and view.shape == (384, 1024)
    flatten = _flatten_view()
    lazy = reshaped(flatten, (-1, 24))
    assert isinstance(lazy, Reshaped) and np.shares_memory(lazy.view, flatten)
    assert np.shape(lazy) == (120, 24) and np.size(lazy) == 2880 and lazy.dtype == np.float32
    np.testing.assert_array_equal(np.asarray(lazy), np.reshape(flatten, (-1, 24)))  # numpy's own reshape
    np.testing.assert_array_equal(np.asarray(lazy.reshape(24, 120)), np.reshape(flatten, (24, 120)))
    with pytest.raises(ValueError):
        reshaped(flatten, (7, -1))  # numpy refuses it too: 2880 is no multiple of 7
    with pytest.raises(ValueError):
        np.asarray(lazy, copy=False)  # it has no memory of its own to give without a copy


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_copy_into_writes_a_reshaped_view_as_numpy_s_reshape_would(dtype):
    from modelshell.frameworks.copying import reshaped

    # 14.7 MB, its last axis the source's rows: copied in two slices of that axis, through torch's kernel
    big = RNG.normal(size=(1024, 512 * 7)).astype(np.float32).reshape(1024, 512, 7).transpose(2, 1, 0)
    for view in (_flatten_view(), big):
        lazy = reshaped(view, (-1, view.shape[-1]))
        out = np.full(lazy.shape, -1, dtype)
        copy_into(out, lazy)
        np.testing.assert_array_equal(out, np.reshape(view, lazy.shape).astype(dtype))


@pytest.mark.parametrize("case", ["torch -> keras flatten", "keras -> torch flatten", "with a unit axis", "3-d"])
def test_copy_into_in_blocks_gives_numpy_s_reshape_whichever_axis_it_slices(case, monkeypatch):
    """The blocked copy slices the destination's last axis, or the longest axis that is neither side's
    innermost; blocks made small here so that small arrays are sliced too. Every way must give exactly
    numpy's own reshape."""
    import modelshell.frameworks.copying as copying

    monkeypatch.setattr(copying, "_BLOCK_BYTES", 4096)
    monkeypatch.setattr(copying, "_TILE_BYTES", 1024)
    weight = RNG.normal(size=(96, 16 * 5 * 5)).astype(np.float32)
    views = {
        "torch -> keras flatten": (weight.reshape(96, 16, 5, 5).transpose(2, 3, 1, 0), (400, 96)),
        "keras -> torch flatten": (weight.T.copy().reshape(25, 16, 96).transpose(2, 1, 0), (96, 400)),
        "with a unit axis": (weight.T.copy().reshape(25, 16, 96).transpose(2, 1, 0)[..., None], (96, 400)),
        "3-d": (weight.reshape(96, 20, 20).transpose(1, 0, 2), (20, 96 * 20)),
    }
    view, shape = views[case]
    lazy = copying.reshaped(view, shape)
    out = np.full(shape, np.nan, np.float32)
    copy_into(out, lazy)
    np.testing.assert_array_equal(out, np.reshape(view, shape))


def test_copy_into_refuses_a_reshaped_value_into_a_strided_buffer():
    """A strided ``out`` has no view in the value's shape: reshaping it would copy, and the values would land
    in that copy, leaving ``out`` as it was. It must fail loudly instead."""
    from modelshell.frameworks.copying import reshaped

    lazy = reshaped(np.arange(24, dtype=np.float32).reshape(6, 4).T, (6, 4))  # (4, 6) F-ordered, read as (6, 4)
    out = np.zeros((4, 6), np.float32).T  # (6, 4), F-ordered: no view of it is (4, 6)
    with pytest.raises(ValueError):
        copy_into(out, lazy)
    assert (out == 0).all()


def _conv_flatten_twins():
    torch.manual_seed(0)
    t = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(8 * 6 * 6, 5))
    k = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(8, 3, activation="relu"), keras.layers.Flatten(),
                          keras.layers.Dense(5)])
    return t, k


@pytest.mark.parametrize("direction", ["t k", "k t"])
def test_the_dense_after_a_flatten_is_converted_without_a_copy_and_written_right(direction):
    """The (C, H, W) -> (H, W, C) reorder of the Dense after a flatten is a transpose whose reshape no view
    can take: the value handed to ``write`` must be a view of the source (not a copy of it, which held
    VGG16's 411 MB kernel once more), and the write must still give both models the same function."""
    from modelshell.frameworks.copying import Reshaped
    from modelshell.transfer.plan import converted_values, make_plan

    t, k = _conv_flatten_twins()
    session = Session()
    session.namespace.update(t=t, k=k)
    src, dst = direction.split()
    a, b = session.model(src), session.model(dst)
    values = converted_values(make_plan(a, b, src, dst), a)
    lazy = [name for name, value in values.items() if isinstance(value, Reshaped)]
    assert len(lazy) == 1, {n: type(v) for n, v in values.items()}
    source = t[3].weight.detach().numpy() if src == "t" else np.asarray(tf.convert_to_tensor(k.layers[-1].kernel.value))
    assert np.shares_memory(values[lazy[0]].view, source)
    assert session.run_line(f"copy {direction} --no-verify").ok
    x = RNG.normal(size=(2, 3, 8, 8)).astype(np.float32)
    with torch.no_grad():
        yt = t(torch.from_numpy(x)).numpy()
    yk = np.asarray(k(x.transpose(0, 2, 3, 1), training=False))
    np.testing.assert_allclose(yt, yk, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("direction", ["t k", "k t"])
def test_a_checked_copy_makes_each_value_once_for_its_run_and_its_write(direction, monkeypatch):
    """The confirming run and the write take the same values, made once as the destination's own tensors
    (``prepared``): into Keras every value is copied into a buffer of its own once (a second conversion
    was most of a TensorFlow write), into torch the flatten reorder is made once (a run through it as a
    strided view was 10x slower). Made twice, these counts double; the outputs must still agree."""
    import modelshell.frameworks.keras as keras_adapter

    t, k = _conv_flatten_twins()
    for variable in k.weights:  # Keras starts its biases at zero: a skipped bias would pass unseen
        variable.assign(RNG.normal(size=tuple(variable.shape)).astype(np.float32) * 0.3)
    with torch.no_grad():
        for parameter in t.parameters():
            parameter.add_(torch.from_numpy(RNG.normal(size=tuple(parameter.shape)).astype(np.float32)) * 0.3)
    from modelshell.frameworks.copying import Reshaped

    made: list[tuple[int, ...]] = []  # into Keras: every value; into torch: the reorders made (a Reshaped)
    adapter = keras_adapter if direction == "t k" else torch_adapter
    original = adapter.copy_into

    def counted(out, value):
        if direction == "t k" or isinstance(value, Reshaped):
            made.append(tuple(out.shape))
        return original(out, value)

    monkeypatch.setattr(adapter, "copy_into", counted)
    x = RNG.normal(size=(2, 3, 8, 8)).astype(np.float32)

    def outputs():
        with torch.no_grad():
            return t(torch.from_numpy(x)).numpy(), np.asarray(k(x.transpose(0, 2, 3, 1), training=False))

    assert not np.allclose(*outputs(), atol=1e-3)  # they differ before the copy
    session = Session()
    session.namespace.update(t=t, k=k)
    done = session.run_line(f"copy {direction}")
    assert done.ok and "outputs agree" in done.results[0].text, done.error
    if direction == "t k":
        assert sorted(made) == sorted(tuple(v.shape) for v in k.weights), made
    else:
        assert made == [tuple(t[3].weight.shape)], made
    np.testing.assert_allclose(*outputs(), atol=1e-5, rtol=1e-5)


def _failing_copies(monkeypatch, after: int) -> dict[str, int]:
    """``Tensor.copy_`` raises at its ``after + 1``-th call, once: a framework failing in the middle."""
    calls = {"n": 0}
    original = torch.Tensor.copy_

    def failing(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == after + 1:
            raise RuntimeError("injected")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "copy_", failing)
    return calls


def _small_model(dtype):
    torch.manual_seed(1)
    return torch.nn.Sequential(torch.nn.Linear(300, 200), torch.nn.LayerNorm(200), torch.nn.Linear(200, 100)).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_torch_write_that_fails_midway_puts_back_every_tensor(dtype, monkeypatch):
    """Where a write could fail (a value in the destination's own memory: here one LayerNorm tensor takes
    the other's, which an earlier write may already have changed), each tensor is backed up before it is
    written, and the backups (numpy's copies) give back every tensor bit for bit when the fourth write
    fails."""
    from modelshell.frameworks.detect import wrap_object

    model = _small_model(dtype)
    before = {n: v.detach().clone() for n, v in model.state_dict().items()}
    handle = wrap_object(model, "m")
    new = {n: RNG.normal(size=tuple(v.shape)) for n, v in before.items()}
    new["1.weight"] = model[1].bias.detach().numpy()  # a view of the destination itself
    import modelshell.frameworks.torch as adapter

    backups = []
    monkeypatch.setattr(adapter, "_backup", lambda tensor, original=adapter._backup: backups.append(1) or original(tensor))
    calls = _failing_copies(monkeypatch, after=3)
    with pytest.raises(RuntimeError, match="injected"):
        handle.write(dict(new))
    assert len(backups) == 4
    assert calls["n"] == 4 + 4  # three tensors were overwritten, the fourth failed, and all four put back
    monkeypatch.undo()
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name]), name
    handle.write(dict(new))  # and the model is still fine to write into
    assert not torch.equal(model[0].weight.detach(), before["0.weight"])
    assert torch.equal(model[1].weight.detach(), before["1.bias"])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_torch_write_that_cannot_fail_makes_no_backup_and_says_if_it_fails_anyway(dtype, monkeypatch):
    """Values of the destination's dtypes and shapes in memory of their own: nothing can fail, so no backup
    is made (no copy_ beyond the writes) and every tensor is written. Should torch fail anyway, the error
    says how much was written instead of claiming nothing changed."""
    from modelshell.core.errors import ModelshellError
    from modelshell.frameworks.detect import wrap_object

    import modelshell.frameworks.torch as adapter

    model = _small_model(dtype)
    handle = wrap_object(model, "m")
    new = {n: RNG.normal(size=tuple(v.shape)).astype(np.float32) for n, v in model.state_dict().items()}
    backups = []
    monkeypatch.setattr(adapter, "_backup", lambda tensor: backups.append(tensor) or tensor.clone())
    calls = _failing_copies(monkeypatch, after=10**6)
    handle.write(dict(new))
    assert calls["n"] == len(new) and not backups  # one copy per tensor, and no backup taken
    for name, tensor in model.state_dict().items():
        expected = torch.from_numpy(new[name]).to(dtype)
        assert torch.equal(tensor, expected), name
    _failing_copies(monkeypatch, after=2)
    with pytest.raises(ModelshellError, match="after 2 of 6 tensors were written: the model is partly changed"):
        handle.write(dict(new))


def test_a_value_in_the_destinations_memory_at_an_offset_takes_the_backups(monkeypatch):
    """A destination whose tensors are views of one flat buffer, and a value that views that buffer at
    another tensor's offset: the value's memory meets the destination's even though no two start at the
    same address, so the write backs up each tensor and can roll back."""
    import modelshell.frameworks.torch as adapter
    from modelshell.frameworks.detect import wrap_object

    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 4))
    flat = torch.randn(sum(p.numel() for p in model.parameters()))
    offset = 0
    with torch.no_grad():
        for p in model.parameters():
            p.data = flat[offset:offset + p.numel()].view(p.shape)
            offset += p.numel()
    handle = wrap_object(model, "m")
    second_bias = model[1].bias.detach().numpy()  # a view of the flat buffer, not at its start
    assert model[1].bias.untyped_storage().data_ptr() != second_bias.ctypes.data
    new = {n: RNG.normal(size=tuple(v.shape)).astype(np.float32) for n, v in model.state_dict().items()}
    new["0.bias"] = second_bias
    backups = []
    monkeypatch.setattr(adapter, "_backup", lambda tensor, original=adapter._backup: backups.append(1) or original(tensor))
    handle.write(new)
    assert len(backups) == 4
