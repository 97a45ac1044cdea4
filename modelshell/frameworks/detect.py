"""Tell which framework a live Python object belongs to, without importing any framework.

If torch was never imported, no object can be a torch module; the same holds for Keras. So the checks
look at ``sys.modules`` first and at the class hierarchy's module names, which costs nothing.
"""
from __future__ import annotations

import sys
from typing import Any

__all__ = ["framework_of", "wrap_object"]

_KERAS_PACKAGES = ("keras", "tf_keras", "tensorflow")


def framework_of(obj: Any) -> str | None:
    """"torch", "keras" or None for an object that is neither a torch module nor a Keras layer/model."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(obj, torch.nn.Module):
        return "torch"
    for cls in type(obj).__mro__:
        if cls.__name__ == "Layer" and cls.__module__.split(".")[0] in _KERAS_PACKAGES:
            return "keras"
    return None


def wrap_object(obj: Any, source: str, trusted: bool = False):
    """A ModelHandle for a live torch module or Keras model, or None if ``obj`` is neither."""
    framework = framework_of(obj)
    if framework == "torch":
        from modelshell.frameworks.torch import TorchModule

        return TorchModule(obj, source, trusted)
    if framework == "keras":
        from modelshell.frameworks.keras import KerasModel

        return KerasModel(obj, source, trusted)
    return None
