"""The tensors of a TorchScript archive, read without running any of its code.

A TorchScript archive holds code (its ``code/`` members), and ``torch.jit.load`` runs some of it while
loading: a class's ``__setstate__`` is called on the state the archive stores. So without ``--trust``
the archive is never given to ``torch.jit.load``. Its ``data.pkl`` is read instead with torch's
weights-only unpickler, each scripted class (``__torch__.*``) standing for an inert record of the
attributes the archive stores for it, and the tensors found are a state dict with no architecture.
A class with its own ``__setstate__`` stores whatever its ``__getstate__`` returned, which only its
code can turn back into tensors: such an archive is refused, naming the methods that would run.
"""
from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path

import torch
import torch.jit._pickle
from torch import _weights_only_unpickler

from modelshell.core.errors import ModelshellError, first_line
from modelshell.safety.pickle_scan import scan_bytes

__all__ = ["is_torchscript", "torchscript_tensors"]

_SETSTATE = re.compile(rb"^class (\w+)\(|^  def (__setstate__)\(", re.MULTILINE)


def is_torchscript(archive: zipfile.ZipFile) -> bool:
    return any(n.endswith("/constants.pkl") or "/code/" in n for n in archive.namelist())


class _ScriptedObject:
    """What a scripted class's object becomes here: the state the archive stores for it, nothing run."""

    def __setstate__(self, state) -> None:
        self.state = state


def torchscript_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor attribute of the archive's modules, by its dotted path (``0.weight``)."""
    try:
        with zipfile.ZipFile(path) as archive:
            root = _root(archive)
            loaded_with_code = _methods_run_on_load(archive, root)
            if loaded_with_code:
                raise ModelshellError(
                    f"{path} is a TorchScript archive whose code runs when it is loaded "
                    f"({', '.join(loaded_with_code)}); nothing was run",
                    f"if you trust the file, `load {path} --trust` (or `trust on`) loads it",
                )
            data = archive.read(f"{root}data.pkl")
            state = _unpickle(data, archive, root)
    except ModelshellError:
        raise
    except Exception as exc:  # noqa: BLE001 - any damage of the archive is one user error
        raise ModelshellError(f"cannot read {path} as a TorchScript archive: {first_line(exc)}") from exc
    tensors: dict[str, torch.Tensor] = {}
    _collect(state, "", tensors, set())
    return tensors


def _root(archive: zipfile.ZipFile) -> str:
    names = [n for n in archive.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
    if len(names) != 1:
        raise ValueError("it has no data.pkl at its top level")
    return names[0][: -len("data.pkl")]


def _methods_run_on_load(archive: zipfile.ZipFile, root: str) -> list[str]:
    """``Net.__setstate__`` for every scripted class whose code defines a ``__setstate__``."""
    found = []
    for name in archive.namelist():
        if name.startswith(f"{root}code/") and name.endswith(".py"):
            current = "?"
            for match in _SETSTATE.finditer(archive.read(name)):
                if match.group(1):
                    current = match.group(1).decode("utf8", "replace")
                else:
                    found.append(f"{current}.__setstate__")
    return found


def _unpickle(data: bytes, archive: zipfile.ZipFile, root: str):
    scripted = sorted({str(n) for n in scan_bytes(data) if n.startswith("__torch__.")})
    stand_ins = [(type(n.rpartition(".")[2], (_ScriptedObject,), {}), n) for n in scripted]
    # The TorchScript pickler's own helpers, each returning its argument as it is.
    helpers = [getattr(torch.jit._pickle, n) for n in (
        "build_intlist", "build_tensorlist", "build_doublelist", "build_boollist", "restore_type_tag")]

    storages: dict[str, torch.storage.TypedStorage] = {}  # by key: tied tensors share one

    def persistent_load(saved_id):
        kind, storage_type, key, _location, numel = saved_id
        if kind != "storage":
            raise ValueError(f"unexpected persistent id {kind!r}")
        if key not in storages:
            dtype = torch.uint8 if storage_type is torch.UntypedStorage else storage_type.dtype
            raw = archive.read(f"{root}data/{key}")
            if len(raw) != numel * torch._utils._element_size(dtype):
                raise ValueError(f"its storage {key} holds {len(raw)} bytes, not {numel} values")
            untyped = torch.UntypedStorage.from_buffer(raw, dtype=torch.uint8) if raw else torch.UntypedStorage(0)
            storages[key] = torch.storage.TypedStorage(wrap_storage=untyped, dtype=dtype, _internal=True)
        return storages[key]

    with torch.serialization.safe_globals([*stand_ins, *helpers]):
        unpickler = _weights_only_unpickler.Unpickler(io.BytesIO(data), encoding="utf-8")
        unpickler.persistent_load = persistent_load
        return unpickler.load()


def _collect(value, prefix: str, found: dict[str, torch.Tensor], seen: set[int]) -> None:
    if isinstance(value, torch.Tensor):
        found[prefix.rstrip(".")] = value
    elif isinstance(value, _ScriptedObject) and id(value) not in seen:
        seen.add(id(value))
        _collect(getattr(value, "state", None), prefix, found, seen)
    elif isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str):
                _collect(item, f"{prefix}{key}.", found, seen)
