"""The Keras adapter: Keras 3 models and layers, and tf-keras (Keras 2) models built in Python.

Importing this module imports keras (and with it TensorFlow); nothing else in modelshell does.
"""
from __future__ import annotations

import os
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter is not for users

import keras  # noqa: E402
from absl import logging as _absl_logging  # noqa: E402

# Keras logs advice (such as "HDF5 is a legacy format") through absl at WARNING; a save the user asked
# for is not the place for it.
_absl_logging.set_verbosity(_absl_logging.ERROR)

from modelshell.errors import ModelshellError, first_line  # noqa: E402
from modelshell.frameworks.base import LayerNode, ModelHandle, TensorInfo  # noqa: E402

__all__ = ["KerasModel", "load_keras_file", "version"]

version = keras.__version__


def _variable_name(variable: Any) -> str:
    """Keras 3 variables have a unique ``path`` ("sequential/conv2d/kernel"); tf-keras ones a ``name``
    with a ":0" suffix ("conv2d/kernel:0")."""
    path = getattr(variable, "path", None)
    return path if isinstance(path, str) else variable.name.removesuffix(":0")


def _dtype_name(variable: Any) -> str:
    dtype = variable.dtype
    return dtype if isinstance(dtype, str) else getattr(dtype, "name", str(dtype))


def _sublayers(layer: Any) -> list[Any]:
    """Direct sub-layers, without the InputLayer that Keras adds to Sequential models (as summary() does)."""
    return [
        child for child in layer._flatten_layers(include_self=False, recursive=False)
        if type(child).__name__ != "InputLayer"
    ]


class KerasModel(ModelHandle):
    """A live Keras model or layer: tensors in ``model.weights`` order, each with its variable path."""

    framework = "keras"

    def _owners(self) -> dict[int, str]:
        """Which layer (by path of layer names) owns each variable directly."""
        owners: dict[int, str] = {}

        def visit(layer: Any, path: str) -> None:
            for child in _sublayers(layer):
                visit(child, f"{path}/{child.name}" if path else child.name)
            for variable in layer.weights:
                owners.setdefault(id(variable), path)

        visit(self.obj, "")
        return owners

    def tensors(self) -> list[TensorInfo]:
        owners = self._owners()
        first_of: dict[int, str] = {}
        infos = []
        for variable in self.obj.weights:
            name = _variable_name(variable)
            first = first_of.setdefault(id(variable), name)
            infos.append(
                TensorInfo(
                    name=name,
                    shape=tuple(int(d) for d in variable.shape),
                    dtype=_dtype_name(variable),
                    trainable=bool(variable.trainable),
                    layer=owners.get(id(variable), ""),
                    role=name.rsplit("/", 1)[-1],
                    kind="variable",
                    tied_to=None if first == name else first,
                )
            )
        return infos

    def layer_tree(self) -> LayerNode:
        infos = {}
        for variable, info in zip(self.obj.weights, self.tensors()):
            infos.setdefault(id(variable), info)
        return self._node(self.obj, self.obj.name, infos)

    def _node(self, layer: Any, label: str, infos: dict[int, TensorInfo]) -> LayerNode:
        children = [self._node(child, child.name, infos) for child in _sublayers(layer)]
        inner = {id(v) for child in _sublayers(layer) for v in child.weights}
        own = [infos[id(v)] for v in layer.weights if id(v) not in inner and id(v) in infos]
        return LayerNode(label, type(layer).__name__, own, children)

    def read(self, name: str) -> np.ndarray:
        for variable in self.obj.weights:
            if _variable_name(variable) == name:
                return np.array(variable.numpy() if hasattr(variable, "numpy") else variable)
        raise ModelshellError(f"{self.obj.name} has no variable named {name!r}")

    def save(self, path: Path) -> None:
        name = path.name
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if name.endswith(".weights.h5"):
                self.obj.save_weights(str(path))
            elif path.suffix in (".keras", ".h5"):
                self.obj.save(str(path))
            elif path.suffix == ".safetensors":
                from safetensors.numpy import save_file

                tensors = {t.name: self.read(t.name) for t in self.tensors() if t.tied_to is None}
                save_file(tensors, str(path), metadata={"format": "keras"})
            else:
                raise ModelshellError(
                    f"a Keras model saves to .keras, .h5, .weights.h5 or .safetensors, not {path.suffix or name}",
                    "to get a torch file, copy the weights into a torch model and save that",
                )


def load_keras_file(path: Path, trust: bool) -> ModelHandle:
    """Load a whole Keras model (``.keras`` or legacy ``.h5``). ``safe_mode`` stays on unless trusted, so a
    Lambda layer's pickled bytecode is never run without the user's say-so."""
    if path.suffix.lower() == ".keras" and not zipfile.is_zipfile(path):
        # Keras reports any non-zip ``.keras`` as "File not found", which sends users looking elsewhere.
        raise ModelshellError(f"cannot read {path} as a Keras model: it is not a zip archive (damaged or truncated?)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = keras.saving.load_model(str(path), compile=False, safe_mode=not trust)
    except ValueError as exc:
        if "safe_mode" in str(exc) or "unsafe" in str(exc).lower():
            raise ModelshellError(
                f"{path} contains code (a Lambda layer or custom object) that Keras runs only outside safe mode",
                f"if you trust the file, `load {path} --trust` loads it",
            ) from exc
        raise ModelshellError(f"cannot read {path} as a Keras model: {first_line(exc)}") from exc
    except Exception as exc:  # noqa: BLE001 - a corrupt file fails in many ways; all are one user error
        raise ModelshellError(f"cannot read {path} as a Keras model: {first_line(exc)}") from exc
    return KerasModel(model, str(path), trust)
