"""Model folders and shards as the libraries save them, the format registry, and every safetensors dtype.

Each folder is made in the test by its own library (transformers `save_pretrained`, keras-hub
`save_to_preset`); what `weights` lists is checked against that library's own reading of the same files
(`safe_open` over every shard, `torch.load`, `h5py`).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import real_models
from modelshell.formats import FORMATS, markdown_table
from modelshell.core.session import Session
from test_formats import assert_unchanged, data_of, run_fail, run_isolated, run_ok, snapshot

README = Path(__file__).resolve().parents[1] / "README.md"
TINY_BERT = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
                 max_position_embeddings=64)


def listed(session: Session, name: str) -> dict[str, tuple[tuple[int, ...], str]]:
    return {w["name"]: (tuple(w["shape"]), w["dtype"]) for w in data_of(session, f"weights {name} --json")["weights"]}


def safetensors_listing(files: list[Path]) -> dict[str, tuple[tuple[int, ...], str]]:
    """The safetensors library's own listing over every file, dtypes as numpy names them."""
    found = {}
    for path in files:
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():
                tensor = f.get_tensor(key)
                found[key] = (tuple(tensor.shape), str(tensor.dtype).removeprefix("torch."))
    return found


def bert_folder(path: Path, **save) -> Path:
    real_models.import_torchvision()
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    BertModel(BertConfig(**TINY_BERT)).save_pretrained(path, **save)
    return path


@pytest.fixture(scope="module")
def sharded(tmp_path_factory) -> Path:
    return bert_folder(tmp_path_factory.mktemp("sharded") / "bert", max_shard_size="20KB")


# --- the registry ----------------------------------------------------------------------------------------
def test_readme_format_table_is_the_registry():
    text = README.read_text(encoding="utf8")
    section = text.split("## Formats `load` reads\n\n", 1)[1]
    table = section[:section.index("\n\n") + 1]
    assert table == markdown_table()


def test_help_load_and_save_tell_what_the_registry_holds(session):
    load_text = " ".join(run_ok(session, "help load").results[0].text.split())  # argparse wraps the lines
    save_text = " ".join(run_ok(session, "help save").results[0].text.split())
    assert FORMATS.load_details() in load_text
    assert FORMATS.save_details() in save_text
    for suffix in FORMATS.read_suffixes():
        assert suffix in load_text, suffix
    for form in FORMATS.folders():
        assert f"a {form.name} folder" in load_text
    assert ".ckpt" in load_text and ".ckpt" not in FORMATS.save_suffixes()  # read, never written


def test_save_refuses_a_suffix_the_registry_cannot_write(demo_session, tmp_path):
    error = run_fail(demo_session, f"save torch_model {tmp_path}/out.ckpt", "out.ckpt")
    for suffix in FORMATS.save_suffixes():
        assert suffix in error


# --- transformers folders --------------------------------------------------------------------------------
def test_sharded_safetensors_folder_lists_every_shard(session, sharded):
    shards = sorted(sharded.glob("model-*-of-*.safetensors"))
    assert len(shards) > 2 and (sharded / "model.safetensors.index.json").is_file()
    message = run_ok(session, f"load {sharded} as bert").results[0].text
    assert f"{len(shards)} shards" in message
    assert listed(session, "bert") == safetensors_listing(shards)
    with safe_open(str(shards[-1]), framework="np") as f:
        last = next(iter(f.keys()))
        np.testing.assert_array_equal(session.model("bert").read(last), f.get_tensor(last))
    table = data_of(session, "weights bert --json")
    assert table["class"] == "BertModel weights (transformers folder)"
    footer = run_ok(session, "weights bert").results[0].footer
    assert any("BertModel" in line and "hidden_size 32" in line and "num_hidden_layers 2" in line for line in footer)
    assert any("hidden_size 32" in line for line in run_ok(session, "models").results[0].footer)
    assert any("BertModel" in line and "hidden_size 32" in line for line in run_ok(session, "shapes bert").results[0].footer)
    assert session.namespace["bert"].config["hidden_size"] == 32


@pytest.mark.parametrize("member", ["model-00002-of-{n}.safetensors", "model.safetensors.index.json"])
def test_a_shard_or_the_index_loads_the_whole_checkpoint(session, sharded, member):
    count = len(list(sharded.glob("model-*-of-*.safetensors")))
    name = member.format(n=f"{count:05d}")
    message = run_ok(session, f"load {sharded / name}").results[0].text
    assert message.startswith("loaded model: ")
    assert ("the whole checkpoint was loaded" if "of" in name else f"{count} shards") in message
    assert listed(session, "model") == safetensors_listing(sorted(sharded.glob("model-*.safetensors")))
    assert session.namespace["model"].config["num_hidden_layers"] == 2  # the folder's config, kept


def test_listing_a_folder_imports_no_framework(sharded):
    found = run_isolated(f"""
        import json, sys
        from modelshell.core.session import Session
        s = Session()
        assert s.run_line("load {sharded} as bert").ok
        assert s.run_line("weights bert").ok
        print(json.dumps([m for m in ("torch", "tensorflow", "keras", "transformers") if m in sys.modules]))
    """)
    assert found == []


def test_listing_a_folder_builds_and_imports_only_what_it_uses(sharded):
    """What a fresh process's listing of a folder pays for (issue 14's start-up target; the times are in
    benchmarks/bench_folders.py): the parsers of the two commands it ran, and none of the modules only a
    failure, a save or a mapped torch file needs, nor a terminal library. A typo then imports difflib
    for its hint: the control that the check sees an import."""
    found = run_isolated(f"""
        import json, sys
        from modelshell.core.session import Session
        s = Session()
        assert s.run_line("load {sharded} as bert").ok
        assert s.run_line("weights bert --json").ok
        lazy = ("difflib", "traceback", "zipfile", "modelshell.safety.mapped", "rich", "prompt_toolkit")
        built = [name for name, cmd in s.commands.items() if cmd._parser is not None]
        imported = [m for m in lazy if m in sys.modules]
        assert not s.run_line("weights bret").ok
        print(json.dumps([built, imported, "difflib" in sys.modules]))
    """)
    assert found == [["load", "weights"], [], True]


def test_single_safetensors_folder(session, tmp_path):
    folder = bert_folder(tmp_path / "bert")
    assert (folder / "model.safetensors").is_file()
    run_ok(session, f"load {folder} as bert")
    assert listed(session, "bert") == safetensors_listing([folder / "model.safetensors"])


def test_sharded_torch_bin_folder(session, tmp_path):
    folder = bert_folder(tmp_path / "bert", max_shard_size="20KB", safe_serialization=False)
    shards = sorted(folder.glob("pytorch_model-*-of-*.bin"))
    assert len(shards) > 2 and (folder / "pytorch_model.bin.index.json").is_file()
    run_ok(session, f"load {folder} as bert")
    want = {}
    for shard in shards:
        for key, tensor in torch.load(shard, weights_only=True).items():
            want[key] = (tuple(tensor.shape), str(tensor.dtype).removeprefix("torch."))
    assert listed(session, "bert") == want
    run_ok(session, f"load {shards[0]} as first")
    assert listed(session, "first") == want


def test_a_broken_torch_bin_folder_fails_in_one_line(demo_session, tmp_path):
    """The broken-input rules for `pytorch_model.bin` shards: a truncated shard and an index naming a
    missing one are each one line, and the session keeps what it held."""
    import shutil

    folder = bert_folder(tmp_path / "bert", max_shard_size="20KB", safe_serialization=False)
    shards = sorted(folder.glob("pytorch_model-*-of-*.bin"))
    before = snapshot(demo_session)
    truncated = tmp_path / "truncated"
    shutil.copytree(folder, truncated)
    victim = truncated / shards[1].name
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    run_fail(demo_session, f"load {truncated}", shards[1].name)
    missing = tmp_path / "missing"
    shutil.copytree(folder, missing)
    (missing / shards[2].name).unlink()
    run_fail(demo_session, f"load {missing}", shards[2].name, "pytorch_model.bin.index.json")
    assert_unchanged(demo_session, before)


def test_tf_model_h5_folder(session, tmp_path):
    real_models.import_torchvision()
    from transformers import BertConfig, TFBertModel

    model = TFBertModel(BertConfig(**TINY_BERT))
    model(model.dummy_inputs)
    model.save_pretrained(tmp_path / "tfbert")
    assert (tmp_path / "tfbert" / "tf_model.h5").is_file()
    run_ok(session, f"load {tmp_path / 'tfbert'} as tfbert")
    got = listed(session, "tfbert")
    assert sorted(shape for shape, _ in got.values()) == sorted(tuple(w.shape) for w in model.weights)
    with h5py.File(tmp_path / "tfbert" / "tf_model.h5", "r") as f:
        for name in got:
            dataset = next(f[layer][name + ":0"] for layer in f.attrs["layer_names"] if name + ":0" in f[layer])
            assert got[name] == (tuple(dataset.shape), str(dataset.dtype))
            np.testing.assert_array_equal(session.model("tfbert").read(name), dataset[()])


def test_keras_hub_preset_folder(session, tmp_path):
    import keras_hub

    backbone = keras_hub.models.BertBackbone(vocabulary_size=50, num_layers=2, num_heads=2, hidden_dim=16,
                                            intermediate_dim=32, max_sequence_length=16)
    folder = tmp_path / "preset"
    backbone.save_to_preset(str(folder))
    run_ok(session, f"load {folder} as hub")
    want = {}
    with h5py.File(folder / "model.weights.h5", "r") as f:
        f.visititems(lambda name, obj: want.__setitem__(name, (tuple(obj.shape), str(obj.dtype)))
                     if isinstance(obj, h5py.Dataset) else None)
    assert listed(session, "hub") == want
    assert len(want) == len(backbone.weights)
    assert data_of(session, "weights hub --json")["class"] == "BertBackbone weights (keras-hub preset folder)"
    footer = run_ok(session, "weights hub").results[0].footer
    assert any("hidden_dim 16" in line and "num_layers 2" in line for line in footer)


def h5_listing(files: list[Path]) -> dict[str, tuple[tuple[int, ...], str]]:
    """h5py's own listing of every dataset over the files."""
    found = {}
    for path in files:
        with h5py.File(path, "r") as f:
            f.visititems(lambda name, obj: found.__setitem__(name, (tuple(obj.shape), str(obj.dtype)))
                         if isinstance(obj, h5py.Dataset) else None)
    return found


def value_keys(arrays) -> list[tuple[tuple[int, ...], bytes]]:
    """The tensors as a sorted list of (shape, bytes): what two readings that name them differently share."""
    return sorted((tuple(a.shape), np.ascontiguousarray(a, dtype=np.float32).tobytes()) for a in arrays)


@pytest.fixture(scope="module")
def hub_shards(tmp_path_factory) -> tuple[Path, list[np.ndarray]]:
    """A keras-hub BertBackbone saved by `save_to_preset` with a shard size small enough for several
    shards, and the backbone's own weights (every constant-initialised one perturbed)."""
    import keras_hub

    backbone = keras_hub.models.BertBackbone(vocabulary_size=50, num_layers=2, num_heads=2, hidden_dim=16,
                                            intermediate_dim=32, max_sequence_length=16)
    rng = np.random.default_rng(0)
    for weight in backbone.weights:  # LayerNorm gammas are ones and biases zeros: made unlike each other
        weight.assign(weight.numpy() + rng.standard_normal(weight.shape).astype(weight.dtype))
    folder = tmp_path_factory.mktemp("hub") / "preset"
    backbone.save_to_preset(str(folder), max_shard_size=6e-6)  # GB: about 6 KB per shard
    return folder, [w.numpy() for w in backbone.weights]


def test_keras_hub_sharded_preset_lists_every_shard(session, hub_shards):
    import keras_hub

    folder, weights = hub_shards
    shards = sorted(folder.glob("model_*.weights.h5"))
    assert len(shards) > 2 and (folder / "model.weights.json").is_file() and not (folder / "model.weights.h5").exists()
    message = run_ok(session, f"load {folder} as hub").results[0].text
    assert f"{len(shards)} shards, from model.weights.json" in message, message
    got = listed(session, "hub")
    assert got == h5_listing(shards)
    assert len(got) == len(weights)
    handle = session.model("hub")
    read = [handle.read(name) for name in got]
    with h5py.File(shards[-1], "r") as f:  # a tensor of the last shard, value for value
        last = next(name for name in got if name in f)
        np.testing.assert_array_equal(handle.read(last), f[last][()])
    # keras-hub's own reading of the same folder holds the same tensors, and so did the saved backbone
    back = keras_hub.models.Backbone.from_preset(str(folder))
    assert value_keys(read) == value_keys(w.numpy() for w in back.weights) == value_keys(weights)
    assert data_of(session, "weights hub --json")["class"] == "BertBackbone weights (keras-hub preset folder)"
    assert any("hidden_dim 16" in line for line in run_ok(session, "weights hub").results[0].footer)


@pytest.mark.parametrize("member", ["model_00001.weights.h5", "model.weights.json"])
def test_a_keras_shard_or_its_index_loads_all_shards(session, hub_shards, member):
    folder, _ = hub_shards
    shards = sorted(folder.glob("model_*.weights.h5"))
    message = run_ok(session, f"load {folder / member} as part").results[0].text
    assert ("the whole checkpoint was loaded" if member.endswith(".h5") else f"{len(shards)} shards") in message
    assert listed(session, "part") == h5_listing(shards)


def test_a_broken_keras_hub_sharded_preset_fails_in_one_line(demo_session, hub_shards, tmp_path):
    import shutil

    folder, _ = hub_shards
    before = snapshot(demo_session)
    shards = sorted(folder.glob("model_*.weights.h5"))
    missing = tmp_path / "missing"
    shutil.copytree(folder, missing)
    (missing / shards[1].name).unlink()
    run_fail(demo_session, f"load {missing}", shards[1].name, "model.weights.json")
    truncated = tmp_path / "truncated"
    shutil.copytree(folder, truncated)
    victim = truncated / shards[0].name
    victim.write_bytes(victim.read_bytes()[:len(victim.read_bytes()) // 2])
    run_fail(demo_session, f"load {truncated}", shards[0].name)
    bad = tmp_path / "bad_index"
    shutil.copytree(folder, bad)
    (bad / "model.weights.json").write_text("[1, 2]")
    run_fail(demo_session, f"load {bad}", "model.weights.json")
    assert_unchanged(demo_session, before)


# --- broken folders: one line each, the session intact ----------------------------------------------------
def test_broken_folders_fail_in_one_line_and_keep_the_session(demo_session, sharded, tmp_path):
    import shutil

    before = snapshot(demo_session)
    shards = sorted(sharded.glob("model-*-of-*.safetensors"))

    truncated = tmp_path / "truncated"
    shutil.copytree(sharded, truncated)
    victim = truncated / shards[1].name
    victim.write_bytes(victim.read_bytes()[:-100])
    run_fail(demo_session, f"load {truncated}", shards[1].name, "truncated")

    missing = tmp_path / "missing"
    shutil.copytree(sharded, missing)
    (missing / shards[0].name).unlink()
    run_fail(demo_session, f"load {missing}", shards[0].name, "model.safetensors.index.json")
    run_fail(demo_session, f"load {missing / shards[1].name}", shards[0].name)

    no_weights = tmp_path / "config_only"
    no_weights.mkdir()
    shutil.copy(sharded / "config.json", no_weights)
    run_fail(demo_session, f"load {no_weights}", "config_only", "no model weights")
    empty = tmp_path / "empty"
    empty.mkdir()
    run_fail(demo_session, f"load {empty}", "empty", "no model")

    bad_index = tmp_path / "bad_index"
    shutil.copytree(sharded, bad_index)
    (bad_index / "model.safetensors.index.json").write_text("{not json")
    run_fail(demo_session, f"load {bad_index}", "index")
    assert_unchanged(demo_session, before)


# --- every safetensors dtype -----------------------------------------------------------------------------
def test_every_safetensors_dtype_is_listed_and_read(session, tmp_path):
    dtypes = [torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.int32, torch.int16,
              torch.int8, torch.uint64, torch.uint32, torch.uint16, torch.uint8, torch.bool, torch.float8_e4m3fn,
              torch.float8_e4m3fnuz, torch.float8_e5m2, torch.float8_e5m2fnuz, torch.complex64]
    torch.manual_seed(0)
    tensors = {str(d).removeprefix("torch."): (torch.randn(3, 4) * 8).to(torch.int8).abs().to(d) for d in dtypes}
    path = tmp_path / "every.safetensors"
    save_file(tensors, str(path))
    with open(path, "rb") as f:
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    codes = {info["dtype"] for key, info in header.items() if key != "__metadata__"}
    assert {"U16", "U32", "U64", "F8_E4M3", "F8_E5M2", "C64", "BF16"} <= codes
    run_ok(session, f"load {path} as every")
    assert listed(session, "every") == safetensors_listing([path])
    handle = session.model("every")
    for name, tensor in tensors.items():
        got = handle.read(name)
        assert got.dtype.name == re.sub(r"^float8_e8m0$", "float8_e8m0fnu", name), name
        want = tensor.to(torch.float64 if not tensor.is_complex() else torch.complex128).numpy()
        np.testing.assert_array_equal(got.astype(want.dtype), want, err_msg=name)


# --- save NAME DIR/ --------------------------------------------------------------------------------------
def test_save_to_a_folder_writes_shards_transformers_loads(session, sharded, tmp_path):
    real_models.import_torchvision()
    from transformers import BertModel

    run_ok(session, f"load {sharded} as bert")
    out = tmp_path / "copy"
    saved = data_of(session, f"save bert {out}/ --max-shard-size 20KB")
    shards = sorted(out.glob("model-*-of-*.safetensors"))
    assert len(shards) > 2 and "model.safetensors.index.json" in saved["files"] and "config.json" in saved["files"]
    original = safetensors_listing(sorted(sharded.glob("model-*-of-*.safetensors")))
    assert safetensors_listing(shards) == original
    for shard in shards:
        assert shard.stat().st_size < 22_000 or len(safetensors_listing([shard])) == 1  # 20KB and a header
    rebuilt = BertModel.from_pretrained(out, local_files_only=True)
    want = BertModel.from_pretrained(sharded, local_files_only=True).state_dict()
    for name, tensor in rebuilt.state_dict().items():
        torch.testing.assert_close(tensor, want[name], rtol=0, atol=0, msg=name)
    run_ok(session, f"load {out} as again")
    assert listed(session, "again") == original

    one = tmp_path / "one"
    run_ok(session, f"save bert {one}/")  # under the default 5GB: one file, as transformers writes it
    assert sorted(p.name for p in one.iterdir()) == ["config.json", "model.safetensors"]


def test_save_to_a_folder_carries_the_safetensors_metadata_into_every_shard(session, sharded, tmp_path):
    """The `__metadata__` a checkpoint was loaded with is written again, into every shard: here
    transformers' own `{"format": "pt"}` and a key of the test's, which no writer would make up."""
    import shutil

    from safetensors.numpy import load_file, save_file as save_numpy

    real_models.import_torchvision()
    from transformers import BertModel

    tagged = tmp_path / "tagged"
    shutil.copytree(sharded, tagged)
    shards = sorted(tagged.glob("model-*-of-*.safetensors"))
    with safe_open(str(shards[0]), framework="np") as f:
        assert f.metadata() == {"format": "pt"}  # what save_pretrained wrote
    wanted = {"format": "pt", "written_by": "test_model_folders"}
    for shard in shards:
        save_numpy(load_file(str(shard)), str(shard), metadata=wanted)
    run_ok(session, f"load {tagged} as bert")
    assert any("written_by=test_model_folders" in line for line in run_ok(session, "weights bert").results[0].footer)
    out = tmp_path / "out"
    run_ok(session, f"save bert {out}/ --max-shard-size 20KB")
    written = sorted(out.glob("model-*-of-*.safetensors"))
    assert len(written) > 2
    for shard in written:
        with safe_open(str(shard), framework="np") as f:
            assert f.metadata() == wanted, shard.name
    rebuilt = BertModel.from_pretrained(out, local_files_only=True)  # transformers reads the folder back
    with safe_open(str(written[-1]), framework="pt") as f:
        for key in f.keys():
            torch.testing.assert_close(rebuilt.state_dict()[key], f.get_tensor(key), rtol=0, atol=0)
    run_ok(session, f"save bert {tmp_path / 'one'}/")  # one file under the limit: the same metadata
    with safe_open(str(tmp_path / "one" / "model.safetensors"), framework="np") as f:
        assert f.metadata() == wanted


def test_save_to_a_folder_refuses_in_one_line(demo_session, tmp_path):
    before = snapshot(demo_session)
    run_fail(demo_session, f"save torch_model {tmp_path}/x/ --max-shard-size lots", "lots", "size")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    run_fail(demo_session, f"save torch_model {tmp_path}/full/", "not empty")
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"
    run_fail(demo_session, f"save torch_model {tmp_path}/no/such/", "not a folder")
    run_ok(demo_session, f"save torch_model {tmp_path}/lenet/ --max-shard-size 10KB")
    assert len(list((tmp_path / "lenet").glob("model-*.safetensors"))) > 1
    assert_unchanged(demo_session, before)
