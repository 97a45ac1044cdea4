"""The readers of issue 14: .npz archives, .onnx initializers, TensorFlow checkpoints and SavedModel
folders, safetensors metadata, the globals a torch checkpoint needs, and completion from the registry.

Every file is made in the test by its own library (`numpy.savez`, `torch.onnx.export` and `onnx.helper`,
`tf.train.Checkpoint`, `tf.saved_model.save`, Keras `model.export`), and what `weights` lists is checked
against that library's own reading of the same file (`np.load`, `onnx.numpy_helper`,
`tf.train.load_checkpoint`), values against the objects that were saved. Each broken file fails its
`load` in one line and leaves the session as it was.
"""
from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.numpy import save_file

from modelshell.core.session import Session
from test_completion import applied
from test_formats import assert_unchanged, run_fail, run_isolated, run_ok, snapshot
from test_model_folders import listed
from test_quiet_imports import MODELSHELL, _blocked, _run


def np_listing(arrays: dict[str, np.ndarray]) -> dict[str, tuple[tuple[int, ...], str]]:
    return {name: (tuple(a.shape), str(a.dtype)) for name, a in arrays.items()}


def read_all(session: Session, name: str) -> dict[str, np.ndarray]:
    handle = session.model(name)
    return {t.name: handle.read(t.name) for t in handle.tensors()}


def assert_same(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert list(got) == list(want)
    for name, value in want.items():
        assert got[name].dtype == value.dtype, name
        np.testing.assert_array_equal(got[name], value, err_msg=name)


# --- .npz ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def npz_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("npz")
    rng = np.random.default_rng(0)
    arrays = {"dense/kernel": rng.normal(size=(4, 3)).astype("float32"), "dense/bias": rng.normal(size=3),
              "embed/table": rng.integers(-9, 9, size=(5, 2), dtype="int16"), "mask/flag": rng.random(4) > 0.5}
    np.savez(d / "plain.npz", **arrays)
    np.savez_compressed(d / "packed.npz", **arrays)
    np.savez(d / "objects.npz", w=np.ones(2), meta=np.array([{"a": 1}], dtype=object))
    good = (d / "plain.npz").read_bytes()
    (d / "truncated.npz").write_bytes(good[: len(good) // 2])
    (d / "random.npz").write_bytes(bytes((i * 31 + 7) % 256 for i in range(3000)))
    with zipfile.ZipFile(d / "short_member.npz", "w") as archive:  # a member shorter than its header says
        with zipfile.ZipFile(d / "plain.npz") as source:
            data = source.read("dense/kernel.npy")
        archive.writestr("dense/kernel.npy", data[:-8])
    with zipfile.ZipFile(d / "bad_header.npz", "w") as archive:
        archive.writestr("w.npy", b"\x93NUMPY\x01\x00\x10\x00{'descr': nope}\n" + bytes(16))
    with zipfile.ZipFile(d / "nothing.npz", "w") as archive:
        archive.writestr("readme.txt", "no arrays here")
    (d / "arrays.json").write_text(json.dumps({k: v.tolist() for k, v in arrays.items()}))
    return d


def npz_arrays(npz_dir: Path) -> dict[str, np.ndarray]:
    with np.load(npz_dir / "plain.npz", allow_pickle=False) as f:
        return {name: f[name] for name in f.files}


@pytest.mark.parametrize("archive", ["plain.npz", "packed.npz"])
def test_npz_lists_and_reads_what_numpy_reads(session, npz_dir, archive):
    run_ok(session, f"load {npz_dir / archive} as arrays")
    want = npz_arrays(npz_dir)
    assert listed(session, "arrays") == np_listing(want)
    assert_same(read_all(session, "arrays"), want)
    saved = json.loads((npz_dir / "arrays.json").read_text())  # the values as they were before saving
    np.testing.assert_allclose(session.model("arrays").read("dense/kernel"), saved["dense/kernel"], rtol=1e-6)
    assert session.model("arrays").framework == "keras"  # slashes: Keras variable paths


def imported_by(*lines: str) -> list[str]:
    """The frameworks a fresh interpreter has imported after running these shell lines."""
    return run_isolated(f"""
        import json, sys
        from modelshell.core.session import Session
        s = Session()
        for line in {list(lines)!r}:
            assert s.run_line(line).ok, line
        print(json.dumps([m for m in ("torch", "tensorflow", "keras", "onnx") if m in sys.modules]))
    """)


def test_npz_is_listed_without_any_framework(npz_dir):
    assert imported_by(f"load {npz_dir / 'plain.npz'} as a", "weights a") == []


NPZ_BROKEN = [
    ("objects.npz", ["objects.npz", "'meta'", "Python objects", "refused"]),
    ("truncated.npz", ["truncated.npz", ".npz"]),
    ("random.npz", ["random.npz", ".npz"]),
    ("short_member.npz", ["short_member.npz", "dense/kernel", "truncated"]),
    ("bad_header.npz", ["bad_header.npz", "'w'", "damaged"]),
    ("nothing.npz", ["nothing.npz", "no tensors"]),
]



def test_an_object_array_is_never_unpickled(demo_session, tmp_path):
    """The object array's pickle would call this global; the refusal must come before anything imports it."""
    marker = tmp_path / "ran"
    payload = np.empty(1, dtype=object)
    payload[0] = _Effect(str(marker))
    np.savez(tmp_path / "evil.npz", payload=payload)
    run_fail(demo_session, f"load {tmp_path / 'evil.npz'}", "refused")
    assert not marker.exists()
    with pytest.raises(ValueError):  # the control: numpy itself refuses it with allow_pickle=False too
        np.load(tmp_path / "evil.npz", allow_pickle=False)["payload"]


class _Effect:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


# --- .onnx ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def onnx_dir(tmp_path_factory) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    d = tmp_path_factory.mktemp("onnx")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(64, 5))
    with torch.no_grad():
        net[0].bias.uniform_(-1, 1)  # biases start at a constant (zero) in some layers: make them tell
        net[3].bias.uniform_(-1, 1)
    torch.onnx.export(net, (torch.zeros(1, 1, 6, 6),), str(d / "exported.onnx"), dynamo=False)
    torch.save(net.state_dict(), d / "exported_state.pt")

    rng = np.random.default_rng(1)
    inits = [numpy_helper.from_array(rng.normal(size=(3, 4)).astype("float32"), "fc.weight"),
             numpy_helper.from_array(rng.integers(0, 9, size=4).astype("int64"), "fc.bias"),
             numpy_helper.from_array(rng.normal(size=(2, 2)).astype("float16"), "extra.scale")]
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "fc.weight"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], initializer=inits)
    model = helper.make_model(graph)
    onnx.save(model, str(d / "made.onnx"))
    external = d / "external"
    external.mkdir()
    onnx.save(model, str(external / "made.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="made.data", size_threshold=0)

    good = (d / "made.onnx").read_bytes()
    (d / "truncated.onnx").write_bytes(good[: len(good) // 2])
    (d / "random.onnx").write_bytes(bytes((i * 37 + 11) % 256 for i in range(3000)))
    short = onnx.load(str(d / "made.onnx"))
    short.graph.initializer[0].raw_data = short.graph.initializer[0].raw_data[:-4]
    onnx.save(short, str(d / "short_raw.onnx"))
    empty = helper.make_model(helper.make_graph([], "empty", [], []))
    onnx.save(empty, str(d / "no_initializers.onnx"))
    for name, change in [("cut_data", lambda folder: _truncate(folder / "made.data", 8)),
                         ("no_data", lambda folder: (folder / "made.data").unlink())]:
        shutil.copytree(external, d / name)
        change(d / name)
    outside = onnx.load(str(external / "made.onnx"), load_external_data=False)
    for entry in outside.graph.initializer[0].external_data:
        if entry.key == "location":
            entry.value = "../made.onnx"
    (d / "escape").mkdir()
    onnx.save(outside, str(d / "escape" / "made.onnx"))
    return d


def _truncate(path: Path, count: int) -> None:
    path.write_bytes(path.read_bytes()[:-count])


def onnx_reading(path: Path) -> dict[str, np.ndarray]:
    """onnx's own reading of the initializers, external data included."""
    import onnx
    from onnx import numpy_helper

    return {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}


@pytest.mark.parametrize("file", ["made.onnx", "external/made.onnx", "exported.onnx"])
def test_onnx_initializers_are_listed_as_onnx_reads_them(session, onnx_dir, file):
    run_ok(session, f"load {onnx_dir / file} as graph")
    want = onnx_reading(onnx_dir / file)
    assert len(want) >= 3
    assert listed(session, "graph") == np_listing(want)
    assert_same(read_all(session, "graph"), want)


def test_onnx_export_keeps_the_torch_values(session, onnx_dir):
    """Against the module that was exported, not against onnx: the names and values torch saved."""
    run_ok(session, f"load {onnx_dir / 'exported.onnx'} as graph")
    state = torch.load(onnx_dir / "exported_state.pt", weights_only=True)
    got = read_all(session, "graph")
    assert set(got) == set(state)
    for name, tensor in state.items():
        np.testing.assert_array_equal(got[name], tensor.numpy(), err_msg=name)


ONNX_BROKEN = [
    ("truncated.onnx", ["truncated.onnx", "ONNX"]),
    ("random.onnx", ["random.onnx", "ONNX"]),
    ("short_raw.onnx", ["short_raw.onnx", "fc.weight", "bytes"]),
    ("no_initializers.onnx", ["no_initializers.onnx", "no tensors"]),
    ("cut_data/made.onnx", ["made.onnx", "made.data", "truncated"]),
    ("no_data/made.onnx", ["made.onnx", "made.data", "not a file"]),
    ("escape/made.onnx", ["made.onnx", "../made.onnx", "not a file beside the model"]),
]



def test_without_onnx_loading_an_onnx_file_says_what_to_install(tmp_path, onnx_dir, npz_dir):
    done = _run([MODELSHELL, "run", "--keep-going", "-"],
                stdin=f"load {onnx_dir / 'made.onnx'}\nload {npz_dir / 'plain.npz'}\nweights plain\n",
                **_blocked(tmp_path, "onnx"))
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        "error: loading made.onnx needs onnx, which is not installed here (pip install 'modelshell[onnx]')"]
    assert "dense/kernel" in done.stdout  # the session went on


# --- TensorFlow checkpoints and SavedModels -------------------------------------------------------------
@pytest.fixture(scope="module")
def tf_dir(tmp_path_factory) -> Path:
    import keras
    import tensorflow as tf

    d = tmp_path_factory.mktemp("tf")
    tf.random.set_seed(0)

    class Block(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = tf.Variable(tf.random.normal((3, 4)), name="w")
            self.b = tf.Variable(tf.random.normal((4,), dtype=tf.float64))
            self.inner = tf.Module()
            self.inner.table = tf.Variable(tf.constant([[1, 2], [3, 4]], tf.int32))
            self.inner.half = tf.Variable(tf.cast(tf.random.normal((2,)), tf.bfloat16))

        @tf.function(input_signature=[tf.TensorSpec((None, 3))])
        def __call__(self, x):
            return x @ self.w

    block = Block()
    tf.train.Checkpoint(model=block).save(str(d / "ckpt" / "step"))  # ckpt/step-1.* and ckpt/checkpoint
    tf.train.Checkpoint(model=block).write(str(d / "plain" / "weights"))  # no `checkpoint` file
    tf.saved_model.save(block, str(d / "saved"))

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(5, name="hidden"),
                              keras.layers.Dense(2, name="out")], name="net")
    for variable in model.weights:
        variable.assign(np.random.default_rng(2).normal(size=variable.shape))  # biases start at zero
    model.export(str(d / "exported"), verbose=False)
    np.savez(d / "keras_weights.npz", **{v.path: v.numpy() for v in model.weights})
    return d


def tf_reading(prefix: Path) -> dict[str, np.ndarray]:
    """TensorFlow's own reading: every variable of the checkpoint, by its key."""
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(prefix))
    dtypes = reader.get_variable_to_dtype_map()
    return {key: reader.get_tensor(key) for key in reader.get_variable_to_shape_map() if dtypes[key] != tf.string}


def shown(keys: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The names modelshell shows for object-graph keys: the attribute suffix left out."""
    return {key.removesuffix("/.ATTRIBUTES/VARIABLE_VALUE"): value for key, value in keys.items()}


@pytest.mark.parametrize("target, prefix", [
    ("ckpt", "ckpt/step-1"), ("ckpt/step-1.index", "ckpt/step-1"),
    ("ckpt/step-1.data-00000-of-00001", "ckpt/step-1"), ("plain", "plain/weights"),
    ("saved", "saved/variables/variables")])
def test_tf_checkpoints_are_listed_as_tensorflow_reads_them(session, tf_dir, target, prefix):
    message = run_ok(session, f"load {tf_dir / target} as ckpt").results[0].text
    want = shown(tf_reading(tf_dir / prefix))
    assert {"model/w", "w"} & set(want) and len(want) >= 4
    assert listed(session, "ckpt") == np_listing(want)
    got = read_all(session, "ckpt")
    assert set(got) == set(want)
    for name, value in want.items():
        assert got[name].dtype == value.dtype, name
        np.testing.assert_array_equal(got[name], value, err_msg=name)
    assert session.model("ckpt").read("inner/table" if target == "saved" else "model/inner/table").tolist() == [[1, 2], [3, 4]]
    if target.startswith("ckpt/step-1."):
        assert "the whole checkpoint was loaded" in message


def test_a_keras_export_lists_each_variable_once_by_its_path(session, tf_dir):
    message = run_ok(session, f"load {tf_dir / 'exported'} as exported").results[0].text
    assert "variables named by their own paths" in message
    with np.load(tf_dir / "keras_weights.npz") as saved:  # the Keras model's own variables, before export
        want = {name: saved[name] for name in saved.files}
    assert set(want) == {"net/hidden/kernel", "net/hidden/bias", "net/out/kernel", "net/out/bias"}
    got = read_all(session, "exported")
    assert set(got) == set(want)
    for name, value in want.items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)
    keys = tf_reading(tf_dir / "exported" / "variables" / "variables")
    assert len(keys) == 2 * len(want)  # the export tracks each variable twice; listed once


def test_a_saved_model_graph_is_never_read(session, tf_dir, tmp_path):
    """Garbage in saved_model.pb changes nothing: only the variables' checkpoint is read."""
    folder = tmp_path / "saved"
    shutil.copytree(tf_dir / "saved", folder)
    (folder / "saved_model.pb").write_bytes(b"not a graph at all")
    run_ok(session, f"load {folder} as saved")
    assert listed(session, "saved") == np_listing(shown(tf_reading(folder / "variables" / "variables")))


def test_listing_a_checkpoint_imports_tensorflow_and_no_torch(tf_dir):
    found = imported_by(f"load {tf_dir / 'ckpt'} as c", "weights c")
    assert "tensorflow" in found and "torch" not in found and "onnx" not in found


@pytest.fixture(scope="module")
def broken_tf(tf_dir, tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("broken_tf")
    for name in ("truncated", "cut_short", "no_data", "no_index", "random_index", "two"):
        shutil.copytree(tf_dir / "ckpt", d / name)
    data = d / "truncated" / "step-1.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])  # the object graph is cut
    data = d / "cut_short" / "step-1.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[:40])  # fewer bytes than the variables need
    (d / "no_data" / "step-1.data-00000-of-00001").unlink()
    (d / "no_index" / "step-1.index").unlink()
    (d / "no_index" / "checkpoint").unlink()
    (d / "random_index" / "step-1.index").write_bytes(bytes((i * 13 + 5) % 256 for i in range(500)))
    (d / "two" / "checkpoint").unlink()
    for suffix in (".index", ".data-00000-of-00001"):
        shutil.copy(d / "two" / f"step-1{suffix}", d / "two" / f"step-2{suffix}")
    shutil.copytree(tf_dir / "saved", d / "saved_no_variables")
    shutil.rmtree(d / "saved_no_variables" / "variables")
    return d


TF_BROKEN = [
    ("truncated", ["truncated", "truncated or damaged"]),
    ("cut_short", ["cut_short", "hold 40 bytes", "truncated or damaged"]),
    ("no_data", ["step-1.data-00000-of-00001", "missing"]),
    ("no_data/step-1.index", ["step-1.data-00000-of-00001", "missing"]),
    ("no_index/step-1.data-00000-of-00001", ["step-1.index", "no such file"]),
    ("random_index/step-1.index", ["step-1.index", "TF checkpoint"]),
    ("two", ["step-1.index", "step-2.index", "which checkpoint"]),
    ("saved_no_variables", ["saved_no_variables", "no variables"]),
]

BROKEN = ([("npz_dir", *case) for case in NPZ_BROKEN] + [("onnx_dir", *case) for case in ONNX_BROKEN]
          + [("broken_tf", *case) for case in TF_BROKEN])


@pytest.mark.parametrize("folder, name, mentions", BROKEN, ids=[f"{case[0]}:{case[1]}" for case in BROKEN])
def test_a_damaged_file_fails_in_one_line_and_keeps_the_session(request, demo_session, folder, name, mentions):
    where = request.getfixturevalue(folder)
    before = snapshot(demo_session)
    run_fail(demo_session, f"load {where / name}", *mentions)
    assert_unchanged(demo_session, before)


# --- safetensors metadata --------------------------------------------------------------------------------
def test_safetensors_metadata_is_shown_and_kept_on_save(session, tmp_path):
    metadata = {"format": "pt", "source": "made by a test", "notes": "x" * 200}
    arrays = {"fc.weight": np.random.default_rng(3).normal(size=(2, 3)).astype("float32")}
    save_file(arrays, str(tmp_path / "m.safetensors"), metadata=metadata)
    run_ok(session, f"load {tmp_path / 'm.safetensors'} as m")
    footer = run_ok(session, "weights m").results[0].footer
    line = next(line for line in footer if line.startswith("safetensors metadata: "))
    assert "format=pt" in line and "source=made by a test" in line and "x" * 200 not in line  # long values cut
    assert any(line.startswith("m: safetensors metadata: ") for line in run_ok(session, "models").results[0].footer)
    assert session.namespace["m"].metadata == metadata  # whole, in Python
    run_ok(session, f"save m {tmp_path / 'copy.safetensors'}")
    with safe_open(str(tmp_path / "copy.safetensors"), framework="np") as f:
        assert f.metadata() == metadata
        np.testing.assert_array_equal(f.get_tensor("fc.weight"), arrays["fc.weight"])


def test_a_file_without_metadata_shows_no_metadata_line(session, tmp_path):
    save_file({"w": np.ones(2, "float32")}, str(tmp_path / "bare.safetensors"))
    run_ok(session, f"load {tmp_path / 'bare.safetensors'} as bare")
    assert not any("metadata" in line for line in run_ok(session, "weights bare").results[0].footer)


# --- the globals a torch checkpoint needs ----------------------------------------------------------------
class Custom(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(2, 2)


def checkpoint_with_pickle(path: Path, change) -> Path:
    """A torch zip checkpoint of one tensor whose ``data.pkl`` is ``change(data.pkl)``."""
    torch.save({"w": torch.ones(2)}, path)
    with zipfile.ZipFile(path) as source:
        members = {info.filename: source.read(info) for info in source.infolist()}
    pkl = next(name for name in members if name.endswith("data.pkl"))
    members[pkl] = change(members[pkl])
    with zipfile.ZipFile(path, "w") as target:
        for name, data in members.items():
            target.writestr(name, data)
    return path


def test_a_zip_checkpoint_lists_the_globals_torch_says_it_needs(demo_session, tmp_path):
    path = tmp_path / "whole.pt"
    torch.save({"model": Custom(), "dtype": torch.float16, "shape": torch.Size([2])}, path)
    needed = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    assert f"{__name__}.Custom" in needed and "torch.nn.modules.linear.Linear" in needed
    error = run_fail(demo_session, f"load {path}", "whole.pt", "--trust", "nothing was run")
    listed_globals = error.split("it would import and call ", 1)[1].split("; nothing was run")[0].split(", ")
    assert set(listed_globals) == set(needed)  # torch's allowlist decides: torch.float16 is not code
    assert "torch.float16" not in error


def test_a_dangerous_call_in_a_zip_checkpoint_is_flagged(demo_session, tmp_path):
    """torch lists os.system like any global; the pickletools scan is what says it is dangerous."""
    path = checkpoint_with_pickle(tmp_path / "evil.pt", lambda _: b"\x80\x02cposix\nsystem\nX\x04\x00\x00\x00trueq\x00\x85q\x01Rq\x02.")
    assert "posix.system" in torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    run_fail(demo_session, f"load {path}", "posix.system (DANGEROUS)", "nothing was run")


def test_a_legacy_checkpoint_is_read_by_the_scan(demo_session, tmp_path):
    path = tmp_path / "legacy.pt"
    torch.save(Custom(), path, _use_new_zipfile_serialization=False)
    assert not zipfile.is_zipfile(path)
    with pytest.raises(ValueError):  # torch's own listing reads only zip checkpoints
        torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    run_fail(demo_session, f"load {path}", f"{__name__}.Custom", "nothing was run")


def test_a_damaged_zip_checkpoint_is_damage_not_code(demo_session, tmp_path):
    path = checkpoint_with_pickle(tmp_path / "damaged.pt", lambda pkl: pkl[: len(pkl) // 2])
    error = run_fail(demo_session, f"load {path}", "damaged.pt")
    assert "--trust" not in error


# --- completion from the registry -----------------------------------------------------------------------
def test_load_completes_readable_files_and_model_folders(demo_session, tmp_path, monkeypatch, npz_dir):
    for name in ("net.pt", "net.npz", "net.onnx", "net.txt", "net.index", "net.data-00000-of-00001", "net.csv"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "net_folder").mkdir()
    (tmp_path / "net_folder" / "config.json").write_text("{}")
    (tmp_path / "net_plain").mkdir()
    monkeypatch.chdir(tmp_path)
    assert applied(demo_session, "load net") == [
        "load net.data-00000-of-00001", "load net.index", "load net.npz", "load net.onnx", "load net.pt",
        "load net_folder/", "load net_plain/"]
    from test_completion import completions

    meta = {c.display_text: c.display_meta_text for c in completions(demo_session, "load net")}
    assert meta["net.npz"] == "npz" and meta["net.index"] == "TF checkpoint"
    assert meta["net_folder/"] == "transformers folder" and meta["net_plain/"] == ""
    assert applied(demo_session, "save torch_model net") == [
        "save torch_model net.pt", "save torch_model net_folder/", "save torch_model net_plain/"]
    assert applied(demo_session, "verify torch_model keras_model --input net.c") == [
        "verify torch_model keras_model --input net.csv"]  # other paths: every file
