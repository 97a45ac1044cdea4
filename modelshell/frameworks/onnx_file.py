"""The initializers of an ``.onnx`` file (the graph's stored weights), read with the ``onnx`` package.

The protobuf is parsed without its external data; a tensor kept in a file beside the model is read from
there (through ``onnx.numpy_helper``) only when it is asked for, and such a file must exist at ``load``.
Nothing of the graph is run: only initializers are weights here.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from modelshell.core.errors import ModelshellError, first_line
from modelshell.frameworks import quiet
from modelshell.frameworks.weights_files import ArrayFile, guess_layout

__all__ = ["OnnxInitializers"]


class OnnxInitializers(ArrayFile):
    kind = "onnx initializers"

    def _read_header(self) -> dict[str, tuple[tuple[int, ...], str]]:
        quiet.require("onnx", f"loading {self.path.name}")
        import onnx
        from onnx import helper

        try:
            model = onnx.load(str(self.path), load_external_data=False)
        except Exception as exc:  # noqa: BLE001 - DecodeError and whatever protobuf raises on damage
            raise ModelshellError(f"cannot read {self.path} as ONNX: {first_line(exc) or type(exc).__name__}") from exc
        self._tensors = {t.name: t for t in model.graph.initializer}
        try:
            entries = {name: (tuple(int(d) for d in t.dims), str(np.dtype(helper.tensor_dtype_to_np_dtype(t.data_type))))
                       for name, t in self._tensors.items()}
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelshellError(f"cannot read {self.path} as ONNX: an initializer has an unknown data type "
                                  f"({first_line(exc)})") from exc
        for name, t in self._tensors.items():
            self._check_data(name, t, entries[name])
        self.layout = guess_layout(list(entries))
        return entries

    def _check_data(self, name: str, tensor, entry: tuple[tuple[int, ...], str]) -> None:
        """Damage found at ``load``, not at a later read: raw bytes that do not fit the dims, or external
        data that is not a file beside the model (a path out of its folder is refused too)."""
        from onnx import external_data_helper

        shape, dtype = entry
        wanted = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        if not external_data_helper.uses_external_data(tensor):
            if tensor.raw_data and len(tensor.raw_data) != wanted:
                raise ModelshellError(f"cannot read {self.path} as ONNX: initializer {name!r} holds "
                                      f"{len(tensor.raw_data)} bytes, not the {wanted} of its shape {shape}")
            return
        info = {e.key: e.value for e in tensor.external_data}
        location = info.get("location", "")
        target = (self.path.parent / location).resolve()
        if Path(location).is_absolute() or self.path.parent.resolve() not in target.parents or not target.is_file():
            raise ModelshellError(f"{self.path}: initializer {name!r} keeps its data in {location!r}, "
                                  f"which is not a file beside the model")
        offset = int(info.get("offset") or 0)
        wanted = int(info.get("length") or wanted)
        if offset + wanted > target.stat().st_size:
            raise ModelshellError(f"cannot read {self.path} as ONNX: initializer {name!r} lies past the end of "
                                  f"{location} (truncated or damaged)")

    def _read_array(self, name: str) -> np.ndarray:
        from onnx import numpy_helper

        try:
            return numpy_helper.to_array(self._tensors[name], base_dir=str(self.path.parent))
        except Exception as exc:  # noqa: BLE001 - a tensor whose bytes do not fit its dims
            raise ModelshellError(f"cannot read {name!r} from {self.path}: {first_line(exc)}") from exc
