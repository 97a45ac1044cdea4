"""``.npz`` archives (``numpy.savez``): arrays by name, read with numpy alone.

Each member is a ``.npy`` file whose small header gives its shape and dtype, so listing reads the headers
only. An object array would be unpickled to be read (code could run): such an archive is refused, and
nothing is ever read with ``allow_pickle``.
"""
from __future__ import annotations

import math
import zipfile
from pathlib import Path

import numpy as np

from modelshell.core.errors import ModelshellError, first_line
from modelshell.frameworks.weights_files import ArrayFile, guess_layout

__all__ = ["NpzFile"]

_HEADERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


class NpzFile(ArrayFile):
    """A ``.npz`` archive as a mapping name -> array; a member is read when its array is asked for."""

    def _read_header(self) -> dict[str, tuple[tuple[int, ...], str]]:
        try:
            with zipfile.ZipFile(self.path) as archive:
                entries = {}
                for info in archive.infolist():
                    if info.filename.endswith(".npy"):
                        entries[info.filename[:-4]] = self._member(archive, info)
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise ModelshellError(f"cannot read {self.path} as .npz: {first_line(exc)}") from exc
        self.layout = guess_layout(list(entries))
        return entries

    def _member(self, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> tuple[tuple[int, ...], str]:
        """A member's shape and dtype from its ``.npy`` header; damage and object arrays refused here,
        so a later read cannot fail far from the ``load``."""
        name = info.filename[:-4]
        try:
            with archive.open(info) as member:
                version = np.lib.format.read_magic(member)
                if version not in _HEADERS:
                    raise ValueError(f".npy format version {version} is not one modelshell reads")
                shape, _, dtype = _HEADERS[version](member)
                header_size = member.tell()
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
            raise ModelshellError(f"cannot read {self.path} as .npz: member {name!r} is damaged ({first_line(exc)})") from exc
        if dtype.hasobject:
            raise ModelshellError(f"{self.path}: member {name!r} is an array of Python objects, which only "
                                  "unpickling could read (it can run code): refused",
                                  "save plain numeric arrays, e.g. numpy.savez(path, **arrays)")
        if header_size + math.prod(shape) * dtype.itemsize != info.file_size:
            raise ModelshellError(f"cannot read {self.path} as .npz: member {name!r} holds "
                                  f"{info.file_size - header_size} bytes of data, not the {math.prod(shape) * dtype.itemsize} "
                                  "its header says (truncated or damaged)")
        return tuple(shape), str(dtype)

    def _read_array(self, name: str) -> np.ndarray:
        try:
            with zipfile.ZipFile(self.path) as archive, archive.open(f"{name}.npy") as member:
                return np.lib.format.read_array(member, allow_pickle=False)
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
            raise ModelshellError(f"cannot read {name!r} from {self.path}: {first_line(exc)}") from exc
