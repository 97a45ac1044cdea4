"""Weights-only files read without any framework: safetensors and Keras HDF5 weights.

These formats describe every tensor in a header (safetensors' JSON, HDF5 dataset shapes), so listing
weights never needs torch or TensorFlow and never loads the data: arrays are read (memory-mapped where
the format allows) only when a tensor is asked for.
"""
from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import numpy as np

from modelshell.core.errors import ModelshellError, first_line
from modelshell.frameworks.base import Layer, LayerNode, ModelHandle, TensorInfo, layers_from_tensors, tree_from_names

__all__ = ["ArrayFile", "SafetensorsFile", "KerasH5Weights", "TorchShard", "ShardedWeights", "WeightsFile",
           "h5_holds_model", "guess_layout", "natural_key"]

# Every dtype the safetensors format defines that numpy (with ml_dtypes) can hold, as numpy/ml_dtypes name
# it, with its item size. The sub-byte ones (F4, F6_*) are refused by name.
_SAFETENSORS_DTYPES = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
    "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8",
    "U64": "uint64", "U32": "uint32", "U16": "uint16", "U8": "uint8", "BOOL": "bool",
    "F8_E4M3": "float8_e4m3fn", "F8_E4M3FNUZ": "float8_e4m3fnuz", "F8_E5M2": "float8_e5m2",
    "F8_E5M2FNUZ": "float8_e5m2fnuz", "F8_E8M0": "float8_e8m0fnu", "C64": "complex64",
}
_ML_DTYPES = {"bfloat16", "float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz", "float8_e8m0fnu"}
_ITEM_SIZES = {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2, "int64": 8, "int32": 4, "int16": 2,
               "int8": 1, "uint64": 8, "uint32": 4, "uint16": 2, "uint8": 1, "bool": 1, "complex64": 8,
               **{name: 1 for name in _ML_DTYPES if name.startswith("float8")}}


class ArrayFile(Mapping):
    """A read-only mapping name -> numpy array over a file; the header is read once, arrays on demand.

    This is what a weights-only model is bound to in the session namespace, so ``m["0.weight"]`` works in
    Python lines just as it would for a loaded state dict.
    """

    path: Path
    layout: str  # the framework whose naming and array layout the file follows
    kind: str | None = None  # what the file is, when its suffix does not say (a folder, a checkpoint prefix)
    metadata: dict[str, str] = {}  # a safetensors header's __metadata__ (text to text), shown and saved again

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: dict[str, tuple[tuple[int, ...], str]] = self._read_header()
        # Values written by `copy`, kept in memory over the file until `save` writes a new file: the
        # file itself is never modified in place.
        self.changes: dict[str, np.ndarray] = {}

    def _read_header(self) -> dict[str, tuple[tuple[int, ...], str]]:
        raise NotImplementedError

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self.entries:
            raise KeyError(name)
        if name in self.changes:
            return self.changes[name].copy()
        return self._read_array(name)

    def _read_array(self, name: str) -> np.ndarray:
        raise NotImplementedError

    def __iter__(self) -> Iterator[str]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.path.name}: {len(self)} tensors>"

    def layer_and_role(self, name: str) -> tuple[str, str]:
        """Keras variable paths end in ``/kernel``, torch names in ``.weight``."""
        layer, _, role = name.rpartition("/" if self.layout == "keras" else ".")
        return layer, role


class SafetensorsFile(ArrayFile):
    """A ``.safetensors`` file: an 8-byte length, a JSON header, then raw little-endian data."""

    layout = "torch"

    def _read_header(self) -> dict[str, tuple[tuple[int, ...], str]]:
        # The file stays open for as long as the model lives, and every tensor is read through this
        # handle: a file replaced under the session (`save s s.safetensors` onto its own source, which
        # renames a new file over it) cannot change what the model holds, since the old file lives on
        # until this handle is closed.
        self._file = open(self.path, "rb")  # noqa: SIM115 - closed with the model
        try:
            return self._parse_header(self._file)
        except BaseException:
            self._file.close()
            raise

    def _parse_header(self, handle) -> dict[str, tuple[tuple[int, ...], str]]:
        """The header is read once, by the safetensors library (``_listed``); where each tensor lies
        follows from what it checked (tensors tile the data in offset order), so modelshell parses no
        JSON of its own: listing a sharded checkpoint costs what ``safe_open`` over its shards does."""
        try:
            (length,) = struct.unpack("<Q", handle.read(8))
        except struct.error as exc:
            raise ModelshellError(f"cannot read {self.path} as safetensors: the header is damaged ({exc})") from exc
        listed, metadata = self._listed(handle)
        self._data_start = 8 + length
        self.metadata = dict(sorted((metadata or {}).items()))  # safe_open's own order varies from run to run
        entries, self._offsets, start = {}, {}, 0
        try:
            for name, shape, code in listed:
                dtype = _dtype_of(code)
                end = start + math.prod(shape) * _ITEM_SIZES[dtype]
                entries[name], self._offsets[name], start = (tuple(shape), dtype), (start, end), end
        except (KeyError, ValueError) as exc:
            raise ModelshellError(f"cannot read {self.path} as safetensors: unexpected header entry {exc}") from exc
        if self._data_start + start != self._file_size():  # what safe_open checked, kept as a guard
            raise ModelshellError(f"cannot read {self.path} as safetensors: its tensors do not fill the file's data "
                                  "(truncated or damaged)")
        self.layout = _safetensors_layout(metadata, list(entries))
        return entries

    def _listed(self, handle) -> tuple[list[tuple[str, list[int], str]], dict[str, str] | None]:
        """Each tensor's (name, shape, dtype code) in the order of its data, and the ``__metadata__``, as
        ``safe_open`` reads them after its own check of the header: strict UTF-8 JSON with a nesting
        bound, whole non-negative dims whose product does not overflow, and tensors that tile the data
        exactly to the end of the file (no overlaps, no holes: a truncated file is refused). It reads the
        open file itself (through /proc), not whatever the path names by now."""
        from safetensors import safe_open

        own = f"/proc/self/fd/{handle.fileno()}"
        try:
            with safe_open(own if os.path.exists(own) else str(self.path), framework="numpy") as f:
                slices = ((name, f.get_slice(name)) for name in f.offset_keys())
                return [(name, part.get_shape(), part.get_dtype()) for name, part in slices], f.metadata()
        except Exception as exc:  # noqa: BLE001 - SafetensorError, and OSError for what it cannot map
            reason = first_line(exc).removeprefix("Error while deserializing header: ")
            raise ModelshellError(f"cannot read {self.path} as safetensors: {reason}") from exc

    def _file_size(self) -> int:
        return os.fstat(self._file.fileno()).st_size

    def _read_array(self, name: str) -> np.ndarray:
        shape, dtype = self.entries[name]
        start, end = self._offsets[name]
        np_dtype = _numpy_dtype(dtype)
        if self._data_start + end > self._file_size():  # another program truncated it since the load
            raise ModelshellError(f"cannot read {name} from {self.path}: the file was changed on disk since it was "
                                  "loaded (it is now shorter than its header says)", "load it again")
        data = np.memmap(self._file, dtype=np.uint8, mode="r", offset=self._data_start + start, shape=(end - start,))
        return np.array(data.view(np_dtype).reshape(shape))


class KerasH5Weights(ArrayFile):
    """Keras weights in HDF5: a Keras 3 ``.weights.h5`` (``layers/<name>/vars/<i>``), or the legacy layout
    of Keras 2 ``save_weights('x.h5')`` and of full ``.h5`` models (``layer_names`` / ``weight_names``)."""

    layout = "keras"

    def __init__(self, path: Path, datasets: dict[str, tuple[tuple[int, ...], str]] | None = None) -> None:
        self._probed = datasets  # every dataset's shape and dtype, when the loader's probe read them already
        super().__init__(path)

    def _read_header(self) -> dict[str, tuple[tuple[int, ...], str]]:
        import h5py

        self._datasets: dict[str, str] = {}
        try:
            with h5py.File(self.path, "r") as f:
                root = f["model_weights"] if "model_weights" in f else f
                self.legacy = "layer_names" in root.attrs
                if self.legacy:
                    return self._legacy_entries(root)
                return self._v3_entries(f)
        except OSError as exc:
            raise ModelshellError(f"cannot read {self.path} as HDF5: {first_line(exc)}") from exc
        except (KeyError, ValueError, TypeError) as exc:
            raise ModelshellError(
                f"cannot read {self.path} as Keras weights: the HDF5 layout is damaged ({first_line(exc)})"
            ) from exc

    def _legacy_entries(self, root) -> dict[str, tuple[tuple[int, ...], str]]:
        entries = {}
        for layer in _strings(root.attrs["layer_names"]):
            group = root[layer]
            for weight in _strings(group.attrs.get("weight_names", [])):
                dataset = group[weight]
                name = weight.removesuffix(":0")
                entries[name] = (tuple(dataset.shape), str(dataset.dtype))
                self._datasets[name] = dataset.name
        return entries

    def _v3_entries(self, f) -> dict[str, tuple[tuple[int, ...], str]]:
        import h5py

        found: list[tuple[str, tuple[int, ...], str]] = []

        def visit(name: str, obj) -> None:
            if isinstance(obj, h5py.Dataset):
                found.append((name, tuple(obj.shape), str(obj.dtype)))

        if self._probed is not None:
            found = [(name, shape, dtype) for name, (shape, dtype) in self._probed.items()]
        else:
            f.visititems(visit)
        found.sort(key=lambda item: natural_key(item[0]))
        for name, _, _ in found:
            self._datasets[name] = name
        return {name: (shape, dtype) for name, shape, dtype in found}

    def _read_array(self, name: str) -> np.ndarray:
        import h5py

        with h5py.File(self.path, "r") as f:
            return np.array(f[self._datasets[name]])

    def layer_and_role(self, name: str) -> tuple[str, str]:
        layer, _, role = name.rpartition("/")
        return layer.removesuffix("/vars"), role


class TorchShard(ArrayFile):
    """A torch state dict file read as weights only (``pytorch_model.bin`` and its shards): torch's
    weights-only, memory-mapped load with modelshell's checks, its tensors turned to numpy on demand."""

    layout = "torch"

    def _read_header(self) -> dict[str, tuple[tuple[int, ...], str]]:
        from modelshell.frameworks.torch import load_torch_file

        self._state = load_torch_file(self.path, trust=False)
        return {info.name: (info.shape, info.dtype) for info in self._state.tensors()}

    def _read_array(self, name: str) -> np.ndarray:
        return self._state.read(name)


class ShardedWeights(ArrayFile):
    """A sharded checkpoint as one mapping: an index (``model.safetensors.index.json`` or
    ``pytorch_model.bin.index.json``) whose ``weight_map`` names each tensor's shard, over one reader per
    shard. Every shard is opened (and its header checked) when the index is, so a missing or truncated
    shard fails the ``load``, not a later read.

    Keras's own sharded weights (``model.weights.json``, what keras-hub's ``save_to_preset`` writes above
    its ``max_shard_size``) map layer groups, not tensors, to shards (a group may span several): there the
    tensors are those the shards hold. ``open_shard`` opens one shard (the reader decides how; by default
    the reader of the index's kind)."""

    def __init__(self, path: Path, open_shard: Callable[[Path], ArrayFile] | None = None) -> None:
        self.index = path
        self._open_shard = open_shard
        super().__init__(path.parent)

    def _read_header(self) -> dict[str, tuple[tuple[int, ...], str]]:
        weight_map = _weight_map(self.index)
        keras = self.index.name.endswith(".weights.json")
        files = [f for v in weight_map.values() for f in (v if keras and isinstance(v, list) else [v])]
        reader = self._open_shard or (TorchShard if self.index.name.endswith(".bin.index.json") else SafetensorsFile)
        self.shards: dict[str, ArrayFile] = {}
        for shard in dict.fromkeys(files):
            if not isinstance(shard, str) or Path(shard).name != shard or not (self.path / shard).is_file():
                raise ModelshellError(f"{self.index} names the shard {shard!r}, which is not in {self.path}")
            self.shards[shard] = reader(self.path / shard)
        if keras:
            weight_map = _keras_tensor_map(self.shards)
        self._shard_of = {}
        for name, shard in weight_map.items():
            if name not in self.shards[shard].entries:
                raise ModelshellError(f"{self.index} puts {name!r} in {shard}, which does not hold it")
            self._shard_of[name] = self.shards[shard]
        first = next(iter(self.shards.values()), None)
        self.layout = first.layout if first is not None else "torch"
        self.metadata = {k: v for shard in self.shards.values() for k, v in shard.metadata.items()}
        return {name: self._shard_of[name].entries[name] for name in weight_map}

    def _read_array(self, name: str) -> np.ndarray:
        return self._shard_of[name][name]

    def layer_and_role(self, name: str) -> tuple[str, str]:
        return self._shard_of[name].layer_and_role(name)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.index.name}: {len(self)} tensors in {len(self.shards)} shards>"


def _weight_map(index: Path) -> dict[str, str | list[str]]:
    try:
        value = json.loads(index.read_text(encoding="utf8"))
        weight_map = value["weight_map"]
        if not isinstance(weight_map, dict) or not all(isinstance(v, (str, list)) for v in weight_map.values()):
            raise TypeError("weight_map is not a mapping of names to files")
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise ModelshellError(f"cannot read {index} as a checkpoint index: {first_line(exc)}") from exc
    return weight_map


def _keras_tensor_map(shards: Mapping[str, ArrayFile]) -> dict[str, str]:
    """Each tensor of Keras's sharded weights -> its shard, in the natural order of the names. Keras
    writes every variable once; one found in two shards would make the reading ambiguous."""
    found: dict[str, str] = {}
    for shard, arrays in shards.items():
        for name in arrays.entries:
            if found.setdefault(name, shard) != shard:
                raise ModelshellError(f"{name!r} is in both {found[name]} and {shard}, so which one holds it is unclear")
    return dict(sorted(found.items(), key=lambda item: natural_key(item[0])))


def _safetensors_layout(metadata, names: list[str]) -> str:
    """Whose naming a safetensors file follows: its ``format`` metadata says so when present ("pt",
    or "tf"/"keras"); otherwise Keras variable paths are told apart from torch names by their slashes."""
    form = metadata.get("format") if isinstance(metadata, dict) else None
    if form in ("tf", "keras"):
        return "keras"
    if form == "pt":
        return "torch"
    return guess_layout(names)


def guess_layout(names: list[str]) -> str:
    """Keras variable paths are told apart from torch names by their slashes."""
    return "keras" if names and all("/" in name for name in names) else "torch"


def h5_holds_model(path: Path) -> bool:
    """True for a whole legacy Keras model in HDF5 (it has a ``model_config``), False for weights only."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return "model_config" in f.attrs
    except OSError as exc:
        raise ModelshellError(f"cannot read {path} as HDF5: {first_line(exc)}") from exc


class WeightsFile(ModelHandle):
    """A weights-only file as a model with no architecture: ``weights`` and ``shapes`` work on it, and
    later ``pair``/``copy`` use its names and shapes."""

    has_architecture = False

    def __init__(self, arrays: ArrayFile, trusted: bool = False) -> None:
        super().__init__(arrays, str(arrays.path), trusted)
        self.framework = arrays.layout
        self._tensors: list[TensorInfo] | None = None

    @property
    def class_name(self) -> str:
        if self.folder is not None:
            kind, _, (architecture, _) = self.folder
            return f"{architecture} weights ({kind} folder)"
        if isinstance(self.obj, ShardedWeights):
            return f"weights file ({len(self.obj.shards)} shards)"
        return f"weights file ({self.obj.kind or self.obj.path.name.split('.', 1)[-1]})"

    def safetensors_metadata(self) -> dict[str, str]:
        return {**super().safetensors_metadata(), **self.obj.metadata}

    def summary(self) -> list[str]:
        """The lines `weights` and `models` add: the folder's config in short, and the file's own metadata
        (a safetensors ``__metadata__``: who wrote it and how), each value cut to a line's share."""
        lines = []
        if self.folder is not None:
            kind, path, (architecture, sizes) = self.folder
            lines.append(f"{kind} folder {path.name}: {architecture}" + (f" ({sizes})" if sizes else ""))
        if self.obj.metadata:
            lines.append("safetensors metadata: " + ", ".join(f"{key}={_cut(value)}" for key, value in self.obj.metadata.items()))
        return lines

    def tensors(self) -> list[TensorInfo]:
        """In the natural order of their layers, as ``layers`` has them (``0, 3, 6, 9, 11``, not the text
        order ``0, 11, 3`` a safetensors file stores); a layer's own tensors as the file has them.
        Worked out once: a file's tensors never change names or shapes (``copy`` changes values only), and
        `load` (its parameter count) and `weights` each ask."""
        if self._tensors is None:
            self._tensors = self._listing()
        return list(self._tensors)

    def _listing(self) -> list[TensorInfo]:
        infos = []
        for name, (shape, dtype) in self.obj.entries.items():
            layer, role = self.obj.layer_and_role(name)
            infos.append(TensorInfo(name, shape, dtype, None, layer, role, "tensor"))
        if isinstance(self.obj, (SafetensorsFile, ShardedWeights)):
            order = {layer: natural_key(layer.replace(".", "/")) for layer in {info.layer for info in infos}}
            infos.sort(key=lambda info: order[info.layer])  # a key per layer, not per tensor
        return infos

    def layer_tree(self) -> LayerNode:
        return tree_from_names(self.obj.path.name, self.class_name, self.tensors())

    def layers(self, tensors: list[TensorInfo] | None = None) -> list[Layer]:
        """Layers in natural order of their names. A safetensors file stores tensors sorted as text
        (``0, 11, 3, 6, 9``), which is no model's order; numbers sorted as numbers give back a Sequential's
        (``0, 3, 6, 9, 11``), and named layers still pair by name."""
        layers = layers_from_tensors(self.tensors() if tensors is None else tensors)
        if isinstance(self.obj, (SafetensorsFile, ShardedWeights)):
            layers.sort(key=lambda layer: natural_key(layer.path.replace(".", "/")))
        return layers

    def read(self, name: str) -> np.ndarray:
        if name not in self.obj:
            raise ModelshellError(f"{self.obj.path.name} has no tensor named {name!r}")
        return self.obj[name]

    def write(self, values: dict[str, np.ndarray]) -> None:
        for name, value in values.items():
            if name not in self.obj.entries:
                raise ModelshellError(f"{self.obj.path.name} has no tensor named {name!r}")
            if tuple(np.shape(value)) != self.obj.entries[name][0]:
                raise ModelshellError(f"{name}: shape {tuple(np.shape(value))} does not fit {self.obj.entries[name][0]}")
        converted = {name: np.array(value, dtype=_numpy_dtype(self.obj.entries[name][1])) for name, value in values.items()}
        self.obj.changes = {**self.obj.changes, **converted}  # one rebinding: an interrupt leaves all or nothing
        self.writes += 1

    def save(self, path: Path) -> None:
        if path.suffix == ".safetensors":
            from safetensors.numpy import save_file

            save_file({name: np.ascontiguousarray(self.read(name)) for name in self.obj}, str(path),
                      metadata=self.safetensors_metadata())
        elif path.suffix == ".h5":
            _save_h5_copy(self, path)
        else:
            raise ModelshellError(
                f"a weights-only {self.framework} file saves to .safetensors or .weights.h5, not {path.suffix}",
            )


def _save_h5_copy(handle: WeightsFile, path: Path) -> None:
    """An HDF5 weights file. From Keras HDF5 weights, the groups and their attributes are copied as they
    are (``layer_names``/``weight_names`` included), so the copy lists the same names as the original and
    Keras can load it; Keras reads the Keras 2 layout only from ``.h5`` and its own only from ``.weights.h5``."""
    import h5py

    if isinstance(handle.obj, KerasH5Weights):
        legacy_target = not path.name.endswith(".weights.h5")
        if handle.obj.legacy != legacy_target:
            source, wanted = ("Keras 2", ".h5") if handle.obj.legacy else ("Keras 3", ".weights.h5")
            raise ModelshellError(
                f"{handle.obj.path.name} holds {source} weights, which Keras reads only from a {wanted} file",
                f"save it to NAME{wanted}",
            )
    with h5py.File(path, "w") as out:
        if isinstance(handle.obj, KerasH5Weights):
            with h5py.File(handle.obj.path, "r") as source:
                root = source["model_weights"] if "model_weights" in source else source
                for key in root:
                    root.copy(root[key], out, name=key)
                for key, value in root.attrs.items():
                    out.attrs[key] = value
                for name, value in handle.obj.changes.items():  # what copy wrote, over the copied data
                    out[source[handle.obj._datasets[name]].name[len(root.name):].lstrip("/")][...] = value
            return
        for name in handle.obj:
            out.create_dataset(name, data=handle.read(name))


def _dtype_of(code: str) -> str:
    if code not in _SAFETENSORS_DTYPES:
        if isinstance(code, str) and code.startswith(("F4", "F6")):
            raise ValueError(f"dtype {code} packs several values in a byte, which modelshell cannot read yet")
        raise KeyError(code)
    return _SAFETENSORS_DTYPES[code]


def _numpy_dtype(name: str) -> np.dtype:
    if name in _ML_DTYPES:
        try:
            import ml_dtypes

            return np.dtype(getattr(ml_dtypes, name))
        except ImportError as exc:
            raise ModelshellError(f"reading {name} tensors needs the ml_dtypes package") from exc
    return np.dtype(name)


def _cut(text: str, limit: int = 60) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _strings(values) -> list[str]:
    return [v.decode("utf8") if isinstance(v, bytes) else str(v) for v in values]


def natural_key(name: str) -> list:
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in name.split("/")]
