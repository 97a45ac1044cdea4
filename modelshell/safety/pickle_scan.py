"""What a pickle would import and call, read with ``pickletools`` and never executed.

A refused ``.pt`` should let the user judge before ``--trust``: the Python globals a pickle names are the
code that unpickling would import and call. The scan models the unpickler's stack and memo for every
protocol (0 to 5): ``GLOBAL``/``INST`` name a global in text, ``STACK_GLOBAL`` takes module and name from
the two values on top of the stack, wherever they came from (pushed directly, fetched from the memo with
``GET``/``BINGET``/``LONG_BINGET`` after ``PUT``/``MEMOIZE``, under decoys pushed and popped), and every
other opcode moves the stack as ``pickletools`` documents it. As pickle scanners (picklescan, modelscan)
do, globals known to give a shell, run code or touch files are flagged as dangerous, by what they resolve
to: a module prefix and an attribute chain, so that ``torch.serialization.os.system`` is ``os.system``.
The plain-data globals torch itself writes (tensor rebuilders, storages, OrderedDict) are not listed at
all, since they say nothing about the file. Only the standard library is used here.
"""
from __future__ import annotations

import io
import pickletools
import zipfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Global", "PickleGlobals", "scan_bytes", "scan_torch_file", "classify", "is_dangerous", "describe",
           "declared_allocation"]

# Modules (and their submodules) whose every global gives code execution, a shell, files or the network.
_DANGEROUS_MODULES = {
    "os", "posix", "nt", "subprocess", "sys", "socket", "shutil", "runpy", "importlib", "pty", "code",
    "commands", "ctypes", "webbrowser", "multiprocessing", "asyncio", "pickle", "_pickle", "marshal",
    "types", "requests", "urllib", "http", "httplib", "ftplib", "telnetlib", "pdb", "bdb", "platform",
    "signal", "pydoc", "timeit", "cProfile", "profile", "trace", "aiohttp", "ssl", "uuid", "venv", "pip",
    "ensurepip", "distutils", "_osx_support", "_aix_support", "_pyrepl", "numpy.f2py", "dill", "cloudpickle",
    "torch.hub", "numpy.testing._private.utils",
}
# Of those, the ones no package would name a submodule of its own after: found anywhere in a dotted
# module path (``torch.os``: torch's ``import os``, re-exported), they are taken to be that module.
# (Not ``_pickle``: ``torch.jit._pickle`` is TorchScript's own list builders, in every archive.)
_UNAMBIGUOUS = {"os", "posix", "nt", "subprocess", "builtins", "__builtin__", "pty", "socket", "shutil", "runpy",
                "ctypes", "pickle", "marshal", "webbrowser", "importlib", "cProfile", "timeit", "pydoc",
                "pdb", "multiprocessing"}
_PATH_WRITERS = {"write_text", "write_bytes", "open", "unlink", "rmdir", "rename", "replace", "touch", "mkdir",
                 "symlink_to", "hardlink_to", "chmod", "read_text", "read_bytes"}
_EXEC_FAMILY = {"eval", "exec", "compile", "open", "__import__", "getattr", "setattr", "delattr", "globals",
                "locals", "vars", "breakpoint", "input", "execfile", "apply"}
# Single globals (a qualified name inside the module) of otherwise harmless modules.
_DANGEROUS_GLOBALS = {
    "builtins": _EXEC_FAMILY,
    "operator": {"attrgetter", "methodcaller", "itemgetter"},
    "_operator": {"attrgetter", "methodcaller", "itemgetter"},
    "functools": {"partial", "reduce"},
    "codecs": {"open"},
    "io": {"open", "FileIO", "open_code"},
    "_io": {"open", "FileIO", "open_code"},
    "logging": {"FileHandler"},
    "pathlib": {f"{cls}.{method}" for cls in ("Path", "PosixPath", "WindowsPath") for method in _PATH_WRITERS},
    "pkgutil": {"resolve_name"},
    "doctest": {"debug_script"},
    "imaplib": {"IMAP4_stream"},
    "torch": {"load", "save"},
    "torch.serialization": {"load", "save"},
    "torch.jit": {"load"},
    "torch.jit._serialization": {"load"},
    "numpy": {"load"},
}
# What torch.save writes for plain tensors and containers: listing these would only hide the rest.
_PLAIN_DATA_PREFIXES = ("torch._utils._rebuild", "torch._tensor._rebuild", "torch.serialization._get_layout")
_PLAIN_DATA = {"collections.OrderedDict", "torch.Size", "torch.device", "_codecs.encode", "torch.storage.UntypedStorage"}

_PYTHON2_NAMES = {"__builtin__": "builtins", "copy_reg": "copyreg", "exceptions": "builtins"}
_UNKNOWN_MODULE = "?"
_LEGACY_SCAN_BYTES = 64 << 20  # a legacy torch file's pickles come before its storages: this is plenty


class Global(str):
    """``module.name`` as text, keeping where the module ends (``name`` may be dotted, ``Path.write_text``)."""

    module: str
    name: str

    def __new__(cls, module: str, name: str) -> Global:
        module = _PYTHON2_NAMES.get(module, module)  # protocol 0-2 pickles name Python 2's modules
        text = "(unknown global)" if module == _UNKNOWN_MODULE else f"{module}.{name}"
        self = super().__new__(cls, text)
        self.module, self.name = module, name
        return self


@dataclass
class PickleGlobals:
    """The globals found, in first-seen order; ``dangerous`` is the subset a scanner would flag."""

    names: list[str]
    dangerous: list[str]


def scan_bytes(data: bytes, allocations: list[int] | None = None) -> list[Global]:
    """The globals of every pickle in ``data`` (torch's legacy format concatenates several). Damage ends
    the scan with what was found until then: this is advice, not a gate. ``allocations``, when given,
    gets the sizes the pickle asks allocators for (``bytearray(2**30)``, which even torch's weights-only
    unpickler allows)."""
    found: list[Global] = []
    stream = io.BytesIO(data)
    while stream.tell() < len(data):
        start = stream.tell()
        try:
            _scan_one(stream, found, [] if allocations is None else allocations)
        except Exception:  # noqa: BLE001 - any damage ends the advice; the loader reports the damage
            break
        if stream.tell() == start:
            break
    return found


# Callables that allocate as much memory as their first argument says, from a few bytes of pickle.
_ALLOCATORS = {"builtins.bytearray", "builtins.bytes"}


def declared_allocation(data: bytes) -> int:
    """The bytes (at least) that unpickling ``data`` would allocate through allocator calls."""
    sizes: list[int] = []
    scan_bytes(data, sizes)
    return sum(sizes)


_MARK = object()  # the stack's mark
_ANY = object()  # a value the scan does not follow (numbers, containers, results of calls)


def _scan_one(stream: io.BytesIO, found: list[Global], allocations: list[int]) -> None:
    """One pickle, up to its STOP, appending each global to ``found`` as soon as it is named."""
    stack: list[object] = []
    memo: dict[int, object] = {}
    for opcode, arg, _ in pickletools.genops(stream):
        name = opcode.name
        if name == "STOP":
            return
        if name == "MARK":
            stack.append(_MARK)
        elif name == "DUP":
            stack.append(stack[-1])
        elif name == "MEMOIZE":
            memo[len(memo)] = stack[-1]
        elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[int(arg)] = stack[-1]
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            stack.append(memo.get(int(arg), _ANY))
        elif name in ("GLOBAL", "INST"):
            module, _, attr = str(arg).partition(" ")
            found.append(Global(module, attr))
            if name == "INST":
                _pop_to_mark(stack)
            stack.append(found[-1] if name == "GLOBAL" else _ANY)
        elif name == "STACK_GLOBAL":
            attr, module = stack.pop(), stack.pop()
            known = isinstance(module, str) and isinstance(attr, str)
            found.append(Global(module, attr) if known else Global(_UNKNOWN_MODULE, ""))
            stack.append(found[-1])
        elif name in ("EXT1", "EXT2", "EXT4"):  # a global through copyreg's extension registry
            found.append(Global(_UNKNOWN_MODULE, f"extension code {arg}"))
            stack.append(found[-1])
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3", "TUPLE", "EMPTY_TUPLE"):
            count = {"TUPLE1": 1, "TUPLE2": 2, "TUPLE3": 3, "EMPTY_TUPLE": 0}.get(name)
            items = _pop_to_mark(stack) if count is None else [stack.pop() for _ in range(count)][::-1]
            stack.append(tuple(items))
        elif name == "REDUCE":
            args, func = stack.pop(), stack.pop()
            if func in _ALLOCATORS and isinstance(args, tuple) and args and isinstance(args[0], int):
                allocations.append(args[0])
            stack.append(_ANY)
        else:
            _generic(opcode, arg, stack)


def _generic(opcode, arg, stack: list[object]) -> None:
    """Any other opcode: pop what ``pickletools`` says it takes, push what it leaves (strings as they are)."""
    before = opcode.stack_before
    if pickletools.markobject in before:
        _pop_to_mark(stack)
        before = before[: before.index(pickletools.markobject)]
    for _ in before:
        stack.pop()
    if len(opcode.stack_after) == 1 and isinstance(arg, (str, bytes, int)) and opcode.name not in (
            "PROTO", "FRAME"):
        stack.append(arg)
    else:
        stack.extend(_ANY for _ in opcode.stack_after)


def _pop_to_mark(stack: list[object]) -> list[object]:
    """Pop down to the last MARK; the items above it, bottom first."""
    items = []
    while (item := stack.pop()) is not _MARK:
        items.append(item)
    return items[::-1]


def scan_torch_file(path: Path) -> PickleGlobals:
    """The globals of a torch file: every pickle member of a zip archive (``data.pkl``, TorchScript's
    ``constants.pkl`` and debug pickles, any member that starts like a pickle), each on its own so a
    damaged one does not hide the next; or the pickles at the start of a legacy file."""
    found: list[Global] = []
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                for info in archive.infolist():
                    found += _scan_member(archive, info)
        else:
            with open(path, "rb") as handle:
                found = scan_bytes(handle.read(_LEGACY_SCAN_BYTES))
    except Exception:  # noqa: BLE001 - a damaged archive leaves what was read; the refusal still stands
        pass
    return classify(found)


def _scan_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> list[Global]:
    try:
        with archive.open(info) as member:
            start = member.read(2)
            if not (info.filename.endswith((".pkl", "_pkl")) or start[:1] == b"\x80"):
                return []
            return scan_bytes(start + member.read())
    except Exception:  # noqa: BLE001 - a damaged member: go on with the next
        return []


def classify(globals_found: list[str]) -> PickleGlobals:
    names: list[str] = []
    for found in globals_found:
        name = found if isinstance(found, Global) else Global(*_split(found))
        plain = name in _PLAIN_DATA or name.startswith(_PLAIN_DATA_PREFIXES) or (
            name.module == "torch" and name.name.endswith("Storage"))
        if name not in names and not plain:
            names.append(name)
    return PickleGlobals(names, [n for n in names if is_dangerous(n)])


def _split(text: str) -> tuple[str, str]:
    module, _, attr = text.rpartition(".")
    return (module, attr) if module else (_UNKNOWN_MODULE, text)


def is_dangerous(name: str) -> bool:
    """Whether a global resolves to something that runs code, opens a shell or touches files. Every
    module prefix of the dotted path is tried, and every module reached through the attribute chain (a
    re-export: ``torch.os.system``), so the spelling of a global does not hide what it is."""
    found = name if isinstance(name, Global) else Global(*_split(name))
    if found.module == _UNKNOWN_MODULE:
        return True  # a global the scan could not name is not one to wave through
    module_parts, attr_parts = found.module.split("."), found.name.split(".")
    parts = module_parts + attr_parts
    # Where a module path may start: the module's root, any name of the attribute chain (a module
    # re-exported as an attribute), or an unambiguous module's name inside the module path; a package's
    # own submodules (``mylib.code``) are not mistaken for the standard library's.
    inner = [i for i in range(1, len(module_parts)) if module_parts[i] in _UNAMBIGUOUS]
    starts = [0, *inner, *range(len(module_parts), len(parts) - 1)]
    for start in starts:
        for end in range(start + 1, len(parts)):
            if _listed(".".join(parts[start:end]), ".".join(parts[end:])):
                return True
    return False


def _listed(module: str, attr: str) -> bool:
    module = _PYTHON2_NAMES.get(module, module)
    if any(module == m or module.startswith(m + ".") for m in _DANGEROUS_MODULES):
        return True
    return attr in _DANGEROUS_GLOBALS.get(module, ())


def describe(found: PickleGlobals, limit: int = 8) -> str:
    """``it would import and call posix.system (DANGEROUS), mylib.Net``: dangerous first, then the rest."""
    if not found.names:
        return "no imports could be read from it"
    ordered = found.dangerous + [n for n in found.names if n not in found.dangerous]
    shown = [f"{n} (DANGEROUS)" if n in found.dangerous else n for n in ordered[:limit]]
    more = f" and {len(ordered) - limit} more" if len(ordered) > limit else ""
    return "it would import and call " + ", ".join(shown) + more
