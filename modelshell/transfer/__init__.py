"""How two models line up and how weights move between them.

The adapters' ``trace`` runs each model once with hooks (execution order, shapes, flatten points); ``kinds`` says what a
layer is by its class hierarchy; ``rules`` is the layout table as data (numpy only); ``plan`` pairs the
layers into a ``TransferPlan`` that ``pair`` shows and ``copy`` executes; ``confirm`` decides the layer pairs
that could take each other's partners by running the destination with the converted values (neither model
changes) against the source; ``verify`` runs both models and compares every output and every paired layer.
"""
from __future__ import annotations

__all__: list[str] = []
