"""Do two models compute the same thing? Run both on the same numbers and compare every output.

The input is seeded random data shaped from whichever model knows its input (a Keras model does; a torch
module rarely), converted between torch's channels-first and Keras's channels-last layouts when the
model starts with convolutions, and integers when it starts with an embedding.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from modelshell.core.errors import ModelshellError
from modelshell.frameworks.base import ModelHandle
from modelshell.transfer.inputs import PairedInputs, paired_inputs, to_other_layout

__all__ = ["OutputComparison", "Verification", "Reference", "verify", "run_reference", "compare_with", "paired_paths", "tap_path"]


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
           input_file: str | None = None, seed: int = 0, layers: bool = False,
           plan: Any = None) -> Verification:
    """Both models in inference mode on the same input; every output leaf compared (by name where the
    outputs are named), and with ``layers`` every paired layer's output too (``plan`` is the pairing to
    follow, made here when not given)."""
    paths = paired_paths(a, b, plan) if layers else []
    reference = run_reference(a, b, [p for p, _ in paths], seed, input_file)
    return compare_with(reference, b, paths, atol, rtol)


@dataclass
class Reference:
    """A's run on the paired input, with its paired layers' outputs: what B is held to. A is not
    changed by a copy into B, so one reference serves every trial of a pairing and the check after."""

    a_framework: str
    inputs: PairedInputs
    outputs: Any
    taps: dict[str, Any]


def run_reference(a: ModelHandle, b: ModelHandle, a_paths: list[str], seed: int = 0,
                  input_file: str | None = None, tensors: tuple[list[Any], list[Any]] | None = None) -> Reference:
    """A's run; ``tensors``: both models' tensors where the caller listed them already."""
    a_tensors, b_tensors = tensors or (None, None)
    inputs = paired_inputs(a, b, a.layers(a_tensors), b.layers(b_tensors), seed, input_file)
    outputs, taps = _run(a, inputs.a, a_paths)
    return Reference(a.framework, inputs, outputs, taps)


def compare_with(reference: Reference, b: ModelHandle, paths: list[tuple[str, str]], atol: float, rtol: float,
                 values: dict[str, np.ndarray] | None = None) -> Verification:
    """B on the reference's input (with ``values`` in place of its tensors, B itself left as it is),
    compared output by output and, for each of ``paths`` (A's layer, B's layer), layer by layer."""
    channels, framework = reference.inputs.channels, reference.a_framework
    held_to: dict[str, list[str]] = {}  # B's layer -> A's layers whose recorded outputs it is compared with
    for p, q in paths:
        if p in reference.taps:
            held_to.setdefault(q, []).append(p)
    compared: dict[tuple[str, str], OutputComparison] = {}

    def compare_layer(q: str, output: Any) -> None:  # B's output as it is made: B's activations are not kept
        y = _first_leaf(output)
        for p in held_to[q]:
            compared[p, q] = _compare(f"{p} ~ {q}", _first_leaf(reference.taps[p]), y, framework, channels, atol, rtol)

    out_b, _ = _run(b, reference.inputs.b, list(held_to), values, compare_layer if held_to else None)
    pairs = _output_pairs(_leaves(reference.outputs), _leaves(out_b))
    comparisons = [_compare(name, x, y, framework, channels, atol, rtol) for name, x, y in pairs]
    per_layer = [compared[p, q] for p, q in paths if (p, q) in compared]
    return Verification(comparisons, reference.inputs.shapes, atol, rtol, per_layer)


# Output names that mean the same thing in transformers and keras-hub: an encoder-decoder model's
# `last_hidden_state` is its decoder's output, keras-hub's `decoder_sequence_output`.
_SAME_OUTPUT = {"last_hidden_state": "sequence_output", "pooler_output": "pooled_output",
                "decoder_sequence_output": "sequence_output", "encoder_last_hidden_state": "encoder_sequence_output"}


def _output_pairs(leaves_a: list[tuple[str, np.ndarray]],
                  leaves_b: list[tuple[str, np.ndarray]]) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Outputs side by side: by position when both give the same number of them, else by name (``logits``
    with ``logits``, ``last_hidden_state`` with keras-hub's ``sequence_output``)."""
    if len(leaves_a) == len(leaves_b):
        return [(name, x, y) for (name, x), (_, y) in zip(leaves_a, leaves_b)]
    by_name = {_canonical(name): value for name, value in leaves_b}
    pairs = [(name, x, by_name[_canonical(name)]) for name, x in leaves_a if _canonical(name) in by_name]
    if not pairs and min(len(leaves_a), len(leaves_b)) == 1:
        # One output against several (a backbone's sequence against transformers' last_hidden_state and
        # pooler_output, or its key/value cache, whose tensors may hold as many values): the one of the
        # same shape, else of the same size, when there is exactly one.
        (name, lone), many, lone_first = ((*leaves_a[0],), leaves_b, True) if len(leaves_a) == 1 else \
            ((*leaves_b[0],), leaves_a, False)
        same = [(n, v) for n, v in many if v.shape == lone.shape] or [(n, v) for n, v in many if v.size == lone.size]
        if len(same) == 1:
            other = same[0][1]
            pairs = [(name, lone, other)] if lone_first else [(same[0][0], other, lone)]
    if not pairs:
        raise ModelshellError(f"the models give {len(leaves_a)} and {len(leaves_b)} outputs, none by the same "
                              "name; nothing to compare")
    return pairs


def _canonical(name: str) -> str:
    last = name.rpartition(".")[2]
    return _SAME_OUTPUT.get(last, last)


def paired_paths(a: ModelHandle, b: ModelHandle, plan: Any = None) -> list[tuple[str, str]]:
    """The paired layers, by the same pairing ``copy`` uses; a torch depthwise + pointwise pair is tapped
    at its pointwise conv, whose output is the separable layer's."""
    if plan is None:
        from modelshell.transfer.confirm import confirmed_plan

        plan = confirmed_plan(a, b)
    from modelshell.transfer.folds import skip_comparison
    from modelshell.transfer.rules import parts

    # A fused layer (one torch q/k/v projection against three Keras ones) has no one output to compare; a
    # layer whose bias was folded into the norm after it gives its output less the bias, by design.
    return [(tap_path(m.a_path), tap_path(m.b_path)) for m in plan.matches
            if (m.rule is None or parts(m.rule) == 1) and not skip_comparison(m)]


def tap_path(path: str) -> str:
    """Where a paired layer's output is recorded: a merged layer (``depthwise+pointwise``) at its last part."""
    return path.rpartition("+")[2]


def _first_leaf(output: Any) -> np.ndarray:
    """A layer's main output: attention and RNN layers return (output, state...) in torch."""
    leaves = _leaves(output)
    return leaves[0][1] if leaves else np.zeros(0)


def _run(handle: ModelHandle, inputs: Any, taps: list[str], values: dict[str, np.ndarray] | None = None,
         record: Any = None) -> tuple[Any, dict[str, Any]]:
    try:
        if taps or values:
            return handle.forward_with_taps(inputs, taps, values, record)
        return handle.forward(inputs), {}
    except ModelshellError:
        raise
    except Exception as exc:  # noqa: BLE001 - a forward pass failing on the input is the user's to see
        given = inputs.items() if isinstance(inputs, dict) else enumerate(inputs)
        shapes = ", ".join(f"{k}={tuple(x.shape)}" if isinstance(k, str) else str(tuple(x.shape)) for k, x in given)
        raise ModelshellError(f"running {handle.class_name} on input {shapes} failed: {type(exc).__name__}: "
                              f"{_framework_message(exc)}", "pass an input that fits with --input FILE.npy") from exc


def _framework_message(exc: BaseException) -> str:
    """The framework's own words: the first lines that say something (Keras wraps the cause in a
    "Exception encountered when calling layer" preamble)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith(("Exception encountered", "Arguments received", "•"))]
    return " ".join((useful or lines or [type(exc).__name__])[:2])[:300]


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
        moved = to_other_layout(y, "keras" if a_framework == "torch" else "torch", channels, copy=False)
        if moved.shape == x.shape:
            y, note = moved, "channels moved"
    if x.shape != y.shape and y.ndim >= 3:
        # A convolution's output in the other layout where the inputs have none to move: transformers' TF
        # vision classes take `pixel_values` channels first and compute channels last; an audio model's
        # Conv1d gives (N, C, L), Keras's Conv1D (N, L, C). The moved one, when it is the shape.
        moved = to_other_layout(y, "keras" if a_framework == "torch" else "torch", True)
        if moved.shape == x.shape:
            y, note = moved, "channels moved"
    if x.shape != y.shape and x.size == y.size and x.shape[:1] == y.shape[:1] and x.ndim > 1:
        # The same values, grouped otherwise: a Keras EinsumDense gives (N, T, heads, size) where a torch
        # Linear gives (N, T, heads * size).
        y, note = y.reshape(x.shape), "reshaped"
    if x.shape != y.shape and x.ndim == y.ndim and 1 in (x.shape[0], y.shape[0]) and x.shape[1:] == y.shape[1:]:
        # One the same for every example, the other per example: transformers' position embedding gives
        # (1, T, E), keras-hub's broadcasts it to (N, T, E).
        x, y = np.broadcast_arrays(x, y)
        note = note or "broadcast"
    if x.shape != y.shape:
        return OutputComparison(name, tuple(x.shape), float("inf"), float("inf"), False,
                                f"shapes differ: {tuple(x.shape)} and {tuple(y.shape)}")
    diff, magnitude = _difference_and_magnitude(x, y)
    max_abs = float(diff.max()) if diff.size else 0.0
    scale = float(magnitude.max()) if diff.size else 0.0
    max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else float("inf"))
    magnitude *= rtol
    magnitude += atol
    ok = bool(np.all(diff <= magnitude))
    return OutputComparison(name, tuple(x.shape), max_abs, max_rel, ok, note)


def _difference_and_magnitude(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``|x - y|`` and ``|y|`` as two new arrays, in the wider of the two float dtypes and float32 at least
    (float64 for anything else). The check after a VGG16 copy compares 17 layer outputs of up to 3.2M
    values; four float64 temporaries per comparison took 1.6 s of it. Near-equal float32 values subtract
    exactly (Sterbenz), so float32 hides no difference a float64 one would show."""
    dtype = np.result_type(x.dtype, y.dtype, np.float32)
    if dtype.kind != "f":
        dtype = np.dtype(np.float64)
    diff = np.subtract(x, y, dtype=dtype)
    np.abs(diff, out=diff)
    return diff, np.abs(y, dtype=dtype)
