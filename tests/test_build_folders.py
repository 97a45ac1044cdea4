"""`load DIR --build` and `save NAME DIR/`: model folders the libraries saved, built into the real models,
copied between, and saved as folders each library loads back.

The folders are written in the test by the libraries themselves (transformers `save_pretrained`,
keras-hub `save_to_preset`, from `real_models`' pairs with every constant tensor perturbed). What the
built models compute is checked with the libraries' own calls (never modelshell's `verify`), what a
saved folder holds with the library's own loader (`from_pretrained`, `from_preset`).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import real_models
from modelshell.formats import FORMATS
from modelshell.formats.writers import save_safetensors_folder
from modelshell.core.session import Session
from test_formats import assert_unchanged, data_of, run_fail, run_ok, snapshot
from test_quiet_imports import _blocked

TESTS = Path(__file__).resolve().parent
MODELSHELL = [sys.executable, "-m", "modelshell"]


def torch_state(model: torch.nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def keras_state(model) -> list[np.ndarray]:
    return [np.array(w) for w in model.get_weights()]


@pytest.fixture(scope="module")
def hf_bert(tmp_path_factory):
    """A transformers BERT saved by `save_pretrained` twice, from the torch class and from the TF class,
    each with weights of its own (constants perturbed); the torch model and the inputs to run them on."""
    pair = real_models.PAIRS["hf-bert"]
    tm, km, t_in, k_in = real_models.prepare(pair)
    root = tmp_path_factory.mktemp("hf")
    tm.save_pretrained(root / "pt")
    km.save_pretrained(root / "tf")
    assert (root / "tf" / "tf_model.h5").is_file() and (root / "pt" / "model.safetensors").is_file()
    return pair, tm, t_in, k_in, root


@pytest.fixture(scope="module")
def hub_bert(tmp_path_factory):
    """A keras-hub BertBackbone saved by `save_to_preset`, a transformers BertModel saved by
    `save_pretrained`, of the same architecture (real_models' kh-bert pair)."""
    pair = real_models.PAIRS["kh-bert"]
    tm, km, t_in, k_in = real_models.prepare(pair)
    root = tmp_path_factory.mktemp("hub")
    tm.save_pretrained(root / "pt")
    km.save_to_preset(str(root / "preset"))
    return pair, tm, t_in, k_in, root


# --- help and the registry --------------------------------------------------------------------------------
def test_help_load_and_save_show_build_and_what_each_folder_gets(session):
    load_text = " ".join(run_ok(session, "help load").results[0].text.split())  # argparse wraps the lines
    save_text = " ".join(run_ok(session, "help save").results[0].text.split())
    assert "--build" in load_text and "load bert-folder/ --build as bert" in load_text
    builders = [f for f in FORMATS.folders() if f.builder is not None]
    assert {f.name for f in builders} == {"transformers", "keras-hub preset"}
    for form in builders:
        assert form.builds.replace("`", "") in load_text, form.name
    assert "--max-shard-size" in save_text and "save_pretrained" in save_text and "save_to_preset" in save_text
    writers = [f for f in FORMATS.formats if f.folder_writer is not None]
    assert [f.name for f in writers] == ["transformers", "keras-hub preset"]


# --- build, copy, save, load back -------------------------------------------------------------------------
def test_transformers_folders_build_copy_and_save_a_folder_transformers_loads(hf_bert, tmp_path):
    from transformers import BertModel, TFBertModel

    pair, tm, t_in, k_in, root = hf_bert
    session = Session()
    said = run_ok(session, f"load {root / 'pt'} --build as pt").results[0].text
    assert "torch BertModel" in said and "AutoModel" in said, said
    said = run_ok(session, f"load {root / 'tf'} --build as tf").results[0].text
    assert "keras TFBertModel" in said and "TFAutoModel" in said, said
    pt, tf = session.model("pt").obj, session.model("tf").obj
    assert type(pt) is BertModel and type(tf) is TFBertModel
    for name, array in torch_state(tm).items():  # the folder's values, as the library read them
        np.testing.assert_array_equal(session.model("pt").read(name), array, err_msg=name)
    assert "transformers folder tf: BertModel" in " ".join(session.model("tf").summary())

    want = pair.run_torch(tm, t_in)
    assert real_models.differs(pair.run_keras(tf, k_in), want)  # before the copy
    run_fail(session, "verify pt tf", "differ")
    pairs = data_of(session, "pair pt tf --json")
    assert len(pairs["pairs"]) == len(torch_state(tm)) and not pairs["missing"] and not pairs["unexpected"]
    run_ok(session, "copy pt tf")
    real_models.assert_close(pair.run_keras(tf, k_in), want)
    run_ok(session, "verify pt tf")

    out = tmp_path / "tf-copy"
    saved = data_of(session, f"save tf {out}/")
    assert saved["writer"] == "transformers save_pretrained"
    assert sorted(saved["files"]) == ["config.json", "model.safetensors"]
    back = TFBertModel.from_pretrained(out, local_files_only=True)
    for got, kept in zip(keras_state(back), keras_state(tf), strict=True):
        np.testing.assert_array_equal(got, kept)
    real_models.assert_close(pair.run_keras(back, k_in), want)
    said = run_ok(session, f"load {out} --build as again").results[0].text  # TF's safetensors: the TF class
    assert "keras TFBertModel" in said, said


def test_a_transformers_model_saves_shards_from_pretrained_loads(hf_bert, tmp_path):
    from transformers import BertModel

    _, tm, _, _, root = hf_bert
    session = Session()
    run_ok(session, f"load {root / 'pt'} --build as pt")
    with torch.no_grad():  # a change the saved folder must hold
        session.model("pt").obj.embeddings.word_embeddings.weight.mul_(-1)
    out = tmp_path / "shards"
    saved = data_of(session, f"save pt {out}/ --max-shard-size 20KB")
    shards = [f for f in saved["files"] if f.startswith("model-")]
    assert len(shards) > 2 and "model.safetensors.index.json" in saved["files"], saved["files"]
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert sorted(set(index["weight_map"].values())) == sorted(shards)
    back = BertModel.from_pretrained(out, local_files_only=True)
    want = torch_state(session.model("pt").obj)
    assert not np.array_equal(want["embeddings.word_embeddings.weight"],
                              torch_state(tm)["embeddings.word_embeddings.weight"])
    for name, array in torch_state(back).items():
        np.testing.assert_array_equal(array, want[name], err_msg=name)


def test_keras_hub_preset_builds_takes_a_copy_and_saves_a_preset_keras_hub_loads(hub_bert, tmp_path):
    import keras_hub

    pair, tm, t_in, k_in, root = hub_bert
    session = Session()
    run_ok(session, f"load {root / 'pt'} --build as hf")
    said = run_ok(session, f"load {root / 'preset'} --build as kh").results[0].text
    assert "keras BertBackbone" in said and "from_preset" in said, said
    kh = session.model("kh").obj
    assert type(kh) is keras_hub.models.BertBackbone
    assert "keras-hub preset folder preset: BertBackbone" in " ".join(session.model("kh").summary())

    want = pair.run_torch(tm, t_in)
    assert real_models.differs(pair.run_keras(kh, k_in), want)
    run_ok(session, "copy hf kh")
    real_models.assert_close(pair.run_keras(kh, k_in), want)

    out = tmp_path / "preset-copy"
    saved = data_of(session, f"save kh {out}/")
    assert saved["writer"] == "keras-hub save_to_preset" and saved["format"] == "keras-hub preset"
    assert {"config.json", "metadata.json", "model.weights.h5"} <= set(saved["files"])
    back = keras_hub.models.Backbone.from_preset(str(out))
    assert type(back) is keras_hub.models.BertBackbone
    for got, kept in zip(keras_state(back), keras_state(kh), strict=True):
        np.testing.assert_array_equal(got, kept)
    real_models.assert_close(pair.run_keras(back, k_in), want)

    sharded = tmp_path / "preset-shards"  # --max-shard-size reaches keras-hub's own sharding
    saved = data_of(session, f"save kh {sharded}/ --max-shard-size 50KB")
    assert "model.weights.json" in saved["files"] and len([f for f in saved["files"] if f.endswith(".h5")]) > 1
    back = keras_hub.models.Backbone.from_preset(str(sharded))
    for got, kept in zip(keras_state(back), keras_state(kh), strict=True):
        np.testing.assert_array_equal(got, kept)
    run_ok(session, f"load {sharded} --build as from_shards")
    assert "keras-hub preset folder preset-shards: BertBackbone" in " ".join(session.model("from_shards").summary())
    run_ok(session, f"load {sharded} as shard_weights")  # the same shards as weights only, every tensor
    assert len(session.model("shard_weights").tensors()) == len(kh.weights)


def test_a_torch_bin_folder_builds(hf_bert, tmp_path):
    _, tm, _, _, _ = hf_bert
    tm.save_pretrained(tmp_path / "bin", safe_serialization=False)
    assert (tmp_path / "bin" / "pytorch_model.bin").is_file()
    session = Session()
    run_ok(session, f"load {tmp_path / 'bin'} --build as pt")
    for name, array in torch_state(tm).items():
        np.testing.assert_array_equal(session.model("pt").read(name), array, err_msg=name)


def test_a_weights_only_preset_saved_to_a_folder_gets_no_keras_hub_config(hub_bert, tmp_path):
    """A preset read as weights only saves as safetensors; its keras-hub config.json beside them would
    make a folder that looks like transformers' and that no library reads."""
    session = Session()
    run_ok(session, f"load {hub_bert[4] / 'preset'} as weights")
    saved = data_of(session, f"save weights {tmp_path / 'out'}/")
    assert saved["files"] == ["model.safetensors"] and saved["writer"] == "safetensors"


def test_a_keras_hub_task_preset_builds_its_task(tmp_path):
    import keras_hub

    backbone = keras_hub.models.BertBackbone(vocabulary_size=50, num_layers=1, num_heads=2, hidden_dim=16,
                                            intermediate_dim=32, max_sequence_length=16)
    task = keras_hub.models.BertTextClassifier(backbone, num_classes=3, preprocessor=None)
    real_models.perturb_constants(task)
    task.save_to_preset(str(tmp_path / "task"))
    session = Session()
    run_ok(session, f"load {tmp_path / 'task'} --build as clf")
    built = session.model("clf").obj
    assert type(built) is keras_hub.models.BertTextClassifier
    for got, want in zip(keras_state(built), keras_state(task), strict=True):
        np.testing.assert_array_equal(got, want)


def test_tensors_the_library_did_not_load_are_said(hf_bert, tmp_path):
    """A folder of a base model built as a model with a head: transformers fills the head at random and
    only warns; `load` says so, naming them."""
    folder = tmp_path / "mlm"
    shutil.copytree(hf_bert[4] / "pt", folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "architectures": ["BertForMaskedLM"]}))
    session = Session()
    said = run_ok(session, f"load {folder} --build as mlm").results[0].text
    assert "BertForMaskedLM" in said and "AutoModelForMaskedLM" in said, said
    assert "not in the folder, initialised at random: cls.predictions" in said, said
    assert "in the folder but not in the model, left out: pooler." in said, said


def test_a_file_in_a_model_folder_builds_the_folder(hf_bert):
    session = Session()
    said = run_ok(session, f"load {hf_bert[4] / 'pt' / 'model.safetensors'} --build as pt").results[0].text
    assert "torch BertModel" in said, said


# --- broken folders, code in folders: one line each, the session intact ----------------------------------
MODELING = '''
import os
from pathlib import Path

if os.environ.get("MODELSHELL_TEST_MARKER"):
    Path(os.environ["MODELSHELL_TEST_MARKER"]).write_text("the folder's code ran")

import torch
from transformers import PreTrainedModel

from .configuration_tiny import TinyConfig


class TinyModel(PreTrainedModel):
    config_class = TinyConfig

    def __init__(self, config):
        super().__init__(config)
        self.proj = torch.nn.Linear(config.width, config.width)

    def forward(self, x):
        return self.proj(x)
'''
CONFIGURATION = '''
from transformers import PretrainedConfig


class TinyConfig(PretrainedConfig):
    model_type = "tiny-custom"

    def __init__(self, width=4, **kwargs):
        self.width = width
        super().__init__(**kwargs)
'''


@pytest.fixture
def custom_code(tmp_path) -> Path:
    """A folder whose architecture is code shipped in it (config `auto_map`), as hub repositories are."""
    folder = tmp_path / "custom"
    folder.mkdir()
    (folder / "modeling_tiny.py").write_text(MODELING)
    (folder / "configuration_tiny.py").write_text(CONFIGURATION)
    (folder / "config.json").write_text(json.dumps({
        "architectures": ["TinyModel"], "model_type": "tiny-custom", "width": 4,
        "auto_map": {"AutoConfig": "configuration_tiny.TinyConfig", "AutoModel": "modeling_tiny.TinyModel"}}))
    torch.manual_seed(0)
    save_file({"proj.weight": torch.randn(4, 4), "proj.bias": torch.randn(4)}, str(folder / "model.safetensors"),
              metadata={"format": "pt"})
    return folder


def test_broken_folders_and_code_without_trust_fail_in_one_line(demo_session, hf_bert, hub_bert, custom_code,
                                                               tmp_path, monkeypatch):
    pt, preset = hf_bert[4] / "pt", hub_bert[4] / "preset"
    before = snapshot(demo_session)

    marker = tmp_path / "ran.txt"
    monkeypatch.setenv("MODELSHELL_TEST_MARKER", str(marker))
    run_fail(demo_session, f"load {custom_code} --build", "modeling_tiny.py", "--trust")
    assert not marker.exists()  # refused before a line of it ran

    unknown = tmp_path / "unknown"
    shutil.copytree(pt, unknown)
    config = json.loads((unknown / "config.json").read_text())
    (unknown / "config.json").write_text(json.dumps({**config, "architectures": ["NoSuchBertModel"]}))
    run_fail(demo_session, f"load {unknown} --build", "'NoSuchBertModel'", "does not have")
    (unknown / "config.json").write_text(json.dumps({"model_type": "nosuch", "architectures": ["NoSuchModel"]}))
    run_fail(demo_session, f"load {unknown} --build", "'NoSuchModel'")

    no_weights = tmp_path / "config_only"
    no_weights.mkdir()
    shutil.copy(pt / "config.json", no_weights)
    run_fail(demo_session, f"load {no_weights} --build", "no model weights")

    sharded = tmp_path / "sharded"
    real_models.PAIRS["hf-bert"].build()[0].save_pretrained(sharded, max_shard_size="20KB")
    missing = tmp_path / "missing"
    shutil.copytree(sharded, missing)
    shards = sorted(sharded.glob("model-*-of-*.safetensors"))
    shards[1].write_bytes(shards[1].read_bytes()[:-100])
    run_fail(demo_session, f"load {sharded} --build", shards[1].name)
    (missing / shards[0].name).unlink()
    run_fail(demo_session, f"load {missing} --build", shards[0].name)

    hub_unknown = tmp_path / "hub_unknown"
    shutil.copytree(preset, hub_unknown)
    config = json.loads((hub_unknown / "config.json").read_text())
    (hub_unknown / "config.json").write_text(json.dumps({**config, "class_name": "NoSuchBackbone"}))
    run_fail(demo_session, f"load {hub_unknown} --build", "'NoSuchBackbone'", "keras-hub")
    (hub_unknown / "model.weights.h5").unlink()
    run_fail(demo_session, f"load {hub_unknown} --build", "no model weights")

    run_fail(demo_session, f"load {tmp_path / 'nothing-here'} --build", "no such file")
    demo_file = tmp_path / "lenet.pt"
    run_ok(demo_session, f"save torch_model {demo_file}")
    run_fail(demo_session, f"load {demo_file} --build", "not in a model folder")
    assert_unchanged(demo_session, before)


def test_a_folder_whose_code_transformers_also_has_builds_with_the_library_class(hf_bert, custom_code, tmp_path,
                                                                                monkeypatch):
    """Without --trust, an `auto_map` beside an architecture transformers has builds the library's class,
    as transformers itself does, and `load` says the folder's code did not run."""
    folder = tmp_path / "bert_with_code"
    shutil.copytree(hf_bert[4] / "pt", folder)
    shutil.copy(custom_code / "modeling_tiny.py", folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "auto_map": {"AutoModel": "modeling_tiny.TinyModel"}}))
    marker = tmp_path / "ran.txt"
    monkeypatch.setenv("MODELSHELL_TEST_MARKER", str(marker))
    session = Session()
    said = run_ok(session, f"load {folder} --build as pt").results[0].text
    assert "torch BertModel" in said and "(modeling_tiny.py) did not run" in said, said
    assert not marker.exists()


def test_code_in_a_folder_runs_with_trust(custom_code, tmp_path):
    """In a fresh process whose transformers caches the folder's modules under a temporary HF_HOME."""
    marker = tmp_path / "ran.txt"
    code = f"""
        import json, sys
        sys.path.insert(0, {str(TESTS)!r})
        import real_models  # torchvision beside the CPU torch, before transformers
        from modelshell.core.session import Session
        session = Session()
        outcome = session.run_line("load {custom_code} --build --trust as tiny")
        handle = session.model("tiny") if outcome.ok else None
        print(json.dumps({{"ok": outcome.ok, "error": outcome.error, "class": handle and handle.class_name,
                          "weight": handle and handle.read("proj.weight").tolist(),
                          "trusted": handle and handle.trusted}}))
    """
    env = dict(os.environ, HF_HOME=str(tmp_path / "hf"), MODELSHELL_TEST_MARKER=str(marker),
               TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["ok"], got["error"]
    assert got["class"] == "TinyModel" and got["trusted"] is True
    torch.manual_seed(0)
    np.testing.assert_array_equal(np.array(got["weight"], np.float32), torch.randn(4, 4).numpy())
    assert marker.read_text() == "the folder's code ran"


@pytest.mark.parametrize("library, folder, says", [
    ("transformers", "hf", "needs transformers, which is not installed here (pip install transformers)"),
    ("keras_hub", "hub", "needs keras-hub, which is not installed here (pip install keras-hub)"),
])
def test_without_the_library_build_says_what_to_install(hf_bert, hub_bert, tmp_path, library, folder, says):
    path = hf_bert[4] / "pt" if folder == "hf" else hub_bert[4] / "preset"
    script = tmp_path / "build.ms"
    script.write_text(f"load {path} as weights_only\nload {path} --build as built\n")
    env = dict(os.environ, **_blocked(tmp_path, library), TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run([*MODELSHELL, "run", str(script)], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "loaded weights_only" in done.stdout  # the weights are read without the library
    errors = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and says in errors[0] and ":2:" in errors[0], done.stderr


# --- a folder is written whole, or not at all -------------------------------------------------------------
class HalfSavable(torch.nn.Module):
    """A large Linear (its own shard) and then a quantized buffer that numpy cannot hold: the save fails
    after the first shard is written."""

    def __init__(self) -> None:
        super().__init__()
        self.big = torch.nn.Linear(100, 100)
        self.tail = torch.nn.Module()  # a child: after `big` in state_dict order
        self.tail.register_buffer("q", torch.quantize_per_tensor(torch.ones(4), 0.1, 0, torch.quint8))


def test_a_failing_folder_save_leaves_no_folder_and_no_temporaries(tmp_path):
    session = Session()
    session.namespace["half"] = HalfSavable()
    out = tmp_path / "out"
    run_fail(session, f"save half {out}/ --max-shard-size 10KB", "cannot save half")
    assert not out.exists() and list(tmp_path.iterdir()) == []

    out.mkdir()  # an empty folder stays as it was
    run_fail(session, f"save half {out}/ --max-shard-size 10KB", "cannot save half")
    assert out.is_dir() and list(out.iterdir()) == [] and list(tmp_path.iterdir()) == [out]

    # Without the temporary folder, the same write leaves its first shard behind: what the rename prevents.
    with pytest.raises(Exception):
        save_safetensors_folder(session.model("half"), out, 10_000)
    assert [p.name for p in out.iterdir()] == ["model-00001-of-00002.safetensors"]


def test_a_folder_save_removes_what_a_killed_save_left(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    stale = tmp_path / f".out.tmp-{dead}-0123abcd"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half")
    session = Session()
    session.namespace["lin"] = torch.nn.Linear(3, 2)
    run_ok(session, f"save lin {tmp_path / 'out'}/")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["model.safetensors"]
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "out" / "model.safetensors").stat().st_mode & 0o777 == 0o666 & ~umask  # safetensors: 0600
