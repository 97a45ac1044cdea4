"""What a pickle would import and call, read with ``pickletools`` and never executed.

A refused ``.pt`` should let the user judge before ``--trust``: the Python globals a pickle names (its
``GLOBAL`` / ``STACK_GLOBAL`` opcodes) are the code that unpickling would import and call. As pickle
scanners (picklescan, modelscan) do, globals known to give a shell, run code or touch files are flagged
as dangerous; the plain-data ones torch itself writes (tensor rebuilders, storages, OrderedDict) are not
listed at all, since they say nothing about the file. Only the standard library is used here.
"""
from __future__ import annotations

import io
import pickletools
import zipfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PickleGlobals", "scan_bytes", "scan_torch_file", "describe"]

# Whole modules whose every global gives code execution, a shell, files or the network.
_DANGEROUS_MODULES = {
    "os", "posix", "nt", "subprocess", "sys", "socket", "shutil", "runpy", "importlib", "pty", "code",
    "commands", "ctypes", "webbrowser", "multiprocessing", "asyncio", "pickle", "_pickle", "marshal",
    "types", "requests", "urllib", "http", "ftplib", "telnetlib", "pdb", "platform", "signal",
}
# Single globals of otherwise harmless modules.
_DANGEROUS_GLOBALS = {
    "builtins": {"eval", "exec", "compile", "open", "__import__", "getattr", "setattr", "delattr",
                 "globals", "locals", "breakpoint", "input", "execfile", "apply"},
    "__builtin__": {"eval", "exec", "compile", "open", "__import__", "getattr", "execfile", "apply"},
    "operator": {"attrgetter", "methodcaller"},
    "functools": {"partial"},
    "torch": {"load", "save"},
    "torch.serialization": {"load"},
    "numpy.testing._private.utils": {"runstring"},
}
# What torch.save writes for plain tensors and containers: listing these would only hide the rest.
_PLAIN_DATA_PREFIXES = ("torch._utils._rebuild", "torch._tensor._rebuild", "torch.serialization._get_layout")
_PLAIN_DATA = {"collections.OrderedDict", "torch.Size", "torch.device", "_codecs.encode", "torch.storage.UntypedStorage"}

_PYTHON2_NAMES = {"__builtin__": "builtins", "copy_reg": "copyreg"}


@dataclass
class PickleGlobals:
    """The globals found, in first-seen order; ``dangerous`` is the subset a scanner would flag."""

    names: list[str]
    dangerous: list[str]


def scan_bytes(data: bytes) -> list[str]:
    """The ``module.name`` globals of every pickle in ``data`` (torch's legacy format concatenates
    several). Damaged bytes end the scan quietly with what was found so far: this is advice, not a gate."""
    found: list[str] = []
    stream = io.BytesIO(data)
    while stream.tell() < len(data):
        start = stream.tell()
        try:
            found += _scan_one(stream)
        except Exception:  # noqa: BLE001 - any damage ends the advice; the loader reports the damage
            break
        if stream.tell() == start:
            break
    return found


def _scan_one(stream: io.BytesIO) -> list[str]:
    """One pickle, up to its STOP. ``STACK_GLOBAL`` takes module and name from the two strings pushed
    before it (directly or through the memo), as picklescan tracks them."""
    found: list[str] = []
    strings: list[str | None] = []
    memo: dict[int, str | None] = {}
    for opcode, arg, _ in pickletools.genops(stream):
        name = opcode.name
        if name in ("GLOBAL", "INST"):
            found.append(str(arg).replace(" ", ".", 1))
        elif name == "STACK_GLOBAL":
            module, attr = (strings[-2], strings[-1]) if len(strings) >= 2 else (None, None)
            found.append(f"{module}.{attr}" if module and attr else "(unknown global)")
            strings = strings[:-2]
        elif isinstance(arg, str) and "UNICODE" in name or name in ("STRING", "BINSTRING", "SHORT_BINSTRING"):
            strings.append(str(arg))
        elif name == "MEMOIZE":
            memo[len(memo)] = strings[-1] if strings else None
        elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[int(arg)] = strings[-1] if strings else None
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            strings.append(memo.get(int(arg)))
        if name == "STOP":
            break
    return found


def scan_torch_file(path: Path) -> PickleGlobals:
    """The globals of a torch file: the ``data.pkl`` of a zip archive, or the pickles of a legacy file."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                data = b"".join(archive.read(n) for n in archive.namelist() if n.endswith(".pkl"))
        else:
            data = path.read_bytes()
    except Exception:  # noqa: BLE001 - a damaged archive leaves nothing to list; the refusal still stands
        return PickleGlobals([], [])
    return classify(scan_bytes(data))


def classify(globals_found: list[str]) -> PickleGlobals:
    names: list[str] = []
    for name in globals_found:
        module, _, attr = name.rpartition(".")
        module = _PYTHON2_NAMES.get(module, module)  # protocol 2 pickles name Python 2's modules
        name = f"{module}.{attr}" if module else name
        plain = name in _PLAIN_DATA or name.startswith(_PLAIN_DATA_PREFIXES) or (module == "torch" and attr.endswith("Storage"))
        if name not in names and not plain:
            names.append(name)
    return PickleGlobals(names, [n for n in names if is_dangerous(n)])


def is_dangerous(name: str) -> bool:
    module, _, attr = name.rpartition(".")
    if not module:
        return True  # a global the scan could not name is not one to wave through
    root = module.split(".")[0]
    return root in _DANGEROUS_MODULES or attr in _DANGEROUS_GLOBALS.get(module, ()) or name == "(unknown global)"


def describe(found: PickleGlobals, limit: int = 8) -> str:
    """``it would import and call posix.system (DANGEROUS), mylib.Net``: dangerous first, then the rest."""
    if not found.names:
        return "no imports could be read from it"
    ordered = found.dangerous + [n for n in found.names if n not in found.dangerous]
    shown = [f"{n} (DANGEROUS)" if n in found.dangerous else n for n in ordered[:limit]]
    more = f" and {len(ordered) - limit} more" if len(ordered) > limit else ""
    return "it would import and call " + ", ".join(shown) + more
