"""Read a file's structure in a throwaway child process first, where a damaged file can hang or crash.

The HDF5 C library can loop forever, or crash, on a damaged file (the fuzz tests found such files): no
Python-level timeout can stop code stuck in C, and a crash would take the whole session with it. So,
before h5py or Keras reads an HDF5 file in the session, a forked child reads every attribute and every
dataset's shape and dtype (the metadata Keras reads; no tensor data), and the session goes on only if
the child finished cleanly in time. Forking copies the already-imported process, so this costs
milliseconds, not a new interpreter; and the child sends back every dataset's name, shape and dtype,
so that listing a weights file does not walk the file a second time.

The same walk refuses what would make a read leave the file: external links (into another HDF5 file),
datasets whose storage is external (raw bytes of any file, ``/etc/passwd`` or a FIFO) and virtual
datasets (made of other files' datasets). They are found from the links and the creation properties,
before a byte of any dataset is read.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import select
import signal
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

from modelshell.core.errors import ModelshellError, first_line

__all__ = ["probe_hdf5", "PROBE_SECONDS"]

PROBE_SECONDS = 10.0  # far beyond what reading the metadata of any real model takes


def probe_hdf5(path: Path, member: str | None = None) -> dict[str, tuple[tuple[int, ...], str]] | None:
    """Every dataset of ``path`` (its path in the file -> shape and dtype), read in a child process;
    a ModelshellError if that reading fails, hangs or crashes. None where there is no fork (Windows).
    With ``member``, the HDF5 file is that member of the zip archive ``path`` (a ``.keras`` file's
    ``model.weights.h5``), read where it lies in the archive."""
    if not hasattr(os, "fork"):  # pragma: no cover - Windows: read in the session as before
        return None
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report and leave without running any of the parent's clean-up
        _child(path, member, read_end, write_end)
    os.close(write_end)
    try:
        report, finished = _read_until_closed(read_end, PROBE_SECONDS)
    finally:
        os.close(read_end)
    status = _reap(pid, kill=not finished)
    if not finished:
        raise ModelshellError(f"cannot read {path} as HDF5: reading it did not finish in {PROBE_SECONDS:g} s "
                              "(damaged?)")
    if os.WIFSIGNALED(status):
        raise ModelshellError(f"cannot read {path} as HDF5: the HDF5 library crashed on it "
                              f"({signal.Signals(os.WTERMSIG(status)).name}; damaged?)")
    text = report.decode("utf8", "replace")
    if os.WEXITSTATUS(status) == _REFUSED:
        where = f"its {member}: " if member else ""
        raise ModelshellError(f"{path} is refused: {where}{text}; nothing was read from there",
                              "a model file must hold its own tensors")
    if os.WEXITSTATUS(status) != 0:
        raise ModelshellError(f"cannot read {path} as HDF5: {text[:500] or 'damaged'}")
    return {name: (tuple(shape), dtype) for name, shape, dtype in json.loads(text)}


def _child(path: Path, member: str | None, read_end: int, write_end: int) -> None:
    status = 0
    try:
        os.close(read_end)
        report = json.dumps(_read_metadata(path, member)).encode("utf8")
    except _LeavesTheFile as exc:
        report = first_line(exc).encode("utf8", "replace")[:1000]
        status = _REFUSED
    except BaseException as exc:  # noqa: BLE001 - every failure is reported to the parent
        report = first_line(exc).encode("utf8", "replace")[:500]
        status = 3
    try:
        view = memoryview(report)
        while view:
            view = view[os.write(write_end, view):]
    finally:
        os._exit(status)


_REFUSED = 4  # the child's exit status when the file reaches outside itself


class _LeavesTheFile(Exception):
    """A link or a dataset whose data lies in another file."""


def _read_until_closed(fd: int, seconds: float) -> tuple[bytes, bool]:
    """What the child wrote, and whether it closed the pipe (exited) within ``seconds``. Waiting on the
    pipe, not polling, answers the moment the child is done; reading as it comes lets a report larger
    than the pipe's buffer through."""
    deadline = time.monotonic() + seconds
    chunks: list[bytes] = []
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return b"".join(chunks), False
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return b"".join(chunks), True
            chunks.append(chunk)


def _reap(pid: int, kill: bool) -> int:
    if kill:
        os.kill(pid, signal.SIGKILL)
    return os.waitpid(pid, 0)[1]


def _read_metadata(path: Path, member: str | None = None) -> list[tuple[str, list[int], str]]:
    """Every object's header and every attribute's value (what Keras reads), and each dataset's shape
    and dtype. The walk uses h5py's low-level calls: the high-level one makes a Python object per group
    and dataset, which made this read twice as slow as the listing it protects."""
    import h5py

    datasets: list[tuple[str, list[int], str]] = []
    with contextlib.ExitStack() as stack:
        f = stack.enter_context(h5py.File(stack.enter_context(_member(path, member)) if member else path, "r"))
        # An exception inside an h5py visit callback comes out garbled: what is found is noted, and
        # raised after the walk.
        outside: list[str] = []
        f.id.links.visit(lambda name, info: _note_external_link(f, name, info, outside), info=True)
        _refuse(outside)
        for key in f.attrs:
            f.attrs[key]

        def visit(name: bytes, info) -> None:
            text = name.decode("utf8", "surrogateescape")
            if info.type == h5py.h5o.TYPE_DATASET:
                dataset = h5py.h5d.open(f.id, name)
                _note_outside_storage(text, dataset, outside)
                datasets.append((text, list(dataset.shape), str(dataset.dtype)))
            if info.num_attrs:
                attrs = f[text].attrs
                for key in attrs:
                    attrs[key]

        h5py.h5o.visit(f.id, visit, info=True)
        _refuse(outside)
    return datasets


@contextlib.contextmanager
def _member(path: Path, name: str) -> Iterator[io.RawIOBase]:
    """A zip member as a seekable file: a stored one (as Keras writes them) is a window on the archive's
    own bytes, so HDF5's seeks cost nothing; a compressed one is zipfile's own reader."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(name)
        if info.compress_type != zipfile.ZIP_STORED:
            with archive.open(info) as handle:
                yield handle
            return
    with open(path, "rb") as handle:
        handle.seek(info.header_offset)
        local = handle.read(30)
        if local[:4] != b"PK\x03\x04":
            raise ValueError(f"{name}: damaged zip entry")
        name_length, extra_length = int.from_bytes(local[26:28], "little"), int.from_bytes(local[28:30], "little")
        start = info.header_offset + 30 + name_length + extra_length
        yield _Window(handle, start, info.file_size)


class _Window(io.RawIOBase):
    """Bytes ``start`` to ``start + size`` of an open file, as a file of their own."""

    def __init__(self, handle, start: int, size: int) -> None:
        self._handle, self._start, self._size, self._at = handle, start, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._at, io.SEEK_END: self._size}[whence]
        self._at = max(0, base + offset)
        return self._at

    def tell(self) -> int:
        return self._at

    def readinto(self, buffer) -> int:
        count = max(0, min(len(buffer), self._size - self._at))
        self._handle.seek(self._start + self._at)
        got = self._handle.readinto(memoryview(buffer)[:count])
        self._at += got
        return got


def _refuse(outside: list[str]) -> None:
    if outside:
        more = f" (and {len(outside) - 1} more)" if len(outside) > 1 else ""
        raise _LeavesTheFile(outside[0] + more)


def _note_external_link(f, name: bytes, info, outside: list[str]) -> None:
    """Note an external link (``h5py.ExternalLink``); the walk goes through hard links only."""
    import h5py

    if info.type == h5py.h5l.TYPE_EXTERNAL:
        target_file, target = (_text(v) for v in f.id.links.get_val(name))
        outside.append(f"{_text(name)!r} is an external link to {target} in {target_file}")
    elif info.type not in (h5py.h5l.TYPE_HARD, h5py.h5l.TYPE_SOFT):  # user-defined link classes
        outside.append(f"{_text(name)!r} is a link of a kind modelshell does not follow ({info.type})")


def _note_outside_storage(name: str, dataset, outside: list[str]) -> None:
    """Note a dataset whose bytes lie in other files: external storage, or a virtual dataset."""
    import h5py

    plist = dataset.get_create_plist()
    if plist.get_layout() == h5py.h5d.VIRTUAL:
        sources = sorted({f"{_text(plist.get_virtual_dsetname(i))} in {_text(plist.get_virtual_filename(i))}"
                          for i in range(plist.get_virtual_count())})
        outside.append(f"dataset {name!r} is a virtual dataset made of {', '.join(sources) or 'nothing'}")
    if plist.get_external_count():
        files = sorted({_text(plist.get_external(i)[0]) for i in range(plist.get_external_count())})
        outside.append(f"dataset {name!r} has external storage: its data is in {', '.join(files)}")


def _text(value: bytes | str) -> str:
    return value.decode("utf8", "surrogateescape") if isinstance(value, bytes) else value
