"""How a model folder is built into the real model (``load DIR --build``) and how a folder is written
for a model (``save NAME DIR/``): the functions the registry names for folder formats. The library is
imported only when one is called.

A folder is first read as weights only, as plain ``load DIR`` reads it: a truncated shard, an index
naming a missing shard or a folder without weights is refused in the same one line, before any library
is imported or any code runs.
"""
from __future__ import annotations

from pathlib import Path

from modelshell.core.errors import ModelshellError
from modelshell.formats import readers
from modelshell.frameworks.base import ModelHandle

__all__ = ["transformers_model", "keras_hub_model", "write_transformers_folder", "write_keras_hub_preset",
           "is_keras_hub_model"]


def transformers_model(path: Path, trust: bool) -> ModelHandle:
    """A ``save_pretrained`` folder built with transformers' ``Auto*`` class for its architecture."""
    from modelshell.frameworks.libraries import build_transformers

    checked = readers.transformers_folder(path, trust)
    weights = next(path / name for name in readers.TRANSFORMERS_WEIGHTS if (path / name).is_file())
    return _keeping_folder(build_transformers(path, checked.config, weights, trust), checked)


def keras_hub_model(path: Path, trust: bool) -> ModelHandle:
    """A ``save_to_preset`` folder built with the backbone (or task) class its config names."""
    from modelshell.frameworks.libraries import build_keras_hub

    checked = readers.keras_hub_folder(path, trust)
    return _keeping_folder(build_keras_hub(path, trust), checked)


def _keeping_folder(handle: ModelHandle, checked: ModelHandle) -> ModelHandle:
    """The built model keeps what the folder's weights-only reading found: its config and summary."""
    handle.config, handle.folder = checked.config, checked.folder
    return handle


def is_keras_hub_model(handle: ModelHandle) -> bool:
    from modelshell.frameworks.libraries import library_of

    return library_of(handle.obj) == "keras-hub"


def write_transformers_folder(handle: ModelHandle, folder: Path, max_shard_bytes: int) -> str:
    """transformers' own ``save_pretrained`` for a transformers model; for any other model its tensors
    as safetensors (shards and index above the limit) with the config it came with. Says which."""
    from modelshell.formats.writers import save_safetensors_folder
    from modelshell.frameworks.libraries import library_of, save_pretrained

    if library_of(handle.obj) == "transformers":
        save_pretrained(handle.obj, folder, max_shard_bytes)
        return "transformers save_pretrained"
    save_safetensors_folder(handle, folder, max_shard_bytes)
    return "safetensors"


def write_keras_hub_preset(handle: ModelHandle, folder: Path, max_shard_bytes: int) -> str:
    from modelshell.frameworks.libraries import save_preset

    if not is_keras_hub_model(handle):
        raise ModelshellError(f"a {handle.class_name} is not a keras-hub model, so it has no preset")
    save_preset(handle.obj, folder, max_shard_bytes)
    return "keras-hub save_to_preset"
