"""The framework-neutral view of a model that every command works on.

A ``ModelHandle`` wraps one model: a live torch module, a Keras model, or a weights-only file that has no
architecture. Commands ask it for ``tensors()`` (flat, in the framework's own order) and ``layer_tree()``
(nested), read arrays with ``read(name)``, and ``save(path)``; nothing outside the adapters needs to know
which framework is behind it.
"""
from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from modelshell.core.errors import ModelshellError

if TYPE_CHECKING:  # numpy costs ~0.15 s to import; the shell's start-up does not need it
    import numpy as np

__all__ = [
    "TensorInfo", "LayerNode", "Layer", "LayerCall", "InputSlot", "ModelHandle", "tree_from_names", "count_params",
    "layers_from_tensors", "keras_snake_case",
]


@dataclass(frozen=True)
class TensorInfo:
    """One weight tensor as the framework names it.

    ``layer`` is the path of the layer that owns it and ``role`` its attribute there (weight, bias, kernel,
    running_mean, ...): pairing across frameworks works on (layer, role), never on raw shapes.
    ``trainable`` is None where the source cannot tell (a weights-only file). ``tied_to`` names the first
    tensor sharing the same storage, so parameter totals count shared weights once.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    trainable: bool | None
    layer: str
    role: str
    kind: str = "parameter"  # "parameter" | "buffer" | "variable" | "tensor"
    tied_to: str | None = None

    @property
    def size(self) -> int:
        return math.prod(self.shape)  # not a functools.cached_property: in 3.11 its lock costs more than this

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "params": self.size,
            "trainable": self.trainable,
            "kind": self.kind,
            "layer": self.layer,
            "role": self.role,
            "tied_to": self.tied_to,
        }


@dataclass
class LayerNode:
    """A layer with the tensors it owns directly and its sub-layers, for the ``shapes`` tree. ``path`` is
    the layer's path as ``trace`` names it ("" for the model itself and in weights-only files)."""

    name: str
    class_name: str
    tensors: list[TensorInfo] = field(default_factory=list)
    children: list["LayerNode"] = field(default_factory=list)
    path: str = ""

    def param_count(self) -> int:
        own = sum(t.size for t in self.tensors if t.tied_to is None and t.kind != "buffer")
        return own + sum(child.param_count() for child in self.children)


@dataclass
class Layer:
    """A layer as pairing sees it: where it is, what kind it is, the tensors it owns by role, its config.

    ``kind`` is the framework's class name (``Conv2d``, ``Dense``), or "" for a weights-only file, whose
    layers take their kind from the layer they pair with. ``roles`` map the names the layout rules use
    (``weight``, ``kernel``, ``query/kernel``) to the model's full tensor names, in the model's order.
    ``config`` holds what the warnings need (epsilon, padding, strides, reset_after, ...).
    """

    path: str
    kind: str
    roles: dict[str, TensorInfo]
    config: dict[str, Any] = field(default_factory=dict)
    lineage: tuple[str, ...] = ()  # the class names of its MRO, most derived first (kinds.kind_of reads it)


@dataclass(frozen=True)
class LayerCall:
    """What one layer did in a traced forward pass: when it first ran, and the shapes it saw.

    ``flattened`` is the shape of the feature map (batch first, in the framework's own layout: torch
    ``(N, C, H, W)``, Keras ``(N, H, W, C)``) that the layer's input is a flattening of, when it is one;
    that is where torch and Keras order a Dense layer's inputs differently, and only a trace can tell it
    from a global pool (whose output has the same number of features as the channels)."""

    path: str
    order: int
    input_shapes: tuple[tuple[int, ...], ...]
    output_shape: tuple[int, ...] | None
    flattened: tuple[int, ...] | None = None
    # Where the layer's output went and where its inputs came from, where the framework can tell (None
    # where it cannot: a subclassed Keras model's own code). ``readers``: the layers whose own code read
    # the output, "" for anything else that did (an operation between layers, the model's caller);
    # ``fed_by``: the layers whose outputs its inputs were, "" for a tensor no layer made. A bias can be
    # folded into a BatchNorm only where the layer feeds that norm and nothing else (transfer/folds.py).
    readers: frozenset[str] | None = None
    fed_by: frozenset[str] | None = None


@dataclass(frozen=True)
class InputSlot:
    """One input a model takes: its argument or input name ("" for a lone positional input), its shape
    (None for a size the model does not fix) and dtype."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str
    required: bool = True  # False for a keyword argument the model may go without (torch, transformers TF)


def keras_snake_case(class_name: str) -> str:
    """Keras's ``to_snake_case``: the name Keras makes for a layer of this class (``Conv2D`` ->
    ``conv2d``), which weights files and automatic layer names use."""
    kind = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", re.sub(r"\W+", "", class_name))
    return re.sub("([a-z])([A-Z])", r"\1_\2", kind).lower()


def layers_from_tensors(tensors: list[TensorInfo]) -> list[Layer]:
    """Layers of a weights-only file: tensors grouped by their layer path, in file order, kind unknown."""
    layers: dict[str, Layer] = {}
    for tensor in tensors:
        if tensor.tied_to is None:
            layers.setdefault(tensor.layer, Layer(tensor.layer, "", {})).roles[tensor.role] = tensor
    return list(layers.values())


def count_params(tensors: list[TensorInfo]) -> dict[str, int]:
    """Totals as each framework's own summary shows them, so users can check us against it: torchinfo
    counts torch parameters and not buffers (running statistics are reported apart, as ``buffers``);
    Keras ``count_params()`` counts every variable, non-trainable ones included. Tied tensors count once."""
    unique = [t for t in tensors if t.tied_to is None]
    params = [t for t in unique if t.kind != "buffer"]
    trainable = sum(t.size for t in params if t.trainable)
    total = sum(t.size for t in params)
    buffers = sum(t.size for t in unique if t.kind == "buffer")
    return {"total": total, "trainable": trainable, "non_trainable": total - trainable, "buffers": buffers}


def tree_from_names(root_name: str, root_class: str, tensors: list[TensorInfo]) -> LayerNode:
    """A layer tree from dotted or slashed tensor names, for weights-only files that have no layers."""
    root = LayerNode(root_name, root_class)
    nodes: dict[str, LayerNode] = {"": root}
    for tensor in tensors:
        parent = root
        path = ""
        for part in _split_layer_path(tensor.layer):
            path = f"{path}/{part}" if path else part
            if path not in nodes:
                nodes[path] = LayerNode(part, "")
                parent.children.append(nodes[path])
            parent = nodes[path]
        parent.tensors.append(tensor)
    return root


def _split_layer_path(layer: str) -> list[str]:
    return [part for part in layer.replace("/", ".").split(".") if part] if layer else []


class ModelHandle(ABC):
    """One model in the session, whatever its framework.

    ``obj`` is the Python object bound to the model's name in the session namespace (the nn.Module, the
    Keras model, or a mapping of arrays for a weights-only file), so Python lines and commands see the
    same thing.
    """

    framework: str = ""
    has_architecture: bool = True
    config: dict | None = None  # a model folder's config.json, kept with the model read or built from it
    folder: tuple[str, Path, tuple[str, str]] | None = None  # (kind, path, (architecture, sizes))
    note: str | None = None  # how it was found or built, said by `load`

    def __init__(self, obj: Any, source: str, trusted: bool = False) -> None:
        self.obj = obj
        self.source = source
        self.trusted = trusted
        # Set by `copy` writing into the model, cleared by `save`: leaving the shell with it set asks first.
        self.changed = False
        # Completed writes, counted by ``write`` as its last step: a Ctrl-C that comes after it is told
        # apart from one that rolled the write back.
        self.writes = 0

    @property
    def class_name(self) -> str:
        return type(self.obj).__name__

    @abstractmethod
    def tensors(self) -> list[TensorInfo]:
        """Every weight tensor, in the framework's own order (state_dict order, model.weights order)."""

    @abstractmethod
    def layer_tree(self) -> LayerNode:
        """The layers as a tree, each with the tensors it owns directly."""

    @abstractmethod
    def read(self, name: str) -> np.ndarray:
        """One tensor's values as a numpy array (a copy the caller may keep)."""

    @abstractmethod
    def save(self, path: Path) -> None:
        """Write the model to ``path``; the format follows the suffix. ``path`` is a temporary file that
        the caller renames into place, so adapters never need to care about atomicity."""

    def param_counts(self) -> dict[str, int]:
        return count_params(self.tensors())

    def safetensors_metadata(self) -> dict[str, str]:
        """The ``__metadata__`` a safetensors file written from this model carries: whose naming its
        tensors follow (``format``, which transformers reads). A model read from safetensors adds what
        that file carried, so a save keeps who wrote it and how."""
        return {"format": "keras" if self.framework == "keras" else "pt"}

    def summary(self) -> list[str]:
        """Lines about where the model came from that `weights` and `models` show: the folder's config,
        in short, for a model read or built from a model folder."""
        if self.folder is None:
            return []
        kind, path, (architecture, sizes) = self.folder
        return [f"{kind} folder {path.name}: {architecture}" + (f" ({sizes})" if sizes else "")]

    # --- what pair, copy and verify need ------------------------------------------------------------
    def layers(self, tensors: list[TensorInfo] | None = None) -> list[Layer]:
        """The layers that own tensors, in the model's order (registration order, ``model.layers`` order).
        Weights-only files group tensors by name; adapters with an architecture do better. ``tensors`` is
        ``self.tensors()`` when the caller has it already (listing a big Keras model is not free)."""
        return layers_from_tensors(self.tensors() if tensors is None else tensors)

    def iter_arrays(self, names: list[str]) -> Iterator["np.ndarray"]:
        """The arrays of ``names``, one at a time and in that order, for ``copy``: adapters look their
        tensors up once and hand out views where they can, so a large model is never held twice over."""
        for name in names:
            yield self.read(name)

    def prepared(self, values: dict[str, "np.ndarray"]) -> dict[str, Any]:
        """``values`` made into the tensors this framework computes with and stores, each made once:
        ``forward_with_taps`` and ``write`` take them as they take arrays, so the run that confirms a copy
        and the write after it share one conversion (most of a write into TensorFlow is that conversion).
        The names and shapes are checked as ``write`` checks them. By default the values as they are."""
        return values

    def write(self, values: dict[str, "np.ndarray"]) -> None:
        """Set tensors by full name. Every name and shape is checked before the first write, so a bad
        value leaves the model as it was. Adapters of large models may consume the dict (smallest first),
        so the memory of what is written is given back as the write goes."""
        raise ModelshellError(f"cannot write weights into a {self.class_name}")

    def forward(self, inputs: "list[np.ndarray] | dict[str, np.ndarray]") -> Any:
        """Run the model in inference mode; the outputs as nested lists/dicts of numpy arrays. ``inputs`` is
        a list (positional) or a dict by input name (keyword arguments for torch, a dict for Keras)."""
        raise ModelshellError(f"a {self.class_name} has no architecture to run", "load or build the model itself")

    def forward_with_taps(self, inputs: "list[np.ndarray] | dict[str, np.ndarray]", paths: list[str],
                          values: "dict[str, np.ndarray] | None" = None,
                          record: "Callable[[str, Any], None] | None" = None) -> tuple[Any, dict[str, Any]]:
        """``forward``, also recording (as copies) the output of each layer in ``paths`` (as ``layers()``
        names them), for ``verify --layers``. With ``values`` (tensor name -> array), the model computes
        as if those tensors held them, and is left exactly as it was: how a pairing is tried before a
        copy writes anything (torch ``functional_call``, Keras ``StatelessScope``). With ``record``, each
        layer's output goes to ``record(path, output)`` as it is made (a view, good until the layer after
        it runs) instead of being kept: a comparison made on the spot holds no model's activations twice."""
        raise ModelshellError(f"a {self.class_name} has no layers to run", "load or build the model itself")

    def trace(self, inputs: "list[np.ndarray] | dict[str, np.ndarray]") -> dict[str, LayerCall]:
        """One forward pass with hooks: each layer (by ``layers()`` path, sub-layers without tensors too)
        that ran, with its execution order and shapes."""
        raise ModelshellError(f"a {self.class_name} has no layers to run", "load or build the model itself")

    def input_spec(self) -> list[tuple[tuple[int | None, ...], str]] | None:
        """Shapes (None for unknown, such as the batch) and dtypes of the inputs, where the model knows."""
        return None

    def input_slots(self) -> list[InputSlot] | None:
        """The inputs by name, where the model says (a Keras dict input, a torch ``forward`` signature);
        None where it does not."""
        spec = self.input_spec()
        if spec is None:
            return None
        return [InputSlot("", shape, dtype) for shape, dtype in spec]
