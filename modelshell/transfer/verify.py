"""Do two models compute the same thing? Run both on the same numbers and compare every output.

The input is seeded random data shaped from whichever model knows its input (a Keras model does; a torch
module rarely), converted between torch's channels-first and Keras's channels-last layouts when the
model starts with convolutions, and integers when it starts with an embedding.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from modelshell.errors import ModelshellError, first_line
from modelshell.frameworks.base import Layer, ModelHandle

__all__ = ["OutputComparison", "Verification", "verify"]

_CHANNEL_KINDS = ("Conv", "DepthwiseConv", "SeparableConv")
_DEFAULT_BATCH = 2
_DEFAULT_LENGTH = 8


@dataclass(frozen=True)
class OutputComparison:
    name: str
    shape: tuple[int, ...]
    max_abs_diff: float
    max_rel_diff: float
    ok: bool
    note: str = ""

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "max_abs_diff": self.max_abs_diff,
                "max_rel_diff": self.max_rel_diff, "ok": self.ok, "note": self.note}


@dataclass(frozen=True)
class Verification:
    outputs: list[OutputComparison]
    input_shapes: list[tuple[int, ...]]
    atol: float
    rtol: float
    layers: list[OutputComparison] = field(default_factory=list)

    @property
    def first_divergence(self) -> str | None:
        """The first paired layer whose outputs differ: where a wrong copy (or a real difference) starts."""
        return next((layer.name for layer in self.layers if not layer.ok), None)

    @property
    def ok(self) -> bool:
        return bool(self.outputs) and all(o.ok for o in self.outputs)

    @property
    def max_abs_diff(self) -> float:
        return max((o.max_abs_diff for o in self.outputs), default=float("nan"))

    @property
    def max_rel_diff(self) -> float:
        return max((o.max_rel_diff for o in self.outputs), default=float("nan"))

    def as_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "max_abs_diff": self.max_abs_diff, "max_rel_diff": self.max_rel_diff,
                "atol": self.atol, "rtol": self.rtol, "inputs": [list(s) for s in self.input_shapes],
                "outputs": [o.as_json() for o in self.outputs],
                **({"layers": [o.as_json() for o in self.layers], "first_divergence": self.first_divergence}
                   if self.layers else {})}


def verify(a: ModelHandle, b: ModelHandle, atol: float = 1e-4, rtol: float = 1e-4,
           input_file: str | None = None, seed: int = 0, layers: bool = False) -> Verification:
    """Both models in inference mode on the same input; every output leaf compared, and with ``layers``
    every paired layer's output too."""
    a_layers, b_layers = a.layers(), b.layers()
    channels = _layouts_differ(a, b, a_layers, b_layers)
    inputs_a = _load_inputs(input_file) if input_file else _random_inputs(a, b, a_layers, b_layers, seed, channels)
    inputs_b = [_to_other_layout(x, a.framework, channels) for x in inputs_a]
    paths = _paired_paths(a, b) if layers else []
    out_a, taps_a = _run(a, inputs_a, [p for p, _ in paths])
    out_b, taps_b = _run(b, inputs_b, [q for _, q in paths])
    leaves_a, leaves_b = _leaves(out_a), _leaves(out_b)
    if len(leaves_a) != len(leaves_b):
        raise ModelshellError(f"the models give {len(leaves_a)} and {len(leaves_b)} outputs; nothing to compare")
    comparisons = [
        _compare(name, x, y, a.framework, channels, atol, rtol) for (name, x), (_, y) in zip(leaves_a, leaves_b)
    ]
    per_layer = [
        _compare(f"{p} ~ {q}", _first_leaf(taps_a[p]), _first_leaf(taps_b[q]), a.framework, channels, atol, rtol)
        for p, q in paths if p in taps_a and q in taps_b
    ]
    return Verification(comparisons, [tuple(x.shape) for x in inputs_a], atol, rtol, per_layer)


def _paired_paths(a: ModelHandle, b: ModelHandle) -> list[tuple[str, str]]:
    """The paired layers, by the same pairing ``copy`` uses; a torch depthwise + pointwise pair is tapped
    at its pointwise conv, whose output is the separable layer's."""
    from modelshell.transfer.plan import make_plan

    return [(m.a_path.rpartition("+")[2], m.b_path.rpartition("+")[2]) for m in make_plan(a, b).matches]


def _first_leaf(output: Any) -> np.ndarray:
    """A layer's main output: attention and RNN layers return (output, state...) in torch."""
    leaves = _leaves(output)
    return leaves[0][1] if leaves else np.zeros(0)


def _run(handle: ModelHandle, inputs: list[np.ndarray], taps: list[str]) -> tuple[Any, dict[str, Any]]:
    try:
        if taps:
            return handle.forward_with_taps(inputs, taps)
        return handle.forward(inputs), {}
    except ModelshellError:
        raise
    except Exception as exc:  # noqa: BLE001 - a forward pass failing on the input is the user's to see
        shapes = ", ".join(str(tuple(x.shape)) for x in inputs)
        raise ModelshellError(f"running {handle.class_name} on input {shapes} failed: {first_line(exc)}",
                              "pass an input that fits with --input FILE.npy") from exc


def _layouts_differ(a: ModelHandle, b: ModelHandle, a_layers: list[Layer], b_layers: list[Layer]) -> bool:
    """True when one model is torch and the other Keras and they start with a convolution: then torch
    wants channels first (N, C, H, W) and Keras channels last (N, H, W, C)."""
    if {a.framework, b.framework} != {"torch", "keras"}:
        return False
    first = [layers[0].kind for layers in (a_layers, b_layers) if layers]
    return any(kind.startswith(_CHANNEL_KINDS) for kind in first)


def _to_other_layout(x: np.ndarray, framework: str, channels: bool) -> np.ndarray:
    if not channels or x.ndim < 3:
        return x
    moved = np.moveaxis(x, 1, -1) if framework == "torch" else np.moveaxis(x, -1, 1)
    return np.ascontiguousarray(moved)


def _random_inputs(a: ModelHandle, b: ModelHandle, a_layers: list[Layer], b_layers: list[Layer], seed: int,
                   channels: bool) -> list[np.ndarray]:
    """Inputs in A's layout, from A's input spec, else B's (converted), else A's first layer."""
    rng = np.random.default_rng(seed)
    for handle, layers in ((a, a_layers), (b, b_layers)):
        spec = handle.input_spec()
        if spec:
            arrays = [_random_array(rng, shape, dtype, layers) for shape, dtype in spec]
            if handle is b:
                arrays = [_to_other_layout(x, b.framework, channels) for x in arrays]
            return arrays
    for layers in (a_layers, b_layers):
        guessed = _shape_from_first_layer(layers)
        if guessed:
            return [_random_array(rng, *guessed, layers)]
    raise ModelshellError("cannot tell the input shape of either model", "pass one with --input FILE.npy (in the first model's layout)")


def _random_array(rng: np.random.Generator, shape: tuple, dtype: str, layers: list[Layer]) -> np.ndarray:
    concrete = tuple(_DEFAULT_BATCH if i == 0 and d is None else (_DEFAULT_LENGTH if d is None else d)
                     for i, d in enumerate(shape))
    vocabulary = _vocabulary(layers)
    if vocabulary or "int" in dtype:
        return rng.integers(0, vocabulary or 10, size=concrete).astype("int64" if "int" not in dtype else dtype)
    return rng.standard_normal(concrete).astype(dtype if dtype.startswith("float") else "float32")


def _vocabulary(layers: list[Layer]) -> int:
    if layers and layers[0].kind == "Embedding":
        return next(iter(layers[0].roles.values())).shape[0]
    return 0


def _shape_from_first_layer(layers: list[Layer]) -> tuple[tuple, str] | None:
    """A torch module does not know its input shape, but its first layer often tells enough."""
    if not layers:
        return None
    first = layers[0]
    config = first.config
    if first.kind == "Linear":
        return (None, config["in_features"]), "float32"
    if first.kind == "Embedding":
        return (None, None), "int64"
    if first.kind in ("LSTM", "GRU", "RNN") and config.get("batch_first"):
        return (None, None, config["input_size"]), "float32"
    return None


def _load_inputs(path: str) -> list[np.ndarray]:
    file = Path(path)
    try:
        loaded = np.load(file, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ModelshellError(f"cannot read the input {file}: {first_line(exc)}", "give a .npy or .npz file") from exc
    if isinstance(loaded, np.ndarray):
        return [loaded]
    with loaded:
        return [loaded[key] for key in loaded.files]


def _leaves(output: Any, name: str = "output") -> list[tuple[str, np.ndarray]]:
    if isinstance(output, dict):
        return [leaf for key, value in output.items() for leaf in _leaves(value, f"{name}.{key}")]
    if isinstance(output, list):
        if len(output) == 1:
            return _leaves(output[0], name)
        return [leaf for i, value in enumerate(output) for leaf in _leaves(value, f"{name}[{i}]")]
    if output is None:
        return []
    return [(name, np.asarray(output))]


def _compare(name: str, x: np.ndarray, y: np.ndarray, a_framework: str, channels: bool,
             atol: float, rtol: float) -> OutputComparison:
    note = ""
    if channels and y.ndim >= 3:
        # Always the other layout first: when the channels equal a spatial size, both layouts have the
        # same shape and only the moved one compares like with like.
        moved = _to_other_layout(y, "keras" if a_framework == "torch" else "torch", channels)
        if moved.shape == x.shape:
            y, note = moved, "channels moved"
    if x.shape != y.shape:
        return OutputComparison(name, tuple(x.shape), float("inf"), float("inf"), False,
                                f"shapes differ: {tuple(x.shape)} and {tuple(y.shape)}")
    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    diff = np.abs(x64 - y64)
    max_abs = float(diff.max()) if diff.size else 0.0
    scale = float(np.abs(y64).max()) if diff.size else 0.0
    max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else float("inf"))
    ok = bool(np.all(diff <= atol + rtol * np.abs(y64)))
    return OutputComparison(name, tuple(x.shape), max_abs, max_rel, ok, note)
