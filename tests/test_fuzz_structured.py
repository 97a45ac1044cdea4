"""Structure-aware fuzzing of every format `load` reads (issue 15).

Byte damage of a whole file mostly stops at the container's own checks (a zip checksum, HDF5's
superblock): it says little about the parsers behind them. Here each mutation damages the inside of a
file and packs it again validly: zip members are rewritten (a pickle's opcodes and arguments, a JSON
config's values, an HDF5 member's datasets) and re-zipped with correct checksums; a safetensors header is
mutated as JSON and re-framed with its true length; HDF5 files are changed with h5py itself (shapes,
dtypes, attributes, links, external storage, virtual datasets) and only sometimes damaged byte-wise
after; a few mutants are not regular files at all (a FIFO, a symlink to /dev/zero). Every mutant goes
through `load`; what loads has every tensor read (`weights --stats`). Each must end in one error line
or a clean listing, within a time bound, with the other model of the session untouched.

Per format the test counts how many mutants reached the real parser behind the container (torch's
weights-only unpickler, the safetensors library, Keras's loader, the HDF5 weights reader), prints the
counts, writes them to ``fuzz-results.json`` in pytest's temporary folder, and asserts a floor for each.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import pickletools
import random
import struct
import warnings
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import h5py  # noqa: E402
import keras  # noqa: E402
import safetensors  # noqa: E402
import torch  # noqa: E402
import torch._weights_only_unpickler as weights_only  # noqa: E402
from safetensors.torch import save_file as save_safetensors  # noqa: E402
from torch import nn  # noqa: E402

from modelshell.frameworks import weights_files  # noqa: E402
from modelshell.safety import probe  # noqa: E402
from modelshell.core.session import Session  # noqa: E402
from tests.test_formats import values  # noqa: E402
from tests.test_safety import _mutate as damage_bytes, load_and_read  # noqa: E402

TIME_BOUND = 10.0  # seconds for any one mutant


# --- seeds: one small real file of each format --------------------------------------------------------
def _seeds(d: Path) -> dict[str, Path]:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    state = net.state_dict()
    paths = {"pt": d / "seed.pt", "pt-legacy": d / "legacy.pt", "bin": d / "seed.bin", "ckpt": d / "seed.ckpt",
             "torchscript": d / "script.pt", "safetensors": d / "seed.safetensors", "keras": d / "seed.keras",
             "h5-model": d / "seed.h5", "weights.h5": d / "seed.weights.h5", "h5-keras2-weights": d / "k2.h5"}
    torch.save(state, paths["pt"])
    torch.save(state, paths["pt-legacy"], _use_new_zipfile_serialization=False)
    torch.save(state, paths["bin"], _use_new_zipfile_serialization=False)
    torch.save({"state_dict": state, "epoch": 3, "lr": [0.1, 0.01]}, paths["ckpt"])
    torch.jit.save(torch.jit.script(net), str(paths["torchscript"]))
    save_safetensors({k: v.contiguous() for k, v in state.items()}, str(paths["safetensors"]))
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Dense(4)(inputs)))
    model.save(str(paths["keras"]))
    model.save(str(paths["h5-model"]))
    model.save_weights(str(paths["weights.h5"]))
    with h5py.File(paths["h5-keras2-weights"], "w") as f:  # what Keras 2 `save_weights('x.h5')` writes
        f.attrs["layer_names"] = [b"dense", b"dense_1"]
        for layer, shape in (("dense", (3, 4)), ("dense_1", (4, 2))):
            names = [f"{layer}/kernel:0".encode(), f"{layer}/bias:0".encode()]
            group = f.require_group(layer)
            group.attrs["weight_names"] = names
            group[names[0].decode()] = np.random.default_rng(1).normal(size=shape).astype("float32")
            group[names[1].decode()] = np.zeros(shape[1], "float32")
    return paths


# --- mutations of what is inside ----------------------------------------------------------------------
_ODD_VALUES = [-1, 0, 1, 2**31, 2**63, 2**64 + 1, -(2**63), 1.5, float("nan"), "", "x" * 300, "float32", "F64",
               "U8", "BOOL", None, True, [], {}, [[[[]]]], [0, 0], [-1, 4], [2**40, 2**40], {"dtype": "F32"}]


def mutate_json(value, rng: random.Random):
    """One change somewhere in a JSON value: a node replaced by an odd value, a key dropped, renamed or
    two values swapped, a list item duplicated or dropped."""
    nodes: list = []

    def walk(node) -> None:
        if isinstance(node, (dict, list)):
            nodes.append(node)
            for child in (node.values() if isinstance(node, dict) else node):
                walk(child)

    walk(value)
    if not nodes:
        return rng.choice(_ODD_VALUES)
    node = rng.choice(nodes)
    keys = list(node) if isinstance(node, dict) else list(range(len(node)))
    if not keys:
        (node.__setitem__("x", 1) if isinstance(node, dict) else node.append(rng.choice(_ODD_VALUES)))
        return value
    key = rng.choice(keys)
    kind = rng.randrange(5)
    if kind == 0 or len(keys) < 2:
        node[key] = rng.choice(_ODD_VALUES)
    elif kind == 1:
        del node[key]
    elif kind == 2 and isinstance(node, dict):
        node[f"{key}_renamed" if rng.random() < 0.5 else rng.choice(keys + ["module", "class_name"])] = node.pop(key)
    elif kind == 3:
        other = rng.choice(keys)
        node[key], node[other] = node[other], node[key]
    else:
        node[key] = json.loads(json.dumps(node[rng.choice(keys)]))  # a copy of a sibling
    return value


_STRING_OPS = {"SHORT_BINUNICODE": ("<B", 1), "BINUNICODE": ("<I", 4), "SHORT_BINSTRING": ("<B", 1),
               "BINUNICODE8": ("<Q", 8), "SHORT_BINBYTES": ("<B", 1), "BINBYTES": ("<I", 4)}
_INT_OPS = {"BININT1": "<B", "BININT2": "<H", "BININT": "<i", "BINGET": "<B", "BINPUT": "<B",
            "LONG_BINGET": "<I", "LONG_BINPUT": "<I"}
_STRINGS = ["", "0", "99", "cpu", "cuda:7", "FloatStorage", "DoubleStorage", "HalfStorage", "storage", "os",
            "system", "torch._utils", "_rebuild_tensor_v2", "collections", "OrderedDict", "builtins", "getattr"]


def mutate_pickle(data: bytes, rng: random.Random) -> bytes:
    """One change to a pickle, by opcode: a string or integer argument rewritten (the length prefix kept
    true), an opcode replaced, dropped, repeated or two swapped. Bytes the opcode walk cannot read are
    damaged as bytes."""
    try:
        ops = list(pickletools.genops(data))
    except Exception:  # noqa: BLE001 - already damaged
        return damage_bytes(data, rng)
    bounds = [(op, arg, pos, ops[i + 1][2] if i + 1 < len(ops) else len(data)) for i, (op, arg, pos) in enumerate(ops)]
    kind = rng.randrange(6)
    strings = [b for b in bounds if b[0].name in _STRING_OPS]
    ints = [b for b in bounds if b[0].name in _INT_OPS]
    if kind == 0 and strings:
        op, arg, pos, end = rng.choice(strings)
        fmt, width = _STRING_OPS[op.name]
        text = rng.choice(_STRINGS + [s for s in (b[1] for b in strings) if isinstance(s, str)])
        raw = text.encode() if isinstance(text, str) else bytes(text)
        raw = raw[: (1 << (8 * width)) - 1]
        return data[:pos + 1] + struct.pack(fmt, len(raw)) + raw + data[end:]
    if kind == 1 and ints:
        op, arg, pos, end = rng.choice(ints)
        fmt = _INT_OPS[op.name]
        limit = 1 << (8 * struct.calcsize(fmt))
        number = rng.choice([0, 1, 2, 7, limit - 1, rng.randrange(limit)])
        if fmt == "<i":
            number = rng.choice([0, 1, -1, 2**31 - 1, -(2**31), 3, 1000])
        return data[:pos + 1] + struct.pack(fmt, number) + data[end:]
    op, arg, pos, end = rng.choice(bounds)
    if kind == 2:
        return data[:pos] + bytes([rng.choice(pickletools.opcodes).code.encode("latin1")[0]]) + data[pos + 1:]
    if kind == 3:
        return data[:pos] + data[end:]
    if kind == 4:
        return data[:end] + data[pos:end] + data[end:]
    other = rng.choice(bounds)
    a, b = sorted([(pos, end), (other[2], other[3])])
    if a[1] > b[0]:
        return damage_bytes(data, rng)
    return data[:a[0]] + data[b[0]:b[1]] + data[a[1]:b[0]] + data[a[0]:a[1]] + data[b[1]:]


def mutate_hdf5(data: bytes, rng: random.Random, work: Path, json_attrs=("model_config",)) -> bytes:
    """One change made with h5py: a dataset reshaped, retyped, emptied, made scalar or enormous
    (declared, not written), removed or moved; an attribute changed (JSON configs as JSON); a soft link,
    a link loop, an external link, external storage or a virtual dataset added. Now and then the bytes
    are damaged after."""
    path = work / "mutant.h5"
    path.write_bytes(data)
    with h5py.File(path, "r+") as f:
        datasets, groups = [], []
        f.visititems(lambda name, obj: (datasets if isinstance(obj, h5py.Dataset) else groups).append(name))
        kind = rng.randrange(9)
        if kind <= 2 and datasets:
            name = rng.choice(datasets)
            old = f[name]
            shape, dtype = old.shape, old.dtype
            del f[name]
            if kind == 0:
                shape = rng.choice([(), (0,), (2**20, 2**20), tuple(reversed(shape)) or (1,), shape + (1,), (7,)])
            else:
                dtype = rng.choice(["float16", "float64", "int8", "uint64", "bool", "complex64", "S4",
                                    h5py.string_dtype(), np.dtype([("a", "f4"), ("b", "i2")])])
            if np.prod(shape, dtype=float) > 1e6:
                f.create_dataset(name, shape=shape, dtype=dtype)  # declared only: the file stays small
            else:
                f.create_dataset(name, data=np.zeros(shape, dtype=dtype) if dtype != h5py.string_dtype()
                                 else np.full(shape, "x", dtype=object))
        elif kind == 3 and (datasets or groups):
            name = rng.choice(datasets + groups)
            if rng.random() < 0.5:
                del f[name]
            else:
                f.move(name, f"{name}_moved")
        elif kind == 4:
            owner = f[rng.choice(groups)] if groups and rng.random() < 0.6 else f
            keys = list(owner.attrs)
            key = rng.choice(keys) if keys else "weight_names"
            value = owner.attrs.get(key)
            if key in json_attrs and value is not None:
                text = value.decode() if isinstance(value, bytes) else str(value)
                owner.attrs[key] = json.dumps(mutate_json(json.loads(text), rng))
            else:
                owner.attrs[key] = rng.choice([b"", [b"nope"], [b"dense", b"dense"], np.arange(3), "x" * 200,
                                               [b"vars/0:0"], 2**40])
        elif kind == 5 and datasets:
            where = rng.choice(groups) + "/linked" if groups else "linked"
            f[where] = h5py.SoftLink(rng.choice([f"/{rng.choice(datasets)}", "/", f"/{where}", "/nowhere"]))
        elif kind == 6 and datasets:
            name = rng.choice(datasets)
            shape = f[name].shape
            del f[name]
            reach = rng.randrange(3)
            if reach == 0:
                f[name] = h5py.ExternalLink("/etc/passwd", "/x")
            elif reach == 1:
                f.create_dataset(name, shape=shape, dtype="uint8", external=[("/etc/passwd", 0, 1 << 20)])
            else:
                layout = h5py.VirtualLayout(shape=shape or (1,), dtype="f4")
                layout[...] = h5py.VirtualSource("/etc/other.h5", "x", shape=shape or (1,))
                f.create_virtual_dataset(name, layout)
    out = path.read_bytes()
    if kind >= 7:  # byte damage inside the file, which h5py wrote validly
        out = damage_bytes(out, rng)
    return out


def mutate_zip(data: bytes, rng: random.Random, work: Path) -> bytes:
    """One member changed as what it is (pickle, JSON, HDF5, code, raw storage), or one dropped, renamed,
    duplicated or added; then zipped again, so every checksum is right."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        members = [(info.filename, archive.read(info)) for info in archive.infolist()]
    kind = rng.randrange(10)
    weights = [5 if n.endswith((".pkl", ".json", ".h5")) else 1 for n, _ in members]
    at = rng.choices(range(len(members)), weights)[0]
    name, body = members[at]
    if kind < 7:
        if name.endswith(".pkl"):
            body = mutate_pickle(body, rng)
        elif name.endswith(".json"):
            try:
                body = json.dumps(mutate_json(json.loads(body), rng)).encode()
            except ValueError:
                body = damage_bytes(body, rng)
        elif name.endswith(".h5"):
            body = mutate_hdf5(body, rng, work)
        elif name.endswith(".py") and rng.random() < 0.3:
            body += b"\n  def __setstate__(self, state):\n    pass\n"
        else:
            body = damage_bytes(body, rng) if len(body) > 1 else bytes(rng.randrange(256) for _ in range(8))
        members[at] = (name, body)
    elif kind == 7:
        del members[at]
    elif kind == 8:
        members[at] = (rng.choice([name + "x", name.replace("data", "data2"), name.rsplit("/", 1)[0] + "/9",
                                   "../" + name, name.upper()]), body)
    else:
        members.insert(rng.randrange(len(members) + 1), (rng.choice([name, "extra.pkl", "data.pkl"]), body))
    out = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(out, "w") as archive:
        warnings.simplefilter("ignore")  # duplicate names are a mutation
        for member, content in members:
            archive.writestr(member, content)
    return out.getvalue()


def mutate_safetensors(data: bytes, rng: random.Random) -> bytes:
    """The header as JSON (a dtype, a shape, offsets, __metadata__), framed again with its true length;
    or the header's text, or the body's bytes."""
    (length,) = struct.unpack("<Q", data[:8])
    header, body = data[8:8 + length], data[8 + length:]
    kind = rng.randrange(10)
    if kind < 7:
        header = json.dumps(mutate_json(json.loads(header), rng)).encode()
    elif kind < 9:
        header = damage_bytes(header, rng)
    else:
        body = damage_bytes(body, rng) if body else body
    return struct.pack("<Q", len(header)) + header + body


def mutate_legacy_torch(data: bytes, rng: random.Random) -> bytes:
    """A legacy torch file is pickles back to back (magic, protocol, system info, the data, storage keys)
    and then raw storages: one pickle changed by opcode, the rest kept."""
    stream = io.BytesIO(data)
    spans = []
    with contextlib.suppress(Exception):
        for _ in range(5):
            start = stream.tell()
            for op, _, _ in pickletools.genops(stream):
                if op.name == "STOP":
                    break
            spans.append((start, stream.tell()))
    if not spans or rng.random() < 0.15:
        return damage_bytes(data, rng)
    start, end = rng.choice(spans)
    return data[:start] + mutate_pickle(data[start:end], rng) + data[end:]


def mutate(fmt: str, data: bytes, rng: random.Random, work: Path) -> bytes:
    if fmt in ("pt", "ckpt", "torchscript", "keras"):
        return mutate_zip(data, rng, work)
    if fmt in ("pt-legacy", "bin"):
        return mutate_legacy_torch(data, rng)
    if fmt == "safetensors":
        return mutate_safetensors(data, rng)
    return mutate_hdf5(data, rng, work)


# --- what reached the parser -------------------------------------------------------------------------
def _counting(counter: Counter, key: str, function):
    def counted(*args, **kwargs):
        counter[key] += 1
        return function(*args, **kwargs)
    return counted


PARSERS = {  # format -> the parser a mutant must reach to count, as (what it is, the counter's key)
    "pt": "unpickler", "pt-legacy": "unpickler", "bin": "unpickler", "ckpt": "unpickler", "torchscript": "unpickler",
    "safetensors": "safetensors", "keras": "keras", "h5-model": "keras", "weights.h5": "hdf5 reader",
    "h5-keras2-weights": "hdf5 reader",
}
SUFFIX = {"pt": ".pt", "pt-legacy": ".pt", "bin": ".bin", "ckpt": ".ckpt", "torchscript": ".pt",
          "safetensors": ".safetensors", "keras": ".keras", "h5-model": ".h5", "weights.h5": ".weights.h5",
          "h5-keras2-weights": ".h5"}
# Mutants per format, and the floor of those that must reach the parser (about two thirds of what this
# corpus gives; byte-damaging the whole file reached the unpickler 29 times in 500, Keras once).
COUNTS = {"pt": (150, 90), "pt-legacy": (150, 90), "bin": (100, 60), "ckpt": (100, 60), "torchscript": (120, 60),
          "safetensors": (250, 150), "keras": (70, 40), "h5-model": (70, 30), "weights.h5": (70, 30),
          "h5-keras2-weights": (70, 28)}


@pytest.fixture(scope="module")
def seeds(tmp_path_factory) -> dict[str, bytes]:
    d = tmp_path_factory.mktemp("structured-seeds")
    return {fmt: path.read_bytes() for fmt, path in _seeds(d).items()}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    found: dict[str, dict] = {}
    yield found
    path = tmp_path_factory.getbasetemp() / "fuzz-results.json"
    path.write_text(json.dumps(found, indent=1))
    print(f"\nstructured fuzzing, mutants that reached the parser per format (also in {path}):")
    for fmt, row in found.items():
        print(f"  {fmt:18} {row['reached']:4} of {row['mutants']:4} reached the {row['parser']}; "
              f"{row['loaded']} loaded and were read whole; {row['not regular']} not regular files; "
              f"slowest {row['slowest'][0]} s (mutant {row['slowest'][1]})")


def _not_regular(path: Path, i: int) -> None:
    """Some mutants are not files at all: a FIFO, or a symlink to a device."""
    if i % 80 == 79:
        os.mkfifo(path)
    else:
        path.symlink_to("/dev/zero" if i % 3 else "/dev/urandom")


@pytest.mark.fuzz
@pytest.mark.parametrize("fmt", list(COUNTS))
def test_structured_mutants_fail_in_one_line_or_load_and_read_whole(seeds, results, tmp_path, fmt, monkeypatch):
    monkeypatch.setattr(probe, "PROBE_SECONDS", 1.0)  # a damaged HDF5 file can hang its library: bounded
    reached: Counter = Counter()
    monkeypatch.setattr(weights_only.Unpickler, "load", _counting(reached, "unpickler", weights_only.Unpickler.load))
    monkeypatch.setattr(safetensors, "safe_open", _counting(reached, "safetensors", safetensors.safe_open))
    monkeypatch.setattr(keras.saving, "load_model", _counting(reached, "keras", keras.saving.load_model))
    monkeypatch.setattr(weights_files.KerasH5Weights, "_read_header",
                        _counting(reached, "hdf5 reader", weights_files.KerasH5Weights._read_header))
    count, floor = COUNTS[fmt]
    rng = random.Random(f"modelshell-structured-{fmt}")
    session = Session()
    session.namespace["keeper"] = nn.Linear(2, 2)
    kept = values(session, "keeper")
    loaded = not_regular = mutants_reached = 0
    slowest = (0.0, -1)
    for i in range(count):
        path = tmp_path / f"mutant{i}{SUFFIX[fmt]}"
        if i % 40 == 39:
            _not_regular(path, i)
            not_regular += 1
        else:
            path.write_bytes(mutate(fmt, seeds[fmt], rng, tmp_path))
        before = reached[PARSERS[fmt]]
        ok, took = load_and_read(session, path, TIME_BOUND)
        loaded += ok
        slowest = max(slowest, (round(took, 2), i))
        mutants_reached += reached[PARSERS[fmt]] > before
        path.unlink()
    results[fmt] = {"parser": PARSERS[fmt], "mutants": count, "reached": mutants_reached, "loaded": loaded,
                    "not regular": not_regular, "slowest": slowest}
    assert session.model_names() == ["keeper"]
    np.testing.assert_array_equal(values(session, "keeper")["weight"], kept["weight"])
    assert mutants_reached >= floor, results[fmt]
