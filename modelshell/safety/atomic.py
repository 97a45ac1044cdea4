"""Write files so that a failure never leaves a half-written model behind.

The writer gets a temporary path in the target's own folder (same file system, so the final rename is
atomic) with the target's full suffix (Keras insists on ``.weights.h5`` / ``.keras``); only a complete
file is renamed over the target, and the temporary file is removed on any failure. The new file is
flushed to the disk (fsync) before the rename and the folder after it, so a crash or a power cut right
after a save leaves the old file or the new one, whole. A process killed mid-save (kill -9) cannot
remove its temporary file: its name carries the writer's process id, and the next save into that
folder removes the temporaries of writers that are gone. A model folder (``save NAME DIR/``) is written
the same way, whole: into a temporary folder beside it, renamed into place (``atomic_folder``).
"""
from __future__ import annotations

import contextlib
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_folder", "atomic_target", "full_suffix", "remove_stale_temporaries"]

_DOUBLE_SUFFIXES = (".weights.h5",)


def full_suffix(path: Path) -> str:
    return next((s for s in _DOUBLE_SUFFIXES if path.name.endswith(s)), path.suffix)


# ``.NAME.tmp-PID-RANDOM.SUFFIX``: what atomic_target names its temporary files.
_TEMPORARY = re.compile(r"^\..+\.tmp-(\d+)-[0-9a-f]{8}(\.[\w.]+)?$")


@contextlib.contextmanager
def atomic_target(path: Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path``, on failure it disappears."""
    suffix = full_suffix(path)
    stem = path.name[: len(path.name) - len(suffix)] if suffix else path.name
    remove_stale_temporaries(path.parent)
    temporary = path.with_name(f".{stem}.tmp-{os.getpid()}-{os.urandom(4).hex()}{suffix}")
    try:
        yield temporary
        if not temporary.exists():
            raise OSError(f"nothing was written to {path}")
        os.chmod(temporary, _target_mode(path))
        _fsync(temporary)
        os.replace(temporary, path)
        _fsync(path.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()


@contextlib.contextmanager
def atomic_folder(path: Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``path`` to write a whole model folder into; on success it is
    renamed to ``path`` (which must not exist, or be an empty folder: a rename never merges into files
    already there), on failure it disappears with everything written into it. Every file is flushed to
    the disk before the rename and given the permissions a plain ``open`` would, as ``atomic_target``
    does for one file."""
    import shutil  # imported by a save, not at start-up (with zlib, bz2 and lzma, about 2 ms)

    remove_stale_temporaries(path.parent)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}-{os.urandom(4).hex()}")
    temporary.mkdir()
    try:
        yield temporary
        for written in temporary.rglob("*"):
            if written.is_file():
                os.chmod(written, _target_mode(path / "new"))
                _fsync(written)
        _fsync(temporary)
        os.replace(temporary, path)
        _fsync(path.parent)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def _fsync(path: Path) -> None:
    """Flush a file, or a folder's entries, to the disk. A folder that cannot be opened or synced (some
    file systems refuse) is left to the system; a file that cannot be is a failed save."""
    folder = path.is_dir()
    try:
        fd = os.open(path, (os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)) if folder else os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        if not folder:
            raise


def remove_stale_temporaries(folder: Path) -> list[str]:
    """Remove the temporary files of earlier saves into ``folder`` whose writer process is gone (killed
    mid-save); a save still running in another process keeps its own. Returns the names removed."""
    import shutil

    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        match = _TEMPORARY.match(name)
        if match and not _alive(int(match.group(1))):
            with contextlib.suppress(OSError):
                if (folder / name).is_dir() and not (folder / name).is_symlink():
                    shutil.rmtree(folder / name)  # a folder being written by atomic_folder
                else:
                    os.unlink(folder / name)
                removed.append(name)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: alive
        return True
    return True


def _target_mode(path: Path) -> int:
    """The permissions the file should end with: those of the file it replaces, else what a plain
    ``open(path, "w")`` would give. Writers differ (safetensors creates its files 0600), and a save must
    not quietly make a shared model file private."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask
