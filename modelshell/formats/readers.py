"""How each format is read: the functions the registry names. Each imports its framework only when
called, so the registry itself (and ``import modelshell``) imports none."""
from __future__ import annotations

import json
import re
from pathlib import Path

from modelshell.core.errors import ModelshellError
from modelshell.frameworks import quiet
from modelshell.frameworks.base import ModelHandle

__all__ = ["torch_file", "safetensors_file", "index_file", "keras_model", "h5_file", "keras_weights",
           "transformers_folder", "keras_hub_folder", "is_transformers_folder", "is_keras_hub_folder",
           "npz_file", "onnx_file", "tf_checkpoint", "tf_checkpoint_folder", "saved_model_folder",
           "is_tf_checkpoint_folder", "is_saved_model_folder", "keras_sharded_weights", "TRANSFORMERS_WEIGHTS",
           "KERAS_HUB_WEIGHTS"]

# What a transformers folder keeps its weights in, in the order transformers itself prefers them.
TRANSFORMERS_WEIGHTS = ("model.safetensors.index.json", "model.safetensors", "pytorch_model.bin.index.json",
                        "pytorch_model.bin", "tf_model.h5")
# A keras-hub preset's weights: one file, or Keras's sharded weights (the index, then its shards).
KERAS_HUB_WEIGHTS = ("model.weights.h5", "model.weights.json")
# How a shard is named -> the index beside it: transformers' shards, then Keras's.
_SHARD_INDEXES = ((re.compile(r"^(?P<stem>.+)-\d{5}-of-\d{5}\.(?P<ext>safetensors|bin)$"), "{stem}.{ext}.index.json"),
                  (re.compile(r"^(?P<stem>.+)_\d{5}\.weights\.h5$"), "{stem}.weights.json"))


def torch_file(path: Path, trust: bool) -> ModelHandle:
    if (index := _index_of_shard(path)) is not None:
        return index_file(index, trust, via=path)
    quiet.require("torch", f"loading {path.name}")
    from modelshell.frameworks.torch import load_torch_file

    return load_torch_file(path, trust)


def safetensors_file(path: Path, trust: bool) -> ModelHandle:
    if (index := _index_of_shard(path)) is not None:
        return index_file(index, trust, via=path)
    return _weights("SafetensorsFile", path, trust)


def index_file(path: Path, trust: bool, via: Path | None = None) -> ModelHandle:
    """A sharded checkpoint from its index: every shard it names, as one weights-only model."""
    from modelshell.frameworks import weights_files

    if path.name.endswith(".bin.index.json"):
        quiet.require("torch", f"loading {path.name}")
    sharded = weights_files.ShardedWeights(path)
    handle = weights_files.WeightsFile(sharded, trust)
    handle.note = _shards_note(sharded, path, via)
    if is_transformers_folder(path.parent):  # the shard of a model folder keeps the folder's config
        _with_config(handle, path.parent, "transformers", _transformers_summary)
    return handle


def keras_model(path: Path, trust: bool) -> ModelHandle:
    quiet.require("keras", f"loading {path.name}")
    from modelshell.frameworks.keras import load_keras_file

    return load_keras_file(path, trust)


def h5_file(path: Path, trust: bool) -> ModelHandle:
    from modelshell.frameworks.weights_files import h5_holds_model
    from modelshell.safety.probe import probe_hdf5

    datasets = probe_hdf5(path)  # a damaged HDF5 file can hang or crash the library: tried in a child first
    _check_datasets(path, datasets)
    if not h5_holds_model(path):
        return _weights("KerasH5Weights", path, trust, datasets=datasets)
    return keras_model(path, trust)


def keras_weights(path: Path, trust: bool) -> ModelHandle:
    if (index := _index_of_shard(path)) is not None:
        return keras_sharded_weights(index, trust, via=path)
    return _holding(_keras_h5(path), trust)


def keras_sharded_weights(path: Path, trust: bool, via: Path | None = None) -> ModelHandle:
    """Keras 3 sharded weights from their ``NAME.weights.json`` (``save_weights(..., max_shard_size=)``,
    keras-hub's ``save_to_preset`` above its shard size): every ``NAME_0000N.weights.h5`` it names, each
    probed as a single weights file is."""
    from modelshell.frameworks import weights_files

    sharded = weights_files.ShardedWeights(path, open_shard=_keras_h5)
    handle = _holding(sharded, trust)
    handle.note = _shards_note(sharded, path, via)
    return handle


def _keras_h5(path: Path):
    """One Keras 3 weights file, its datasets read in a child first (a damaged HDF5 file can hang or crash
    the library)."""
    from modelshell.frameworks.weights_files import KerasH5Weights
    from modelshell.safety.probe import probe_hdf5

    datasets = probe_hdf5(path)
    _check_datasets(path, datasets)
    return KerasH5Weights(path, datasets=datasets)


def _check_datasets(path: Path, datasets: dict[str, tuple[tuple[int, ...], str]] | None) -> None:
    """Refuse a dataset that could never be read: HDF5 lets a file of a few KB declare a dataset of
    terabytes (never written, all fill value), and reading it would fail or swap the machine. Datasets
    the file really holds are read lazily, one at a time, and are not refused here."""
    import math

    import numpy as np

    from modelshell.safety.resources import check_fits

    file_size = path.stat().st_size
    for name, (shape, dtype) in (datasets or {}).items():
        try:
            size = math.prod(shape) * np.dtype(dtype).itemsize
        except (TypeError, ValueError):  # a dtype numpy cannot name from its text: the reader decides
            continue
        if size > file_size:
            what = f"its dataset {name!r} of shape {tuple(shape)}, declared larger than the file, would"
            check_fits(path, size, what=what)


def is_transformers_folder(path: Path) -> bool:
    return (path / "config.json").is_file() and not (path / "metadata.json").is_file()


def is_keras_hub_folder(path: Path) -> bool:
    return (path / "metadata.json").is_file() and (path / "config.json").is_file()


def transformers_folder(path: Path, trust: bool) -> ModelHandle:
    found = next((path / name for name in TRANSFORMERS_WEIGHTS if (path / name).is_file()), None)
    if found is None:
        raise ModelshellError(f"{path} holds no model weights (looked for {', '.join(TRANSFORMERS_WEIGHTS)})")
    if found.name.endswith(".index.json"):
        handle = index_file(found, trust)
    elif found.suffix == ".safetensors":
        handle = _weights("SafetensorsFile", found, trust)
    elif found.suffix == ".bin":
        quiet.require("torch", f"loading {found.name}")
        handle = _weights("TorchShard", found, trust)
    else:
        handle = keras_weights(found, trust)
    return _with_config(handle, path, "transformers", _transformers_summary)


def keras_hub_folder(path: Path, trust: bool) -> ModelHandle:
    found = next((path / name for name in KERAS_HUB_WEIGHTS if (path / name).is_file()), None)
    if found is None:
        raise ModelshellError(f"{path} holds no model weights (a keras-hub preset keeps them in "
                              f"{' or '.join(KERAS_HUB_WEIGHTS)} with its shards)")
    handle = keras_weights(found, trust) if found.suffix == ".h5" else keras_sharded_weights(found, trust)
    return _with_config(handle, path, "keras-hub preset", _keras_hub_summary)


def npz_file(path: Path, trust: bool) -> ModelHandle:
    from modelshell.frameworks.npz_file import NpzFile

    return _holding(NpzFile(path), trust)


def onnx_file(path: Path, trust: bool) -> ModelHandle:
    quiet.require("onnx", f"loading {path.name}")  # before numpy is imported: the missing package is what to say
    from modelshell.frameworks.onnx_file import OnnxInitializers

    return _holding(OnnxInitializers(path), trust)


def tf_checkpoint(path: Path, trust: bool) -> ModelHandle:
    """A file of a TF checkpoint (its ``.index`` or one ``.data-*`` shard): the whole checkpoint."""
    quiet.require("tensorflow", f"loading {path.name}")
    from modelshell.frameworks.tf_checkpoint import TFCheckpoint, checkpoint_prefix

    prefix = checkpoint_prefix(path)
    handle = _holding(TFCheckpoint(path, prefix), trust)
    handle.note = "; ".join(filter(None, [f"{path.name} is one file of the checkpoint {prefix.name}: the whole "
                                          "checkpoint was loaded", handle.obj.naming]))
    return handle


def tf_checkpoint_folder(path: Path, trust: bool) -> ModelHandle:
    quiet.require("tensorflow", f"loading {path.name}")
    from modelshell.frameworks.tf_checkpoint import TFCheckpoint, checkpoint_prefix

    prefix = checkpoint_prefix(path)
    handle = _holding(TFCheckpoint(path, prefix), trust)
    handle.note = "; ".join(filter(None, [f"the checkpoint {prefix.name}", handle.obj.naming]))
    return handle


def saved_model_folder(path: Path, trust: bool) -> ModelHandle:
    """A SavedModel's variables, from its checkpoint; its graph is never loaded."""
    quiet.require("tensorflow", f"loading {path.name}")
    from modelshell.frameworks.tf_checkpoint import TFCheckpoint, saved_model_prefix

    handle = _holding(TFCheckpoint(path, saved_model_prefix(path), kind="TF SavedModel"), trust)
    handle.note = handle.obj.naming
    return handle


def is_tf_checkpoint_folder(path: Path) -> bool:
    return (path / "checkpoint").is_file() or any(path.glob("*.index"))


def is_saved_model_folder(path: Path) -> bool:
    return (path / "saved_model.pb").is_file() or (path / "saved_model.pbtxt").is_file()


def _weights(reader: str, path: Path, trust: bool, **known) -> ModelHandle:
    """A weights-only file; one with no tensors at all is refused, as a torch file holding none is.
    ``known`` passes on what the HDF5 probe already read (``datasets``)."""
    from modelshell.frameworks import weights_files

    return _holding(getattr(weights_files, reader)(path, **known), trust)


def _holding(arrays, trust: bool) -> ModelHandle:
    from modelshell.frameworks import weights_files

    if not arrays:
        raise ModelshellError(f"{arrays.path} holds no tensors, so there is no model in it")
    return weights_files.WeightsFile(arrays, trust)


def _index_of_shard(path: Path) -> Path | None:
    """The index next to a shard named as transformers names them (``model-00001-of-00003.safetensors``,
    index ``model.safetensors.index.json``) or as Keras does (``model_00001.weights.h5``, index
    ``model.weights.json``)."""
    for pattern, index_name in _SHARD_INDEXES:
        if (match := pattern.match(path.name)) is not None:
            index = path.with_name(index_name.format(**match.groupdict()))
            return index if index.is_file() else None
    return None


def _shards_note(sharded, index: Path, via: Path | None) -> str:
    """What `load` says of a sharded checkpoint: how many shards, and that one named shard loaded them all."""
    count = len(sharded.shards)
    if via is None:
        return f"{count} shards, from {index.name}"
    return f"{via.name} is one shard of {count}: the whole checkpoint was loaded, from {index.name}"


def _with_config(handle: ModelHandle, folder: Path, kind: str, summary) -> ModelHandle:
    config = _read_json(folder / "config.json")
    handle.config = handle.obj.config = config
    handle.folder = (kind, folder, summary(config))
    return handle


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ModelshellError(f"cannot read {path} as JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise ModelshellError(f"{path} is not a JSON object")
    return value


_SIZES = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size",
          "hidden_dim", "num_layers", "num_heads", "intermediate_dim", "vocabulary_size")


def _sizes(config: dict) -> str:
    return ", ".join(f"{key} {config[key]}" for key in _SIZES if isinstance(config.get(key), int))


def _transformers_summary(config: dict) -> tuple[str, str]:
    architectures = config.get("architectures")
    name = architectures[0] if isinstance(architectures, list) and architectures else config.get("model_type", "?")
    return str(name), _sizes(config)


def _keras_hub_summary(config: dict) -> tuple[str, str]:
    inner = config.get("config") if isinstance(config.get("config"), dict) else {}
    return str(config.get("class_name", "?")), _sizes(inner)
