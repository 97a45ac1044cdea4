"""The PyTorch adapter: live ``nn.Module``s (including TorchScript) and state dicts from ``.pt`` files.

Importing this module imports torch; nothing else in modelshell does, so the import happens the first
time a torch model is loaded or wrapped.
"""
from __future__ import annotations

import bisect
import contextlib
import dataclasses
import inspect
import itertools
import os
import pickle
import warnings
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sized
from pathlib import Path
from typing import Any

import numpy as np

from modelshell.frameworks import quiet

quiet.install()

import torch  # noqa: E402

from modelshell.safety.atomic import full_suffix
from modelshell.core.errors import ModelshellError, first_line
from modelshell.frameworks.base import InputSlot, Layer, LayerCall, LayerNode, ModelHandle, TensorInfo, tree_from_names
from modelshell.frameworks.copying import Reshaped, copy_into, lend_copy_kernel
from modelshell.frameworks.torchscript_weights import is_torchscript, torchscript_tensors
from modelshell.safety.interrupts import Interrupts, deferred_interrupts, interruptible
from modelshell.safety.mapped import guard as guard_mapping
from modelshell.safety.pickle_scan import PickleGlobals, classify, describe, scan_torch_file
from modelshell.safety.resources import check_declared_allocation, check_fits, unpacked_zip_size

__all__ = ["TorchModule", "TorchStateDict", "load_torch_file", "save_state_dict", "globals_needed", "version"]

version = torch.__version__

_SAVE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors")


def _dtype_name(tensor: torch.Tensor) -> str:
    return str(tensor.dtype).removeprefix("torch.")


def _split(name: str) -> tuple[str, str]:
    layer, _, role = name.rpartition(".")
    return layer, role


class _TiedTracker:
    """Names the first tensor seen for each storage, so a tied weight is reported, and counted, once."""

    def __init__(self) -> None:
        self._first: dict[tuple[int, int, tuple[int, ...]], str] = {}

    def tied_to(self, name: str, tensor: torch.Tensor) -> str | None:
        if tensor.device.type == "meta" or tensor.numel() == 0:
            return None
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        first = self._first.setdefault(key, name)
        return None if first == name else first


class TorchModule(ModelHandle):
    """A live ``nn.Module``: tensors in ``state_dict()`` order, buffers included."""

    framework = "torch"

    def _state(self) -> dict[str, torch.Tensor]:
        return self.obj.state_dict(keep_vars=True)

    def tensors(self) -> list[TensorInfo]:
        tracker = _TiedTracker()
        infos = []
        for name, tensor in self._state().items():
            is_param = isinstance(tensor, torch.nn.Parameter)
            layer, role = _split(name)
            infos.append(
                TensorInfo(
                    name=name,
                    shape=tuple(tensor.shape),
                    dtype=_dtype_name(tensor),
                    trainable=bool(is_param and tensor.requires_grad),
                    layer=layer,
                    role=role,
                    kind="parameter" if is_param else "buffer",
                    tied_to=tracker.tied_to(name, tensor),
                )
            )
        return infos

    def layer_tree(self) -> LayerNode:
        by_name = {t.name: t for t in self.tensors()}
        return self._node("", type(self.obj).__name__, self.obj, by_name)

    def _node(self, path: str, label: str, module: torch.nn.Module, by_name: dict[str, TensorInfo]) -> LayerNode:
        prefix = f"{path}." if path else ""
        own = [by_name[prefix + n] for n, _ in module.named_parameters(recurse=False) if prefix + n in by_name]
        own += [by_name[prefix + n] for n, _ in module.named_buffers(recurse=False) if prefix + n in by_name]
        node = LayerNode(label, type(module).__name__, own, path=path)
        for child_name, child in module.named_children():
            node.children.append(self._node(prefix + child_name, child_name, child, by_name))
        return node

    def read(self, name: str) -> np.ndarray:
        state = self._state()
        if name not in state:
            raise ModelshellError(f"{self.class_name} has no tensor named {name!r}")
        return _array(state[name]).copy()

    def iter_arrays(self, names: list[str]):
        state = self._state()
        for name in names:
            yield _array(state[name])  # a view: the caller converts (and so copies) it

    def save(self, path: Path) -> None:
        save_state_dict({k: v.detach() for k, v in self.obj.state_dict().items()}, path)

    def layers(self, tensors: list[TensorInfo] | None = None) -> list[Layer]:
        infos = {t.name: t for t in (self.tensors() if tensors is None else tensors)}  # tied ones too: an output layer tied to the embedding
        found: list[Layer] = []
        whole: list[str] = []  # modules whose rule covers their children's tensors too (attention)
        for path, module in self.obj.named_modules():
            if any(path.startswith(prefix) for prefix in whole):
                continue
            kind, lineage = _kind(module), _lineage(module)
            prefix = f"{path}." if path else ""
            if _WHOLE_MODULES & set(lineage):
                whole.append(prefix)
                roles = {n[len(prefix):]: t for n, t in infos.items() if n.startswith(prefix)}
            else:
                own = [n for n, _ in module.named_parameters(recurse=False)]
                own += [n for n, _ in module.named_buffers(recurse=False)]
                roles = {n: infos[prefix + n] for n in own if prefix + n in infos}
                roles.update(_parametrized_roles(module, prefix, infos))
                if _PARAMETRIZATIONS in path.split("."):
                    continue  # its tensors are roles of the module it parametrizes
            if roles:
                found.append(Layer(path, kind, roles, _config(module), lineage))
        return found

    def write(self, values: dict[str, np.ndarray]) -> None:
        state = self._state()
        _check_values(values, {n: tuple(t.shape) for n, t in state.items()}, self.class_name)
        targets = [(_target(state[name], source), source)
                   for name, source in ((n, _source(v, state[n])) for n, v in values.items())]
        values.clear()  # the targets hold the only references now: each is let go once written
        # Ctrl-C is only noted while the tensors are written: the body takes it where the model is whole,
        # and one that comes after the last write is raised once `writes` says the copy completed.
        with torch.no_grad(), _threads_for_the_machine(), deferred_interrupts() as interrupts:
            if _cannot_fail(targets):
                try:
                    _write_whole(targets)
                except ModelshellError:
                    self.changed = True  # partly: the session must not call it unchanged
                    raise
            else:
                _write_with_backups(targets, interrupts)
            self.writes += 1

    def forward(self, inputs):
        return self.forward_with_taps(inputs, [])[0]

    def forward_with_taps(self, inputs, paths: list[str], values: dict[str, np.ndarray] | None = None,
                          record: Callable[[str, Any], None] | None = None):
        modules = dict(self.obj.named_modules())
        taps: dict[str, Any] = {}
        substitutes = self.prepared(values) if values else None  # made already when they come from prepared
        with deferred_interrupts():  # Ctrl-C lands in the forward pass only (``_call``), never among the hooks
            hooks: list[Any] = []
            try:
                hooks += [modules[p].register_forward_hook(_recorder(taps, p, record)) for p in paths if p in modules]
                outputs = self._call(inputs, substitutes)
            finally:
                for hook in hooks:
                    hook.remove()
        return _to_numpy(outputs), taps

    def trace(self, inputs) -> dict[str, LayerCall]:
        """Every module's first call in order, with shapes. A Linear's input that shares its storage (and
        size) with a 4-d map some module took or gave is a flattening of that map: ``torch.flatten`` and
        ``view`` make views, while a pool, even a functional one, makes a new tensor."""
        calls: dict[str, LayerCall] = {}
        maps: dict[tuple[int, int, int], tuple[int, ...]] = {}  # (storage, offset, numel) -> 4-d shape
        alive: list[torch.Tensor] = []  # held, so no later tensor can take a recorded map's memory

        def note_map(tensor: Any, rank: int) -> None:
            if isinstance(tensor, torch.Tensor) and tensor.dim() == rank and tensor.device.type != "meta":
                alive.append(tensor)
                maps.setdefault(_storage_key(tensor), tuple(tensor.shape))

        def flattening_of(tensor: torch.Tensor) -> tuple[int, ...] | None:
            """The map this 2-d input is a flattening of: one it shares storage with, else (a flatten of a
            tensor in another memory format copies) one it equals value for value, row by row."""
            found = maps.get(_storage_key(tensor))
            if found is not None:
                return found
            rows = tensor.shape[0]
            for candidate in reversed(alive[-16:]):
                if candidate.numel() == tensor.numel() and candidate.shape[0] == rows and \
                        torch.equal(candidate.reshape(rows, -1), tensor):
                    return tuple(candidate.shape)
            return None

        def hook(path: str):
            def record(module, args, output) -> None:
                flow.left(path, output)
                with flow.aside():  # what this hook reads is not the model's flow
                    note(path, module, args, output)
            return record

        def note(path: str, module: Any, args: tuple, output: Any) -> None:
            # (N, C, H, W) maps anywhere; (N, C, L) ones only around 1-d layers (Conv1d, MaxPool1d...),
            # since elsewhere a 3-d tensor is a sequence of features that a Linear reads as it is.
            rank = 3 if "1d" in type(module).__name__ else 4
            tensors = [a for a in args if isinstance(a, torch.Tensor)]
            for tensor in tensors:
                note_map(tensor, rank)
            first_out = next(iter(_tensor_leaves(output)), None)
            note_map(first_out, rank)
            if path in calls:
                return
            flattened = None
            if tensors and tensors[0].dim() == 2 and tensors[0].device.type != "meta":
                flattened = flattening_of(tensors[0])
            calls[path] = LayerCall(path, started[path], tuple(tuple(t.shape) for t in tensors),
                                    None if first_out is None else tuple(first_out.shape), flattened)

        def start(path: str):
            def record(module, args) -> None:
                started.setdefault(path, len(started))
                flow.entered(path, args)
            return record

        started: dict[str, int] = {}  # the order in which modules start (a block before what it calls)
        named = [(p, m) for p, m in self.obj.named_modules() if p]
        # A tensor a block owns directly (a layer scale, a class token) is used somewhere inside the
        # block's forward, not when the block starts: its first use is its place in the order.
        names = {id(t): n for n, t in self.obj.state_dict(keep_vars=True).items()}
        flow = _Flow()
        with deferred_interrupts():  # every hook registered is removed; Ctrl-C lands in the forward pass only
            hooks: list[Any] = []
            try:
                for p, m in named:
                    hooks.append(m.register_forward_pre_hook(start(p)))
                    hooks.append(m.register_forward_hook(hook(p)))
                with _FirstUses(names, started), flow:
                    flow.escaped(self._call(inputs))
            finally:
                for handle in hooks:
                    handle.remove()
        for name in names.values():
            if name in started and name not in calls:
                calls[name] = LayerCall(name, started[name], (), None)
        return {path: flow.of(call) for path, call in calls.items()}

    def _call(self, inputs, substitutes: dict[str, torch.Tensor] | None = None) -> Any:
        """The module in eval mode, without gradients, on positional or named inputs; with
        ``substitutes``, through ``torch.func.functional_call``, which swaps those tensors in for the
        call only (tied ones follow their tie) and leaves the module's own untouched.

        Ctrl-C interrupts the module's own ``forward`` only: one that landed inside functional_call's
        swap, or in its ``finally`` that swaps back, left the module holding the substitutes (views of
        the other model's memory, which the next write into this module then wrote through)."""
        modes = [(m, m.training) for m in self.obj.modules()]  # each its own: a frozen part stays in eval
        if isinstance(inputs, Mapping):
            args, kwargs = (), {k: self._input_tensor(v) for k, v in inputs.items()}
        else:
            args, kwargs = tuple(self._input_tensor(x) for x in inputs), {}
        with deferred_interrupts() as interrupts:
            try:
                self.obj.eval()
                with torch.no_grad(), _threads_for_the_machine(), interruptible(interrupts, self.obj, "forward"):
                    if substitutes:
                        return torch.func.functional_call(self.obj, substitutes, args, kwargs, strict=False)
                    return self.obj(*args, **kwargs)
            finally:
                for module, training in modes:
                    module.training = training

    def prepared(self, values: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        """Tensors sharing the values' memory where they can; a ``Reshaped`` (a flatten reorder) is made
        here once, by the blocked copy, for the run and the write to read (a 411 MB reorder run through as
        a strided view made VGG16's first Linear 10x slower, and its write 5x)."""
        state = self._state()
        _check_values(values, {n: tuple(t.shape) for n, t in state.items()}, self.class_name)
        return {name: _made(value, state[name].dtype) for name, value in values.items()}

    def input_slots(self) -> list[InputSlot] | None:
        """The named inputs of ``forward`` that a caller must or usually gives (``input_ids``,
        ``attention_mask``, ``pixel_values``...), when it has more than one or a telling name."""
        try:
            parameters = list(inspect.signature(self.obj.forward).parameters.values())
        except (TypeError, ValueError):
            return None
        named = [p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        known = [n for n in named if n in _KNOWN_INPUTS]
        if not known:
            return None
        return [InputSlot(n, (None,) * _KNOWN_INPUTS[n][0], _KNOWN_INPUTS[n][1], required=n == known[0]) for n in known]

    def _input_tensor(self, array: np.ndarray) -> torch.Tensor:
        """A float input in the model's own float dtype (a bfloat16 or float64 model gets its own)."""
        tensor = torch.from_numpy(np.array(array, order="C"))  # a copy with plain strides, whatever it came from
        own = next((p.dtype for p in self.obj.parameters() if p.is_floating_point()), None)
        return tensor.to(own) if own is not None and tensor.is_floating_point() else tensor


class _FirstUses(torch.overrides.TorchFunctionMode):
    """Notes, in the trace's order, the first torch operation that reads each of the model's tensors."""

    def __init__(self, names: dict[int, str], order: dict[str, int]) -> None:
        super().__init__()
        self._names, self._order = names, order

    def __torch_function__(self, func, types, args=(), kwargs=None):
        for value in (*args, *(kwargs or {}).values()):
            for item in value if isinstance(value, (list, tuple)) else (value,):
                name = self._names.get(id(item))
                if name is not None:
                    self._order.setdefault(name, len(self._order))
        return func(*args, **(kwargs or {}))


class _Flow(torch.overrides.TorchFunctionMode):
    """Which module read each module's output: the innermost module running when an operation (any
    torch function, not only a module call) took the tensor and made a tensor of it; "" for the model's
    own code and its caller. A conv whose output a parent block also adds to a shortcut, or that an
    in-place activation changes, is read by that block or activation too, which module hooks alone
    cannot see. Shape queries (``dim()``, ``size()``) make no tensor and read nothing."""

    def __init__(self) -> None:
        super().__init__()
        self._running: list[str] = []
        self._made: dict[int, tuple[str, torch.Tensor]] = {}  # id -> (maker, the tensor itself, held)
        self._readers: dict[str, set[str]] = {}
        self._fed_by: dict[str, set[str]] = {}
        self._aside = 0

    def entered(self, path: str, args: tuple) -> None:
        makers = {self._maker(a) for a in args if isinstance(a, torch.Tensor)}
        self._fed_by.setdefault(path, set()).update(makers)
        self._running.append(path)

    def left(self, path: str, output: Any) -> None:
        if self._running and self._running[-1] == path:
            self._running.pop()
        for tensor in _tensor_leaves(output):
            self._made.setdefault(id(tensor), (path, tensor))  # the innermost maker: it finishes first

    def escaped(self, output: Any) -> None:
        """The model's outputs are read by its caller."""
        self._read(_tensor_leaves(output), "")

    @contextlib.contextmanager
    def aside(self) -> Iterator[None]:
        self._aside += 1
        try:
            yield
        finally:
            self._aside -= 1

    def of(self, call: LayerCall) -> LayerCall:
        return dataclasses.replace(call, readers=frozenset(self._readers.get(call.path, ())),
                                   fed_by=frozenset(self._fed_by.get(call.path, ())))

    def _maker(self, tensor: torch.Tensor) -> str:
        made = self._made.get(id(tensor))
        return made[0] if made is not None and made[1] is tensor else ""

    def _read(self, items: Iterable[Any], reader: str) -> None:
        for item in items:
            made = self._made.get(id(item))
            if made is not None and made[1] is item:
                self._readers.setdefault(made[0], set()).add(reader)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        if self._made and not self._aside and _tensor_leaves(result):
            values = (*args, *(kwargs or {}).values())
            self._read([i for v in values for i in (v if isinstance(v, (list, tuple)) else (v,))],
                       self._running[-1] if self._running else "")
        return result


# The named inputs a model's ``forward`` may take that verify knows how to fill: rank and dtype.
_KNOWN_INPUTS = {
    "input_ids": (2, "int64"), "attention_mask": (2, "int64"), "token_type_ids": (2, "int64"),
    "decoder_input_ids": (2, "int64"), "decoder_attention_mask": (2, "int64"),  # encoder-decoder models
    "pixel_values": (4, "float32"), "input_values": (2, "float32"),
}


def _storage_key(tensor: torch.Tensor) -> tuple[int, int, int]:
    return (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tensor.numel())


def _tensor_leaves(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, Mapping):
        return [t for v in value.values() for t in _tensor_leaves(v)]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensor_leaves(v)]
    return []


class TorchStateDict(ModelHandle):
    """A weights-only torch file: a mapping of names to tensors, with no architecture behind it."""

    framework = "torch"
    has_architecture = False

    @property
    def class_name(self) -> str:
        return "state dict"

    def tensors(self) -> list[TensorInfo]:
        tracker = _TiedTracker()
        return [
            TensorInfo(name, tuple(t.shape), _dtype_name(t), None, *_split(name), "tensor", tracker.tied_to(name, t))
            for name, t in self.obj.items()
        ]

    def layer_tree(self) -> LayerNode:
        return tree_from_names(Path(self.source).name, self.class_name, self.tensors())

    def read(self, name: str) -> np.ndarray:
        if name not in self.obj:
            raise ModelshellError(f"the state dict has no tensor named {name!r}")
        return _array(self.obj[name]).copy()

    def save(self, path: Path) -> None:
        save_state_dict(self.obj, path)

    def write(self, values: dict[str, np.ndarray]) -> None:
        _check_values(values, {n: tuple(t.shape) for n, t in self.obj.items()}, "state dict")
        prepared = {name: _as_tensor(value, self.obj[name].dtype).clone() for name, value in values.items()}
        old = {name: self.obj[name] for name in prepared}
        with deferred_interrupts():  # a Ctrl-C meanwhile comes after the update and its count
            self.obj.update(prepared)
            self.writes += 1
        del old


# Modules whose layout rule covers the tensors of their children (out_proj of attention).
_WHOLE_MODULES = {"MultiheadAttention"}
_PARAMETRIZATIONS = "parametrizations"


def _parametrized_roles(module: torch.nn.Module, prefix: str, infos: dict[str, TensorInfo]) -> dict[str, TensorInfo]:
    """The tensors ``torch.nn.utils.parametrize`` keeps for a module's parametrized weight, as roles of
    the module itself: a weight norm's ``original0``/``original1`` are ``weight_g``/``weight_v``, the names
    the older ``weight_norm`` gives them (what a layout rule knows, whichever API made them); any other
    parametrization keeps its own names (``parametrizations.weight.original``)."""
    found: dict[str, TensorInfo] = {}
    for name, plist in getattr(module, _PARAMETRIZATIONS, {}).items():
        base = f"{prefix}{_PARAMETRIZATIONS}.{name}."
        weight_norm = len(plist) == 1 and type(plist[0]).__name__ == "_WeightNorm"
        renames = {"original0": f"{name}_g", "original1": f"{name}_v"} if weight_norm else {}
        for own, _ in plist.named_parameters(recurse=False):
            if base + own in infos:
                found[renames.get(own, f"{_PARAMETRIZATIONS}.{name}.{own}")] = infos[base + own]
    return found
_CONFIG_KEYS = (
    "eps", "momentum", "groups", "in_channels", "out_channels", "kernel_size", "stride", "padding",
    "dilation", "padding_mode", "in_features", "out_features", "num_embeddings", "embedding_dim",
    "input_size", "hidden_size", "num_layers", "batch_first", "bidirectional", "num_heads", "embed_dim",
    "normalized_shape", "affine", "track_running_stats", "offset",
)


def _kind(module: torch.nn.Module) -> str:
    """The class name, also for TorchScript modules (which keep it as ``original_name``)."""
    return getattr(module, "original_name", None) or type(module).__name__


def _lineage(module: torch.nn.Module) -> tuple[str, ...]:
    """Class names from the module's own to ``Module``: a subclass pairs as the layer it extends."""
    names = [_kind(module)] + [cls.__name__ for cls in type(module).__mro__]
    return tuple(dict.fromkeys(names))


def _config(module: torch.nn.Module) -> dict[str, Any]:
    config = {}
    for key in _CONFIG_KEYS:
        value = getattr(module, key, None)
        if isinstance(value, (int, float, str, bool, tuple, list)):
            config[key] = list(value) if isinstance(value, tuple) else value
    return config


def _made(value: np.ndarray | Reshaped | torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``_as_tensor``, a ``Reshaped`` made into a new tensor by ``copy_into`` (in tiles, on every core)
    rather than by numpy's element-by-element reshape, in memory numpy allocates: numpy asks the kernel
    for huge pages for a large array, where ``torch.empty``'s fault in 4 KiB at a time (as ``_backup``).
    A kernel of 3 or more axes seen through a transpose (a conv's) is made so too: the run's convolutions
    then read it in their own order, and the write copies it straight."""
    reordered = isinstance(value, np.ndarray) and value.ndim >= 3 and not value.flags.c_contiguous
    if (isinstance(value, Reshaped) or reordered) and dtype not in _WIDENED:
        made = torch.from_numpy(np.empty(value.shape, torch.empty((), dtype=dtype).numpy().dtype))
        copy_into(made.numpy(), value)
        return made
    return _as_tensor(value, dtype)


def _read_only_view(array: np.ndarray) -> torch.Tensor:
    """``torch.from_numpy`` of an array modelshell only reads (a Keras snapshot is read-only): torch's
    warning that it could write through it says nothing here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(array)


def _as_tensor(value: np.ndarray | Reshaped | torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A tensor sharing the array's memory where it can (same dtype, any positive strides): a copy of a
    large model must not hold its weights three times. 0-d arrays stay 0-d. A tensor (``prepared``)
    stays itself."""
    if isinstance(value, torch.Tensor):
        return value.to(dtype)
    array = np.asarray(value)  # a Reshaped is made here (a state dict keeps what it is given)
    try:
        tensor = _read_only_view(array)  # strided views (transposes) too; copy_ reads them as they are
    except ValueError:  # negative strides
        tensor = torch.from_numpy(np.array(array, order="C"))
    return tensor.to(dtype)


@contextlib.contextmanager
def _threads_for_the_machine() -> Iterator[None]:
    """One torch thread for modelshell's own runs and copies while other processes hold every core (the
    1-minute load average at least the core count), the user's setting otherwise and afterwards. A
    parallel kernel waits for a free core at every op: BERT-base on the seeded (2, 8) input took 1.13 s
    with 2 threads against 0.16 s with one at load 4 on 2 cores, VGG16 at 224x224 1.32 s against 0.90 s."""
    try:
        busy = os.getloadavg()[0] >= (os.cpu_count() or 1)
    except OSError:  # no load average on this system
        busy = False
    threads = torch.get_num_threads()
    if not busy or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _source(value: np.ndarray | Reshaped, destination: torch.Tensor) -> torch.Tensor:
    """What ``write`` copies into ``destination``: the value as a tensor, sharing its memory where
    it can. A ``Reshaped`` value stays its view, in the view's shape (the destination is written seen in
    that shape), unless the destination is not contiguous and so has no such view."""
    if isinstance(value, Reshaped):
        if destination.is_contiguous():
            return _as_tensor(value.view, destination.dtype)
        value = np.asarray(value)
    return _as_tensor(value, destination.dtype)


def _target(tensor: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """What ``source`` is copied into: ``tensor`` itself, or (a ``Reshaped``'s view, of the same size) the
    tensor seen in the source's shape, whose C-order reshape the copy then is (no copy made)."""
    return tensor if source.shape == tensor.shape else tensor.detach().view(source.shape)


def _cannot_fail(targets: list[tuple[torch.Tensor, torch.Tensor]]) -> bool:
    """Whether each ``copy_`` is a plain copy that cannot raise: same dtype and shape (made so above),
    a destination whose elements each have memory of their own (no expanded view), and no source in the
    memory of any destination (copying a model into itself, or into a model that shares its storage,
    could read what an earlier copy wrote)."""
    for target, source in targets:
        if source.dtype != target.dtype or source.shape != target.shape or source.device != target.device:
            return False
        if any(stride == 0 and size > 1 for stride, size in zip(target.stride(), target.shape)):
            return False
    return not _overlapping([_memory(t) for t, _ in targets], [_memory(s) for _, s in targets])


def _memory(tensor: torch.Tensor) -> tuple[int, int]:
    """The bytes of the storage a tensor is a view of, as ``(start, end)``."""
    storage = tensor.untyped_storage()
    return storage.data_ptr(), storage.data_ptr() + storage.nbytes()


def _overlapping(destinations: list[tuple[int, int]], sources: list[tuple[int, int]]) -> bool:
    """Whether any source's memory meets any destination's: a source may view a destination's storage
    at an offset (one flat buffer under many tensors), so ranges are compared, not where they start."""
    spans = sorted(set(destinations))
    starts = [start for start, _ in spans]
    reach = list(itertools.accumulate((end for _, end in spans), max))  # the furthest end up to each span
    for start, end in sources:
        k = bisect.bisect_left(starts, end) - 1  # the last destination starting before this source ends
        if k >= 0 and reach[k] > start:
            return True
    return False


def _write_whole(targets: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Copy every source into its target, taking no Ctrl-C until the last one is written (well under a
    second for a 400 MB model): the interrupt is raised after it, and the copy reported complete. Nothing
    else can fail here (``_cannot_fail``), so no backup is made, which saves a full copy of the weights
    in time and in memory. Should the framework fail all the same, the error says how much was written
    rather than pretending nothing was. Each source is let go once written."""
    total = len(targets)
    while targets:
        target, source = targets.pop()
        try:
            _copy_tensor(target, source)
        except BaseException as exc:  # an interrupt cannot come here (held), but say what is true if one does
            raise ModelshellError(
                f"internal error: torch failed while writing ({first_line(exc)}) after {total - len(targets) - 1} "
                f"of {total} tensors were written: the model is partly changed; reload it",
                "please report this: the checks made before writing should rule it out") from exc


def _write_with_backups(targets: list[tuple[torch.Tensor, torch.Tensor]], interrupts: Interrupts) -> None:
    """The general case: each tensor is backed up just before it is written, and on any exception (an
    interrupt between two tensors too) the written ones are put back, so copy stays all or nothing.
    Ctrl-C is taken between two tensors only, and never while the backups go back."""
    backups: list[tuple[torch.Tensor, torch.Tensor]] = []
    try:
        for target, source in sorted(targets, key=lambda pair: pair[1].numel()):
            interrupts.check()
            backups.append((target, _backup(target)))
            _copy_tensor(target, source)
    except BaseException:
        for target, backup in reversed(backups):
            target.copy_(backup)
        raise


def _copy_tensor(target: torch.Tensor, source: torch.Tensor) -> None:
    """``target.copy_(source)``; a reorder of 3 or more axes (the flatten before a Linear, a conv kernel)
    through ``copy_into``, which takes a large one in blocks: torch's kernel walked VGG16's 411 MB
    Keras -> torch flatten reorder in 0.7 s on a quiet machine and 3-4 s on a busy one, blocked 0.2-0.3 s."""
    if (source.dim() >= 3 and not source.is_contiguous() and source.dtype == target.dtype
            and source.dtype not in _WIDENED and source.device.type == target.device.type == "cpu"
            and target.shape == source.shape):
        try:
            out, value = target.detach().numpy(), source.detach().numpy()
        except (TypeError, RuntimeError):  # a tensor numpy cannot see (a conjugate or negative bit)
            pass
        else:
            copy_into(out, value)
            return
    target.copy_(source)


def _backup(tensor: torch.Tensor) -> torch.Tensor:
    """A copy of ``tensor`` to put back on a rollback, made by numpy where numpy has the dtype: numpy asks
    the kernel for huge pages for a large array, where ``clone``'s fresh memory faults in 4 KiB pages
    (measured on BERT-base's 418 MB: 0.2-0.6 s against 0.7-2.2 s for ``clone``)."""
    if tensor.device.type == "cpu" and tensor.dtype not in _WIDENED:
        try:
            return torch.from_numpy(tensor.numpy().copy())
        except (TypeError, RuntimeError):  # a dtype numpy lacks, a tensor numpy cannot see (conjugate bit)
            pass
    return tensor.clone()


def _check_values(values: Mapping[str, np.ndarray], shapes: Mapping[str, tuple[int, ...]], what: str) -> None:
    """All names known and all shapes equal, before anything is written."""
    for name, value in values.items():
        if name not in shapes:
            raise ModelshellError(f"{what} has no tensor named {name!r}")
        if tuple(np.shape(value)) != shapes[name]:
            raise ModelshellError(f"{name}: shape {tuple(np.shape(value))} does not fit {shapes[name]}")


def _recorder(taps: dict[str, Any], path: str, record: Callable[[str, Any], None] | None = None):
    """The hook that keeps a layer's first output (a module called twice, as a shared block, is recorded
    at its first call), or hands it to ``record`` on the spot (a view: nothing after it has run yet)."""

    def hook(module, args, output) -> None:
        if path in taps:
            return
        if record is None:
            # A copy: an in-place activation after this layer (ReLU(inplace=True)) would change a view.
            taps[path] = _to_numpy(output, copy=True)
        else:
            taps[path] = None
            record(path, _to_numpy(output))

    return hook


def _array(tensor: torch.Tensor) -> np.ndarray:
    """The tensor as numpy, a view where numpy has the dtype. bfloat16 and the float8 types have no numpy
    dtype: they widen to float32, which holds every one of their values exactly."""
    tensor = tensor.detach().cpu()
    if tensor.dtype in _WIDENED:
        return tensor.float().numpy()
    return tensor.numpy()


_WIDENED = {getattr(torch, name) for name in (
    "bfloat16", "float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz") if hasattr(torch, name)}


def _to_numpy(value: Any, copy: bool = False) -> Any:
    """Outputs as plain nested data: tensors to arrays, tuples to lists, mappings (ModelOutput too) to dicts.
    A sized container of another class (transformers' key/value cache of an encoder-decoder model, which
    its TF twin returns as tuples) is the list of what it iterates over."""
    if isinstance(value, torch.Tensor):
        return _array(value).copy() if copy else _array(value)
    if isinstance(value, Mapping):
        return {str(k): _to_numpy(v, copy) for k, v in value.items()}
    if isinstance(value, (list, tuple)) or (isinstance(value, Iterable) and isinstance(value, Sized)
                                            and not isinstance(value, (str, bytes))):
        return [_to_numpy(v, copy) for v in value]
    return value


def save_state_dict(state: Mapping[str, Any], path: Path) -> None:
    """Write tensors (torch or numpy) as a torch state dict or a safetensors file, by the suffix.

    Any other suffix is refused: a torch pickle named ``.keras`` or ``.h5`` would only fail later, in
    whichever program tries to open it as what its name says."""
    if path.suffix not in _SAVE_SUFFIXES:
        raise ModelshellError(
            f"a torch model saves to .pt, .pth, .bin or .safetensors, not {full_suffix(path)}",
            "to get a Keras file, copy the weights into a Keras model and save that",
        )
    tensors = {k: v if isinstance(v, torch.Tensor) else torch.from_numpy(np.asarray(v)) for k, v in state.items()}
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous().clone() for k, v in tensors.items()}, str(path), metadata={"format": "pt"})
    else:
        torch.save(tensors, str(path))


def load_torch_file(path: Path, trust: bool) -> ModelHandle:
    """Read a ``.pt``/``.pth``/``.bin`` file: a state dict, a TorchScript archive (its tensors only, unless
    trusted), or (only with trust) a whole pickled module. Without trust nothing is unpickled, and no
    TorchScript loaded, that could run code."""
    if _is_torchscript(path):
        check_fits(path, unpacked_zip_size(path))
        if not trust:  # torch.jit.load runs the archive's code (a __setstate__): its tensors are read instead
            tensors = torchscript_tensors(path)
            if not tensors:
                raise ModelshellError(f"{path} is a TorchScript archive with no tensors in its data")
            return TorchStateDict(tensors, str(path), trust)
        try:
            return TorchModule(torch.jit.load(str(path), map_location="cpu"), str(path), trust)
        except Exception as exc:  # noqa: BLE001 - any failure of a corrupt archive is one user error
            raise ModelshellError(f"cannot read {path} as a TorchScript archive: {first_line(exc)}") from exc
    if not _has_torch_signature(path):
        raise _not_a_torch_file(path)
    is_zip = zipfile.is_zipfile(path)
    if not is_zip:  # a legacy pickle cannot be memory-mapped: it is read whole
        check_fits(path, path.stat().st_size)
    if not trust:
        check_declared_allocation(path)
    if is_zip:  # another program truncating a mapped file would kill the shell (SIGBUS): leased first
        guard_mapping(path)
    try:
        # A zip archive is memory-mapped: its tensors are paged in from the file as they are read, so a
        # file larger than the free memory still loads.
        obj = torch.load(str(path), map_location="cpu", weights_only=not trust, mmap=is_zip)
    except pickle.UnpicklingError as exc:
        # The weights-only unpickler stops at the first class it does not allow, or at an opcode it does
        # not know (protocols 4 and 5 frame their data): what the file needs then says which it was.
        found = globals_needed(path) if not trust else None
        if found is not None and found.names:
            raise ModelshellError(
                f"{path} holds pickled Python objects that run code when loaded: "
                f"{describe(found)}; nothing was run",
                f"if you trust the file, `load {path} --trust` (or `trust on`) loads it",
            ) from exc
        raise ModelshellError(f"cannot read {path} as a torch file: {_reason(exc)}") from exc
    except Exception as exc:  # noqa: BLE001
        raise ModelshellError(f"cannot read {path} as a torch file: {_reason(exc)}") from exc
    return _handle_for_loaded(obj, path, trust)


def _not_a_torch_file(path: Path) -> ModelshellError:
    """A file torch did not write; when it is a pickle all the same (protocol 0 or 1, as a bare
    ``pickle.dumps`` writes), what it would import and call."""
    found = scan_torch_file(path)
    if found.names:
        return ModelshellError(
            f"{path} is a pickle, not a torch file (torch writes a zip archive or a protocol 2 pickle): "
            f"{describe(found)}; nothing was run")
    return ModelshellError(f"cannot read {path} as a torch file: it is neither a zip archive nor a pickle")


def _has_torch_signature(path: Path) -> bool:
    """torch.save writes a zip archive (since 1.6) or, before that, a pickle that starts with PROTO.
    Anything else is not a torch file, and must not be offered to a trusted, code-running unpickle."""
    with open(path, "rb") as handle:
        start = handle.read(4)
    return start == b"PK\x03\x04" or start[:1] == b"\x80"


def globals_needed(path: Path) -> PickleGlobals:
    """The globals a torch file needs beyond what the weights-only unpickler allows: for a zip checkpoint,
    torch's own answer (``get_unsafe_globals_in_checkpoint``, its allowlist included), in the order the
    pickle names them, with the scan's dangerous calls added; for a legacy file, or a pickle torch's
    static reader does not follow (it knows the opcodes torch writes, not ``STACK_GLOBAL`` or frames), the
    ``pickletools`` scan. Empty means the file was refused for damage, not for code."""
    scanned = scan_torch_file(path)
    if not zipfile.is_zipfile(path):
        return scanned
    try:
        needed = set(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    except Exception:  # noqa: BLE001 - UnpicklingError on opcodes it does not read, damaged archives
        return scanned
    first_seen = [n for n in scanned.names if n in needed]
    return classify([*first_seen, *sorted(needed.difference(first_seen)), *scanned.dangerous])


def _reason(exc: BaseException) -> str:
    """What went wrong, in a line: the weights-only unpickler's own finding rather than its preamble
    (which advises re-running with ``weights_only=False``), and the exception type when the message
    alone says nothing (a KeyError's message is just the missing key)."""
    text = str(exc)
    marker = "WeightsUnpickler error:"
    if marker in text:
        detail = first_line(Exception(text.split(marker, 1)[1]))
        return f"the pickle is damaged or unsupported ({detail})"
    line = first_line(exc)
    return line if len(line) > 20 else f"{type(exc).__name__}: {line}"


def _handle_for_loaded(obj: Any, path: Path, trust: bool) -> ModelHandle:
    if isinstance(obj, torch.nn.Module):
        return TorchModule(obj, str(path), trust)
    if isinstance(obj, Mapping):
        tensors = _flatten_tensors(obj)
        if tensors:
            return TorchStateDict(tensors, str(path), trust)
    raise ModelshellError(f"{path} holds a {type(obj).__name__} with no tensors in it, not a model or state dict")


def _flatten_tensors(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, torch.Tensor]:
    """Tensors of a state dict, or of a checkpoint that nests one ({'model': {...}, 'epoch': 3})."""
    found: dict[str, torch.Tensor] = {}
    for key, value in mapping.items():
        if isinstance(value, torch.Tensor):
            found[f"{prefix}{key}"] = value
        elif isinstance(value, Mapping):
            found.update(_flatten_tensors(value, f"{prefix}{key}."))
    return found


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            return is_torchscript(archive)
    except Exception:  # noqa: BLE001 - a damaged directory fails in many ways (bad UTF-8 names too)
        return False


_WORTH_A_KERNEL_CALL = 1 << 20  # bytes; below this numpy's copy is as fast as torch's


def _copy_with_torch(out: np.ndarray, value: np.ndarray) -> bool:
    """torch's copy kernel, which transposes in tiles on every core, for numpy arrays it can wrap without
    a copy: same dtype (torch's casts are not numpy's), no negative strides, a writable ``out``. A
    read-only ``value`` (a Keras snapshot) is only read here, so torch's warning about it says nothing."""
    if (value.nbytes < _WORTH_A_KERNEL_CALL or value.dtype != out.dtype or min(value.strides, default=0) < 0
            or not out.flags.writeable):
        return False
    try:
        source, destination = _read_only_view(value), torch.from_numpy(out)
    except TypeError:  # a dtype torch has no numpy twin for
        return False
    with _threads_for_the_machine():
        destination.copy_(source)
    return True


lend_copy_kernel(_copy_with_torch)  # torch is loaded now: the Keras adapter's writes may as well use it
