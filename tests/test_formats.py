"""load and save, format by format, with real torch, Keras, tf-keras, safetensors and h5py files.

Every file is written in ``tmp_path`` by the framework itself (``torch.save``, ``model.save``,
``save_weights``, ``safetensors.torch.save_file``) or by modelshell's ``save``, then read back through
``Session.run_line``; names, shapes and values are checked against the framework's own objects. Bad
inputs must fail with one line that names the file, and leave every model in the session as it was.
"""
from __future__ import annotations

import json
import os
import shlex
import stat
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import h5py  # noqa: E402
import keras  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import save_file as save_safetensors  # noqa: E402
from torch import nn  # noqa: E402

from modelshell.cli import load_demo  # noqa: E402
from modelshell.demo import keras_lenet5, torch_lenet5  # noqa: E402
from modelshell.core.results import Outcome  # noqa: E402
from modelshell.core.session import Session  # noqa: E402

# The tutorial's figures: LeNet-5's state_dict keys and shapes, and the Keras kernels' shapes.
TORCH_FIGURES = [
    ("0.weight", (6, 1, 5, 5)), ("0.bias", (6,)),
    ("3.weight", (16, 6, 5, 5)), ("3.bias", (16,)),
    ("6.weight", (120, 16, 5, 5)), ("6.bias", (120,)),
    ("9.weight", (84, 120)), ("9.bias", (84,)),
    ("11.weight", (10, 84)), ("11.bias", (10,)),
]
KERAS_SHAPES = [(5, 5, 1, 6), (6,), (5, 5, 6, 16), (16,), (5, 5, 16, 120), (120,), (120, 84), (84,), (84, 10), (10,)]
KERAS_LAYERS = ["conv2d", "conv2d", "conv2d_1", "conv2d_1", "conv2d_2", "conv2d_2", "dense", "dense", "dense_1", "dense_1"]
FRAMEWORK_MODULES = ("torch", "tensorflow", "keras", "tf_keras")


# --- helpers ---------------------------------------------------------------------------------------------
def run_ok(session: Session, line: str) -> Outcome:
    outcome = session.run_line(line)
    assert outcome.ok, f"{line!r} failed: {outcome.error}"
    return outcome


def run_fail(session: Session, line: str, *mentions: str) -> str:
    """Run a line that must fail; its error must be one plain line naming what went wrong."""
    outcome = session.run_line(line)
    assert outcome.ok is False, f"{line!r} should have failed"
    error = outcome.error
    assert isinstance(error, str) and error.strip()
    assert "\n" not in error and "Traceback" not in error, error
    assert "internal error" not in error, error
    for mention in mentions:
        assert mention in error, f"{mention!r} not in {error!r}"
    return error


def data_of(session: Session, line: str) -> dict:
    outcome = run_ok(session, line)
    return outcome.results[0].data


def listing(session: Session, name: str) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) of every tensor, as `weights NAME --json` reports them."""
    return [(w["name"], tuple(w["shape"])) for w in data_of(session, f"weights {name} --json")["weights"]]


def values(session: Session, name: str) -> dict[str, np.ndarray]:
    handle = session.model(name)
    return {t.name: handle.read(t.name) for t in handle.tensors()}


def torch_arrays(module: nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in module.state_dict().items()}


def assert_same_arrays(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert sorted(got) == sorted(want)
    for name, array in want.items():
        assert got[name].dtype == array.dtype, name
        np.testing.assert_array_equal(got[name], array, err_msg=name)


def assert_keras_values(session: Session, name: str, model) -> None:
    """The loaded tensors, in order, are the model's weights: same layer, shape and values."""
    loaded = values(session, name)
    assert len(loaded) == len(model.weights)
    for (tensor_name, array), want, layer in zip(loaded.items(), model.get_weights(), KERAS_LAYERS):
        assert f"/{layer}/" in f"/{tensor_name}/", (tensor_name, layer)
        np.testing.assert_array_equal(array, want, err_msg=tensor_name)


def snapshot(session: Session) -> tuple[list[str], set[str], dict[str, dict[str, np.ndarray]]]:
    return session.model_names(), set(session.namespace), {n: values(session, n) for n in session.model_names()}


def assert_unchanged(session: Session, before) -> None:
    names, namespace, arrays = before
    assert session.model_names() == names
    assert set(session.namespace) == namespace
    for name, tensors in arrays.items():
        assert_same_arrays(values(session, name), tensors)


def run_isolated(code: str) -> dict:
    """Run modelshell in a fresh interpreter (so sys.modules shows what a command imported); the code
    prints one JSON line as its last output."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("TF_USE_LEGACY_KERAS", None)
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --- models, built once per module -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def torch_net() -> nn.Module:
    return torch_lenet5()


@pytest.fixture(scope="module")
def keras_net():
    return keras_lenet5()


@pytest.fixture(scope="module")
def tf_keras_net():
    """LeNet-5 in tf-keras (Keras 2), imported as its own package: TF_USE_LEGACY_KERAS stays unset."""
    import tf_keras
    from tf_keras import layers

    tf_keras.utils.set_random_seed(2)
    return tf_keras.Sequential(
        [
            tf_keras.Input(shape=(28, 28, 1)),
            layers.Conv2D(6, (5, 5), padding="same", activation="tanh", name="conv2d"),
            layers.AveragePooling2D((2, 2), strides=2),
            layers.Conv2D(16, (5, 5), activation="tanh", name="conv2d_1"),
            layers.AveragePooling2D((2, 2), strides=2),
            layers.Conv2D(120, (5, 5), activation="tanh", name="conv2d_2"),
            layers.Flatten(),
            layers.Dense(84, activation="tanh", name="dense"),
            layers.Dense(10, activation="softmax", name="dense_1"),
        ],
        name="lenet5_k2",
    )


@pytest.fixture(scope="module")
def models_session() -> Session:
    """The demo models, for saving (which must not change them)."""
    s = Session()
    load_demo(s)
    return s


# --- the tutorial's figures ------------------------------------------------------------------------------
def test_demo_models_have_the_tutorial_figures(demo_session):
    assert listing(demo_session, "torch_model") == TORCH_FIGURES
    keras_listing = listing(demo_session, "keras_model")
    assert [shape for _, shape in keras_listing] == KERAS_SHAPES
    assert [name.split("/")[-2] for name, _ in keras_listing] == KERAS_LAYERS
    assert data_of(demo_session, "weights torch_model --json")["totals"]["total"] == 61706


# --- torch files -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".pt", ".pth", ".bin"])
def test_torch_state_dict_loads_from_each_suffix(session, torch_net, tmp_path, suffix):
    path = tmp_path / f"lenet5{suffix}"
    torch.save(torch_net.state_dict(), path)
    data = data_of(session, f"load {path} --json")
    assert (data["name"], data["framework"], data["class"], data["params"]) == ("lenet5", "torch", "state dict", 61706)
    assert listing(session, "lenet5") == TORCH_FIGURES
    assert_same_arrays(values(session, "lenet5"), torch_arrays(torch_net))


def test_checkpoint_nesting_a_state_dict_flattens_to_dotted_names(session, torch_net, tmp_path):
    path = tmp_path / "checkpoint.pt"
    torch.save({"model": torch_net.state_dict(), "epoch": 3}, path)
    run_ok(session, f"load {path} as ckpt")
    assert listing(session, "ckpt") == [(f"model.{name}", shape) for name, shape in TORCH_FIGURES]
    want = {f"model.{k}": v for k, v in torch_arrays(torch_net).items()}
    assert_same_arrays(values(session, "ckpt"), want)


def test_whole_pickled_module_needs_trust(session, torch_net, tmp_path):
    path = tmp_path / "whole.pt"
    torch.save(torch_net, path)
    run_fail(session, f"load {path}", "whole.pt", "code", "--trust")
    assert session.model_names() == [] and "whole" not in session.namespace

    data = data_of(session, f"load {path} --trust --json")
    assert (data["framework"], data["class"], data["trusted"]) == ("torch", "Sequential", True)
    assert isinstance(session.namespace["whole"], nn.Sequential)
    assert listing(session, "whole") == TORCH_FIGURES
    assert_same_arrays(values(session, "whole"), torch_arrays(torch_net))


class MarkerPayload:
    """Unpickling this runs a shell command that creates a file: what a malicious checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


def test_a_refused_pickle_runs_nothing(session, tmp_path):
    marker = tmp_path / "payload-ran"
    path = tmp_path / "evil.pt"
    torch.save({"weight": torch.ones(2), "payload": MarkerPayload(marker)}, path)

    run_fail(session, f"load {path}", "evil.pt", "code", "--trust")
    assert not marker.exists()
    # The payload is live: a trusted load does run it, so its absence above is the refusal's doing.
    run_ok(session, f"load {path} --trust")
    assert marker.exists()


def test_damaged_bytes_are_not_mistaken_for_pickled_code(session, tmp_path):
    """Random bytes fail torch's weights-only unpickler too; --trust must not be offered as the fix."""
    path = tmp_path / "noise.pt"
    path.write_bytes(b"\x80" + bytes(range(7, 250)))  # starts like a pickle, then garbage
    error = run_fail(session, f"load {path}", "noise.pt")
    assert "--trust" not in error and "weights_only" not in error


def test_torchscript_lists_its_tensors_without_trust_and_loads_whole_with_it(session, torch_net, tmp_path):
    """Without --trust a TorchScript archive is never given to torch.jit.load (which runs its code): its
    tensors are read from its data.pkl, a state dict with no architecture."""
    path = tmp_path / "scripted.pt"
    torch.jit.script(torch_net).save(str(path))
    data = data_of(session, f"load {path} --json")
    assert (data["framework"], data["class"], data["trusted"]) == ("torch", "state dict", False)
    assert listing(session, "scripted") == TORCH_FIGURES
    assert_same_arrays(values(session, "scripted"), torch_arrays(torch_net))
    data = data_of(session, f"load {path} as whole --trust --json")
    assert (data["class"], data["trusted"]) == ("RecursiveScriptModule", True)
    assert_same_arrays(values(session, "whole"), torch_arrays(torch_net))


def test_safetensors_loads_without_importing_torch(torch_net, tmp_path):
    path = tmp_path / "lenet5.safetensors"
    save_safetensors({k: v.contiguous() for k, v in torch_net.state_dict().items()}, str(path))
    found = run_isolated(f"""
        import json, sys
        from modelshell.core.session import Session
        s = Session()
        assert s.run_line({f"load {path}"!r}).ok
        out = s.run_line("weights lenet5 --json")
        assert out.ok, out.error
        print(json.dumps({{
            "framework": out.results[0].data["framework"],
            "weights": [[w["name"], w["shape"]] for w in out.results[0].data["weights"]],
            "bias": s.model("lenet5").read("11.bias").tolist(),
            "modules": [m for m in {FRAMEWORK_MODULES!r} if m in sys.modules],
        }}))
    """)
    assert found["modules"] == []
    assert found["framework"] == "torch"
    assert sorted((name, tuple(shape)) for name, shape in found["weights"]) == sorted(TORCH_FIGURES)
    np.testing.assert_array_equal(np.array(found["bias"], dtype=np.float32), torch_arrays(torch_net)["11.bias"])


def test_keras_weights_h5_loads_without_importing_tensorflow(keras_net, tmp_path):
    path = tmp_path / "lenet5.weights.h5"
    keras_net.save_weights(str(path))
    found = run_isolated(f"""
        import json, sys
        from modelshell.core.session import Session
        s = Session()
        assert s.run_line({f"load {path}"!r}).ok
        out = s.run_line("weights lenet5 --json")
        assert out.ok, out.error
        names = [w["name"] for w in out.results[0].data["weights"]]
        print(json.dumps({{
            "framework": out.results[0].data["framework"],
            "weights": [[w["name"], w["shape"]] for w in out.results[0].data["weights"]],
            "last": s.model("lenet5").read(names[-1]).tolist(),
            "modules": [m for m in {FRAMEWORK_MODULES!r} if m in sys.modules],
        }}))
    """)
    assert found["modules"] == []
    assert found["framework"] == "keras"
    assert [tuple(shape) for _, shape in found["weights"]] == KERAS_SHAPES
    assert [name.split("/")[1] for name, _ in found["weights"]] == KERAS_LAYERS
    np.testing.assert_array_equal(np.array(found["last"], dtype=np.float32), keras_net.get_weights()[-1])


# --- Keras files -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "filename, writer, kind",
    [
        ("lenet5.keras", "save", "Sequential"),
        ("lenet5.h5", "save", "Sequential"),
        ("lenet5.weights.h5", "save_weights", "weights file (weights.h5)"),
    ],
)
def test_keras3_files_load(session, keras_net, tmp_path, filename, writer, kind):
    path = tmp_path / filename
    getattr(keras_net, writer)(str(path))
    data = data_of(session, f"load {path} --json")
    assert (data["name"], data["framework"], data["class"], data["params"]) == ("lenet5", "keras", kind, 61706)
    assert [shape for _, shape in listing(session, "lenet5")] == KERAS_SHAPES
    assert_keras_values(session, "lenet5", keras_net)


def test_keras2_weights_only_h5_loads_with_keras2_names(session, tf_keras_net, tmp_path):
    path = tmp_path / "lenet5_k2.h5"
    tf_keras_net.save_weights(str(path))
    with h5py.File(path) as f:  # the legacy weights-only layout, not a whole model
        assert "layer_names" in f.attrs and "model_config" not in f.attrs
    data = data_of(session, f"load {path} as k2 --json")
    assert (data["framework"], data["class"]) == ("keras", "weights file (h5)")
    expected_names = [f"{layer}/{role}" for layer in ("conv2d", "conv2d_1", "conv2d_2", "dense", "dense_1")
                      for role in ("kernel", "bias")]
    assert listing(session, "k2") == list(zip(expected_names, KERAS_SHAPES))
    assert_keras_values(session, "k2", tf_keras_net)


def test_keras2_whole_model_h5_loads(session, tf_keras_net, tmp_path):
    path = tmp_path / "lenet5_k2_full.h5"
    tf_keras_net.save(str(path))
    data = data_of(session, f"load {path} as k2 --json")
    assert (data["framework"], data["class"], data["params"]) == ("keras", "Sequential", 61706)
    assert [shape for _, shape in listing(session, "k2")] == KERAS_SHAPES
    assert_keras_values(session, "k2", tf_keras_net)


def test_tf_keras_model_bound_in_python_is_a_model(session, tf_keras_net):
    # transformers' TF classes set TF_USE_LEGACY_KERAS themselves when imported; modelshell never does.
    legacy_before = os.environ.get("TF_USE_LEGACY_KERAS")
    run_ok(session, "import tf_keras; "
                    "m2 = tf_keras.Sequential([tf_keras.Input(shape=(4,)), tf_keras.layers.Dense(3, name='dense')])")
    assert session.model_names() == ["m2"]
    assert listing(session, "m2") == [("dense/kernel", (4, 3)), ("dense/bias", (3,))]
    assert data_of(session, "weights m2 --json")["framework"] == "keras"
    model = session.namespace["m2"]
    assert type(model).__module__.startswith("tf_keras")
    np.testing.assert_array_equal(session.model("m2").read("dense/kernel"), model.get_weights()[0])
    assert os.environ.get("TF_USE_LEGACY_KERAS") == legacy_before

    session.namespace["lenet_k2"] = tf_keras_net  # a bigger one bound directly in the namespace
    assert [shape for _, shape in listing(session, "lenet_k2")] == KERAS_SHAPES
    assert_keras_values(session, "lenet_k2", tf_keras_net)


# --- factories -------------------------------------------------------------------------------------------
def test_factory_from_a_python_file(session, tmp_path):
    source = tmp_path / "nets.py"
    source.write_text(textwrap.dedent("""
        import torch
        from torch import nn

        def build_small():
            torch.manual_seed(5)
            return nn.Sequential(nn.Linear(3, 2), nn.ReLU(), nn.Linear(2, 1))
    """))
    data = data_of(session, f"load {source}:build_small as small --json")
    assert (data["name"], data["framework"], data["class"], data["trusted"]) == ("small", "torch", "Sequential", True)
    assert listing(session, "small") == [("0.weight", (2, 3)), ("0.bias", (2,)), ("2.weight", (1, 2)), ("2.bias", (1,))]
    run_ok(session, f"load {source}:build_small")
    assert session.model_names() == ["small", "build_small"]
    assert_same_arrays(values(session, "build_small"), values(session, "small"))  # same seed, same weights


@pytest.mark.parametrize("factory", ["torch_lenet5", "keras_lenet5"])
def test_factory_from_a_module(session, torch_net, keras_net, factory):
    data = data_of(session, f"load modelshell.demo:{factory} --json")
    assert data["name"] == factory
    if factory == "torch_lenet5":
        assert listing(session, factory) == TORCH_FIGURES
        assert_same_arrays(values(session, factory), torch_arrays(torch_net))  # seeded: the demo's weights
    else:
        assert [shape for _, shape in listing(session, factory)] == KERAS_SHAPES
        assert_keras_values(session, factory, keras_net)


# --- save: round trips -----------------------------------------------------------------------------------
SAVE_CASES = [
    ("torch_model", ".pt"), ("torch_model", ".pth"), ("torch_model", ".bin"), ("torch_model", ".safetensors"),
    ("keras_model", ".keras"), ("keras_model", ".h5"), ("keras_model", ".weights.h5"), ("keras_model", ".safetensors"),
]


@pytest.mark.parametrize("model, suffix", SAVE_CASES)
def test_save_round_trip_keeps_every_value(models_session, tmp_path, model, suffix):
    folder = tmp_path / "out"
    folder.mkdir()
    path = folder / f"lenet5{suffix}"
    data = data_of(models_session, f"save {model} {path} --json")
    assert data["bytes"] == path.stat().st_size > 0
    assert os.listdir(folder) == [path.name]  # no temporary file left beside it

    fresh = Session()
    loaded = data_of(fresh, f"load {path} --json")
    original = models_session.model(model)
    assert loaded["framework"] == original.framework
    assert loaded["params"] == 61706
    got = listing(fresh, "lenet5")
    if model == "torch_model":
        assert sorted(got) == sorted(TORCH_FIGURES)
        if suffix != ".safetensors":
            assert got == TORCH_FIGURES  # a torch state dict keeps state_dict order
        assert_same_arrays(values(fresh, "lenet5"), values(models_session, model))
    elif suffix == ".safetensors":
        assert sorted(name for name, _ in got) == sorted(t.name for t in original.tensors())
        assert_same_arrays(values(fresh, "lenet5"), values(models_session, model))
    else:
        assert [shape for _, shape in got] == KERAS_SHAPES
        assert_keras_values(fresh, "lenet5", models_session.namespace[model])


def test_keras2_weights_file_saved_again_keeps_its_names_and_loads_in_keras2(session, tf_keras_net, tmp_path):
    import tf_keras

    source = tmp_path / "k2.h5"
    tf_keras_net.save_weights(str(source))
    run_ok(session, f"load {source}")
    run_ok(session, f"save k2 {tmp_path / 'copy.h5'}")
    run_ok(session, f"load {tmp_path / 'copy.h5'}")
    assert listing(session, "copy") == listing(session, "k2")
    assert_same_arrays(values(session, "copy"), values(session, "k2"))
    clone = tf_keras.models.clone_model(tf_keras_net)
    clone.load_weights(str(tmp_path / "copy.h5"))  # the framework itself accepts the copy
    for got, want in zip(clone.get_weights(), tf_keras_net.get_weights()):
        np.testing.assert_array_equal(got, want)
    # Keras reads the Keras 2 layout only from .h5: a .weights.h5 copy would be a file nothing can load.
    run_fail(session, f"save k2 {tmp_path / 'copy2.weights.h5'}", "k2.h5", "Keras 2", ".h5")
    assert sorted(os.listdir(tmp_path)) == ["copy.h5", "k2.h5"]


def test_keras3_weights_file_saved_again_loads_in_keras3(session, keras_net, tmp_path):
    source = tmp_path / "k3.weights.h5"
    keras_net.save_weights(str(source))
    run_ok(session, f"load {source}")
    run_ok(session, f"save k3 {tmp_path / 'copy.weights.h5'}")
    run_ok(session, f"load {tmp_path / 'copy.weights.h5'}")
    assert listing(session, "copy") == listing(session, "k3")
    assert_same_arrays(values(session, "copy"), values(session, "k3"))
    clone = keras.models.clone_model(keras_net)
    clone.load_weights(str(tmp_path / "copy.weights.h5"))
    for got, want in zip(clone.get_weights(), keras_net.get_weights()):
        np.testing.assert_array_equal(got, want)
    run_fail(session, f"save k3 {tmp_path / 'copy2.h5'}", "k3.weights.h5", "Keras 3", ".weights.h5")
    assert sorted(os.listdir(tmp_path)) == ["copy.weights.h5", "k3.weights.h5"]


@pytest.mark.parametrize("source_suffix", [".safetensors", ".weights.h5"])
def test_weights_file_to_safetensors_keeps_framework_names_and_values(session, models_session, tmp_path, source_suffix):
    model = "torch_model" if source_suffix == ".safetensors" else "keras_model"
    run_ok(models_session, f"save {model} {tmp_path / ('source' + source_suffix)}")
    first = data_of(session, f"load {tmp_path / ('source' + source_suffix)} --json")
    run_ok(session, f"save source {tmp_path / 'copy.safetensors'}")
    copy = data_of(session, f"load {tmp_path / 'copy.safetensors'} --json")
    assert copy["framework"] == first["framework"] == models_session.model(model).framework
    assert sorted(listing(session, "copy")) == sorted(listing(session, "source"))
    assert_same_arrays(values(session, "copy"), values(session, "source"))


def test_save_replaces_an_existing_file_and_keeps_its_permissions(models_session, tmp_path):
    path = tmp_path / "lenet5.safetensors"
    path.write_bytes(b"an older model")
    path.chmod(0o640)
    run_ok(models_session, f"save torch_model {path}")
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    fresh = Session()
    run_ok(fresh, f"load {path}")
    assert_same_arrays(values(fresh, "lenet5"), values(models_session, "torch_model"))
    assert sorted(os.listdir(tmp_path)) == ["lenet5.safetensors"]


def test_a_new_saved_file_gets_ordinary_permissions(models_session, tmp_path):
    """safetensors creates its files 0600; a saved model should be readable like any file the user writes."""
    umask = os.umask(0o022)
    try:
        run_ok(models_session, f"save torch_model {tmp_path / 'lenet5.safetensors'}")
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "lenet5.safetensors").stat().st_mode) == 0o644


# --- save: refusals and failures -------------------------------------------------------------------------
def test_keras_model_to_pt_is_refused(models_session, tmp_path):
    run_fail(models_session, f"save keras_model {tmp_path / 'lenet5.pt'}", "Keras", ".pt")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("suffix", [".keras", ".h5", ".weights.h5"])
def test_torch_model_to_a_keras_format_is_refused(models_session, tmp_path, suffix):
    """torch.save would happily write a pickle named .keras; nothing could open it as Keras."""
    run_fail(models_session, f"save torch_model {tmp_path / ('lenet5' + suffix)}", "torch", suffix)
    assert os.listdir(tmp_path) == []


class Unpicklable(torch.Tensor):
    """A tensor that torch.save cannot write: the failure comes after the file was opened."""

    def __reduce_ex__(self, protocol):
        raise RuntimeError("this tensor refuses to be pickled")


class ExplodingStateDict(nn.Linear):
    def state_dict(self, *args, **kwargs):
        raise RuntimeError("state_dict exploded")


@pytest.mark.parametrize("case", ["raises before writing", "raises mid-write"])
def test_a_failing_save_leaves_the_existing_file_untouched(session, tmp_path, case):
    if case == "raises before writing":
        model, reason = ExplodingStateDict(2, 2), "state_dict exploded"
    else:
        model, reason = nn.Linear(2, 2), "refuses to be pickled"
        model.register_buffer("bad", torch.zeros(1000).as_subclass(Unpicklable))
    session.namespace["fragile"] = model
    target = tmp_path / "fragile.pt"
    target.write_bytes(b"the previous, good model")
    run_fail(session, f"save fragile {target}", "fragile", str(target), reason)
    assert target.read_bytes() == b"the previous, good model"
    assert os.listdir(tmp_path) == ["fragile.pt"]


def test_save_into_a_missing_folder_or_under_a_file_fails_cleanly(models_session, tmp_path):
    (tmp_path / "plain.txt").write_text("a file, not a folder")
    run_fail(models_session, f"save torch_model {tmp_path / 'missing' / 'lenet5.pt'}", "missing")
    run_fail(models_session, f"save torch_model {tmp_path / 'plain.txt' / 'lenet5.pt'}", "plain.txt")
    (tmp_path / "folder.pt").mkdir()
    run_fail(models_session, f"save torch_model {tmp_path / 'folder.pt'}", "folder.pt")
    run_fail(models_session, f"save torch_model {tmp_path / 'lenet5.onnx'}", "lenet5.onnx")
    assert sorted(os.listdir(tmp_path)) == ["folder.pt", "plain.txt"]
    assert os.listdir(tmp_path / "folder.pt") == []


# --- bad inputs ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bad_dir(tmp_path_factory, torch_net, keras_net) -> Path:
    """One folder of broken files (and a few good ones to break things around)."""
    d = tmp_path_factory.mktemp("bad")
    torch.save(torch_net.state_dict(), d / "lenet5.pt")
    good_pt = (d / "lenet5.pt").read_bytes()
    (d / "truncated.pt").write_bytes(good_pt[: len(good_pt) // 2])
    (d / "random.pt").write_bytes(bytes((i * 37 + 11) % 256 for i in range(2000)))
    (d / "text.pt").write_text("hello, I am not a checkpoint")
    torch.save({"epoch": 3, "lr": 0.1}, d / "no_tensors.pt")
    torch.save(torch_net, d / "whole.pt")
    for name in ("empty.pt", "empty.safetensors", "empty.keras", "empty.h5"):
        (d / name).write_bytes(b"")
    (d / "folder.pt").mkdir()
    (d / "model.onnx").write_bytes(b"onnx?")
    (d / "model.xyz").write_bytes(b"no format has this suffix")
    (d / "model").write_bytes(b"no suffix")

    save_safetensors({k: v.contiguous() for k, v in torch_net.state_dict().items()}, str(d / "good.safetensors"))
    good_st = (d / "good.safetensors").read_bytes()
    (d / "truncated.safetensors").write_bytes(good_st[: len(good_st) - 1000])
    (d / "huge_header.safetensors").write_bytes((10**12).to_bytes(8, "little") + b"{}")
    (d / "not_json.safetensors").write_bytes((12).to_bytes(8, "little") + b"not json!!!!")
    (d / "json_list.safetensors").write_bytes((2).to_bytes(8, "little") + b"[]")
    (d / "bad_entry.safetensors").write_bytes((17).to_bytes(8, "little") + b'{"w": {"a": 1}}  ')
    (d / "no_tensors.safetensors").write_bytes((2).to_bytes(8, "little") + b"{}")

    keras_net.save(str(d / "full.h5"))
    good_h5 = (d / "full.h5").read_bytes()
    (d / "truncated.h5").write_bytes(good_h5[: len(good_h5) // 2])
    (d / "random.h5").write_bytes(bytes((i * 53 + 7) % 256 for i in range(2000)))
    (d / "random.weights.h5").write_bytes(bytes((i * 29 + 3) % 256 for i in range(2000)))
    with h5py.File(d / "no_tensors.h5", "w"):
        pass
    (d / "random.keras").write_bytes(bytes((i * 41 + 5) % 256 for i in range(2000)))
    keras_net.save(str(d / "good.keras"))
    good_keras = (d / "good.keras").read_bytes()
    (d / "truncated.keras").write_bytes(good_keras[: len(good_keras) // 2])
    with zipfile.ZipFile(d / "no_config.keras", "w") as archive:
        archive.writestr("readme.txt", "not a Keras archive")

    (d / "factories.py").write_text(textwrap.dedent("""
        def raises():
            raise ValueError("no model today")

        def not_a_model():
            return [1, 2, 3]
    """))
    (d / "broken.py").write_text("import no_such_module_anywhere\n")
    return d


@pytest.fixture(scope="module")
def victim_models(bad_dir) -> dict:
    """Models of both frameworks plus a loaded file, built once."""
    s = Session()
    load_demo(s)
    run_ok(s, f"load {bad_dir / 'lenet5.pt'} as loaded")
    return dict(s.handles)


@pytest.fixture
def victim(victim_models) -> Session:
    """A session holding those models, fresh for each test so that one test's damage cannot spread."""
    s = Session()
    for name, handle in victim_models.items():
        s.add(name, handle)
    return s


BAD_INPUTS = [
    # (id, line, words the error must contain, words it must not)
    ("missing file", "load {d}/nosuch.pt", ["nosuch.pt", "no such file"], []),
    ("unknown suffix", "load {d}/model.xyz", ["model.xyz", ".xyz"], []),
    ("no suffix", "load {d}/model", ["model", "no extension"], []),
    ("empty .pt", "load {d}/empty.pt", ["empty.pt", "empty"], []),
    ("empty .safetensors", "load {d}/empty.safetensors", ["empty.safetensors", "empty"], []),
    ("empty .keras", "load {d}/empty.keras", ["empty.keras", "empty"], []),
    ("empty .h5", "load {d}/empty.h5", ["empty.h5", "empty"], []),
    ("directory", "load {d}/folder.pt", ["folder.pt", "directory"], []),
    ("truncated .pt", "load {d}/truncated.pt", ["truncated.pt"], ["--trust"]),
    ("random .pt", "load {d}/random.pt", ["random.pt"], ["--trust"]),
    ("text .pt", "load {d}/text.pt", ["text.pt"], ["--trust"]),
    ("pt without tensors", "load {d}/no_tensors.pt", ["no_tensors.pt", "no tensors"], []),
    ("pickled module", "load {d}/whole.pt", ["whole.pt", "code", "--trust"], []),
    ("truncated .safetensors", "load {d}/truncated.safetensors", ["truncated.safetensors", "truncated"], []),
    ("header length", "load {d}/huge_header.safetensors", ["huge_header.safetensors", "header"], []),
    ("header not JSON", "load {d}/not_json.safetensors", ["not_json.safetensors", "header"], []),
    ("header a list", "load {d}/json_list.safetensors", ["json_list.safetensors", "header"], []),
    ("header entry", "load {d}/bad_entry.safetensors", ["bad_entry.safetensors"], []),
    ("safetensors without tensors", "load {d}/no_tensors.safetensors", ["no_tensors.safetensors", "no tensors"], []),
    ("random .h5", "load {d}/random.h5", ["random.h5", "HDF5"], []),
    ("truncated .h5", "load {d}/truncated.h5", ["truncated.h5"], []),
    ("random .weights.h5", "load {d}/random.weights.h5", ["random.weights.h5"], []),
    ("h5 without tensors", "load {d}/no_tensors.h5", ["no_tensors.h5", "no tensors"], []),
    ("random .keras", "load {d}/random.keras", ["random.keras", "zip"], ["not found"]),
    ("truncated .keras", "load {d}/truncated.keras", ["truncated.keras"], ["not found"]),
    ("zip without config", "load {d}/no_config.keras", ["no_config.keras"], []),
    ("unknown model", "weights nosuch", ["nosuch"], []),
    ("unknown model for save", "save nosuch {d}/out.pt", ["nosuch"], []),
    ("unknown member", "doc torch_model.nosuch", ["torch_model", "nosuch"], []),
    ("unknown nested member", "doc keras_model.layers.nosuch", ["keras_model.layers", "nosuch"], []),
    ("weights without a name", "weights", ["weights", "name"], []),
    ("as without a name", "load {d}/lenet5.pt as", ["as NAME"], []),
    ("as with a bad name", "load {d}/lenet5.pt as 9lives", ["9lives"], []),
    ("as with extra words", "load {d}/lenet5.pt as a b", ["as NAME"], []),
    ("name taken by a model", "load {d}/lenet5.pt as torch_model", ["torch_model", "taken"], []),
    ("name taken by a loaded file", "load {d}/lenet5.pt as loaded", ["loaded", "taken"], []),
    ("missing factory file", "load {d}/nosuch.py:build", ["nosuch.py"], []),
    ("missing factory", "load {d}/factories.py:nosuch", ["factories.py", "nosuch"], []),
    ("factory raises", "load {d}/factories.py:raises", ["raises", "ValueError", "no model today"], []),
    ("factory returns no model", "load {d}/factories.py:not_a_model", ["not_a_model", "list"], []),
    ("factory file fails", "load {d}/broken.py:build", ["broken.py", "no_such_module_anywhere"], []),
    ("missing module", "load modelshell.nosuch_module:build", ["modelshell.nosuch_module"], []),
]


@pytest.mark.parametrize("line, mentions, absent", [case[1:] for case in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_fails_in_one_line_and_keeps_the_session(victim, bad_dir, line, mentions, absent):
    before = snapshot(victim)
    error = run_fail(victim, line.format(d=bad_dir), *mentions)
    for word in absent:
        assert word not in error, error
    assert_unchanged(victim, before)
    assert victim.model_names()[:3] == ["torch_model", "keras_model", "loaded"]


def test_the_good_files_beside_the_bad_ones_load(bad_dir):
    """The controls: the files the bad ones were cut from are fine, so the failures above are the damage."""
    s = Session()
    for name in ("lenet5.pt", "good.safetensors", "full.h5", "good.keras"):
        run_ok(s, f"load {bad_dir / name}")
    run_ok(s, f"load {bad_dir / 'lenet5.pt'} as another_name")
    assert s.model_names() == ["lenet5", "good", "full", "good_2", "another_name"]
