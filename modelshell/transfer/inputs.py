"""The same seeded input for two models, shaped as each one takes it.

A model takes one positional array (an image batch, a sequence of features) or named inputs: transformers
models keyword arguments (``input_ids``, ``attention_mask``, ``token_type_ids``, ``pixel_values``),
keras-hub backbones a dict (``token_ids``, ``padding_mask``, ``segment_ids``). Both are filled by role:
ids below the smallest vocabulary, masks of ones with one padded position, segments below the number of
segment types; a role only one model takes gets the neutral value (a mask of ones, segments of zero), so
the two still compute on the same data. An encoder-decoder model takes a second sequence, the decoder's
(``decoder_input_ids``, keras-hub's ``decoder_token_ids``): its roles are the encoder's with a
``decoder_`` prefix, filled the same way but shorter, so a model that reads one sequence for the other
fails on the shapes instead of agreeing by chance. Images are channels first for torch and for transformers'
``pixel_values`` (in both frameworks), channels last for Keras.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modelshell.core.errors import ModelshellError, first_line
from modelshell.frameworks.base import InputSlot, Layer, ModelHandle
from modelshell.transfer import kinds

__all__ = ["PairedInputs", "paired_inputs", "model_inputs", "ROLES"]

#: Input names by role, as the libraries spell them (transformers, then keras-hub).
ROLES = {
    "input_ids": "ids", "token_ids": "ids", "encoder_token_ids": "ids",
    "attention_mask": "mask", "padding_mask": "mask", "encoder_padding_mask": "mask",
    "token_type_ids": "segments", "segment_ids": "segments",
    "decoder_input_ids": "decoder_ids", "decoder_token_ids": "decoder_ids",
    "decoder_attention_mask": "decoder_mask", "decoder_padding_mask": "decoder_mask",
    "pixel_values": "pixels", "images": "pixels", "image": "pixels", "input_values": "audio", "audio": "audio",
}
_DECODER = "decoder_"  # the decoder's roles: the encoder's, on a sequence of their own
_TEXT_ROLES = ("ids", "mask", "segments")
_CHANNEL_KINDS = ("Conv", "DepthwiseConv", "SeparableConv")
_BATCH, _LENGTH, _DECODER_LENGTH, _AUDIO, _IMAGE = 2, 8, 6, 1600, 32


@dataclass
class PairedInputs:
    """What A and B are called with (a list, or a dict by input name), A's shapes for the report, and
    whether image layouts differ between them (so outputs with a channel axis are moved to compare)."""

    a: Any
    b: Any
    shapes: list[tuple[int, ...]]
    channels: bool


def paired_inputs(a: ModelHandle, b: ModelHandle, a_layers: list[Layer], b_layers: list[Layer], seed: int = 0,
                  input_file: str | None = None, image_side: int | None = None) -> PairedInputs:
    """``image_side``: A and B are one model looked at on its own (``shapes``), and where it does not say
    its input but its first layer is a convolution, it takes images of this side (a wrong guess only
    costs the output shapes; two models compared must be given an input that is not a guess)."""
    channels = _layouts_differ(a, b, a_layers, b_layers)
    slots_a, slots_b = a.input_slots() or [], b.input_slots() or []
    if input_file is None and any(s.name for s in (*slots_a, *slots_b)) and slots_a and slots_b:
        return _named(a, b, slots_a, slots_b, a_layers + b_layers, seed)
    inputs_a = _load_inputs(input_file) if input_file else \
        _random_inputs(a, b, a_layers, b_layers, seed, channels, image_side)
    inputs_b = [to_other_layout(x, a.framework, channels) for x in inputs_a]
    return PairedInputs(inputs_a, inputs_b, [tuple(x.shape) for x in inputs_a], channels)


#: Image sides to try, in turn, on a model that does not say its input: CIFAR's, MNIST's, ImageNet's.
IMAGE_SIDES = (32, 28, 224)


def model_inputs(handle: ModelHandle, layers: list[Layer], seed: int = 0, input_file: str | None = None) -> list[Any]:
    """What one model alone may be called with (each a list, or a dict by input name), for the caller to
    run in turn: the input ``verify`` would give it against itself, and where the model does not say its
    input but starts with a convolution, a batch of images of each side in ``IMAGE_SIDES``."""
    candidates: dict[tuple, Any] = {}
    for side in IMAGE_SIDES:
        given = paired_inputs(handle, handle, layers, layers, seed, input_file, image_side=side).a
        values = given.values() if isinstance(given, dict) else given
        candidates.setdefault(tuple(x.shape for x in values), given)
    return list(candidates.values())


# --- named inputs --------------------------------------------------------------------------------
def _named(a: ModelHandle, b: ModelHandle, slots_a: list[InputSlot], slots_b: list[InputSlot],
           layers: list[Layer], seed: int) -> PairedInputs:
    roles_a = {_role_of(s): s for s in slots_a}
    roles_b = {_role_of(s): s for s in slots_b}
    unknown = [s.name or "(positional)" for s in (*slots_a, *slots_b) if _role_of(s) is None]
    if unknown:
        raise ModelshellError(f"cannot make up a value for the input {unknown[0]!r}",
                              "pass the inputs with --input FILE.npz (arrays named as A's inputs)")
    rng = np.random.default_rng(seed)
    slots = slots_a + slots_b
    length = _fixed(slots, _TEXT_ROLES, 1) or _LENGTH
    if "audio" in roles_a or "audio" in roles_b:
        # An audio model's mask covers its samples (transformers' Wav2Vec2), not a text length.
        length = _fixed(slots, ("audio",), 1) or _AUDIO
    decoder_length = _fixed(slots, tuple(_DECODER + r for r in _TEXT_ROLES), 1) or _DECODER_LENGTH
    values: dict[str, np.ndarray] = {}
    for role in dict.fromkeys([*roles_a, *roles_b]):
        shared = role in roles_a and role in roles_b
        decoder = role.startswith(_DECODER)
        values[role] = _value(role.removeprefix(_DECODER), shared, rng, decoder_length if decoder else length,
                              layers, slots)
    # An input only one model takes is left out where it may be (a keyword argument: GPT-2's
    # token_type_ids of zeros would still add an embedding), and given its neutral value where it must.
    inputs_a = _given(roles_a, roles_b, values, a.framework)
    inputs_b = _given(roles_b, roles_a, values, b.framework)
    shapes = [tuple(v.shape) for v in (inputs_a.values() if isinstance(inputs_a, dict) else inputs_a)]
    channels = any(role == "pixels" and _layout(roles_a[role], a.framework) != _layout(roles_b[role], b.framework)
                   for role in roles_a if role in roles_b)
    return PairedInputs(inputs_a, inputs_b, shapes, channels)


def _role_of(slot: InputSlot) -> str | None:
    """The role an input plays: by its name, or, for a lone positional input (keras-hub's image
    backbones), by what it holds: a 4-d float batch is images, integers are ids."""
    if slot.name:
        return ROLES.get(slot.name)
    if len(slot.shape) == 4:
        return "pixels"
    return "ids" if "int" in slot.dtype else None


def _value(role: str, shared: bool, rng: np.random.Generator, length: int, layers: list[Layer],
           slots: list[InputSlot]) -> np.ndarray:
    """One role's values, in the channels-first layout for images."""
    tables = sorted(_embedding_rows(layers))
    if role == "ids":
        vocabulary = next((n for n in tables if n > 16), tables[-1] if tables else 100)
        return rng.integers(0, vocabulary, size=(_BATCH, length))
    if role == "mask":
        mask = np.ones((_BATCH, length), dtype=np.int64)
        mask[-1, -1] = 0 if shared else 1  # one padded position, where both models read the mask
        return mask
    if role == "segments":
        types = next((n for n in tables if n <= 16), 2)
        return rng.integers(0, types, size=(_BATCH, length)) if shared else np.zeros((_BATCH, length), np.int64)
    if role == "pixels":
        size = _fixed(slots, ("pixels",), 2) or _IMAGE
        depth = _image_channels(slots) or 3
        return rng.standard_normal((_BATCH, depth, size, size)).astype(np.float32)
    return rng.standard_normal((_BATCH, _fixed(slots, ("audio",), 1) or _AUDIO)).astype(np.float32)


def _given(own: dict[str, InputSlot], other: dict[str, InputSlot], values: dict[str, np.ndarray],
           framework: str) -> Any:
    """A dict by input name, or a list for a model whose one input has no name."""
    given = {s.name: _as_taken(values[role], s, framework) for role, s in own.items()
             if s.required or role in other}
    return list(given.values()) if list(given) == [""] else given


def _as_taken(value: np.ndarray, slot: InputSlot, framework: str) -> np.ndarray:
    """The value in the layout and dtype this input takes (an int32 Keras input, a bool mask)."""
    if _role_of(slot) == "pixels" and _layout(slot, framework) == "last":
        value = np.ascontiguousarray(np.moveaxis(value, 1, -1))
    wanted = np.dtype(slot.dtype) if slot.dtype else value.dtype
    if value.dtype.kind == "f":
        return value.astype(wanted if wanted.kind == "f" else np.float32)
    return value.astype(wanted if wanted.kind in "iub" else np.int64)


def _layout(slot: InputSlot, framework: str) -> str:
    """transformers takes ``pixel_values`` channels first in both frameworks; other Keras image inputs
    are channels last."""
    if slot.name == "pixel_values" or framework == "torch":
        return "first"
    return "last"


def _fixed(slots: list[InputSlot], roles: tuple[str, ...], axis: int) -> int | None:
    """A size one of the models fixes for these roles (a sequence length, an image side), if any."""
    for slot in slots:
        if _role_of(slot) in roles:
            sizes = [d for d in slot.shape[1:] if d is not None and d > 4]
            if sizes:
                return sizes[0]
    return None


def _image_channels(slots: list[InputSlot]) -> int | None:
    for slot in slots:
        if _role_of(slot) == "pixels" and len(slot.shape) == 4:
            small = [d for d in slot.shape[1:] if d is not None and d <= 4]
            if small:
                return small[0]
    return None


def _embedding_rows(layers: list[Layer]) -> list[int]:
    rows = []
    for layer in layers:
        if kinds.kind_of(layer) == "Embedding":
            rows += [t.shape[0] for t in layer.roles.values() if len(t.shape) == 2]
    return rows


# --- one positional input ------------------------------------------------------------------------
def _layouts_differ(a: ModelHandle, b: ModelHandle, a_layers: list[Layer], b_layers: list[Layer]) -> bool:
    """True when one model is torch and the other Keras and they start with a convolution: then torch
    wants channels first (N, C, H, W) and Keras channels last (N, H, W, C)."""
    if {a.framework, b.framework} != {"torch", "keras"}:
        return False
    first = [kinds.kind_of(layers[0]) for layers in (a_layers, b_layers) if layers]
    return any(kind.startswith(_CHANNEL_KINDS) for kind in first)


def to_other_layout(x: np.ndarray, framework: str, channels: bool, copy: bool = True) -> np.ndarray:
    """An array in ``framework``'s layout moved to the other's (channels first <-> last); without ``copy``
    a view (a comparison only reads it: VGG16's layer outputs were copied 17 times per check for it)."""
    if not channels or x.ndim < 3:
        return x
    moved = np.moveaxis(x, 1, -1) if framework == "torch" else np.moveaxis(x, -1, 1)
    return np.ascontiguousarray(moved) if copy else moved


def _random_inputs(a: ModelHandle, b: ModelHandle, a_layers: list[Layer], b_layers: list[Layer], seed: int,
                   channels: bool, image_side: int | None = None) -> list[np.ndarray]:
    """Inputs in A's layout, from A's input spec, else B's (converted), else A's first layer."""
    rng = np.random.default_rng(seed)
    for handle, layers in ((a, a_layers), (b, b_layers)):
        spec = handle.input_spec()
        if spec:
            arrays = [_random_array(rng, shape, dtype, layers) for shape, dtype in spec]
            if handle is b:
                arrays = [to_other_layout(x, b.framework, channels) for x in arrays]
            return arrays
    for layers in (a_layers, b_layers):
        guessed = _shape_from_first_layer(layers, image_side)
        if guessed:
            return [_random_array(rng, *guessed, layers)]
    if image_side is not None:
        raise ModelshellError("cannot tell the model's input shape", "pass one with --input FILE.npy")
    raise ModelshellError("cannot tell the input shape of either model",
                          "pass one with --input FILE.npy (in the first model's layout)")


def _random_array(rng: np.random.Generator, shape: tuple, dtype: str, layers: list[Layer]) -> np.ndarray:
    concrete = tuple(_BATCH if i == 0 and d is None else (_LENGTH if d is None else d) for i, d in enumerate(shape))
    vocabulary = _vocabulary(layers)
    if vocabulary or "int" in dtype:
        return rng.integers(0, vocabulary or 10, size=concrete).astype("int64" if "int" not in dtype else dtype)
    return rng.standard_normal(concrete).astype(dtype if dtype.startswith("float") else "float32")


def _vocabulary(layers: list[Layer]) -> int:
    if layers and kinds.kind_of(layers[0]) == "Embedding":
        return next(iter(layers[0].roles.values())).shape[0]
    return 0


def _shape_from_first_layer(layers: list[Layer], image_side: int | None = None) -> tuple[tuple, str] | None:
    """A torch module does not know its input shape, but its first layer often tells enough; with
    ``image_side``, a first convolution takes its channels and that many pixels a side (samples in 1-d)."""
    if not layers:
        return None
    first = layers[0]
    config, kind = first.config, kinds.kind_of(first)
    if kind == "Linear" and "in_features" in config:
        return (None, config["in_features"]), "float32"
    if kind == "Embedding":
        return (None, None), "int64"
    if kind in ("LSTM", "GRU", "RNN") and config.get("batch_first"):
        return (None, None, config["input_size"]), "float32"
    sides = {"Conv1d": 1, "Conv2d": 2, "Conv3d": 3}.get(kind)
    if image_side and sides and "in_channels" in config:
        return (None, config["in_channels"]) + (image_side,) * sides, "float32"
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
