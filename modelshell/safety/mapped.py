"""Keep memory-mapped model files from killing the shell when another process truncates them.

torch maps a zip archive's tensors straight from the file (``torch.load(mmap=True)``). If another process
truncates the file, the next read of a page past the new end raises SIGBUS, which Python cannot catch:
the shell dies with every model in it. So before a file is mapped, modelshell takes a read lease on it
(``fcntl F_SETLEASE``): the kernel then holds back any other process's truncate or open for writing
(up to ``/proc/sys/fs/lease-break-time``, 45 s by default) and tells modelshell with SIGIO. The handler
moves each mapping of that file into anonymous memory, in place and page for page (the tensors keep
their addresses and their values), and only then gives the lease up; the truncation goes on, and the
session says which file changed.

Where no lease can be taken (a file another user owns, a file already open for writing, a file system
without leases), the file is checked before every line instead: if it has become shorter than what is
mapped, the part still in the file is moved to memory and the rest (which would fault) is replaced by
zeros, and the models read from it are dropped with one line. A truncation in the middle of a line is
then not caught; SECURITY.md says so.

Linux only (leases, ``/proc/self/maps``); elsewhere nothing is guarded. Only the standard library.
"""
from __future__ import annotations

import contextlib
import ctypes
import fcntl
import mmap
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Change", "guard", "take_changes", "check_files", "guarded_count"]

_CHUNK = 16 << 20  # bytes moved at a time: the only extra memory the move needs
_PAGE = mmap.PAGESIZE


@dataclass
class Change:
    """A guarded file that changed: its path, and whether the mapped values survived whole."""

    path: str
    whole: bool


@dataclass
class _Guarded:
    path: str
    fd: int
    device: int
    inode: int
    leased: bool
    moved: bool = False


@dataclass
class _State:
    files: list[_Guarded] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)
    installed: bool = False


_state = _State()


def guard(path: Path) -> None:
    """Watch ``path`` (about to be memory-mapped) for truncation, for as long as it stays mapped."""
    if not sys.platform.startswith("linux"):
        return
    fd = os.open(path, os.O_RDONLY)
    info = os.fstat(fd)
    if any(g.device == info.st_dev and g.inode == info.st_ino and not g.moved for g in _state.files):
        os.close(fd)  # loaded twice: the first guard covers every mapping of the file
        return
    _install()
    try:
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)
        leased = True
    except OSError:  # another user's file, open for writing elsewhere, or no leases here: checked per line
        leased = False
    _state.files.append(_Guarded(str(path), fd, info.st_dev, info.st_ino, leased))


def guarded_count() -> int:
    return len(_state.files)


def take_changes() -> list[Change]:
    """The files that changed since the last call (each once)."""
    changes, _state.changes = _state.changes, []
    return changes


def check_files() -> list[Change]:
    """The check before a line: files without a lease that have become shorter than their mappings are
    moved out of the way of a fault now; files no longer mapped are let go."""
    if not _state.files:
        return take_changes()
    maps = _mappings()
    for entry in list(_state.files):
        ranges = maps.get((entry.device, entry.inode), [])
        if not ranges:
            _release(entry)
        elif not entry.leased:
            size = os.fstat(entry.fd).st_size
            if any(offset + (end - start) > _round_up(size) for start, end, _, offset in ranges):
                _move(ranges, size)
                _state.changes.append(Change(entry.path, whole=False))
                _release(entry)
    return take_changes()


def _install() -> None:
    import signal  # with the first guarded file, not at start-up

    if not _state.installed:
        signal.signal(signal.SIGIO, _on_lease_break)
        _state.installed = True


def _on_lease_break(signum, frame) -> None:
    """Another process wants to truncate or write a leased file: move its mappings to memory, then let it."""
    maps = None
    for entry in list(_state.files):
        if not entry.leased:
            continue
        try:
            breaking = fcntl.fcntl(entry.fd, fcntl.F_GETLEASE) != fcntl.F_RDLCK
        except OSError:
            breaking = True
        if breaking:
            maps = _mappings() if maps is None else maps
            ranges = maps.get((entry.device, entry.inode), [])
            if ranges:
                _move(ranges, None)
                _state.changes.append(Change(entry.path, whole=True))
            _release(entry)


def _release(entry: _Guarded) -> None:
    entry.moved = True
    with contextlib.suppress(OSError):
        if entry.leased:
            fcntl.fcntl(entry.fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
        os.close(entry.fd)
    with contextlib.suppress(ValueError):
        _state.files.remove(entry)


def _mappings() -> dict[tuple[int, int], list[tuple[int, int, str, int]]]:
    """This process's file mappings by (device, inode): (start, end, permissions, file offset) each."""
    found: dict[tuple[int, int], list[tuple[int, int, str, int]]] = {}
    with open("/proc/self/maps") as handle:
        for line in handle:
            parts = line.split(maxsplit=5)
            if len(parts) < 5 or parts[4] == "0":
                continue
            start, end = (int(x, 16) for x in parts[0].split("-"))
            major, minor = (int(x, 16) for x in parts[3].split(":"))
            found.setdefault((os.makedev(major, minor), int(parts[4])), []).append(
                (start, end, parts[1], int(parts[2], 16)))
    return found


def _move(ranges: list[tuple[int, int, str, int]], size: int | None) -> None:
    """Replace each mapped range by anonymous memory holding the same bytes, at the same addresses. With
    ``size`` (the file's length now), bytes past it cannot be read (they would fault) and become zeros."""
    libc = _libc()
    for start, end, perms, offset in ranges:
        prot = (mmap.PROT_READ if "r" in perms else 0) | (mmap.PROT_WRITE if "w" in perms else 0) | (
            mmap.PROT_EXEC if "x" in perms else 0)
        readable = end - start if size is None else max(0, min(end - start, _round_up(size) - offset))
        at = start
        while at < end:
            length = min(_CHUNK, end - at)
            keep = max(0, min(length, start + readable - at))
            buffer = ctypes.create_string_buffer(keep) if keep else None
            if keep:
                ctypes.memmove(buffer, at, keep)
            flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | _MAP_FIXED
            result = libc.mmap(ctypes.c_void_p(at), ctypes.c_size_t(length), prot | mmap.PROT_WRITE, flags, -1, 0)
            if result in (None, ctypes.c_void_p(-1).value):
                raise OSError(ctypes.get_errno(), "mmap of anonymous memory failed")
            if keep:
                ctypes.memmove(at, buffer, keep)
            if not prot & mmap.PROT_WRITE:
                libc.mprotect(ctypes.c_void_p(at), ctypes.c_size_t(length), prot)
            at += length


def _round_up(size: int) -> int:
    return -(-size // _PAGE) * _PAGE


_MAP_FIXED = 0x10


def _libc():
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    return libc
