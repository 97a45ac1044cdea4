"""Turn what the user names (a file, ``FILE.py:FACTORY``, ``pkg.module:FACTORY``) into a ModelHandle.

The format follows the file name; the framework behind a format is imported only here, and only when a
file of that format is opened. Every failure becomes one ModelshellError line naming the file.
"""
from __future__ import annotations

import builtins
import importlib
import importlib.util
import keyword
import os
import re
import stat
import sys
from pathlib import Path
from typing import Any

from modelshell.errors import ModelshellError, first_line
from modelshell.frameworks import quiet
from modelshell.frameworks.base import ModelHandle
from modelshell.frameworks.detect import wrap_object

__all__ = ["load", "default_name", "FORMATS"]

FORMATS = {
    ".pt / .pth / .bin": "torch state dict, TorchScript archive (its tensors; whole with --trust), "
    "or (with --trust) a pickled nn.Module",
    ".safetensors": "tensors by name (weights only; read without torch)",
    ".keras": "Keras 3 model",
    ".h5 / .hdf5": "legacy Keras model, or Keras 2 weights only",
    ".weights.h5": "Keras 3 weights only (read without TensorFlow)",
    "FILE.py:FACTORY": "calls FACTORY() from a Python file (runs its code)",
    "pkg.module:FACTORY": "calls FACTORY() from an importable module (runs its code)",
}

_TORCH_SUFFIXES = {".pt", ".pth", ".bin", ".ckpt"}


def default_name(spec: str) -> str:
    """A variable name from a file stem or factory name: ``lenet5.weights.h5`` -> ``lenet5``."""
    if _is_factory_spec(spec):
        stem = spec.rpartition(":")[2]
    else:
        stem = Path(spec).name.split(".")[0] or "model"
    name = re.sub(r"\W", "_", stem)
    if name[0].isdigit() or keyword.iskeyword(name) or name.startswith("__") or (
            hasattr(builtins, name)):  # `load print.pt` must not hide print()
        name = f"m_{name}"
    return name


def load(spec: str, trust: bool = False) -> ModelHandle:
    """Load a model file or call a factory; ``trust`` allows formats that can run code on load."""
    if _is_factory_spec(spec):
        return _load_factory(spec, trust)
    path = Path(spec).expanduser()
    _check_readable(path)
    name = path.name.lower()
    datasets = None
    if name.endswith((".h5", ".hdf5")):
        from modelshell.safety.probe import probe_hdf5

        datasets = probe_hdf5(path)  # a damaged HDF5 file can hang or crash the library: tried in a child first
    if name.endswith(".weights.h5"):
        return _weights_file("KerasH5Weights", path, trust, datasets=datasets)
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        return _weights_file("SafetensorsFile", path, trust)
    if suffix in (".h5", ".hdf5"):
        from modelshell.frameworks.weights_files import h5_holds_model

        if not h5_holds_model(path):
            return _weights_file("KerasH5Weights", path, trust, datasets=datasets)
        return _keras_model(path, trust)
    if suffix == ".keras":
        return _keras_model(path, trust)
    if suffix in _TORCH_SUFFIXES:
        quiet.require("torch", f"loading {path.name}")
        from modelshell.frameworks.torch import load_torch_file

        return load_torch_file(path, trust)
    raise ModelshellError(
        f"{path}: unknown model format {suffix or '(no extension)'!r}",
        "known formats: .pt .pth .bin .safetensors .keras .h5 .weights.h5, or FILE.py:FACTORY; see `help load`",
    )


def _weights_file(reader: str, path: Path, trust: bool, **known) -> ModelHandle:
    """A weights-only file; one with no tensors at all is refused, as a torch file holding none is.
    ``known`` passes on what the HDF5 probe already read (``datasets``)."""
    from modelshell.frameworks import weights_files

    arrays = getattr(weights_files, reader)(path, **known)
    if not arrays:
        raise ModelshellError(f"{path} holds no tensors, so there is no model in it")
    return weights_files.WeightsFile(arrays, trust)


def _keras_model(path: Path, trust: bool) -> ModelHandle:
    quiet.require("keras", f"loading {path.name}")
    from modelshell.frameworks.keras import load_keras_file

    return load_keras_file(path, trust)


def _check_readable(path: Path) -> None:
    if not path.exists():
        raise ModelshellError(f"{path}: no such file")
    if path.is_dir():
        raise ModelshellError(f"{path} is a directory, not a model file")
    _check_regular(path)
    try:
        with open(path, "rb") as handle:
            first = handle.read(1)
    except OSError as exc:
        raise ModelshellError(f"{path}: cannot read ({exc.strerror or first_line(exc)})") from exc
    if not first:
        raise ModelshellError(f"{path} is empty")


_NOT_REGULAR = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                (stat.S_ISSOCK, "a socket"))


def _check_regular(path: Path) -> None:
    """Refuse, before opening it, anything but a regular file (after symlinks): opening a FIFO waits for a
    writer forever, and a device (``/dev/zero``) reads without end."""
    mode = os.stat(path).st_mode
    if stat.S_ISREG(mode):
        return
    kind = next((name for test, name in _NOT_REGULAR if test(mode)), "not a regular file")
    resolved = os.path.realpath(path)
    via = f" (it links to {resolved})" if resolved != os.path.abspath(path) else ""
    raise ModelshellError(f"{path} is {kind}{via}, not a regular file: it is not opened")


def _is_factory_spec(spec: str) -> bool:
    target, sep, factory = spec.rpartition(":")
    return bool(sep and target and factory.isidentifier() and (target.endswith(".py") or _is_dotted(target)))


def _is_dotted(target: str) -> bool:
    return all(part.isidentifier() for part in target.split("."))


def _load_factory(spec: str, trust: bool) -> ModelHandle:
    target, _, factory_name = spec.rpartition(":")
    module = _import_target(target)
    factory = getattr(module, factory_name, None)
    if not callable(factory):
        raise ModelshellError(f"{target} has no function {factory_name!r}")
    try:
        obj = factory()
    except Exception as exc:  # noqa: BLE001 - the user's factory failing is a user-level error
        raise ModelshellError(f"{spec}: {factory_name}() raised {type(exc).__name__}: {first_line(exc)}") from exc
    handle = wrap_object(obj, source=spec, trusted=True)
    if handle is None:
        raise ModelshellError(f"{spec} returned a {type(obj).__name__}, not a torch nn.Module or a Keras model")
    return handle


def _import_target(target: str) -> Any:
    if target.endswith(".py"):
        path = Path(target).expanduser()
        _check_readable(path)
        module_name = "_modelshell_factory_" + re.sub(r"\W", "_", path.stem)
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:  # noqa: BLE001
            sys.modules.pop(module_name, None)
            raise ModelshellError(f"{path}: running it raised {type(exc).__name__}: {first_line(exc)}") from exc
        return module
    try:
        return importlib.import_module(target)
    except ImportError as exc:
        raise ModelshellError(f"cannot import {target}: {first_line(exc)}") from exc
