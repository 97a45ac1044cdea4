"""Read a file's structure in a throwaway child process first, where a damaged file can hang or crash.

The HDF5 C library can loop forever, or crash, on a damaged file (the fuzz tests found such files): no
Python-level timeout can stop code stuck in C, and a crash would take the whole session with it. So,
before h5py or Keras reads an HDF5 file in the session, a forked child reads every attribute and every
dataset's shape and dtype (the metadata Keras reads; no tensor data), and the session goes on only if
the child finished cleanly in time. Forking copies the already-imported process, so this costs
milliseconds, not a new interpreter.
"""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from modelshell.errors import ModelshellError, first_line

__all__ = ["probe_hdf5", "PROBE_SECONDS"]

PROBE_SECONDS = 10.0  # far beyond what reading the metadata of any real model takes


def probe_hdf5(path: Path) -> None:
    """Raise a ModelshellError if reading ``path``'s HDF5 metadata fails, hangs or crashes."""
    if not hasattr(os, "fork"):  # pragma: no cover - Windows: read in the session as before
        return
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report and leave without running any of the parent's clean-up
        status = 0
        try:
            os.close(read_end)
            _read_metadata(path)
        except BaseException as exc:  # noqa: BLE001 - every failure is reported to the parent
            os.write(write_end, first_line(exc).encode("utf8", "replace")[:500])
            status = 3
        os._exit(status)
    os.close(write_end)
    try:
        status = _wait(pid, PROBE_SECONDS)
        message = os.read(read_end, 1000).decode("utf8", "replace")
    finally:
        os.close(read_end)
    if status is None:
        raise ModelshellError(f"cannot read {path} as HDF5: reading it did not finish in {PROBE_SECONDS:g} s "
                              "(damaged?)")
    if os.WIFSIGNALED(status):
        raise ModelshellError(f"cannot read {path} as HDF5: the HDF5 library crashed on it "
                              f"({signal.Signals(os.WTERMSIG(status)).name}; damaged?)")
    if os.WEXITSTATUS(status) != 0:
        raise ModelshellError(f"cannot read {path} as HDF5: {message or 'damaged'}")


def _wait(pid: int, seconds: float) -> int | None:
    """The child's status, or None (the child killed) when it is not done in time."""
    deadline = time.monotonic() + seconds
    delay = 0.001
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return None
        time.sleep(delay)
        delay = min(delay * 2, 0.02)


def _read_metadata(path: Path) -> None:
    import h5py

    def visit(_: str, obj) -> None:
        for key in obj.attrs:
            obj.attrs[key]
        if isinstance(obj, h5py.Dataset):
            obj.shape, obj.dtype

    with h5py.File(path, "r") as f:
        for key in f.attrs:
            f.attrs[key]
        f.visititems(visit)
