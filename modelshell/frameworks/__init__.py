"""Framework adapters: the only place that imports torch, keras or tensorflow.

``base`` defines the framework-neutral ``ModelHandle`` the commands see. ``torch`` and ``keras`` are
imported lazily, the first time a model of that framework is loaded or wrapped, so ``import modelshell``
stays fast. ``detect`` tells which framework a live Python object belongs to without importing any.
"""
from __future__ import annotations

__all__: list[str] = []
