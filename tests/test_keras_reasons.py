"""Keras refusals say why (issue 15): Keras wraps the real error of a failed load in one generic
"<class Functional> could not be deserialized properly..." per level of the config; modelshell shows the
line that names the cause, for .keras archives and legacy .h5 models alike."""
from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import h5py  # noqa: E402
import keras  # noqa: E402

from tests.test_formats import run_fail  # noqa: E402

GENERIC = "could not be deserialized properly"


def _model() -> keras.Model:
    inputs = keras.Input((3,))
    return keras.Model(inputs, keras.layers.Dense(2, name="head")(keras.layers.Dense(4)(inputs)))


def _bad_units(layer: dict) -> None:
    layer["config"]["units"] = "two"


def _custom_class(layer: dict) -> None:  # a class no code in this process registered
    layer["module"], layer["class_name"], layer["registered_name"] = "mine.layers", "MyDense", "mine>MyDense"


def _os_system(layer: dict) -> None:
    layer["module"], layer["class_name"] = "os", "system"


def _edited(tmp_path: Path, suffix: str, edit) -> Path:
    """A real saved model whose last layer's config ``edit`` changed, re-packed validly."""
    good, bad = tmp_path / f"good{suffix}", tmp_path / f"bad{suffix}"
    _model().save(str(good))
    if suffix == ".keras":
        with zipfile.ZipFile(good) as source, zipfile.ZipFile(bad, "w") as target:
            for info in source.infolist():
                data = source.read(info)
                if info.filename == "config.json":
                    config = json.loads(data)
                    edit(config["config"]["layers"][-1])
                    data = json.dumps(config).encode()
                target.writestr(info, data)
    else:
        bad.write_bytes(good.read_bytes())
        with h5py.File(bad, "r+") as f:
            config = json.loads(f.attrs["model_config"])
            edit(config["config"]["layers"][-1])
            f.attrs["model_config"] = json.dumps(config)
    return bad


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
@pytest.mark.parametrize("edit, says", [
    (_bad_units, ["Received an invalid value for `units`", "units=two"]),
    (_custom_class, ["is refused", "custom object mine.layers.MyDense", "Could not locate class 'MyDense'",
                     "nothing was run", "register_keras_serializable"]),
    (_os_system, ["is refused", "custom object os.system", "Could not locate class 'system'", "nothing was run"]),
], ids=["bad argument", "unregistered class", "os.system"])
def test_a_keras_refusal_shows_the_line_that_says_why(session, tmp_path, suffix, edit, says):
    path = _edited(tmp_path, suffix, edit)
    error = run_fail(session, f"load {path}", path.name, *says)
    assert GENERIC not in error and "Full object config" not in error and "config=" not in error, error
    assert session.model_names() == []


# --- sizes a small file declares (found by tests/test_fuzz_structured.py) --------------------------------
def _giant_input(layer: dict) -> None:
    layer.setdefault("build_config", {})["input_shape"] = [2**40, 2**40]


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_a_config_declaring_a_shape_no_memory_holds_is_refused_before_keras_builds_it(session, tmp_path, suffix):
    """Keras builds every layer from the config before reading a weight: a 3 KB file declaring an input of
    2**40 x 2**40 had it allocate (or try for minutes)."""
    path = _edited(tmp_path, suffix, _giant_input)
    run_fail(session, f"load {path}", path.name, "is refused", "declares a shape [1099511627776, 1099511627776]",
             "nothing was built")
    assert session.model_names() == []


def test_an_hdf5_dataset_declared_larger_than_memory_is_refused_at_load(session, tmp_path):
    """HDF5 lets a few KB declare a dataset of terabytes, never written: it could never be read."""
    path = tmp_path / "giant.weights.h5"
    keras.Model(inputs := keras.Input((3,)), keras.layers.Dense(2)(inputs)).save_weights(str(path))
    with h5py.File(path, "r+") as f:
        name = next(n for n in ("layers/dense/vars/0", "_layer_checkpoint_dependencies/dense/vars/0") if n in f)
        del f[name]
        f.create_dataset(name, shape=(2**20, 2**20), dtype="float32")
    assert path.stat().st_size < 100_000
    run_fail(session, f"load {path}", path.name, "too large to load", name, "(1048576, 1048576)", "4.0 TB")
    assert session.model_names() == []
