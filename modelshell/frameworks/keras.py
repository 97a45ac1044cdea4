"""The Keras adapter: Keras 3 models and layers, and tf-keras (Keras 2) models built in Python.

Importing this module imports keras (and with it TensorFlow); nothing else in modelshell does.
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import json
import math
import re
import warnings
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from modelshell.frameworks import quiet

quiet.install()  # TensorFlow's C++ start-up chatter is not for users (also when no session asked first)

import keras  # noqa: E402
from absl import logging as _absl_logging  # noqa: E402

# Keras logs advice (such as "HDF5 is a legacy format") through absl at WARNING; a save the user asked
# for is not the place for it.
_absl_logging.set_verbosity(_absl_logging.ERROR)

from modelshell.core.errors import ModelshellError, first_line  # noqa: E402
from modelshell.safety.interrupts import deferred_interrupts, interruptible  # noqa: E402
from modelshell.frameworks.base import (  # noqa: E402
    InputSlot, Layer, LayerCall, LayerNode, ModelHandle, TensorInfo, keras_snake_case,
)
from modelshell.frameworks.copying import copy_into  # noqa: E402
from modelshell.safety.probe import probe_hdf5  # noqa: E402
from modelshell.safety.resources import check_declared_shapes, check_fits, unpacked_zip_size  # noqa: E402

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


def _sublayers(layer: Any) -> list[tuple[str, Any]]:
    """Direct sub-layers with the names pairing should see, without the InputLayer that Keras adds to
    Sequential models (as summary() does).

    A sub-layer is named by its own name when someone gave it one (transformers' TF classes name their
    layers as the torch twins' attributes: ``attention``, ``output``, ``layer_._0``), else by the attribute
    that holds it (``self.conv1 = Conv2D(...)`` is ``conv1``, a list ``self.blocks`` gives ``blocks.0``),
    as a torch module's children are: Keras's automatic ``conv2d_3`` says nothing about which torch
    layer it is."""
    attributes: dict[int, str] = {}
    for attribute, value in vars(layer).items():
        if attribute.startswith("_"):
            continue
        items = enumerate(value) if isinstance(value, (list, tuple)) else [(None, value)]
        for index, item in items:
            attributes.setdefault(id(item), attribute if index is None else f"{attribute}.{index}")
    return [
        (child.name if id(child) not in attributes or not _automatic_name(child) else attributes[id(child)], child)
        for child in layer._flatten_layers(include_self=False, recursive=False)
        if type(child).__name__ != "InputLayer"
    ]


def _automatic_name(layer: Any) -> bool:
    """Whether Keras made the layer's name from its class (``dense``, ``conv2d_3``)."""
    return re.fullmatch(rf"{re.escape(keras_snake_case(type(layer).__name__))}(_\d+)?", layer.name) is not None


class KerasModel(ModelHandle):
    """A live Keras model or layer: tensors in ``model.weights`` order, each with its variable path."""

    framework = "keras"

    def _owners(self) -> dict[int, str]:
        """Which layer (by path of layer names) owns each variable directly."""
        owners: dict[int, str] = {}

        def visit(layer: Any, path: str) -> None:
            for name, child in _sublayers(layer):
                visit(child, f"{path}/{name}" if path else name)
            for variable in layer.weights:
                owners.setdefault(id(variable), path)

        visit(self.obj, "")
        return owners

    def _names(self, owners: dict[int, str] | None = None) -> dict[int, str]:
        """Each variable's name: its path, unique as a rule; where variables share one (keras-hub's T5
        makes its encoder's and its decoder's relative attention bias both ``self_attention/embeddings``),
        each of those is named by the path of the layer that owns it and the path's last part, so that
        reading or writing one never reaches the other."""
        paths = {id(v): _variable_name(v) for v in self.obj.weights}
        counts = collections.Counter(paths.values())
        if all(n == 1 for n in counts.values()):
            return paths
        owners = self._owners() if owners is None else owners
        names = {key: f"{owners[key]}/{path.rpartition('/')[2]}" if counts[path] > 1 and owners.get(key) else path
                 for key, path in paths.items()}
        seen: collections.Counter[str] = collections.Counter()
        for key, name in names.items():  # one layer that made two variables of one name: numbered
            seen[name] += 1
            if seen[name] > 1:
                names[key] = f"{name}#{seen[name] - 1}"
        return names

    def _variables_by_name(self) -> dict[str, Any]:
        names = self._names()
        return {names[id(v)]: v for v in self.obj.weights}

    def tensors(self) -> list[TensorInfo]:
        _require_built(self.obj)
        owners = self._owners()
        names = self._names(owners)
        first_of: dict[int, str] = {}
        infos = []
        for variable in self.obj.weights:
            name = names[id(variable)]
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
        return self._node(self.obj, self.obj.name, infos, "")

    def _node(self, layer: Any, label: str, infos: dict[int, TensorInfo], path: str) -> LayerNode:
        prefix = f"{path}/" if path else ""
        children = [self._node(child, name, infos, prefix + name) for name, child in _sublayers(layer)]
        inner = {id(v) for _, child in _sublayers(layer) for v in child.weights}
        own = [infos[id(v)] for v in layer.weights if id(v) not in inner and id(v) in infos]
        return LayerNode(label, type(layer).__name__, own, children, path)

    def read(self, name: str) -> np.ndarray:
        variable = self._variables_by_name().get(name)
        if variable is not None:
            return np.array(variable.numpy() if hasattr(variable, "numpy") else variable)
        raise ModelshellError(f"{self.obj.name} has no variable named {name!r}")

    def layers(self, tensors: list[TensorInfo] | None = None, whole_attention: bool = True) -> list[Layer]:
        """``whole_attention`` False: a MultiHeadAttention's query/key/value/output projections are
        layers of their own (EinsumDense), to pair with a torch model's separate Linear projections."""
        infos: dict[int, TensorInfo] = {}
        for variable, info in zip(self.obj.weights, self.tensors() if tensors is None else tensors):
            infos.setdefault(id(variable), info)
        found: list[Layer] = []

        def visit(layer: Any, path: str) -> list[Any]:
            """The layer's variables, its sub-layers' included (``layer.weights``, read once per layer: a
            tf-keras layer gathers them from its whole subtree on every read)."""
            kind, lineage = type(layer).__name__, tuple(cls.__name__ for cls in type(layer).__mro__)
            whole = next((_WHOLE_LAYERS[n] for n in lineage if n in _WHOLE_LAYERS), None)
            if whole is not None and not whole_attention and "MultiHeadAttention" in lineage:
                whole = None
            inner: set[int] = set()
            if whole is None:
                for name, child in _sublayers(layer):
                    inner |= {id(v) for v in visit(child, f"{path}/{name}" if path else name)}
            variables = layer.weights
            own = [v for v in variables if id(v) not in inner and id(v) in infos]
            if own:
                roles = _roles(layer, own, whole or 1, infos)
                found.append(Layer(path, kind, roles, _config(layer), lineage))
            return variables

        visit(self.obj, "")
        return found

    def write(self, values: dict[str, np.ndarray]) -> None:
        variables = self._checked_variables(values)
        dtypes = {name: _dtype_name(variables[name]) for name in values}
        # Each variable's value is backed up (a snapshot) just before its assign and put back on any
        # exception (an interrupt in the middle too), so copy stays all or nothing. The old buffers are
        # held until the end, so the largest goes first: its new buffer then comes while the fewest old
        # buffers are held. Each value is converted just before its assign, never all of them up front.
        # Ctrl-C is taken between two variables only, and never while the backups go back.
        backups: list[tuple[Any, Any]] = []
        with deferred_interrupts() as interrupts:
            try:
                for name in sorted(values, key=lambda n: -_size(values[n])):
                    interrupts.check()
                    backups.append((variables[name], _snapshot(variables[name])))
                    variables[name].assign(_assignable(values.pop(name), dtypes[name]))
                self.writes += 1
            except BaseException:
                for variable, backup in reversed(backups):
                    type(variable).assign(variable, backup)  # the class's own assign, whatever wraps it
                raise

    def prepared(self, values: dict[str, np.ndarray]) -> dict[str, Any]:
        """Each value made once into the tensor ``assign`` keeps (``_assignable``): the confirming run
        substitutes it, and the write after it assigns it without converting again."""
        variables = self._checked_variables(values)
        return {name: _assignable(value, _dtype_name(variables[name])) for name, value in values.items()}

    def _checked_variables(self, values: dict[str, np.ndarray]) -> dict[str, Any]:
        """The model's variables by name, once every name in ``values`` is known and every shape fits."""
        variables = self._variables_by_name()
        for name, value in values.items():
            if name not in variables:
                raise ModelshellError(f"{self.obj.name} has no variable named {name!r}")
            if tuple(np.shape(value)) != tuple(variables[name].shape):
                raise ModelshellError(f"{name}: shape {tuple(np.shape(value))} does not fit {tuple(variables[name].shape)}")
        return variables

    def iter_arrays(self, names: list[str]):
        variables = self._variables_by_name()
        for name in names:
            # A read-only view of a snapshot, not `.numpy()`, which copies (0.17 s for 64 MB): copy and
            # --stats only read these, and a later assign does not change a snapshot.
            yield np.asarray(_snapshot(variables[name]))

    def forward(self, inputs) -> Any:
        """The model's outputs on ``inputs``. Ctrl-C interrupts the model's own ``call`` only: Keras's
        ``__call__`` around it sets a call context and name scopes up and resets them in ``finally``
        blocks, which a second Ctrl-C must not cut short."""
        with deferred_interrupts() as interrupts, interruptible(interrupts, self.obj, "call"):
            if isinstance(inputs, dict):
                outputs = self.obj(dict(inputs), training=False)
            else:
                outputs = self.obj(inputs[0] if len(inputs) == 1 else list(inputs), training=False)
        return _to_numpy(outputs)

    def trace(self, inputs) -> dict[str, LayerCall]:
        """Every layer's first call in order, with shapes, by wrapping each layer's ``call`` on the instance
        for one eager call. A Dense layer whose input is the very tensor some layer made from a 4-d
        input of the same size (Flatten, Reshape) takes a flattened map; a global pool makes a (N, C)
        tensor from a map of another size, so it is never mistaken for one."""
        calls: dict[str, LayerCall] = {}
        started: dict[str, int] = {}
        made_from_map: dict[int, tuple[tuple[int, ...], Any]] = {}  # id(output) -> (4-d input shape, output)

        def wrap(layer: Any, path: str, call: Any):
            def traced(*args: Any, **kwargs: Any) -> Any:
                started.setdefault(path, len(started))  # a block starts before what it calls
                output = call(*args, **kwargs)
                tensors = [a for a in args if hasattr(a, "shape") and hasattr(a, "dtype")]
                shapes = tuple(_shape(t) for t in tensors)
                first_out = next(iter(_leaves(output)), None)
                if tensors and first_out is not None and len(shapes[0]) == 4 \
                        and int(np.prod(shapes[0][1:])) == int(np.prod(_shape(first_out)[1:])):
                    made_from_map[id(first_out)] = (shapes[0], first_out)
                if path not in calls:
                    flattened = made_from_map.get(id(tensors[0]), (None,))[0] if tensors else None
                    if flattened is not None and len(shapes[0]) != 2:
                        flattened = None
                    calls[path] = LayerCall(path, started[path], shapes,
                                            None if first_out is None else _shape(first_out), flattened)
                return output
            return traced

        layers = self._all_layers()
        with deferred_interrupts():  # every layer wrapped is unwrapped; Ctrl-C lands in the forward pass only
            try:
                for path, layer in layers:
                    object.__setattr__(layer, "call", wrap(layer, path, layer.call))
                self.forward(inputs)
            finally:
                _unwrap_calls([layer for _, layer in layers])
        return _with_flow(calls, self.obj, layers)

    def _all_layers(self) -> list[tuple[str, Any]]:
        """Every sub-layer once, by the path ``layers()`` names it with."""
        found: list[tuple[str, Any]] = []
        seen: set[int] = set()

        def visit(layer: Any, path: str) -> None:
            for name, child in _sublayers(layer):
                if id(child) in seen:
                    continue
                seen.add(id(child))
                child_path = f"{path}/{name}" if path else name
                found.append((child_path, child))
                visit(child, child_path)

        visit(self.obj, "")
        return found

    def input_slots(self) -> list[InputSlot] | None:
        """A functional model's inputs by name when it takes a dict (keras-hub's ``token_ids``,
        ``padding_mask``...), or a transformers TF model's ``input_signature``; else the input spec."""
        struct = getattr(self.obj, "_inputs_struct", None)
        if isinstance(struct, dict):
            return [InputSlot(name, tuple(None if d is None else int(d) for d in t.shape), _dtype_name(t))
                    for name, t in struct.items()]
        signature = getattr(type(self.obj), "input_signature", None)
        if signature is not None:
            try:
                specs = self.obj.input_signature
            except Exception:  # noqa: BLE001 - a property of someone else's class
                specs = None
            if isinstance(specs, dict):
                return [InputSlot(name, tuple(None if d is None else int(d) for d in spec.shape),
                                  spec.dtype.name, required=i == 0) for i, (name, spec) in enumerate(specs.items())]
        return super().input_slots()

    def forward_with_taps(self, inputs, paths: list[str], values: dict[str, np.ndarray] | None = None,
                          record: Callable[[str, Any], None] | None = None) -> tuple[Any, dict[str, Any]]:
        """Keras has no forward hooks: each tapped layer's ``call`` is wrapped on the instance for the
        duration of one eager call, then the class's own ``call`` is visible again."""
        taps: dict[str, Any] = {}
        found = [(path, layer) for path, layer in ((p, self._layer_at(p)) for p in paths) if layer is not None]
        with deferred_interrupts():  # a Ctrl-C never leaves a wrapped call behind: it lands in the forward pass only
            wrapped: list[Any] = []
            try:
                with _linear_activations([layer for _, layer in found]) as activations:
                    for path, layer in found:
                        object.__setattr__(layer, "call", _tapped(layer.call, activations.get(id(layer)), taps, path,
                                                                         record))
                        wrapped.append(layer)
                    with self._substituted(values or {}):
                        return self.forward(inputs), taps
            finally:
                _unwrap_calls(wrapped)

    @contextlib.contextmanager
    def _substituted(self, values: dict[str, np.ndarray]) -> Iterator[None]:
        """The model computes as if its variables held ``values``. Keras 3 reads them from a
        ``StatelessScope`` (what ``stateless_call`` uses); a tf-keras (Keras 2) variable has no such
        scope, so it holds the value for the call and gets its own back after it. Called with interrupts
        deferred (``forward_with_taps``): the scope is entered and left, and the values put back, where no
        Ctrl-C lands."""
        if not values:
            yield
            return
        variables = self._checked_variables(values)
        chosen = [(variables[name], value) for name, value in values.items()]
        if all(isinstance(v, keras.Variable) for v, _ in chosen):
            # Each value made once, straight into a tensor (a Reshaped one too, never first as numpy).
            mapping = [(v, _assignable(value, _dtype_name(v))) for v, value in chosen]
            with keras.StatelessScope(state_mapping=mapping):
                yield
            return
        backups = [(v, _snapshot(v)) for v, _ in chosen]
        try:
            for variable, value in chosen:
                variable.assign(_assignable(value, _dtype_name(variable)))
            yield
        finally:
            for variable, backup in backups:
                type(variable).assign(variable, backup)

    def _layer_at(self, path: str) -> Any:
        layer = self.obj
        for name in path.split("/") if path else []:
            layer = next((child for child_name, child in _sublayers(layer) if child_name == name), None)
            if layer is None:
                return None
        return layer

    def input_spec(self) -> list[tuple[tuple[int | None, ...], str]] | None:
        try:
            inputs = self.obj.inputs
        except (AttributeError, ValueError):
            return None
        if not inputs:
            return None
        return [(tuple(None if d is None else int(d) for d in t.shape), _dtype_name(t)) for t in inputs]

    def save(self, path: Path) -> None:
        name = path.name
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if name.endswith(".weights.h5"):
                self.obj.save_weights(str(path))
            elif path.suffix == ".h5" and _subclassed_tf_keras(self.obj):
                # A model defined by its Python code (transformers' TF classes) has no architecture an
                # HDF5 file can hold: it gets the weights file its own load_weights reads, which is what
                # transformers' tf_model.h5 is.
                self.obj.save_weights(str(path), save_format="h5")
            elif path.suffix in (".keras", ".h5"):
                self.obj.save(str(path))
            elif path.suffix == ".safetensors":
                from safetensors.numpy import save_file

                tensors = {t.name: self.read(t.name) for t in self.tensors() if t.tied_to is None}
                save_file(tensors, str(path), metadata=self.safetensors_metadata())
            else:
                raise ModelshellError(
                    f"a Keras model saves to .keras, .h5, .weights.h5 or .safetensors, not {path.suffix or name}",
                    "to get a torch file, copy the weights into a torch model and save that",
                )


def _require_built(model: Any) -> None:
    """A subclassed model makes its weights at its first call; before it, Keras raises a ValueError
    deep inside whatever asked, which is the user's to fix in one line."""
    try:
        built = bool(model.weights) or getattr(model, "built", True)  # Keras 3 lists none; tf-keras raises
    except ValueError as exc:
        if "not yet been created" not in str(exc):
            raise
        built = False
    if not built:
        raise ModelshellError(f"{getattr(model, 'name', type(model).__name__)} has no weights yet: Keras makes "
                              "them at the model's first call", "call it once on an input, or build(input_shape)")


def _with_flow(calls: dict[str, LayerCall], model: Any, layers: list[tuple[str, Any]]) -> dict[str, LayerCall]:
    """The calls with where each layer's output went, for the layers of functional models (their graph
    lists every operation, layers and ``keras.ops`` alike, with the tensors it reads); a layer that a
    subclassed model's own code calls keeps None: what else that code does with its output is not
    written down anywhere."""
    readers: dict[str, set[str]] = {}
    fed_by: dict[str, set[str]] = {}
    path_of = {id(layer): path for path, layer in layers}
    for graph in _graphs(model, [layer for _, layer in layers]):
        for node in [n for nodes in graph._nodes_by_depth.values() for n in nodes]:
            operation = getattr(node, "operation", None) or getattr(node, "layer", None)  # Keras 3, tf-keras
            if operation is None or getattr(node, "is_input", False):
                continue
            reader = path_of.get(id(operation), "")
            readers.setdefault(reader, set())
            inputs = getattr(node, "keras_inputs", None)
            for tensor in node.input_tensors if inputs is None else inputs:
                maker = path_of.get(id(_maker(tensor)), "")
                readers.setdefault(maker, set()).add(reader)
                fed_by.setdefault(reader, set()).add(maker)
        for tensor in graph.outputs:
            readers.setdefault(path_of.get(id(_maker(tensor)), ""), set()).add("")
    return {path: call if path not in readers or not path else
            dataclasses.replace(call, readers=frozenset(readers[path]), fed_by=frozenset(fed_by.get(path, ())))
            for path, call in calls.items()}


def _maker(tensor: Any) -> Any:
    history = getattr(tensor, "_keras_history", None)
    return history[0] if history else None


def _graphs(model: Any, layers: list[Any]) -> list[Any]:
    """The functional models in the tree (a Keras 3 Sequential's is its ``_functional``)."""
    found = []
    for candidate in (model, *layers):
        graph = getattr(candidate, "_functional", None) or candidate
        try:
            if hasattr(graph, "_nodes_by_depth") and isinstance(graph.outputs, list):
                found.append(graph)
        except Exception:  # noqa: BLE001 - a subclassed model's `outputs` may refuse to be read: no graph
            continue
    return found


def _unwrap_calls(layers: list[Any]) -> None:
    """Each layer's own ``call`` visible again. Called with interrupts deferred."""
    for layer in layers:
        if "call" in vars(layer):
            object.__delattr__(layer, "call")


@contextlib.contextmanager
def _linear_activations(layers: list[Any]) -> Iterator[dict[int, Any]]:
    """Each layer's fused activation (a ``Conv2D(activation="tanh")``) set aside for the body, by
    ``id(layer)``, and put back after it: a tapped layer records what it computes before it, as a torch
    ``Conv2d`` followed by ``Tanh`` does. Set aside for the whole forward pass, with interrupts deferred,
    not around each call, where a Ctrl-C could land between the swap and the ``try`` that undoes it."""
    linear = keras.activations.linear
    aside = {id(layer): (layer, layer.__dict__.get("activation")) for layer in layers}
    aside = {key: pair for key, pair in aside.items() if pair[1] is not None and pair[1] is not linear}
    try:
        for layer, _ in aside.values():
            object.__setattr__(layer, "activation", linear)
        yield {key: activation for key, (_, activation) in aside.items()}
    finally:
        for layer, activation in aside.values():
            object.__setattr__(layer, "activation", activation)


def _subclassed_tf_keras(model: Any) -> bool:
    """A tf-keras (Keras 2) model that is neither Functional nor Sequential: a subclass of ``Model`` whose
    layers its ``call`` wires up."""
    is_tf_keras = any(cls.__name__ == "Model" and cls.__module__.startswith("tf_keras") for cls in type(model).__mro__)
    return is_tf_keras and not getattr(model, "_is_graph_network", True)


def _snapshot(variable: Any) -> Any:
    """The variable's current value, kept for a rollback. On TensorFlow a read is a free snapshot: it
    shares the buffer, and the next assign writes a new one (copy on write) instead of copying twice;
    other backends get a copy."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        # A Keras 3 variable wraps a tf.Variable in `.value`; a tf-keras (Keras 2) one is the tf.Variable.
        return tf.convert_to_tensor(variable if isinstance(variable, tf.Variable) else variable.value)
    return variable.numpy()


# The dtypes a numpy array can hand to TensorFlow through DLPack (not ml_dtypes' bfloat16 or float8).
_DLPACK_DTYPES = frozenset({"float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8"})
_TF_ALIGNMENT = 64  # bytes: TensorFlow's CPU kernels assume it, and abort the process on a buffer without it


def _assignable(value: Any, dtype: str) -> Any:
    """``value`` as something ``assign`` stores without copying it again.

    TensorFlow converts a numpy array by copying it into a buffer it has just allocated, whose pages
    then fault in one at a time (69 ms for 94 MB, where numpy's copy takes 13 ms), and an assign of a
    tensor keeps the tensor's buffer (copy on write). So the one copy is made here, into memory numpy
    allocates and aligns for TensorFlow, and handed over through DLPack. The copy belongs to no one
    else, so the variable shares its buffer with nothing the user can reach."""
    from_dlpack = _tensorflow_from_dlpack() if dtype in _DLPACK_DTYPES and _size(value) else None
    if from_dlpack is not None and _tensorflow_tensor(value, dtype):
        return value  # made by ``prepared``: it belongs to no one else already
    if from_dlpack is None:
        return np.asarray(value, dtype=dtype)
    owned = _aligned_empty(np.shape(value), np.dtype(dtype))
    copy_into(owned, value)
    return from_dlpack(owned.__dlpack__())


def _size(value: Any) -> int:
    return math.prod(tuple(value.shape)) if hasattr(value, "shape") else int(np.size(value))


def _tensorflow_tensor(value: Any, dtype: str) -> bool:
    import tensorflow as tf

    return isinstance(value, tf.Tensor) and value.dtype.name == dtype


@functools.cache
def _tensorflow_from_dlpack() -> Any:
    """TensorFlow's DLPack import, or None on another Keras backend or a TensorFlow without one."""
    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    return getattr(getattr(tf.experimental, "dlpack", None), "from_dlpack", None)


def _aligned_empty(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    size = int(np.prod(shape)) * dtype.itemsize
    raw = np.empty(size + _TF_ALIGNMENT, np.uint8)
    start = -raw.ctypes.data % _TF_ALIGNMENT
    return raw[start:start + size].view(dtype).reshape(shape)


# Layers whose layout rule covers the variables of their sub-layers (an RNN's cell, attention's
# projections); the number says how many trailing path parts name a role ("query/kernel").
_WHOLE_LAYERS = {"MultiHeadAttention": 2, "LSTM": 1, "GRU": 1, "SimpleRNN": 1}
_CONFIG_KEYS = (
    "epsilon", "momentum", "padding", "strides", "groups", "reset_after", "num_heads", "key_dim",
    "depth_multiplier", "filters", "units", "kernel_size", "use_bias", "data_format", "dilation_rate",
    "center", "scale", "axis", "input_dim", "output_dim", "return_sequences", "activation",
)


def _config(layer: Any) -> dict[str, Any]:
    try:
        config = layer.get_config()
    except Exception:  # noqa: BLE001 - a custom layer without get_config still pairs by its weights
        return {}
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in config.items() if k in _CONFIG_KEYS}


def _role(variable: Any, parts: int) -> str:
    return "/".join(_variable_name(variable).split("/")[-parts:])


def _after_part(name: str, part: str) -> str:
    """What follows the last path part equal to ``part`` (``.../embeddings/position_embeddings/embeddings``
    after ``embeddings`` is ``position_embeddings/embeddings``), or the whole name."""
    parts = name.split("/")
    last = max((i for i, p in enumerate(parts[:-1]) if p == part), default=None)
    return name if last is None else "/".join(parts[last + 1:])


def _roles(layer: Any, variables: list[Any], parts: int, infos: dict[int, TensorInfo]) -> dict[str, TensorInfo]:
    """Each variable's role in its layer: the last ``parts`` parts of its name, or the part after the
    layer's own name where the layer made variables under scopes of its own (a transformers TF block's
    ``word_embeddings/weight`` and ``position_embeddings/embeddings``), or where two would share one."""
    short = [_role(v, parts) for v in variables]
    relative = [_after_part(_variable_name(v), layer.name) for v in variables]
    scoped = parts == 1 and any("/" in r for r in relative) and len(set(relative)) == len(relative)
    if len(set(short)) == len(short) and not scoped:
        return {role: infos.pop(id(v)) for role, v in zip(short, variables)}
    found = {}
    for role, variable in zip(relative, variables):
        found[role if role not in found else _variable_name(variable)] = infos.pop(id(variable))
    return found


def _to_numpy(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _to_numpy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_numpy(v) for v in value]
    return np.asarray(keras.ops.convert_to_numpy(value)) if hasattr(value, "shape") else value


def _shape(tensor: Any) -> tuple[int, ...]:
    return tuple(-1 if d is None else int(d) for d in tensor.shape)


def _leaves(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [leaf for v in value.values() for leaf in _leaves(v)]
    if isinstance(value, (list, tuple)):
        return [leaf for v in value for leaf in _leaves(v)]
    return [value] if hasattr(value, "shape") and hasattr(value, "dtype") else []


def _tapped(call: Any, activation: Any, taps: dict[str, Any], path: str,
            record: Callable[[str, Any], None] | None = None):
    """Record what the layer computes before its fused activation (set aside by ``_linear_activations``),
    then apply the activation, so the model's own result is unchanged. A layer called several times (one
    block shared by every layer, as ALBERT's) is recorded at its first call, as the torch adapter does;
    with ``record``, handed over on the spot and not kept."""

    def call_and_record(*args: Any, **kwargs: Any) -> Any:
        output = call(*args, **kwargs)
        if path not in taps:
            taps[path] = _to_numpy(output) if record is None else None
            if record is not None:
                record(path, _to_numpy(output))
        return output if activation is None else activation(output)

    return call_and_record


def load_keras_file(path: Path, trust: bool) -> ModelHandle:
    """Load a whole Keras model (``.keras`` or legacy ``.h5``). ``safe_mode`` stays on unless trusted, so a
    Lambda layer's pickled bytecode is never run without the user's say-so."""
    is_keras = path.suffix.lower() == ".keras"
    if is_keras and not zipfile.is_zipfile(path):
        # Keras reports any non-zip ``.keras`` as "File not found", which sends users looking elsewhere.
        raise ModelshellError(f"cannot read {path} as a Keras model: it is not a zip archive (damaged or truncated?)")
    if is_keras:
        _check_archive(path)
        _probe_weights(path)
    check_fits(path, unpacked_zip_size(path) if is_keras else _h5_size(path))
    check_declared_shapes(path, _saved_config(path))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = keras.saving.load_model(str(path), compile=False, safe_mode=not trust)
    except ValueError as exc:
        if "safe_mode" in str(exc) or "unsafe" in str(exc).lower():
            found = code_in_config(path)
            listed = f": {', '.join(found[:8])}" + (f" and {len(found) - 8} more" if len(found) > 8 else "") if found else ""
            raise ModelshellError(
                f"{path} contains code that Keras runs only outside safe mode{listed or ' (a Lambda layer or custom object)'}; "
                "nothing was run",
                f"if you trust the file, `load {path} --trust` (or `trust on`) loads it",
            ) from exc
        raise _load_failed(path, exc) from exc
    except Exception as exc:  # noqa: BLE001 - a corrupt file fails in many ways; all are one user error
        raise _load_failed(path, exc) from exc
    return KerasModel(model, str(path), trust)


# Where Keras's own words about a failed deserialization end and its advice or the config dump begins.
_KERAS_TAIL = re.compile(r"\s*(Make sure custom classes|Full object config:|Please ensure that|config=\{)")
_GENERIC = "could not be deserialized properly"


def keras_reason(exc: BaseException) -> str:
    """The line that says why Keras failed: it wraps the real error in one "<class Functional> could not be
    deserialized properly..." per level of the config, with the reason after the last "Exception
    encountered:" (or at the end of the exception chain)."""
    text = str(exc).rsplit("Exception encountered:", 1)[-1]
    cause = exc
    while _GENERIC in text and (cause := cause.__cause__ or cause.__context__) is not None:
        text = str(cause)
    text = _KERAS_TAIL.split(text.strip(), 1)[0].strip()
    return first_line(Exception(text))[:400].rstrip(".") if text else first_line(exc)


def _load_failed(path: Path, exc: BaseException) -> ModelshellError:
    reason = keras_reason(exc)
    custom = [c for c in code_in_config(path) if c.startswith("custom object")]
    if "Could not locate" in reason and custom:
        return ModelshellError(
            f"{path} is refused: its config names classes Keras does not know ({', '.join(custom[:4])}): "
            f"{reason}; nothing was run",
            "a custom class must be registered (@keras.saving.register_keras_serializable) by code you trust, "
            "imported first (`load code.py:FACTORY` or an `import` line)")
    return ModelshellError(f"cannot read {path} as a Keras model: {reason}")


def code_in_config(path: Path) -> list[str]:
    """The Lambda layers and custom (non-Keras) classes a saved model's config names, read as JSON and
    never deserialized, so a refusal can say what code the file carries."""
    config = _saved_config(path)
    found: list[str] = []

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            kind, module = node.get("class_name"), node.get("module")
            inner = node.get("config") if isinstance(node.get("config"), dict) else {}
            if kind == "Lambda":
                found.append(f"Lambda layer {inner.get('name', '?')!r}")
            elif isinstance(kind, str) and isinstance(module, str) and not module.startswith(("keras", "builtins")):
                found.append(f"custom object {module}.{kind}")
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(config)
    return list(dict.fromkeys(found))


def _saved_config(path: Path) -> Any:
    """A saved model's config as plain JSON (``config.json`` of a ``.keras``, ``model_config`` of an
    ``.h5``), or None when it cannot be read (the load itself then says why)."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                return json.loads(archive.read("config.json"))
        import h5py

        with h5py.File(path, "r") as f:
            raw = f.attrs.get("model_config")
            return json.loads(raw.decode() if isinstance(raw, bytes) else raw)
    except Exception:  # noqa: BLE001 - a damaged or missing config: the load reports it
        return None


def _check_archive(path: Path) -> None:
    """Every member's checksum, before Keras reads the HDF5 weights inside: a damaged HDF5 file can hang
    the HDF5 library, and inside a zip it cannot be probed as a file on its own (see modelshell.safety.probe)."""
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except Exception as exc:  # noqa: BLE001 - a damaged zip fails in many ways
        raise ModelshellError(f"cannot read {path} as a Keras model: the zip archive is damaged ({first_line(exc)})") from exc
    if damaged is not None:
        raise ModelshellError(f"cannot read {path} as a Keras model: {damaged} in the archive is damaged (checksum)")


def _probe_weights(path: Path) -> None:
    """The HDF5 weights inside a ``.keras`` archive, walked in a child process before Keras reads them:
    a damaged one can hang the HDF5 library, and one whose data lies in other files (external storage
    on /etc/passwd, external links, virtual datasets) is refused, as a ``.weights.h5`` file is."""
    with zipfile.ZipFile(path) as archive:
        members = [n for n in archive.namelist() if n.endswith(".h5")]
    for member in members:
        probe_hdf5(path, member)


def _h5_size(path: Path) -> int:
    """The bytes of every dataset, from their shapes and dtypes: what Keras will hold once loaded."""
    import h5py

    total = 0

    def visit(_: str, obj: Any) -> None:
        nonlocal total
        if isinstance(obj, h5py.Dataset):
            total += int(np.prod(obj.shape, dtype=np.float64) * obj.dtype.itemsize)

    try:
        with h5py.File(path, "r") as f:
            f.visititems(visit)
    except Exception:  # noqa: BLE001 - a damaged file is reported by the load itself
        return 0
    return total
