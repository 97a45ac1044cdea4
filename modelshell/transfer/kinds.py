"""What a layer is, by its class hierarchy rather than its exact class name.

Real models subclass the library's layers (torchvision's ``LayerNorm2d`` is a ``LayerNorm``, keras-hub's
``ReversibleEmbedding`` an ``Embedding`` and its ``CachedMultiHeadAttention`` a ``MultiHeadAttention``):
such a layer computes what its base does with the same tensors, so it pairs by the base's rule. The kind
of a layer is the first class of its lineage (its MRO, most derived first) that a layout rule knows;
where none is known, its own class name.
"""
from __future__ import annotations

from functools import lru_cache

from modelshell.frameworks.base import Layer

__all__ = ["kind_of", "known_kinds"]


@lru_cache(maxsize=1)
def known_kinds() -> frozenset[str]:
    """Every class name a layout rule names, on either side, and the kinds adapters treat whole."""
    from modelshell.transfer.rules import RULES

    names = {r.keras_kind for r in RULES} | {c for r in RULES for c in r.torch_classes}
    return frozenset(names | {"MultiheadAttention", "MultiHeadAttention", "SeparableConv2d"})


def kind_of(layer: Layer) -> str:
    """The layer's kind: the most derived class in its lineage that a rule knows, else its own kind."""
    known = known_kinds()
    for name in layer.lineage or (layer.kind,):
        if name in known:
            return name
    return layer.kind
