"""Write files so that a failure never leaves a half-written model behind.

The writer gets a temporary path in the target's own folder (same file system, so the final rename is
atomic) with the target's full suffix (Keras insists on ``.weights.h5`` / ``.keras``); only a complete
file is renamed over the target, and the temporary file is removed on any failure.
"""
from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_target", "full_suffix"]

_DOUBLE_SUFFIXES = (".weights.h5",)


def full_suffix(path: Path) -> str:
    return next((s for s in _DOUBLE_SUFFIXES if path.name.endswith(s)), path.suffix)


@contextlib.contextmanager
def atomic_target(path: Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path``, on failure it disappears."""
    suffix = full_suffix(path)
    stem = path.name[: len(path.name) - len(suffix)] if suffix else path.name
    temporary = path.with_name(f".{stem}.tmp-{os.urandom(4).hex()}{suffix}")
    try:
        yield temporary
        if not temporary.exists():
            raise OSError(f"nothing was written to {path}")
        os.chmod(temporary, _target_mode(path))
        os.replace(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()


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
