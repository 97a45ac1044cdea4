"""The format registry: each format says how it is recognised (file suffixes, or the shape of a folder),
how it is read, whether and how it is written, what it needs installed, whether it can run code, and
what it is in one line. ``load``, ``save``, ``help load``/``help save`` and the README table all read it.
"""
from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from modelshell.formats import builders, readers

__all__ = ["Format", "FormatRegistry", "FORMATS", "suffix_fits"]


@dataclass(frozen=True)
class Format:
    name: str
    description: str  # what it is read as, one line (the README's "read as" column)
    reader: Callable  # (path, trust) -> ModelHandle
    needs: str  # what must be installed to read it ("nothing" for numpy, safetensors and h5py)
    runs_code: str = "no"  # "no", or when it can ("with --trust")
    suffixes: tuple[str, ...] = ()
    folder: Callable[[Path], bool] | None = None  # recognises a folder of this format
    marks: str = ""  # what such a folder holds that tells it apart, for the message of a folder that is none
    saves: str | None = None  # what `save` writes; None: it cannot be written
    writes: tuple[str, ...] | None = None  # the suffixes `save` writes, when not all of ``suffixes``
    builder: Callable | None = None  # (folder, trust) -> the real model, for `load DIR --build`
    builds: str | None = None  # what `--build` makes of it, one line
    folder_writer: Callable | None = None  # (handle, folder, max_shard_bytes) -> how it was written
    owns: Callable | None = None  # (handle) -> whether `save NAME DIR/` writes this format for it

    def save_suffixes(self) -> tuple[str, ...]:
        if not self.saves or not self.suffixes:
            return ()
        return self.suffixes if self.writes is None else self.writes

    def read_as(self) -> str:
        return self.description + (f"; with `--build`, {self.builds}" if self.builds else "")

    def label(self) -> str:
        return " ".join(f"`{s}`" for s in self.suffixes) if self.suffixes else f"folder: {self.name}"


class FormatRegistry:
    """An ordered list of formats; the first whose suffix (longest first) or folder shape fits, wins."""

    def __init__(self, formats: list[Format]) -> None:
        self.formats = list(formats)

    def for_file(self, path: Path) -> Format | None:
        fits = [(len(s), f) for f in self.formats for s in f.suffixes if suffix_fits(path.name, s)]
        return max(fits, key=lambda fit: fit[0])[1] if fits else None

    def for_folder(self, path: Path) -> Format | None:
        return next((f for f in self.formats if f.folder is not None and f.folder(path)), None)

    def read_format(self, name: str) -> str | None:
        """The name of the format ``load`` reads a file of this name as (None: none)."""
        form = self.for_file(Path(name))
        return form.name if form is not None else None

    def write_format(self, name: str) -> str | None:
        """The name of the format ``save`` writes to a file of this name (None: it cannot)."""
        fits = [(len(s), f) for f in self.formats for s in f.save_suffixes() if suffix_fits(name, s)]
        return max(fits, key=lambda fit: fit[0])[1].name if fits else None

    def read_suffixes(self) -> list[str]:
        return [s for f in self.formats for s in f.suffixes]

    def save_suffixes(self) -> tuple[str, ...]:
        return tuple(s for f in self.formats for s in f.save_suffixes())

    def folders(self) -> list[Format]:
        return [f for f in self.formats if f.folder is not None]

    def folder_writer_for(self, handle) -> Format:
        """The folder format `save NAME DIR/` writes for ``handle``: the one that owns its kind of model
        (a keras-hub model gets a preset), else the one that takes any model."""
        writers = [f for f in self.formats if f.folder_writer is not None]
        return next((f for f in writers if f.owns is not None and f.owns(handle)),
                    next(f for f in writers if f.owns is None))

    def load_details(self) -> str:
        return "Formats: " + "; ".join(
            f"{' / '.join(f.suffixes) or 'a ' + f.name + ' folder'}: {_plain(f.read_as())}"
            + (f" (runs code {_plain(f.runs_code)})" if f.runs_code != "no" else "") for f in self.formats) + "."

    def save_details(self) -> str:
        return "Suffixes: " + "; ".join(f"{' / '.join(f.save_suffixes())}: {_plain(f.saves)}"
                                        for f in self.formats if f.saves and f.suffixes) + ". " + " ".join(
            f"A {f.name} folder: {_plain(f.saves)}." for f in self.formats if f.saves and not f.suffixes)

    def markdown_table(self) -> str:
        lines = ["| file | read as | needs | runs code | `save` writes |", "|---|---|---|---|---|"]
        lines += [f"| {f.label()} | {f.read_as()} | {f.needs} | {f.runs_code} | {_saves_cell(f)} |"
                  for f in self.formats]
        return "\n".join(lines) + "\n"


def suffix_fits(name: str, suffix: str) -> bool:
    """Whether a file name ends in ``suffix``; a suffix may hold ``*`` (``.data-*-of-*``, a TF data shard)."""
    return fnmatch.fnmatchcase(name.lower(), "*" + suffix)


def _saves_cell(f: Format) -> str:
    if not f.saves:
        return "cannot be saved"
    return f.saves if f.writes is None else f"{f.saves} ({' '.join(f'`{s}`' for s in f.writes)})"


def _plain(text: str) -> str:
    return text.replace("`", "")


FORMATS = FormatRegistry([
    Format("torch", "a state dict (with `weights_only=True`; checkpoints nesting one are flattened), the tensors "
           "of a TorchScript archive (the whole scripted module with `--trust`), or, only with `--trust`, a "
           "whole pickled `nn.Module`", readers.torch_file, "torch", "with `--trust`",
           suffixes=(".pt", ".pth", ".bin", ".ckpt"), saves="a torch state dict, weights only",
           writes=(".pt", ".pth", ".bin")),
    Format("safetensors", "tensors by name, weights only: the header is read, tensors are memory-mapped on "
           "demand; one shard of a sharded checkpoint loads the whole checkpoint", readers.safetensors_file,
           "nothing", suffixes=(".safetensors",), saves="safetensors"),
    Format("safetensors index", "a sharded safetensors checkpoint (`model.safetensors.index.json`), all its "
           "shards", readers.index_file, "nothing", suffixes=(".safetensors.index.json",)),
    Format("torch index", "a sharded torch checkpoint (`pytorch_model.bin.index.json`), all its shards, "
           "weights only", readers.index_file, "torch", suffixes=(".bin.index.json",)),
    Format("keras", "a Keras 3 model (`safe_mode` on unless `--trust`)", readers.keras_model, "TensorFlow",
           "with `--trust`", suffixes=(".keras",), saves="a Keras 3 model"),
    Format("keras h5", "a legacy Keras model, or Keras 2 weights only (`save_weights('x.h5')`)",
           readers.h5_file, "TensorFlow for a model; h5py for weights", "with `--trust`",
           suffixes=(".h5", ".hdf5"), saves="a legacy Keras model (Keras 2 weights for a weights-only model)", writes=(".h5",)),
    Format("keras weights", "Keras 3 weights only; one shard of sharded weights (`NAME_00000.weights.h5`) "
           "loads them all", readers.keras_weights, "h5py", suffixes=(".weights.h5",), saves="Keras 3 weights only"),
    Format("keras sharded weights", "Keras 3 sharded weights (`save_weights` with `max_shard_size`, "
           "`NAME.weights.json`), all their shards, weights only", readers.keras_sharded_weights, "h5py",
           suffixes=(".weights.json",)),
    Format("transformers", "a `save_pretrained` folder (`config.json` with `model.safetensors`, its shards "
           "and index, `pytorch_model.bin` and its shards, or `tf_model.h5`), weights only",
           readers.transformers_folder, "nothing; torch for `.bin`; transformers for `--build`",
           "with `--build --trust`: the `auto_map` code a folder ships", folder=readers.is_transformers_folder,
           marks="config.json",
           saves="`save NAME DIR/`: for a transformers model its `save_pretrained` (`config.json` and "
           "safetensors); for any other model `model.safetensors`, and the `config.json` of a model read "
           "from a transformers folder; shards and their index above `--max-shard-size`",
           builder=builders.transformers_model,
           builds="the model itself, offline: the `AutoModel...` class of its architecture, torch for "
           "safetensors and `.bin`, TF for `tf_model.h5`", folder_writer=builders.write_transformers_folder),
    Format("keras-hub preset", "a `save_to_preset` folder (`config.json`, `metadata.json`, "
           "`model.weights.h5`, or its shards and their `model.weights.json`), weights only", readers.keras_hub_folder, "h5py; keras-hub for `--build`",
           folder=readers.is_keras_hub_folder, marks="config.json and metadata.json",
           saves="`save NAME DIR/` for a keras-hub model: its `save_to_preset`",
           builder=builders.keras_hub_model,
           builds="the backbone (or the task of a `task.json`) by the class its config names, `from_preset`",
           folder_writer=builders.write_keras_hub_preset, owns=builders.is_keras_hub_model),
    Format("npz", "arrays by name (`numpy.savez`), weights only; object arrays are refused (they would be "
           "unpickled)", readers.npz_file, "nothing", suffixes=(".npz",)),
    Format("onnx", "the initializers (stored weights) of an ONNX graph, weights only; the graph is not run",
           readers.onnx_file, "onnx (`pip install 'modelshell[onnx]'`)", suffixes=(".onnx",)),
    Format("TF checkpoint", "the variables of a TensorFlow checkpoint (`PREFIX.index` + `PREFIX.data-*`), read "
           "with TensorFlow's checkpoint reader, weights only; either file loads the whole checkpoint",
           readers.tf_checkpoint, "TensorFlow", suffixes=(".index", ".data-*-of-*")),
    Format("TF SavedModel", "a `tf.saved_model.save` / Keras `model.export` folder: the variables of "
           "`variables/variables.index`, weights only; the graph is never loaded or run",
           readers.saved_model_folder, "TensorFlow", folder=readers.is_saved_model_folder, marks="saved_model.pb"),
    Format("TF checkpoints", "a folder of TF checkpoints: the one its `checkpoint` file names last, or "
           "its only `.index`", readers.tf_checkpoint_folder, "TensorFlow", folder=readers.is_tf_checkpoint_folder,
           marks="a checkpoint file or PREFIX.index"),
])
