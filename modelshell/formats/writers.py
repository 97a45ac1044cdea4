"""How any model is written to a folder: safetensors shards with transformers' index, no framework needed
(the arrays come from the model's own ``read``). A model of a library gets its library's own folder
(``builders``)."""
from __future__ import annotations

import json
import re
from pathlib import Path

from modelshell.core.errors import ModelshellError
from modelshell.safety.resources import tensor_bytes

__all__ = ["parse_size", "save_safetensors_folder", "DEFAULT_MAX_SHARD_SIZE"]

DEFAULT_MAX_SHARD_SIZE = "5GB"  # transformers' default for save_pretrained
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "KIB": 2**10, "MIB": 2**20,
          "GIB": 2**30, "TIB": 2**40}


def parse_size(text: str) -> int:
    """``5GB``, ``20KB``, ``1GiB`` or a number of bytes, as transformers reads ``max_shard_size``."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]I?B|B)?\s*", text, re.IGNORECASE)
    if match is None or float(match[1]) <= 0:
        raise ModelshellError(f"{text!r} is not a size", "write it as bytes or with a unit: 20KB, 500MB, 5GB, 1GiB")
    return int(float(match[1]) * _UNITS[(match[2] or "").upper()])


def save_safetensors_folder(handle, folder: Path, max_shard_bytes: int) -> list[Path]:
    """Write ``handle``'s tensors as ``model.safetensors``, or, above ``max_shard_bytes``, as
    ``model-0000N-of-0000M.safetensors`` shards with ``model.safetensors.index.json`` (the layout
    transformers' ``save_pretrained`` writes and ``from_pretrained`` reads), and the ``config.json`` a
    model loaded from a transformers folder came with. ``folder`` is the temporary folder ``save`` renames into
    place when every file is written (``atomic_folder``)."""
    import numpy as np  # imported here: `import modelshell` imports no numpy
    from safetensors.numpy import save_file

    shards = _split(handle, max_shard_bytes)
    metadata = handle.safetensors_metadata()  # in every shard, as transformers writes its own
    names = (["model.safetensors"] if len(shards) == 1 else
             [f"model-{i:05d}-of-{len(shards):05d}.safetensors" for i in range(1, len(shards) + 1)])
    written = []
    for shard, name in zip(shards, names):
        arrays = {t.name: np.ascontiguousarray(handle.read(t.name)) for t in shard}
        save_file(arrays, str(folder / name), metadata=metadata)
        written.append(folder / name)
    if len(shards) > 1:
        index = {"metadata": {"total_size": tensor_bytes(t for shard in shards for t in shard)},
                 "weight_map": {t.name: name for shard, name in zip(shards, names) for t in shard}}
        written.append(_write_text(folder / "model.safetensors.index.json", json.dumps(index, indent=2) + "\n"))
    config = handle.config if handle.folder is not None and handle.folder[0] == "transformers" else None
    if isinstance(config, dict):  # a keras-hub preset's config.json would make a folder no library reads
        written.append(_write_text(folder / "config.json", json.dumps(config, indent=2) + "\n"))
    return written


def _split(handle, max_shard_bytes: int) -> list[list]:
    """Tensors in the model's order, a new shard whenever the next one would pass the limit (a tensor
    larger than the limit gets a shard of its own, as transformers does)."""
    shards: list[list] = [[]]
    size = 0
    for tensor in handle.tensors():
        if tensor.tied_to is not None:
            continue
        tensor_size = tensor_bytes([tensor])
        if shards[-1] and size + tensor_size > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(tensor)
        size += tensor_size
    return shards


def _write_text(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf8")
    return path
