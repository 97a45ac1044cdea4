"""Model libraries on top of the frameworks: transformers and keras-hub folders built into the real
model (``load DIR --build``), and live models of those libraries saved as the folders their own loaders
read (``save NAME DIR/``).

A folder is built offline only (``local_files_only``); code shipped in a transformers folder
(``auto_map``) runs only when trusted. Which library a live model belongs to is told from its class
hierarchy's module names, so asking imports nothing.
"""
from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from modelshell.core.errors import ModelshellError, first_line
from modelshell.frameworks import quiet
from modelshell.frameworks.base import ModelHandle
from modelshell.frameworks.detect import wrap_object

__all__ = ["build_transformers", "build_keras_hub", "library_of", "save_pretrained", "save_preset",
           "remote_code_files"]

# The bases each library's models derive from: (library, top-level package, class names).
_BASES = (("transformers", "transformers", ("PreTrainedModel", "TFPreTrainedModel")),
          ("keras-hub", "keras_hub", ("Backbone", "Task")))


def library_of(obj: Any) -> str | None:
    """"transformers", "keras-hub" or None, from the classes ``obj``'s class derives from."""
    for cls in type(obj).__mro__:
        package = cls.__module__.split(".")[0]
        for library, top, names in _BASES:
            if package == top and cls.__name__ in names:
                return library
    return None


# --- transformers ----------------------------------------------------------------------------------------
def build_transformers(folder: Path, config: dict, weights: Path, trust: bool) -> ModelHandle:
    """The model a ``save_pretrained`` folder holds, built with the ``Auto*`` class its architecture
    belongs to: a torch class for safetensors or ``.bin`` weights, a TF class for ``tf_model.h5`` (or
    safetensors TF wrote). Missing, unexpected or resized tensors are said in the handle's note: the
    library fills them at random and only warns."""
    tf = _tf_weights(weights)
    needed = f"building {folder.name} with transformers"
    quiet.require("transformers", needed)
    quiet.require("tensorflow" if tf else "torch", needed)
    import transformers

    architecture = _architecture(config)
    remote = _remote_class(config, architecture, tf)
    if remote is not None and not trust and _library_class(transformers, architecture, tf) is None:
        raise ModelshellError(
            f"{folder}: {architecture} is code shipped in the folder ({', '.join(remote_code_files(config))}), "
            "which building runs", "read it, then `load DIR --build --trust` to run it")
    loader = _auto_class(transformers, config, architecture, tf, remote if trust else None)
    model, info = _from_pretrained(loader, folder, trust and remote is not None)
    handle = wrap_object(model, source=str(folder), trusted=trust)
    handle.note = _loading_note(loader, info)
    if remote is not None and not trust:
        handle.note += f"; the folder's own code ({', '.join(remote_code_files(config))}) did not run (--trust runs it)"
    return handle


def remote_code_files(config: dict) -> list[str]:
    """The Python files a config's ``auto_map`` names (``modeling_x.XModel`` -> ``modeling_x.py``; a
    ``repo--module.Class`` reference names the module of another repository)."""
    files = []
    for reference in _auto_map(config).values():
        for one in reference if isinstance(reference, list) else [reference]:
            if isinstance(one, str) and "." in one:
                module = one.split("--")[-1].rpartition(".")[0]
                files.append(module.replace(".", "/") + ".py")
    return sorted(set(files))


def _auto_map(config: dict) -> dict:
    auto_map = config.get("auto_map")
    return auto_map if isinstance(auto_map, dict) else {}


def _architecture(config: dict) -> str | None:
    architectures = config.get("architectures")
    if isinstance(architectures, list) and architectures and isinstance(architectures[0], str):
        return architectures[0]
    return None


def _tf_weights(weights: Path) -> bool:
    """Whether the weights are TensorFlow's: ``tf_model.h5``, or safetensors whose metadata says "tf"."""
    if weights.name.startswith("tf_model"):
        return True
    if weights.suffix != ".safetensors" and not weights.name.endswith(".safetensors.index.json"):
        return False
    if weights.name.endswith(".index.json"):
        try:
            weights = weights.parent / next(iter(json.loads(weights.read_text()).get("weight_map", {}).values()))
        except (OSError, ValueError, StopIteration, TypeError):
            return False
    from safetensors import safe_open

    try:
        with safe_open(str(weights), framework="numpy") as f:
            return (f.metadata() or {}).get("format") == "tf"
    except Exception:  # noqa: BLE001 - a broken file fails with its own message when it is read
        return False


def _remote_class(config: dict, architecture: str | None, tf: bool) -> tuple[str, str] | None:
    """The (Auto class, reference) of ``auto_map`` that builds ``architecture``: the entry naming that
    class, else the plain ``AutoModel`` one."""
    entries = {key: value for key, value in _auto_map(config).items()
               if key.startswith("TFAutoModel" if tf else "AutoModel") and isinstance(value, str)}
    named = [(key, value) for key, value in entries.items() if value.rpartition(".")[2] == architecture]
    if named:
        return named[0]
    key = "TFAutoModel" if tf else "AutoModel"
    return (key, entries[key]) if key in entries else None


def _library_class(transformers: Any, architecture: str | None, tf: bool) -> Any:
    """The class of transformers itself that is named ``architecture`` (TF's with the ``TF`` prefix)."""
    if architecture is None:
        return None
    name = architecture if not tf or architecture.startswith("TF") else f"TF{architecture}"
    try:
        return getattr(transformers, name, None)
    except (ImportError, RuntimeError) as exc:  # the class is there but its module does not import
        raise ModelshellError(f"transformers cannot import {name}: {_root_cause(exc)}") from exc


def _auto_class(transformers: Any, config: dict, architecture: str | None, tf: bool,
                remote: tuple[str, str] | None) -> Any:
    """The ``Auto*`` class whose mapping builds ``architecture`` for the config's ``model_type``
    (``BertForMaskedLM`` -> ``AutoModelForMaskedLM``); ``AutoModel`` for a config naming none."""
    prefix = "TFAutoModel" if tf else "AutoModel"
    if remote is not None:
        return getattr(transformers, remote[0])
    if architecture is None:
        return getattr(transformers, prefix)
    wanted = architecture if not tf or architecture.startswith("TF") else f"TF{architecture}"
    model_type = config.get("model_type")
    for name in sorted((n for n in dir(transformers) if n.startswith(prefix) and "WithLMHead" not in n),
                       key=lambda n: (n != prefix, n)):
        names = getattr(getattr(getattr(transformers, name), "_model_mapping", None), "_model_mapping", {})
        classes = names.get(model_type, ())
        if wanted in ((classes,) if isinstance(classes, str) else classes):
            return getattr(transformers, name)
    found = _library_class(transformers, architecture, tf)
    if found is None:
        raise ModelshellError(
            f"config.json names the architecture {architecture!r}, which transformers "
            f"{transformers.__version__} does not have",
            "a newer transformers may; `load DIR` without --build lists its weights")
    return found


def _from_pretrained(loader: Any, folder: Path, remote: bool) -> tuple[Any, dict]:
    try:
        with _library_quiet():
            return loader.from_pretrained(str(folder), local_files_only=True, trust_remote_code=remote,
                                          output_loading_info=True)
    except ModelshellError:
        raise
    except Exception as exc:  # noqa: BLE001 - a library failing on a folder is a user-level error
        raise ModelshellError(f"transformers cannot build {folder}: {_root_cause(exc)}") from exc


@contextlib.contextmanager
def _library_quiet() -> Iterator[None]:
    """transformers' shard progress bar and its warnings about tensors it did not load stay out of the
    shell's output: the note ``load`` prints says the same, in one line."""
    from transformers.utils import logging

    verbosity, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
        if bars:
            logging.enable_progress_bar()


def _loading_note(loader: Any, info: dict) -> str:
    """What ``load`` says: the class used, and every tensor the library did not load from the folder."""
    note = f"built with transformers {loader.__name__}"
    for key, what in (("missing_keys", "not in the folder, initialised at random"),
                      ("mismatched_keys", "of another shape in the folder, initialised at random"),
                      ("unexpected_keys", "in the folder but not in the model, left out")):
        names = [name if isinstance(name, str) else name[0] for name in info.get(key) or ()]
        if names:
            shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
            note += f"; {len(names)} tensor{'s' * (len(names) > 1)} {what}: {shown}"
    return note


def save_pretrained(obj: Any, folder: Path, max_shard_bytes: int) -> None:
    """transformers' own ``save_pretrained``: ``config.json`` and safetensors (shards and their index
    above ``max_shard_bytes``), as its ``from_pretrained`` reads them."""
    try:
        obj.save_pretrained(str(folder), safe_serialization=True, max_shard_size=max_shard_bytes)
    except Exception as exc:  # noqa: BLE001
        raise ModelshellError(f"transformers cannot save {type(obj).__name__}: {_root_cause(exc)}") from exc


# --- keras-hub -------------------------------------------------------------------------------------------
def build_keras_hub(folder: Path, trust: bool) -> ModelHandle:
    """The backbone of a ``save_to_preset`` folder, or its task when the folder has ``task.json``, built
    by the class the folder's config names, with its ``from_preset``."""
    quiet.require("keras_hub", f"building {folder.name} with keras-hub")
    import keras_hub

    task = folder / "task.json"
    named = _json(task if task.is_file() else folder / "config.json").get("class_name")
    cls = getattr(keras_hub.models, named, None) if isinstance(named, str) else None
    if cls is None:
        raise ModelshellError(f"{folder}: {(task if task.is_file() else folder / 'config.json').name} names the "
                              f"class {named!r}, which keras-hub {keras_hub.__version__} does not have",
                              "a newer keras-hub may; `load DIR` without --build lists its weights")
    try:
        model = cls.from_preset(str(folder))
    except Exception as exc:  # noqa: BLE001
        raise ModelshellError(f"keras-hub cannot build {folder}: {_root_cause(exc)}") from exc
    handle = wrap_object(model, source=str(folder), trusted=trust)
    handle.note = f"built with keras-hub {cls.__name__}.from_preset"
    return handle


def save_preset(obj: Any, folder: Path, max_shard_bytes: int) -> None:
    """keras-hub's own ``save_to_preset`` (its shard limit is in GB)."""
    try:
        obj.save_to_preset(str(folder), max_shard_size=max_shard_bytes / 2**30)
    except Exception as exc:  # noqa: BLE001
        raise ModelshellError(f"keras-hub cannot save {type(obj).__name__}: {_root_cause(exc)}") from exc


def _json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ModelshellError(f"cannot read {path} as JSON: {exc}") from exc
    return value if isinstance(value, dict) else {}


def _root_cause(exc: BaseException) -> str:
    """The first line of the error that says why: transformers wraps a failed import of a model module
    in "Could not import module X", whose reason is the error it chains."""
    while "Could not import module" in str(exc) and (exc.__cause__ or exc.__context__) is not None:
        exc = exc.__cause__ or exc.__context__
    return f"{type(exc).__name__}: {first_line(exc)}"
