"""Refuse, before loading, a model that cannot fit in memory, where the file says how large it is.

A load that runs the machine out of memory does not fail with a message: the kernel kills the shell and
every model in it. Where a format tells the size up front (a zip's uncompressed sizes, HDF5 dataset
shapes, a plain file's length) the load is refused with one line instead. Formats read lazily
(safetensors, Keras weights files) and torch zip archives (memory-mapped) need no such check.
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

from modelshell.core.errors import ModelshellError

__all__ = ["available_memory", "check_declared_allocation", "check_declared_shapes", "check_fits", "check_free_space",
           "tensor_bytes", "unpacked_zip_size"]


def available_memory() -> int | None:
    """Bytes that can be allocated without swapping (``MemAvailable``), or None where it is unknown."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def unpacked_zip_size(path: Path) -> int:
    """What a zip archive (a ``.keras`` file, a TorchScript archive) holds once unpacked, as its directory
    says; 0 when the directory cannot be read (the load itself then reports the damage)."""
    import zipfile  # here, not at start-up: listing a safetensors folder never opens an archive

    try:
        with zipfile.ZipFile(path) as archive:
            return sum(info.file_size for info in archive.infolist())
    except Exception:  # noqa: BLE001 - a damaged directory fails in many ways
        return 0


_ALLOCATOR_NAMES = (b"bytearray", b"bytes")
_PICKLE_HEAD = 64 << 20  # a legacy file's pickles come first, before its storages


def check_declared_allocation(path: Path) -> None:
    """Refuse a torch file whose pickle asks an allocator for more memory than the whole file holds
    (``builtins.bytearray(2**30)`` in 572 bytes: torch's weights-only unpickler allows it). Only a
    pickle that names an allocator at all is scanned, so ordinary loads pay one substring search."""
    import zipfile

    from modelshell.safety.pickle_scan import declared_allocation

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                data = b"".join(archive.read(n) for n in archive.namelist() if n.endswith("data.pkl"))
        else:
            with open(path, "rb") as handle:
                data = handle.read(_PICKLE_HEAD)
    except Exception:  # noqa: BLE001 - a damaged file: the load itself says so
        return
    if not any(name in data for name in _ALLOCATOR_NAMES):
        return
    wanted, size = declared_allocation(data), path.stat().st_size
    if wanted > size:
        raise ModelshellError(
            f"{path} is refused: its pickle asks for {_size(wanted)} of memory (bytearray/bytes of a declared "
            f"size), more than the whole file ({_size(size)}) could hold; nothing was loaded")


_MAX_DIMENSION = 2**32  # no real layer has a dimension this large; a seed or a count may come close


def check_declared_shapes(path: Path, config: object) -> None:
    """Refuse a model config (Keras's JSON) that declares a shape the framework would try to allocate and
    cannot: a list of integers (an input shape, a build shape, a target shape) whose values could not be
    held in the free memory, or a single dimension beyond 2**32. Keras builds every layer from its config
    before reading a weight, so ``input_shape: [2**40, 2**40]`` in a 3 KB file would have it allocate
    terabytes (or try for minutes)."""
    free = available_memory()
    stack = [config]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            stack.extend(node.values())
            continue
        if not isinstance(node, list):
            continue
        stack.extend(node)
        dims = [d for d in node if isinstance(d, int) and not isinstance(d, bool)]
        if not dims or len(dims) + node.count(None) != len(node):
            continue
        values = 1
        for d in dims:
            values *= max(d, 1)
        if max(dims) > _MAX_DIMENSION or (free is not None and values * 4 > free):
            raise ModelshellError(
                f"{path} is refused: its config declares a shape {node} ({values:.3g} values), more than memory "
                "could hold; nothing was built")


def check_fits(path: Path, needed: int, what: str = "its tensors") -> None:
    """Raise if ``needed`` bytes (what loading ``path`` would allocate) exceed the free memory."""
    free = available_memory()
    if free is not None and needed > free:
        raise ModelshellError(
            f"{path} is too large to load: {what} need {_size(needed)} of memory and {_size(free)} are free",
            "free memory, or convert it to .safetensors elsewhere (read lazily, memory-mapped)",
        )


def tensor_bytes(tensors: Iterable) -> int:
    """The bytes of the tensors' values (shared ones once): what any uncompressed file of them holds."""
    total = 0
    for tensor in tensors:
        if getattr(tensor, "tied_to", None) is None:
            bits = re.search(r"(\d+)$", tensor.dtype)
            total += tensor.size * (int(bits.group(1)) // 8 if bits else 1)
    return total


def check_free_space(target: Path, needed: int) -> None:
    """Refuse a write that cannot fit before it starts. A disk that fills in the middle of an HDF5 write
    leaves the HDF5 library with a file it can neither flush nor close, and the process dies with a
    segmentation fault when it exits (Keras ``save_weights`` alone shows it): a shell must not offer
    that to a user with unsaved models."""
    try:
        stats = os.statvfs(target.parent)
    except OSError:
        return  # the write itself reports what is wrong with the folder
    if stats.f_flag & os.ST_RDONLY:
        return  # the write fails at once, cleanly, and says "read-only"
    free = stats.f_bavail * stats.f_frsize
    if needed > free:
        raise ModelshellError(
            f"cannot write {target}: it needs at least {_size(needed)} and its folder has {_size(free)} free",
            "free some space or save elsewhere",
        )


def _size(n: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} bytes"
