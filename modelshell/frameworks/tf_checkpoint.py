"""TensorFlow checkpoints (``PREFIX.index`` + ``PREFIX.data-0000N-of-0000M``) and the variables of a
SavedModel folder (``variables/variables.index``), read with TensorFlow's own checkpoint reader.

The reader reads the index and the tensors' bytes; nothing of a SavedModel's graph is loaded or run (its
functions are code the file brings: ``tf.saved_model.load`` would trace and call them). An object-based
checkpoint names a variable ``model/layer/kernel/.ATTRIBUTES/VARIABLE_VALUE``: the last two parts, the
same in every name, are left out of what modelshell shows. Strings (the object graph) are not weights
and are left out too.
"""
from __future__ import annotations

import glob
import re
from pathlib import Path

import numpy as np

from modelshell.core.errors import ModelshellError, first_line
from modelshell.frameworks import quiet
from modelshell.frameworks.weights_files import ArrayFile, natural_key

__all__ = ["TFCheckpoint", "checkpoint_prefix", "saved_model_prefix"]

_ATTRIBUTE = "/.ATTRIBUTES/VARIABLE_VALUE"
_OBJECT_GRAPH = "_CHECKPOINTABLE_OBJECT_GRAPH"
_NOT_WEIGHTS = {"string", "resource", "variant"}
_DATA_SHARD = re.compile(r"\.data-(\d{5})-of-(\d{5})$")


class TFCheckpoint(ArrayFile):
    """A TF checkpoint by its prefix; ``path`` is what the user named (a file of it, or a folder)."""

    layout = "keras"
    naming: str | None = None  # how the variables are named, when not by their checkpoint keys

    def __init__(self, path: Path, prefix: Path, kind: str = "TF checkpoint") -> None:
        self.prefix, self.kind = prefix, kind
        super().__init__(path)

    def _read_header(self) -> dict[str, tuple[tuple[int, ...], str]]:
        quiet.install()
        import tensorflow as tf

        data = _data_shards(self.prefix)
        try:
            self._reader = tf.train.load_checkpoint(str(self.prefix))
            shapes = self._reader.get_variable_to_shape_map()
            dtypes = self._reader.get_variable_to_dtype_map()
        except Exception as exc:  # noqa: BLE001 - DataLossError, NotFoundError, ValueError alike
            raise ModelshellError(f"cannot read {self.path} as a {self.kind}: {first_line(exc)}") from exc
        keys = [key for key in sorted(shapes, key=natural_key) if dtypes[key].name not in _NOT_WEIGHTS]
        _check_size(self.path, self.kind, data, [(tuple(shapes[key]), dtypes[key].name) for key in keys])
        try:
            self._keys = self._names(keys, shapes, dtypes)
        except Exception as exc:  # noqa: BLE001 - a damaged object graph or data file
            raise ModelshellError(f"cannot read {self.path} as a {self.kind}: {first_line(exc)} "
                                  "(truncated or damaged)") from exc
        return {name: (tuple(shapes[key]), dtypes[key].name) for name, key in self._keys.items()}

    def _names(self, keys: list[str], shapes: dict, dtypes: dict) -> dict[str, str]:
        """Shown name -> checkpoint key. A key is the object graph's path to the variable
        (``model/w``), which is all a plain ``tf.Module`` has; a variable that knows its own path
        (``full_name``: Keras names it ``dense/kernel``) is shown by it, when every variable does and each
        name is one variable. A Keras export tracks each variable twice (in two lists): keys of one name
        are listed once, only when their shapes, dtypes and values agree (read here to make sure)."""
        full = _full_names(self._reader)
        order = {key: i for i, key in enumerate(full)}  # TF's own walk of the object graph: the model's order
        keys = sorted(keys, key=lambda key: order.get(key, len(order)))
        paths = {key.removesuffix(_ATTRIBUTE): key for key in keys}
        if not keys or any("/" not in full.get(key, "") for key in keys):
            return paths
        groups: dict[str, list[str]] = {}
        for key in keys:
            groups.setdefault(full[key], []).append(key)
        for first, *others in groups.values():
            for other in others:
                if (shapes[other], dtypes[other]) != (shapes[first], dtypes[first]) or not np.array_equal(
                        self._reader.get_tensor(first), self._reader.get_tensor(other)):
                    return paths
        self.naming = f"variables named by their own paths ({len(groups)} of {len(keys)} checkpoint keys)"
        return {name: members[0] for name, members in groups.items()}

    def _read_array(self, name: str) -> np.ndarray:
        try:
            return np.asarray(self._reader.get_tensor(self._keys[name]))
        except Exception as exc:  # noqa: BLE001 - a data file damaged after the load
            raise ModelshellError(f"cannot read {name!r} from {self.path}: {first_line(exc)}") from exc

    def __repr__(self) -> str:
        return f"<{self.kind} {self.path.name}: {len(self)} variables>"


def _full_names(reader) -> dict[str, str]:
    """Checkpoint key -> the variable's own name, in the order of the checkpoint's object graph (a
    protobuf that TF parses; nothing in it is run). Empty for a checkpoint without one (TF1 name-based
    checkpoints)."""
    from tensorflow.core.protobuf import trackable_object_graph_pb2

    if not reader.has_tensor(_OBJECT_GRAPH):
        return {}
    graph = trackable_object_graph_pb2.TrackableObjectGraph()
    graph.ParseFromString(reader.get_tensor(_OBJECT_GRAPH))
    return {a.checkpoint_key: a.full_name for node in graph.nodes for a in node.attributes if a.name == "VARIABLE_VALUE"}


def checkpoint_prefix(path: Path) -> Path:
    """The prefix of the checkpoint a file belongs to: ``ckpt-1`` for ``ckpt-1.index`` or
    ``ckpt-1.data-00000-of-00001``; for a folder, the latest checkpoint its ``checkpoint`` file names, else
    the one ``.index`` in it."""
    if path.is_dir():
        return _folder_prefix(path)
    name = _DATA_SHARD.sub("", path.name).removesuffix(".index")
    return path.with_name(name)


def saved_model_prefix(folder: Path) -> Path:
    """Where a SavedModel keeps its variables."""
    prefix = folder / "variables" / "variables"
    if not prefix.with_name("variables.index").is_file():
        raise ModelshellError(f"{folder} is a SavedModel with no variables (no variables/variables.index), "
                              "so there are no weights in it")
    return prefix


def _folder_prefix(folder: Path) -> Path:
    state = folder / "checkpoint"
    if state.is_file():
        match = re.search(r'^model_checkpoint_path:\s*"([^"]+)"', state.read_text(encoding="utf8", errors="replace"),
                          re.MULTILINE)
        if match and Path(match[1]).name == match[1] and (folder / f"{match[1]}.index").is_file():
            return folder / match[1]
    indexes = sorted(folder.glob("*.index"))
    if len(indexes) != 1:
        found = ", ".join(p.name for p in indexes) or "none"
        raise ModelshellError(f"{folder}: cannot tell which checkpoint to load (.index files: {found})",
                              "name one: `load DIR/PREFIX.index`")
    return indexes[0].with_suffix("")


def _data_shards(prefix: Path) -> list[Path]:
    """The data files of a checkpoint; a missing one fails here, by name, rather than in TF's words."""
    if not prefix.with_name(prefix.name + ".index").is_file():
        raise ModelshellError(f"{prefix}.index: no such file (a TF checkpoint is PREFIX.index with PREFIX.data-*)")
    found = sorted(prefix.parent.glob(f"{glob.escape(prefix.name)}.data-*-of-*"))
    counts = {int(m[2]) for p in found if (m := _DATA_SHARD.search(p.name))}
    total = max(counts, default=1)
    wanted = [prefix.with_name(f"{prefix.name}.data-{i:05d}-of-{total:05d}") for i in range(total)]
    missing = [p.name for p in wanted if not p.is_file()]
    if missing:
        raise ModelshellError(f"{prefix}: the checkpoint's data file {missing[0]} is missing")
    return wanted


def _check_size(path: Path, kind: str, data: list[Path], entries: list[tuple[tuple[int, ...], str]]) -> None:
    """A truncated data file holds fewer bytes than its variables need: caught at ``load`` (TF's reader
    would find it only when a tensor is read)."""
    needed = sum(int(np.prod(shape, dtype=np.int64)) * _item_size(dtype) for shape, dtype in entries)
    held = sum(p.stat().st_size for p in data)
    if held < needed:
        raise ModelshellError(f"cannot read {path} as a {kind}: its data files hold {held} bytes, "
                              f"less than the {needed} its variables need (truncated or damaged)")


def _item_size(dtype: str) -> int:
    try:
        return np.dtype(dtype).itemsize
    except TypeError:
        return 2 if "16" in dtype else 1  # bfloat16, and the 8-bit types numpy lacks
