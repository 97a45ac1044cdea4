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
    ("reversed rows (negative stride)", False), ("read-only", False), ("small", False),
])
def test_torch_s_kernel_takes_what_it_can_wrap_and_leaves_the_rest_untouched(name, taken):
    value = _views()[name]
    out = np.full(value.shape, -1.0, np.float32)
    assert torch_adapter._copy_with_torch(out, value) is taken
    if taken:
        np.testing.assert_array_equal(out, value)
    else:
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
