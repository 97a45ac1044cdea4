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

from modelshell.core.errors import ModelshellError, first_line
from modelshell.frameworks.base import ModelHandle
from modelshell.frameworks.detect import wrap_object
from modelshell.formats import FORMATS

__all__ = ["load", "default_name"]

def default_name(spec: str) -> str:
    """A variable name from a file stem or factory name: ``lenet5.weights.h5`` -> ``lenet5``."""
    if _is_factory_spec(spec):
        stem = spec.rpartition(":")[2]
    else:
        stem = re.sub(r"-\d{5}-of-\d{5}$", "", Path(spec).name.split(".")[0]) or "model"  # a shard: its checkpoint
    name = re.sub(r"\W", "_", stem)
    if name[0].isdigit() or keyword.iskeyword(name) or name.startswith("__") or (
            hasattr(builtins, name)):  # `load print.pt` must not hide print()
        name = f"m_{name}"
    return name


def load(spec: str, trust: bool = False, build: bool = False) -> ModelHandle:
    """Load a model file or call a factory; ``trust`` allows formats that can run code on load;
    ``build`` builds a model folder (or the folder of a file in it) into the real model with its library."""
    if _is_factory_spec(spec):
        return _load_factory(spec, trust)
    path = Path(spec).expanduser()
    if build:
        return _build_folder(path, trust)
    if path.is_dir():
        return _load_folder(path, trust)
    _check_readable(path)
    form = FORMATS.for_file(path)
    if form is None:
        raise ModelshellError(
            f"{path}: unknown model format {path.suffix.lower() or '(no extension)'!r}",
            f"known formats: {' '.join(FORMATS.read_suffixes())}, a model folder, or FILE.py:FACTORY; "
            "see `help load`",
        )
    return form.reader(path, trust)


def _load_folder(path: Path, trust: bool) -> ModelHandle:
    form = FORMATS.for_folder(path)
    if form is None:
        raise ModelshellError(f"{path} is a directory with no model in it",
                              "a model folder holds " + "; ".join(f"{f.marks} ({f.name})" for f in FORMATS.folders())
                              + "; or name a model file in it")
    return form.reader(path, trust)


def _build_folder(path: Path, trust: bool) -> ModelHandle:
    folder = path if path.is_dir() else path.parent
    if not path.exists():
        raise ModelshellError(f"{path}: no such file or folder")
    form = FORMATS.for_folder(folder)
    if form is None or form.builder is None:
        raise ModelshellError(f"{path} is not in a model folder, so there is nothing to build",
                              "--build takes a folder: " + ", ".join(f.name for f in FORMATS.folders() if f.builder))
    return form.builder(folder, trust)


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
