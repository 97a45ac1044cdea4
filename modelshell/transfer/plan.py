"""Line two models up: layers first (kind, rule table, names, order), then tensors by role.

The result is a ``TransferPlan``, a plain value: ``pair`` shows it, ``copy`` executes it. Layers pair only
when a layout rule covers their two kinds (or, within one framework, when the kinds are equal); names
(normalised into tokens) anchor layers that were created in a different order, and the rest are aligned
by order, so extra or renamed layers on one side do not shift everything after them. Shapes never decide
a pairing; they are checked after it, through the rule, and a disagreement is reported, never reshaped.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from modelshell.core.errors import ModelshellError, first_line
from modelshell.frameworks.base import Layer, ModelHandle, TensorInfo, keras_snake_case
from modelshell.frameworks.copying import reshaped
from modelshell.transfer import folds, rules as layouts
from modelshell.transfer.kinds import kind_of, known_kinds

__all__ = ["TensorPair", "LayerMatch", "Problem", "TransferPlan", "Pairing", "make_plan", "pair_layers",
           "converted_values", "refuse_mismatched", "without_mismatched", "left_over", "trace_both"]

_CONV_KINDS = {"Conv1d": 1, "Conv2d": 2, "Conv3d": 3}
_FLATTEN_RESETS = {"Linear", "LSTM", "GRU", "RNN", "Embedding", "MultiheadAttention", "LayerNorm"}
# Two epsilons closer than this give the same float32 outputs for any variance a trained model has
# (the relative change of 1/sqrt(var + eps) is half the difference over var): Keras's DenseNet 1.001e-5
# against torch's 1e-5 is no difference; 1e-3 against 1e-5, or 1e-12 against 1e-5, is.
_EPSILON_THAT_MATTERS = 1e-7
_NORM_PAIRS = {("batch_norm", "eps", "epsilon"), ("layer_norm", "eps", "epsilon")}


@dataclass(frozen=True)
class TensorPair:
    """One step of a rule: A's tensors (usually one) become B's tensors through ``transform``."""

    a: tuple[str, ...]
    b: tuple[str, ...]
    a_shapes: tuple[tuple[int, ...], ...]
    b_shapes: tuple[tuple[int, ...], ...]
    transform: str

    def as_json(self) -> dict[str, Any]:
        one = len(self.a) == 1 and len(self.b) == 1
        return {
            "a": self.a[0] if one else list(self.a),
            "b": self.b[0] if one else list(self.b),
            "a_shape": list(self.a_shapes[0]) if one else [list(s) for s in self.a_shapes],
            "b_shape": list(self.b_shapes[0]) if one else [list(s) for s in self.b_shapes],
            "transform": self.transform,
        }


@dataclass
class LayerMatch:
    """Two layers (or a torch depthwise + pointwise pair and one SeparableConv2D) and how they map.

    ``rule`` is None within one framework (tensors copied as they are). ``a_roles``/``b_roles`` map the
    rule's role names to each model's tensors; ``dims`` are the sizes the shapes alone cannot tell.
    """

    a_path: str
    b_path: str
    a_kind: str
    b_kind: str
    rule: layouts.LayerRule | None
    direction: str | None
    a_roles: dict[str, TensorInfo]
    b_roles: dict[str, TensorInfo]
    dims: dict[str, int] = field(default_factory=dict)
    label: str = ""
    torch_config: dict[str, Any] = field(default_factory=dict)
    keras_config: dict[str, Any] = field(default_factory=dict)
    # Why these two: "only fit" (no neighbouring pair could swap with it), "names" (it could, and the
    # names decided), "order" (it could, and only the execution order decided: the check after a copy is
    # what proves it), "--map" (the user said so).
    basis: str = "only fit"
    # Pairs that could take each other's partners (q, k and v of one block) share a group number; the
    # confirmation by outputs (transfer/confirm.py) tries their other assignments.
    group: int | None = None
    # How the pairing was proven, once `confirm` ran: "outputs" (the destination, run with the
    # converted values, agrees layer by layer), "rule" (the only fit), "--map", or "" (not confirmed).
    confirmed: str = ""
    # A bias only one side has, folded into the BatchNorm after the layer (transfer/folds.py).
    fold: folds.Folding | None = None


@dataclass(frozen=True)
class Problem:
    name: str
    reason: str

    def as_json(self) -> dict[str, str]:
        return {"name": self.name, "reason": self.reason}


@dataclass
class TransferPlan:
    a: str
    b: str
    matches: list[LayerMatch]
    pairs: list[TensorPair]
    missing: list[Problem]
    unexpected: list[Problem]
    mismatched: list[Problem]
    warnings: list[str]
    notes: list[str] = field(default_factory=list)  # how the plan was made (not traced, guessed...)

    def as_json(self) -> dict[str, Any]:
        return {
            "a": self.a,
            "b": self.b,
            "pairs": [p.as_json() for p in self.pairs],
            "missing": [p.as_json() for p in self.missing],
            "unexpected": [p.as_json() for p in self.unexpected],
            "mismatched": [p.as_json() for p in self.mismatched],
            "warnings": list(self.warnings),
            "notes": list(self.notes),
            "layers": [{"a": m.a_path, "b": m.b_path, "basis": m.basis, "confirmed": m.confirmed or None,
                        **({"folded": m.fold.pair_row(m.a_path)[4]} if m.fold else {})}
                       for m in self.matches],
        }


# --- the plan ------------------------------------------------------------------------------------------
@dataclass
class Pairing:
    """The layers of both models, in execution order, and which pair with which (indices into them).

    A plan is drawn from it; the confirmation by outputs draws other plans from the same pairing with the
    partners of an interchangeable group reassigned, without listing, tracing or aligning again."""

    a: ModelHandle
    b: ModelHandle
    a_name: str
    b_name: str
    a_layers: list[Layer]
    b_layers: list[Layer]
    a_tensors: list[TensorInfo]
    b_tensors: list[TensorInfo]
    context: Any
    matched: list[tuple[int, int]]
    bases: dict[tuple[int, int], str]
    groups: list[list[int]]  # positions in `matched` of pairs that could take each other's partners
    notes: list[str]

    def reassigned(self, group: list[int], partners: tuple[int, ...]) -> "Pairing":
        """The pairing with the pairs at ``group`` given the B layers ``partners`` (in the group's order)."""
        matched = list(self.matched)
        bases = dict(self.bases)
        for position, j in zip(group, partners):
            i = matched[position][0]
            bases[(i, j)] = bases.pop(matched[position], "order")
            matched[position] = (i, j)
        _follow(matched, bases, group, self.a_layers, self.b_layers, self.context)
        return dataclasses.replace(self, matched=matched, bases=bases)

    def takes(self, position: int, j: int) -> bool:
        """Whether the A layer at ``position`` of ``matched`` could pair with B's layer ``j``."""
        return self.context.takes(self.a_layers[self.matched[position][0]], self.b_layers[j])

    def plan(self) -> TransferPlan:
        plan = TransferPlan(self.a_name, self.b_name, [], [], [], [], [], [])
        group_of = {self.matched[p]: g for g, members in enumerate(self.groups) for p in members}
        used_a, used_b = {i for i, _ in self.matched}, {j for _, j in self.matched}
        plan.matches = folds.folded([
            dataclasses.replace(self.context.match(self.a_layers[i], self.b_layers[j]), basis=self.bases[(i, j)],
                                group=group_of.get((i, j))) for i, j in self.matched], self.context)
        for match in plan.matches:
            _add_tensor_pairs(plan, match)
        plan.pairs = folds.relabelled(plan.pairs, plan.matches)
        for i, layer in enumerate(self.a_layers):
            if i not in used_a:
                reason = f"no layer of {self.b_name} pairs with {_describe(layer)}"
                plan.unexpected += [Problem(t.name, reason) for t in layer.roles.values()]
        for j, layer in enumerate(self.b_layers):
            if j not in used_b:
                reason = f"no layer of {self.a_name} pairs with {_describe(layer)}"
                plan.missing += [Problem(t.name, reason) for t in layer.roles.values()]
        plan.unexpected = _untied(plan.unexpected, [m.a_roles for m in plan.matches], self.a_tensors)
        plan.missing = _untied(plan.missing, [m.b_roles for m in plan.matches], self.b_tensors)
        plan.warnings += _warnings(plan, self.a.framework, [(self.a_name, self.a_tensors), (self.b_name, self.b_tensors)])
        plan.notes += self.notes + folds.notes(plan.matches, self.a_name, self.b_name)
        return plan


def _untied(problems: list[Problem], paired: list[dict[str, TensorInfo]], tensors: list[TensorInfo]) -> list[Problem]:
    """The problems less those of tensors that are one with a paired tensor (tied: BART's ``shared``
    table is its encoder's and decoder's ``embed_tokens``, and only those run): a tensor both names of
    which are listed is paired when either is."""
    owner = {t.name: t.tied_to or t.name for t in tensors}
    covered = {owner.get(t.name, t.name) for roles in paired for t in roles.values()}
    return [p for p in problems if owner.get(p.name, p.name) not in covered]


def make_plan(a: ModelHandle, b: ModelHandle, a_name: str = "A", b_name: str = "B",
              traces: tuple[dict | None, dict | None] | None = None,
              overrides: list[tuple[str, str]] = ()) -> TransferPlan:
    """Pair A's tensors with B's (A is the source when the plan is copied). Both models are traced once
    on the seeded input when they can run, so layers pair in the order they execute and the flatten
    permutation is applied only where a flattened feature map really feeds a Linear/Dense."""
    return pair_layers(a, b, a_name, b_name, traces, overrides).plan()


def pair_layers(a: ModelHandle, b: ModelHandle, a_name: str = "A", b_name: str = "B",
                traces: tuple[dict | None, dict | None] | None = None,
                overrides: list[tuple[str, str]] = ()) -> Pairing:
    """Which layer of A pairs with which of B: the work of ``make_plan`` before the tensors are listed."""
    a_tensors, b_tensors = a.tensors(), b.tensors()  # listed once: the layers and the warnings both read them
    a_layers, b_layers = _layers(a, a_tensors, b), _layers(b, b_tensors, a)
    if a.framework != b.framework:
        a_layers, b_layers = _merge_separable(a, a_layers, b_layers), _merge_separable(b, b_layers, a_layers)
    a_layers = _keras_file_layers(a, a_layers, b.framework, b_layers)
    b_layers = _keras_file_layers(b, b_layers, a.framework, a_layers)
    notes: list[str] = []
    a_trace, b_trace = traces if traces is not None else trace_both(a, b, a_layers, b_layers, notes)
    a_layers, b_layers = _in_execution_order(a_layers, a_trace), _in_execution_order(b_layers, b_trace)
    if a.framework != b.framework:
        a_layers, b_layers = _merge_fused(a, a_layers, b_layers), _merge_fused(b, b_layers, a_layers)
    context = _Context(a, b, a_layers, b_layers, (a_trace, b_trace), notes)
    forced = _forced_pairs(overrides, a_layers, b_layers, context, a_name, b_name)
    rest_a = [i for i in range(len(a_layers)) if i not in {i for i, _ in forced}]
    rest_b = [j for j in range(len(b_layers)) if j not in {j for _, j in forced}]
    aligned, in_order = _align([a_layers[i] for i in rest_a], [b_layers[j] for j in rest_b], context)
    matched = sorted(forced + [(rest_a[i], rest_b[j]) for i, j in aligned])
    bases, groups = _bases(matched, forced, a_layers, b_layers, context)
    _add_groups(bases, groups, matched, [[(rest_a[i], rest_b[j]) for i, j in group] for group in in_order])
    return Pairing(a, b, a_name, b_name, a_layers, b_layers, a_tensors, b_tensors, context, matched, bases,
                   groups, notes)


def _bases(matched: list[tuple[int, int]], forced: list[tuple[int, int]], a_layers: list[Layer],
           b_layers: list[Layer], context: Any) -> tuple[dict[tuple[int, int], str], list[list[int]]]:
    """For each pair, what decided it: a pair that could swap with the next or previous one (both fit
    the other's partner: q and k of one block) was decided by names where their last names agree, else
    by order alone. Also the groups of consecutive pairs that could swap (positions in ``matched``)."""
    def swappable(p: tuple[int, int], q: tuple[int, int]) -> bool:
        return context.swappable(a_layers[p[0]], b_layers[p[1]], a_layers[q[0]], b_layers[q[1]])

    bases: dict[tuple[int, int], str] = {}
    groups: list[list[int]] = []
    followers = _followers(matched, a_layers, b_layers, context)
    previous = None  # a norm that alone reads a layer's output follows that layer: it is not a neighbour
    for k, pair in enumerate(matched):
        if pair in forced:
            bases[pair] = "--map"
            previous = None
            continue
        if k in followers:
            continue
        if previous is not None and swappable(matched[previous], pair):
            if groups and groups[-1][-1] == previous:
                groups[-1].append(k)
            else:
                groups.append([previous, k])
        previous = k
    in_group = {k for group in groups for k in group}
    for k, pair in enumerate(matched):
        if pair in forced:
            continue
        if k in in_group:
            same = _tokens(a_layers[pair[0]].path)[-1:] == _tokens(b_layers[pair[1]].path)[-1:]
            bases[pair] = "names" if same else "order"
        else:
            bases[pair] = "only fit"
    return bases, groups


def _followers(matched: list[tuple[int, int]], a_layers: list[Layer], b_layers: list[Layer],
               context: Any) -> set[int]:
    """Positions in ``matched`` of the norms that alone read a paired layer's output (a conv and the
    BatchNorm after it, on both sides): a norm follows its layer, so the two pair or move together (the
    confirmation trying a block's two same-shaped convs the other way round takes their norms along),
    and a norm is not the neighbour of the layer after it."""
    a_position = {a_layers[i].path: k for k, (i, _) in enumerate(matched)}
    norms = [context.followers(a_layers[i], b_layers[j]) for i, j in matched]
    return {a_position[n[0]] for n in norms if n is not None and n[0] in a_position}


def _follow(matched: list[tuple[int, int]], bases: dict[tuple[int, int], str], group: list[int],
            a_layers: list[Layer], b_layers: list[Layer], context: Any) -> None:
    """After the pairs at ``group`` took other partners: each norm that alone reads one of their A
    layers takes the norm that alone reads the new B partner (the two norm pairs swap partners)."""
    b_index = {layer.path: j for j, layer in enumerate(b_layers)}
    for position in group:
        i, j = matched[position]
        norms = context.followers(a_layers[i], b_layers[j])
        if norms is None or norms[1] not in b_index:
            continue
        a_norm = next((p for p, (x, _) in enumerate(matched) if a_layers[x].path == norms[0]), None)
        b_norm = next((p for p, (_, y) in enumerate(matched) if y == b_index[norms[1]]), None)
        if a_norm is None or b_norm is None or a_norm == b_norm:
            continue
        (x, y), (u, v) = matched[a_norm], matched[b_norm]
        if context.takes(a_layers[x], b_layers[v]) and context.takes(a_layers[u], b_layers[y]):
            for old, new in (((x, y), (x, v)), ((u, v), (u, y))):
                bases[new] = bases.pop(old, "order")
            matched[a_norm], matched[b_norm] = (x, v), (u, y)


def _add_groups(bases: dict[tuple[int, int], str], groups: list[list[int]], matched: list[tuple[int, int]],
                in_order: list[list[tuple[int, int]]]) -> None:
    """Pairs that only their order decided, apart from one another (the relative attention bias of an
    encoder's first block and of its decoder's): each such set is a group the confirmation may reassign."""
    grouped = {k for group in groups for k in group}
    position = {pair: k for k, pair in enumerate(matched)}
    for group in in_order:
        if not all(pair in position for pair in group):
            continue  # the names re-paired some of them (``_by_last_names``): they are no longer by order
        positions = [position[pair] for pair in group]
        if grouped.isdisjoint(positions):
            groups.append(positions)
            bases.update({pair: "order" for pair in group})


def _forced_pairs(overrides: list[tuple[str, str]], a_layers: list[Layer], b_layers: list[Layer],
                  context: Any, a_name: str, b_name: str) -> list[tuple[int, int]]:
    """``--map A=B``: the layers (or the layers owning the tensors) whose names match the glob A pair, in
    order, with those matching B, where the user knows better than the alignment. Each such pair is
    checked as any other: it needs a rule, and its shapes go through it."""
    import fnmatch

    forced: list[tuple[int, int]] = []
    for a_glob, b_glob in overrides:
        found = []
        for layers, glob, name in ((a_layers, a_glob, a_name), (b_layers, b_glob, b_name)):
            hits = [i for i, layer in enumerate(layers) if fnmatch.fnmatchcase(layer.path, glob)
                    or any(fnmatch.fnmatchcase(t.name, glob) for t in layer.roles.values())]
            if not hits:
                raise ModelshellError(f"--map {a_glob}={b_glob}: no layer or tensor of {name} matches {glob!r}",
                                      f"`weights {name}` lists the names")
            found.append(hits)
        if len(found[0]) != len(found[1]):
            raise ModelshellError(f"--map {a_glob}={b_glob}: {len(found[0])} layers of {a_name} match, "
                                  f"{len(found[1])} of {b_name}", "the two sides must match as many layers")
        for i, j in zip(*found):
            if not context.compatible(a_layers[i], b_layers[j]):
                raise ModelshellError(f"--map {a_glob}={b_glob}: no layout rule pairs {_describe(a_layers[i])} "
                                      f"with {_describe(b_layers[j])}")
            forced.append((i, j))
    return forced


def trace_both(a: ModelHandle, b: ModelHandle, a_layers: list[Layer], b_layers: list[Layer],
               notes: list[str]) -> tuple[dict | None, dict | None]:
    """Each model's trace on the seeded input ``verify`` uses, or None for one that cannot run (a
    weights-only file; a model whose input cannot be made up, said in ``notes``)."""
    if not (a.has_architecture or b.has_architecture) or a.framework == b.framework:
        return None, None  # within one framework, tensors pair by name as they are: no trace needed
    from modelshell.transfer.inputs import paired_inputs

    try:
        inputs = paired_inputs(a, b, a_layers, b_layers)
    except ModelshellError as exc:
        notes.append(f"not traced (layers pair in registration order): {exc.message}")
        return None, None
    traces = []
    for handle, given, layers in ((a, inputs.a, a_layers), (b, inputs.b, b_layers)):
        if not handle.has_architecture:
            traces.append(None)
            continue
        # A trace tells order and shapes, which weights do not change: `pair` then `copy` trace once.
        key = (_input_signature(given),
               tuple((layer.path, *(t.shape for t in layer.roles.values())) for layer in layers))
        cached = getattr(handle, "_traces", {})
        if key in cached:
            traces.append(cached[key])
            continue
        try:
            traces.append(handle.trace(given))
            handle._traces = {key: traces[-1]}
        except Exception as exc:  # noqa: BLE001 - a model that cannot run on made-up input still pairs
            notes.append(f"{handle.class_name} could not be traced ({type(exc).__name__}: {first_line(exc)[:120]}); "
                         "its layers pair in registration order")
            traces.append(None)
    return traces[0], traces[1]


def _input_signature(given: Any) -> tuple:
    items = given.items() if isinstance(given, dict) else enumerate(given)
    return tuple((k, tuple(v.shape), str(v.dtype)) for k, v in items)


def _layers(handle: ModelHandle, tensors: list[TensorInfo], other: ModelHandle) -> list[Layer]:
    """The handle's layers with their kinds resolved through their lineage (a subclass of a known layer
    is that kind). A Keras attention layer is whole only against a torch ``MultiheadAttention``; against
    separate Linear projections (transformers) its projections pair one by one."""
    if handle.framework == "keras" and handle.has_architecture and other.framework == "torch":
        whole = any("MultiheadAttention" in (layer.lineage or (layer.kind,)) for layer in other.layers())
        layers = handle.layers(tensors, whole_attention=whole)
    else:
        layers = handle.layers(tensors)
    resolved = [dataclasses.replace(layer, kind=kind_of(layer)) if layer.kind else layer for layer in layers]
    leaves = [leaf for layer in resolved for part in _beyond_rules(layer) for leaf in _leaves_of(part)]
    # A layer of a kind no rule knows (a library's own norm or embedding) pairs by its tensors, as a
    # weights-only file's layers do; its class name stays in its lineage for messages.
    return [dataclasses.replace(layer, kind="") if layer.kind and layer.kind not in known_kinds() else layer
            for layer in leaves]


LEAF = "Leaf"  # the lineage of a tensor a block owns directly, paired on its own


def _leaves_of(layer: Layer) -> list[Layer]:
    """A layer of a kind no rule knows is usually a block that owns tensors directly (an embedding table
    made with ``add_weight``, a class token, a layer scale): when its tensors are not the roles of any
    rule (``weight``, ``bias``, ``kernel``...), each becomes a leaf of its own, to pair with a layer or a
    leaf of the other model by name, order and shape. A custom layer with ordinary roles (transformers'
    ``TFConv1D`` with ``weight`` and ``bias``) stays whole, and pairs by its tensors."""
    if not layer.kind or layer.kind in known_kinds() or set(layer.roles) <= _rule_role_names():
        return [layer]
    separator = "/" if "/" in layer.path or any("/" in r for r in layer.roles) else "."
    leaves = []
    for role, tensor in layer.roles.items():
        path = separator.join(p for p in (layer.path, role.replace("/", separator)) if p)
        leaves.append(Layer(path, "", {role.rpartition("/")[2]: tensor}, {}, (LEAF,)))
    return leaves


def _beyond_rules(layer: Layer) -> list[Layer]:
    """A layer of a known kind that owns a tensor no rule of its kind has (keras-hub's untied
    ``ReversibleEmbedding`` keeps its output projection ``reverse_embeddings`` beside ``embeddings``):
    the layer keeps the roles its rules know, and each other tensor pairs on its own, as a leaf, so the
    layer still pairs and the extra tensor is listed (or pairs) by itself."""
    known = _roles_of_kind(layer.kind)
    extra = [role for role in layer.roles if role not in known]
    if not layer.kind or not known or not extra or len(extra) == len(layer.roles):
        return [layer]
    kept = Layer(layer.path, layer.kind, {r: t for r, t in layer.roles.items() if r in known}, layer.config,
                 layer.lineage)
    separator = "/" if "/" in layer.path else "."
    return [kept] + [Layer(separator.join(p for p in (layer.path, role) if p), "", {role: layer.roles[role]}, {},
                           (LEAF,)) for role in extra]


@functools.lru_cache(maxsize=None)
def _roles_of_kind(kind: str) -> frozenset[str]:
    return frozenset(r.name for rule in layouts.RULES for side in ("torch", "keras")
                     if (kind == rule.keras_kind if side == "keras" else kind in rule.torch_classes)
                     for r in rule.roles(side))


@functools.lru_cache(maxsize=1)
def _rule_role_names() -> frozenset[str]:
    return frozenset(r.name for rule in layouts.RULES for side in ("torch", "keras") for r in rule.roles(side))


def _is_leaf(layer: Layer) -> bool:
    return layer.lineage == (LEAF,)


def _by_tensors(layer: Layer) -> bool:
    """A leaf, or a live layer whose kind no rule knows (its lineage says what it was)."""
    return _is_leaf(layer) or (not layer.kind and bool(layer.lineage))


def _unit_shapes(layer: Layer) -> list[tuple[int, ...]]:
    return [_unit_shape(t.shape) for t in layer.roles.values()]


def _in_execution_order(layers: list[Layer], trace: dict | None) -> list[Layer]:
    """Layers in the order they first ran (creation and registration order are not execution order:
    keras-hub builds a block's norms before its dense layers, Keras ResNet its shortcut conv first);
    layers that did not run keep their place after those that did."""
    if not trace:
        return layers
    ran = [layer for layer in layers if _call_of(layer, trace) is not None]
    idle = [layer for layer in layers if _call_of(layer, trace) is None]
    return sorted(ran, key=lambda layer: _call_of(layer, trace).order) + idle


def _call_of(layer: Layer, trace: dict) -> Any:
    """The trace entry of a layer; a merged separable pair answers for its first conv, and a leaf (a
    tensor a block owns) for the block."""
    found = next((trace[path] for path in layer.path.split("+") if path in trace), None)
    if found is None and _is_leaf(layer):
        path = layer.path
        while path and path not in trace:
            path = re.sub(r"[./]?[^./]*$", "", path)
        found = trace.get(path)
    return found


def converted_values(plan: TransferPlan, source: ModelHandle) -> dict[str, np.ndarray]:
    """Every destination tensor's new value, computed and shape-checked before anything is written.

    Values may be views of the source's arrays (a transpose is one), or a ``Reshaped`` where a view
    cannot take the destination's shape: every adapter's ``write`` copies them into the destination, so
    the weights are not held a third time on the way."""
    refuse_mismatched(plan)
    values: dict[str, np.ndarray] = {}
    into_norms: list[tuple[folds.Folding, np.ndarray]] = []  # biases the destination's norms take, after the loop
    arrays_in_order = source.iter_arrays([t.name for match in plan.matches for t in match.a_roles.values()])
    for match in plan.matches:
        arrays = {role: next(arrays_in_order) for role in match.a_roles}
        if match.rule is None:  # as is, or with unit axes added or dropped (leaves of blocks)
            out = {role: reshaped(array, match.b_roles[role].shape) if role in match.b_roles else array
                   for role, array in arrays.items()}
        else:
            src_side, dst_side = match.direction.split("->")
            ranked = _rule_shapes(match.rule, src_side, match.a_roles)
            arrays = {role: reshaped(array, ranked[role]) for role, array in arrays.items()}
            expect = _rule_shapes(match.rule, dst_side, match.b_roles)
            if match.fold is not None and match.fold.into_norm:
                into_norms.append((match.fold, arrays.pop(match.fold.rule.bias)))
            elif match.fold is not None:
                zero_shape = expect.pop(match.fold.rule.bias)
            out = layouts.convert(match.rule, arrays, match.direction, expect=expect, copy=False, **match.dims)
            if match.fold is not None and not match.fold.into_norm:
                out[match.fold.rule.bias] = np.zeros(zero_shape, next(iter(out.values())).dtype)
            out = {role: reshaped(array, match.b_roles[role].shape) if role in match.b_roles else array
                   for role, array in out.items()}
        for role, array in out.items():
            target = match.b_roles.get(role)
            if target is not None:
                _put_once(values, target, array)
    folds.values_into_norms(values, into_norms)
    return values


def _put_once(values: dict[str, np.ndarray], target: TensorInfo, array: np.ndarray) -> None:
    """A tied tensor is one tensor, written once through its first name, whichever of its names was
    paired; two pairs that give it different values refuse the copy rather than let the last one win."""
    name = target.tied_to or target.name
    if name not in values:
        values[name] = array
    elif values[name] is not array and not np.array_equal(np.asarray(values[name]), np.asarray(array)):
        raise ModelshellError(f"cannot copy: {target.name} is {name} (one tied tensor) but its pairs give it "
                              "different values", "pair the tensor once, with --map")


def without_mismatched(plan: TransferPlan) -> TransferPlan:
    """For --partial: the layer pairs whose shapes disagree (a 3-class head against a 4-class one) are
    left out, their tensors listed as not paired, instead of refusing the whole copy."""
    bad = {p.name for p in plan.mismatched}
    keep, dropped = [], []
    for match in plan.matches:
        names = {t.name for t in (*match.a_roles.values(), *match.b_roles.values())}
        (dropped if names & bad or any(n.startswith(f"{match.a_path}:") for n in bad) else keep).append(match)
    reason = "its shapes do not fit the other model's (left out by --partial)"
    missing = plan.missing + [Problem(t.name, reason) for m in dropped for t in m.b_roles.values()]
    unexpected = plan.unexpected + [Problem(t.name, reason) for m in dropped for t in m.a_roles.values()]
    dropped_names = {t.name for m in dropped for t in (*m.a_roles.values(), *m.b_roles.values())}
    pairs = [p for p in plan.pairs if not (set(p.a) | set(p.b)) & dropped_names]
    return dataclasses.replace(plan, matches=keep, pairs=pairs, missing=missing, unexpected=unexpected,
                               mismatched=[])


_DERIVED_KINDS = "iub"  # integer and boolean tensors: counters and index tables the framework computes


def left_over(plan: TransferPlan, source: list[TensorInfo], destination: list[TensorInfo]) -> tuple[list[str], list[tuple[str, Any]]]:
    """What a strict copy cannot leave unpaired: DST tensors that get no value and SRC tensors that are
    not used. Tensors the framework derives (integer counters such as ``num_batches_tracked``, index
    tables such as ``relative_position_index``) and aliases of a tied tensor are let through, the former
    listed. ``source`` and ``destination`` are the models' tensors as the pairing listed them (listing a
    large tf-keras model again costs a walk of every layer)."""
    infos = {("dst", t.name): t for t in destination} | {("src", t.name): t for t in source}
    derived, left = [], []
    for side, problems in (("dst", plan.missing), ("src", plan.unexpected)):
        for problem in problems:
            info = infos.get((side, problem.name))
            if info is not None and info.tied_to is not None:
                continue
            if info is not None and _is_derived(info):
                derived.append(problem.name)
            else:
                left.append((side, problem))
    return derived, left


def _is_derived(info: TensorInfo) -> bool:
    try:
        return np.dtype(info.dtype).kind in _DERIVED_KINDS
    except TypeError:
        return False


def refuse_mismatched(plan: TransferPlan) -> None:
    """A pair whose shapes disagree through its rule refuses the whole copy, with the first reason."""
    if plan.mismatched:
        first = plan.mismatched[0]
        more = f" (and {len(plan.mismatched) - 1} more)" if len(plan.mismatched) > 1 else ""
        raise ModelshellError(f"cannot copy: {first.name}: {first.reason}{more}", f"`pair {plan.a} {plan.b}` shows all")


def _add_tensor_pairs(plan: TransferPlan, match: LayerMatch) -> None:
    where = f"{match.a_path or '(top)'} -> {match.b_path or '(top)'}"
    if match.rule is None:
        _add_identity_pairs(plan, match, where)
        return
    src_side, dst_side = match.direction.split("->")
    shapes = _rule_shapes(match.rule, src_side, match.a_roles)
    try:
        expected = layouts.expected_shapes(match.rule, shapes, match.direction, **match.dims)
    except layouts.LayoutError as exc:
        plan.mismatched += [Problem(t.name, f"{where}: {exc.one_line()}") for t in match.a_roles.values()]
        return
    produced = set()
    folded = {match.fold.rule.bias} if match.fold is not None else set()
    for step in match.rule.steps(match.direction):
        if folded & {*step.sources, *step.targets}:
            continue  # the fold moves the bias (or makes it 0), not the rule
        sources = [match.a_roles[r] for r in step.sources if r in match.a_roles]
        if not sources and any(match.rule.role(src_side, r).optional for r in step.sources):
            continue
        targets = [match.b_roles[r] for r in step.targets if r in match.b_roles]
        lost = [r for r in step.targets if r in expected and r not in match.b_roles]
        for role in lost:
            plan.mismatched.append(Problem(f"{match.a_path}:{role}", f"{where}: {match.b_kind} has no {role} to receive it"))
        produced.update(step.targets)
        label = match.label if match.label and {"weight", "kernel"} & set(step.sources) else step.name
        plan.pairs.append(TensorPair(
            tuple(t.name for t in sources), tuple(t.name for t in targets),
            tuple(t.shape for t in sources), tuple(t.shape for t in targets), label if step.targets else "dropped",
        ))
        for role, target in zip([r for r in step.targets if r in match.b_roles], targets):
            if role in expected and expected[role] != target.shape and \
                    expected[role] != _to_rank(target.shape, len(expected[role])):
                plan.mismatched.append(Problem(
                    target.name, f"{where}: the rule makes {expected[role]} from A, but B's is {target.shape}",
                ))
    if match.fold is not None and match.fold.a_mean is not None:
        plan.pairs.append(TensorPair(*match.fold.pair_row(match.a_path)))
    for role, target in match.b_roles.items():
        if role not in folded and (role not in produced or role not in expected):
            plan.missing.append(Problem(target.name, f"{where}: nothing in {match.a_kind or 'A'} produces {role}"))


def _to_rank(shape: tuple[int, ...], rank: int) -> tuple[int, ...]:
    """``shape`` with unit axes dropped, leading ones first, until it has ``rank`` axes (a transformers TF
    bias ``(1, C)`` is a rule's ``(C,)``); unchanged when it cannot get there by dropping units."""
    shape = tuple(shape)
    while len(shape) > rank and 1 in shape:
        shape = shape[:shape.index(1)] + shape[shape.index(1) + 1:]
    return shape


def _rule_shapes(rule: layouts.LayerRule, side: str, roles: dict[str, TensorInfo]) -> dict[str, tuple[int, ...]]:
    """The roles' shapes as the rule's ranks have them (unit axes a library adds dropped)."""
    return {r: _to_rank(t.shape, len(rule.role(side, r).shape)) for r, t in roles.items()}


def _unit_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape without its unit axes: ``(1, N, E)`` and ``(N, E)``, ``(C, 1, 1)`` and ``(C,)`` hold the
    same values in the same order. Data is never reshaped across axes that are not units."""
    return tuple(d for d in shape if d != 1)


def _add_identity_pairs(plan: TransferPlan, match: LayerMatch, where: str) -> None:
    for role, source in match.a_roles.items():
        target = match.b_roles.get(role)
        if target is None:
            plan.unexpected.append(Problem(source.name, f"{where}: B's layer has no {role}"))
            continue
        units = source.shape != target.shape and _unit_shape(source.shape) == _unit_shape(target.shape)
        transform = "as is" if not units else ("drop unit axes" if len(source.shape) > len(target.shape)
                                               else "add unit axes" if len(source.shape) < len(target.shape)
                                               else "move unit axes")
        plan.pairs.append(TensorPair((source.name,), (target.name,), (source.shape,), (target.shape,), transform))
        if source.shape != target.shape and not units:
            plan.mismatched.append(Problem(target.name, f"{where}: shapes {source.shape} and {target.shape} differ"))
    for role, target in match.b_roles.items():
        if role not in match.a_roles:
            plan.missing.append(Problem(target.name, f"{where}: A's layer has no {role}"))


# --- which layers can pair, and how ---------------------------------------------------------------------
class _Context:
    """Decides whether two layers pair (and under which rule), with what it knows of both models."""

    def __init__(self, a: ModelHandle, b: ModelHandle, a_layers: list[Layer], b_layers: list[Layer],
                 traces: tuple[dict | None, dict | None] = (None, None), notes: list[str] | None = None) -> None:
        self.a, self.b = a, b
        self.same = a.framework == b.framework
        self.direction = None if self.same else f"{a.framework}->{b.framework}"
        self.flatten = {} if self.same else _flatten_points(a, b, a_layers, b_layers, traces, notes)
        self.traces = traces
        self._by_path = ({layer.path: layer for layer in a_layers}, {layer.path: layer for layer in b_layers})
        self._cache: dict[tuple, tuple[layouts.LayerRule | None, bool]] = {}
        self._fit_cache: dict[tuple[int, int], bool] = {}

    def compatible(self, la: Layer, lb: Layer) -> bool:
        key = (la.kind, lb.kind, _signature(la), _signature(lb), self.flatten.get(id(la)), self.flatten.get(id(lb)),
               _is_depthwise(la), _is_depthwise(lb),  # everything _rule looks at
               _by_tensors(la) and tuple(_unit_shapes(la)), _by_tensors(lb) and tuple(_unit_shapes(lb)),
               _is_leaf(la), _is_leaf(lb), la.config.get("groups"), lb.config.get("groups"))
        if key not in self._cache:
            self._cache[key] = self._rule(la, lb)
        return self._cache[key][1]

    def _rule(self, la: Layer, lb: Layer) -> tuple[layouts.LayerRule | None, bool]:
        if self.same:
            kinds = la.kind == lb.kind or "" in (la.kind, lb.kind)
            if set(la.roles) == set(lb.roles):  # by name: a file may list a layer's tensors in another order
                return None, kinds and all(len(la.roles[r].shape) == len(lb.roles[r].shape) for r in la.roles)
            return None, kinds and _signature(la) == _signature(lb)
        t, k = (la, lb) if self.a.framework == "torch" else (lb, la)
        if _by_tensors(la) and _by_tensors(lb):
            # Two tensors owned by blocks, or two layers of kinds no rule knows (a library's own RMS norm
            # on each side): the same values in the same order, unit axes aside; the check after a copy
            # proves it.
            return None, _unit_shapes(la) == _unit_shapes(lb)
        rule = _find_rule(t, k, self.flatten.get(id(t)))
        return rule, rule is not None

    def weight(self, la: Layer, lb: Layer) -> float:
        """How much pairing two compatible layers is worth in the order alignment: two where every shape
        fits through the rule, a quarter where it does not (such a pair is still reported, as mismatched,
        rather than left out), and a little more where the names share tokens. So of two Embedding
        layers that could take one's place, the one whose shapes fit wins, whatever the order."""
        return (2 if self.fits(la, lb) else 0.25) + _similarity(la.path, lb.path)

    def takes(self, la: Layer, lb: Layer) -> bool:
        """A rule pairs the two layers and every shape goes through it."""
        return self.compatible(la, lb) and self.fits(la, lb)

    def swappable(self, a1: Layer, b1: Layer, a2: Layer, b2: Layer) -> bool:
        """The pairs (a1, b1) and (a2, b2) could as well be (a1, b2) and (a2, b1): q and k of one block."""
        return self.takes(a1, b2) and self.takes(a2, b1)

    def fits(self, la: Layer, lb: Layer) -> bool:
        key = (id(la), id(lb))
        if key not in self._fit_cache:
            plan = TransferPlan("A", "B", [], [], [], [], [], [])
            match = self.match(la, lb)
            fold = folds.one_sided(match)
            if fold is not None and self.norms_after(match, fold.rule) is not None:
                match = dataclasses.replace(match, fold=fold)  # a bias one side lacks that may fold: no misfit
            _add_tensor_pairs(plan, match)
            self._fit_cache[key] = not plan.mismatched
        return self._fit_cache[key]

    def followers(self, la: Layer, lb: Layer) -> tuple[str, str] | None:
        """The norms that alone read the two layers' outputs, where a fold's rule pairs the layers."""
        rule = self._rule(la, lb)[0] if not self.same else None
        fold = next((f for f in layouts.FOLDS if rule is not None and rule.key in f.layers), None)
        if fold is None:
            return None
        return self.norms_after(LayerMatch(la.path, lb.path, la.kind, lb.kind, rule, self.direction, {}, {}), fold)

    def norms_after(self, match: LayerMatch, rule: layouts.Fold) -> tuple[str, str] | None:
        """The paths of the norms that alone read the two layers' outputs, where both traces show one."""
        if self.same:
            return None
        found = []
        for path, layers, trace, side in zip((match.a_path, match.b_path), self._by_path, self.traces,
                                             self.direction.split("->")):
            layer = layers.get(path)
            found.append(None if layer is None else folds.feeds_only_a_norm(layer, trace, layers, side, rule))
        return (found[0], found[1]) if None not in found else None

    def match(self, la: Layer, lb: Layer) -> LayerMatch:
        self.compatible(la, lb)
        rule = self._rule(la, lb)[0]  # not the cached one: which rule fits can depend on the shapes
        if rule is None:
            a_roles, b_roles = _identity_roles(la, lb)
            return LayerMatch(la.path, lb.path, la.kind, lb.kind, None, None, a_roles, b_roles)
        a_side, b_side = self.direction.split("->")
        a_roles, b_roles = _rule_roles(rule, a_side, la), _rule_roles(rule, b_side, lb)
        torch_layer, keras_layer = (la, lb) if a_side == "torch" else (lb, la)
        dims = {**layouts.known_dims(rule, b_side, _rule_shapes(rule, b_side, b_roles)),
                **_config_dims(rule, torch_layer)}
        label = ""
        flat = self.flatten.get(id(torch_layer))
        if flat and rule.after_flatten:
            channels, spatial = flat[0], flat[1]
            dims = {"C": channels, **({"L": spatial} if rule.after_flatten == 1 else {"H": spatial, "W": 1})}
            label = f"flatten-permute C={channels} " + ("L" if rule.after_flatten == 1 else "H*W") + f"={spatial}"
        return LayerMatch(la.path, lb.path, la.kind or lb.kind, lb.kind or la.kind, rule, self.direction,
                          a_roles, b_roles, dims, label, torch_layer.config, keras_layer.config)


def _find_rule(torch_layer: Layer, keras_layer: Layer, flat: tuple[int, int] | None) -> layouts.LayerRule | None:
    """The layout rule for a torch layer and a Keras layer; a weights-only side takes whichever rule of
    the other side's kind its tensors fit (by count and rank)."""
    after = 0
    if flat:
        after = 1 if flat[2:] == ("1d",) else 2
    candidates = [
        r for r in layouts.RULES
        if (not torch_layer.kind or torch_layer.kind in r.torch_classes or _is_separable(torch_layer, r))
        and (not keras_layer.kind or keras_layer.kind == r.keras_kind)
        and all(key in torch_layer.config for key in r.torch_config)
    ]
    if not torch_layer.kind and not keras_layer.kind:
        return None
    if torch_layer.kind in ("Linear", "") and any(r.after_flatten for r in candidates):
        candidates = [r for r in candidates if r.after_flatten == after or not r.keras_kind == "Dense"]
    if _is_depthwise(torch_layer) and keras_layer.config.get("groups") != torch_layer.config.get("groups"):
        # A depthwise conv is a grouped Conv2D(groups=C) or a DepthwiseConv2D, never a plain Conv2D.
        candidates = [r for r in candidates if r.key.startswith("depthwise") or not r.key.startswith("conv")]
    fitting = [r for r in candidates if _fits(r, "torch", torch_layer) and _fits(r, "keras", keras_layer)]
    if fitting:
        # Of the rules whose roles and ranks fit, the first whose shapes agree through it (a kernel
        # (E, H, D) splits a Linear's outputs into heads, (H, D, E) merges its inputs): else the first.
        return next((r for r in fitting if _shapes_agree(r, torch_layer, keras_layer)), fitting[0])
    if torch_layer.kind and keras_layer.kind:
        # Both kinds known and covered by a rule, but a tensor's rank differs (a GRU with reset_after=False
        # has a 1-d bias): pair them anyway, so the shape check reports it and copy refuses, instead of
        # leaving both layers unpaired and a copy that moves nothing and says it succeeded.
        for rule in candidates:
            if _fits(rule, "torch", torch_layer, ranks=False) and _fits(rule, "keras", keras_layer, ranks=False):
                return rule
    return None


def _shapes_agree(rule: layouts.LayerRule, torch_layer: Layer, keras_layer: Layer) -> bool:
    try:
        torch_roles, keras_roles = _rule_roles(rule, "torch", torch_layer), _rule_roles(rule, "keras", keras_layer)
        dims = {**layouts.known_dims(rule, "keras", _rule_shapes(rule, "keras", keras_roles)),
                **_config_dims(rule, torch_layer)}
        expected = layouts.expected_shapes(rule, _rule_shapes(rule, "torch", torch_roles), "torch->keras", **dims)
    except ModelshellError:
        return False
    return all(expected.get(r) == shape for r, shape in _rule_shapes(rule, "keras", keras_roles).items())


def _config_dims(rule: layouts.LayerRule, torch_layer: Layer) -> dict[str, int]:
    """The dimensions a rule reads from the torch layer's settings (a position table's ``offset``)."""
    return {key: int(torch_layer.config[key]) for key in rule.torch_config if key in torch_layer.config}


def _is_separable(layer: Layer, rule: layouts.LayerRule) -> bool:
    return layer.kind == "SeparableConv2d" and rule.key == "separable_conv2d"


def _fits(rule: layouts.LayerRule, side: str, layer: Layer, ranks: bool = True) -> bool:
    """The layer's tensors can be this rule's roles: by name when the names are the rule's, else by
    order (weights-only files name Keras variables 0, 1, ...); ranks must agree (unless ``ranks`` is
    False); a depthwise rule needs a depthwise torch conv (groups == in_channels)."""
    # A depthwise torch conv (groups == in_channels) pairs with DepthwiseConv2D by the depthwise rule, or
    # with a grouped Conv2D(groups=C) by the plain one (its kernel is (kh, kw, 1, C*M)); a depthwise rule
    # never takes a plain conv.
    if side == "torch" and rule.key.startswith("depthwise") and not _is_depthwise(layer):
        return False
    try:
        roles = _rule_roles(rule, side, layer)
    except ModelshellError:
        return False
    def rank_of(t: TensorInfo, wanted: int) -> int:
        # A leaf (a block's own tensor: a class token (1, 1, E)) takes a rule that moves values as they
        # are (a position table against an Embedding), never one that transposes it by dropping units.
        if _is_leaf(layer) and not _moves_as_is(rule):
            return len(t.shape)
        return len(_to_rank(t.shape, wanted))

    return not ranks or all(rank_of(t, len(rule.role(side, r).shape)) == len(rule.role(side, r).shape)
                            for r, t in roles.items())


def _moves_as_is(rule: layouts.LayerRule) -> bool:
    return all(step.name in ("as is", "drop", "0") for d in ("torch->keras", "keras->torch") for step in rule.steps(d))


def _is_depthwise(layer: Layer) -> bool:
    groups = layer.config.get("groups", 1)
    return layer.kind in ("Conv1d", "Conv2d") and groups > 1 and groups == layer.config.get("in_channels")


def _rule_roles(rule: layouts.LayerRule, side: str, layer: Layer) -> dict[str, TensorInfo]:
    names = [r.name for r in rule.roles(side)]
    if set(layer.roles) <= set(names):
        required = [r.name for r in rule.roles(side) if not r.optional]
        if all(r in layer.roles for r in required):
            return dict(layer.roles)
        raise ModelshellError("required roles missing")
    tensors = list(layer.roles.values())
    everyone = list(rule.roles(side))
    for chosen in (everyone, [r for r in everyone if not r.optional]):
        if len(chosen) == len(tensors):
            return {r.name: t for r, t in zip(chosen, tensors)}
    raise ModelshellError("roles do not fit")


def _identity_roles(la: Layer, lb: Layer) -> tuple[dict[str, TensorInfo], dict[str, TensorInfo]]:
    if set(la.roles) == set(lb.roles):
        return dict(la.roles), dict(lb.roles)
    keys = [str(i) for i in range(len(la.roles))]
    return dict(zip(keys, la.roles.values())), dict(zip(keys, lb.roles.values()))


def _signature(layer: Layer) -> tuple[int, ...]:
    return tuple(len(t.shape) for t in layer.roles.values())


def _flatten_points(a: ModelHandle, b: ModelHandle, a_layers: list[Layer], b_layers: list[Layer],
                    traces: tuple[dict | None, dict | None], notes: list[str] | None) -> dict[int, tuple]:
    """For each torch Linear (by ``id``) whose input is a flattened (C, H, W) map with H*W > 1: the
    channels C and the spatial size, as ``_flatten_channels`` gives them. Read from a trace: the torch
    model's where it ran, else the Keras model's (its Dense fed by a flattened (H, W, C) map, paired by
    order with the torch Linear); only where neither ran, guessed from the shapes (and said)."""
    torch_side = 0 if a.framework == "torch" else 1
    torch_layers, keras_layers = (a_layers, b_layers) if torch_side == 0 else (b_layers, a_layers)
    torch_trace, keras_trace = traces[torch_side], traces[1 - torch_side]
    if torch_trace is not None:
        return {id(layer): _flat(call.flattened[1], math.prod(call.flattened[2:]), len(call.flattened) - 2)
                for layer in torch_layers
                if (call := _call_of(layer, torch_trace)) is not None and layer.kind == "Linear"
                and call.flattened is not None and math.prod(call.flattened[2:]) > 1}
    if keras_trace is not None:
        flat_dense = [call.flattened for layer in keras_layers if layer.kind == "Dense"
                      if (call := _call_of(layer, keras_trace)) is not None]
        linears = [layer for layer in torch_layers if (layer.kind or _guess_torch_kind(layer)) == "Linear"]
        return {id(linear): _flat(shape[-1], math.prod(shape[1:-1]), len(shape) - 2)
                for linear, shape in zip(linears, flat_dense)
                if shape is not None and math.prod(shape[1:-1]) > 1}
    found = _flatten_channels(torch_layers)
    if found and notes is not None:
        notes.append("neither model could run, so where a Linear follows a flattened feature map is guessed "
                     "from the shapes; `verify` cannot check it")
    return found


def _flat(channels: int, spatial: int, rank: int) -> tuple:
    return (channels, spatial, *(("1d",) if rank == 1 else ()))


def _flatten_channels(torch_layers: list[Layer]) -> dict[int, tuple]:
    """For a Linear right after convolutions (in registration order): the channels C and the spatial
    size of the flattened feature map, when its inputs are C times a spatial size > 1. That is where torch
    (C,H,W) and Keras (H,W,C) flatten differently and a plain .T fits but is wrong."""
    found: dict[int, tuple] = {}
    channels, rank = None, 0
    for layer in torch_layers:
        kind = layer.kind or _guess_torch_kind(layer)
        if kind in _CONV_KINDS:
            channels, rank = layer.roles["weight"].shape[0], _CONV_KINDS[kind]
        elif kind == "Linear" and channels:
            inputs = layer.roles["weight"].shape[1]
            if inputs > channels and inputs % channels == 0:
                found[id(layer)] = (channels, inputs // channels, *(("1d",) if rank == 1 else ()))
            channels = None
        elif kind in _FLATTEN_RESETS:
            channels = None
    return found


def _guess_torch_kind(layer: Layer) -> str:
    weight = layer.roles.get("weight")
    if weight is None or "running_mean" in layer.roles:
        return ""
    return {2: "Linear", 3: "Conv1d", 4: "Conv2d", 5: "Conv3d"}.get(len(weight.shape), "")


_KERAS_KIND_OF_NAME = {keras_snake_case(r.keras_kind): r.keras_kind for r in layouts.RULES}


def _keras_file_layers(handle: ModelHandle, layers: list[Layer], other_framework: str,
                       other: list[Layer]) -> list[Layer]:
    """Layers of a Keras weights-only file, with kinds and in the other model's order where the file allows.

    Keras 3 ``save_weights`` names the layers of a Sequential or functional model by class and number
    (``layers/conv2d_1``, ``layers/batch_normalization``) and HDF5 lists them alphabetically, so the
    model's order is lost: a conv, a batch norm and a dense come back as batch norm, conv, dense. The
    kind is in the name; and Keras numbers the layers of one class in model order. So when every layer's
    name tells its kind, the file's layers are put in the order of the other model's kinds (the n-th
    Conv2D of the other model with the n-th conv2d of the file); the rest follow in the file's order."""
    if handle.framework != "keras" or handle.has_architecture:
        return layers
    typed = []
    for layer in layers:
        kind = layer.kind or _KERAS_KIND_OF_NAME.get(re.sub(r"_\d+$", "", layer.path.rpartition("/")[2]), "")
        typed.append(Layer(layer.path, kind, layer.roles, layer.config))
    wanted = [_keras_kinds_of(layer, other_framework) for layer in other]
    if not all(layer.kind for layer in typed) or not any(wanted):
        return typed
    queues: dict[str, list[Layer]] = {}
    for layer in sorted(typed, key=lambda x: [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", x.path)]):
        queues.setdefault(layer.kind, []).append(layer)
    ordered = []
    for kinds in wanted:
        kind = next((k for k in kinds if queues.get(k)), None)
        if kind is not None:
            ordered.append(queues[kind].pop(0))
    placed = {id(layer) for layer in ordered}
    return ordered + [layer for layer in typed if id(layer) not in placed]


def _keras_kinds_of(layer: Layer, framework: str) -> list[str]:
    """The Keras kinds a layer of the other model can pair with (none when its kind is unknown)."""
    if framework == "keras":
        return [layer.kind] if layer.kind else []
    return list(dict.fromkeys(
        r.keras_kind for r in layouts.RULES
        if (layer.kind in r.torch_classes and r.key.startswith("depthwise") == _is_depthwise(layer))
        or _is_separable(layer, r)
    ))


def _merge_separable(handle: ModelHandle, layers: list[Layer], other: list[Layer]) -> list[Layer]:
    """On the torch side, a depthwise Conv2d followed by a 1x1 Conv2d becomes one layer when the other
    model has SeparableConv2D layers: one Keras layer pairs with two torch layers."""
    if handle.framework != "torch" or not any(layer.kind == "SeparableConv2D" for layer in other):
        return layers
    merged, i = [], 0
    while i < len(layers):
        first, second = layers[i], layers[i + 1] if i + 1 < len(layers) else None
        if second is not None and _is_depthwise(first) and second.kind == "Conv2d" \
                and second.roles["weight"].shape[2:] == (1, 1):
            roles = {f"depthwise.{r}": t for r, t in first.roles.items()}
            roles.update({f"pointwise.{r}": t for r, t in second.roles.items()})
            path = _common_parent(first.path, second.path)
            merged.append(Layer(path, "SeparableConv2d", roles, dict(first.config)))
            i += 2
        else:
            merged.append(first)
            i += 1
    return merged


def _merge_fused(handle: ModelHandle, layers: list[Layer], other: list[Layer]) -> list[Layer]:
    """On the Keras side, P sibling layers that run one after the other with the same kind and shapes (the
    q, k and v projections of a block) become one layer where a fused rule covers them: the torch model
    has a layer that the fused rule takes with them (GPT-2's ``Conv1D (E, 3E)``), and too few layers to
    take the parts one by one (a model with separate q/k/v Linears keeps them apart)."""
    if handle.framework != "keras" or not handle.has_architecture:
        return layers
    for rule in layouts.RULES:
        count = layouts.parts(rule)
        if count > 1:
            layers = _merge_runs(layers, other, rule, count)
    return layers


def _merge_runs(layers: list[Layer], other: list[Layer], rule: layouts.LayerRule, count: int) -> list[Layer]:
    runs = [i for i in range(len(layers) - count + 1) if _is_run(layers[i:i + count], rule)]
    starts, taken = [], -1
    for i in runs:  # runs that do not overlap, first come first
        if i > taken:
            starts.append(i)
            taken = i + count - 1
    merged = {i: _merged(layers[i:i + count]) for i in starts}
    torch_kinds = [t for t in other if t.kind in rule.torch_classes and _fits(rule, "torch", t)]
    taken: dict[tuple, bool] = {}  # by the parts' shapes: every block of a model asks the same question
    for layer in merged.values():
        key = tuple(t.shape for t in layer.roles.values())
        if key not in taken:
            taken[key] = any(_shapes_agree(rule, t, layer) for t in torch_kinds)
    wanted = [i for i, layer in merged.items() if taken[tuple(t.shape for t in layer.roles.values())]]
    if not wanted:
        return layers
    part = layers[wanted[0]]
    singles = sum(1 for t in other if t.kind and (r := _find_rule(t, part, None)) is not None
                  and layouts.parts(r) == 1 and _shapes_agree(r, t, part))
    if singles >= count * len(wanted):
        return layers  # every part can pair alone: the torch model has them apart
    out, skip = [], set()
    for i, layer in enumerate(layers):
        if i in skip:
            continue
        if i in wanted:
            out.append(merged[i])
            skip.update(range(i, i + count))
        else:
            out.append(layer)
    return out


def _is_run(group: list[Layer], rule: layouts.LayerRule) -> bool:
    """P layers of the rule's Keras kind, siblings, with the same roles and shapes."""
    first = group[0]
    parent = first.path.rpartition("/")[0]
    return all(layer.kind == rule.keras_kind and layer.path.rpartition("/")[0] == parent
               and set(layer.roles) <= {"kernel", "bias"} and "kernel" in layer.roles
               and {r: t.shape for r, t in layer.roles.items()} == {r: t.shape for r, t in first.roles.items()}
               for layer in group)


def _merged(group: list[Layer]) -> Layer:
    roles = {f"{p}/{role}": tensor for p, layer in enumerate(group) for role, tensor in layer.roles.items()}
    return Layer("+".join(layer.path for layer in group), group[0].kind, roles, dict(group[0].config),
                 group[0].lineage)


def _common_parent(a: str, b: str) -> str:
    parent_a, parent_b = a.rpartition(".")[0], b.rpartition(".")[0]
    return parent_a if parent_a == parent_b and parent_a else f"{a}+{b}"


# --- aligning two sequences of layers -------------------------------------------------------------------
def _tokens(path: str) -> tuple[str, ...]:
    """``encoder.layer.0.attn`` and ``encoder/layer_._0/attn`` both -> (encoder, layer, 0, attn)."""
    spaced = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", path)
    return tuple(t for t in re.split(r"[^0-9a-zA-Z]+", spaced.lower()) if t)


def _align(a_layers: list[Layer], b_layers: list[Layer],
           context: _Context) -> tuple[list[tuple[int, int]], list[list[tuple[int, int]]]]:
    """Pairs (i, j) of layers: equal names first (they survive reordering), then the rest in order; and
    the sets of those pairs that only their order decided, apart from each other (``_alike_in_order``)."""
    if len(a_layers) == len(b_layers) and not _names_cross(a_layers, b_layers) \
            and all(context.takes(x, y) for x, y in zip(a_layers, b_layers)):
        in_order = list(zip(range(len(a_layers)), range(len(b_layers))))  # the common case, in linear time
        return _by_last_names(in_order, a_layers, b_layers, context), []
    anchors = _name_anchors(a_layers, b_layers, context)
    rest_a = [i for i in range(len(a_layers)) if i not in {i for i, _ in anchors}]
    rest_b = [j for j in range(len(b_layers)) if j not in {j for _, j in anchors}]
    ordered = _order_alignment(rest_a, rest_b, a_layers, b_layers, context)
    paired = anchors + ordered
    paired += _unique_fits(paired, a_layers, b_layers, context)
    alike = _alike_in_order(paired, a_layers, b_layers, context)
    paired = sorted(paired + [pair for group in alike for pair in group])
    return _by_last_names(paired, a_layers, b_layers, context), alike


def _by_last_names(paired: list[tuple[int, int]], a_layers: list[Layer], b_layers: list[Layer],
                   context: _Context) -> list[tuple[int, int]]:
    """Consecutive pairs whose layers could take each other's places (q, k and v of one block: the same
    kind, the same shapes) are paired by the last part of their names where those tell them apart on
    both sides: transformers' torch ViT computes the key before the query, keras-hub the query first,
    and order alone would copy the key into the query."""
    out, start = list(paired), 0
    while start < len(out):
        end = start + 1
        while end < len(out) and all(
                context.swappable(a_layers[i], b_layers[j], a_layers[out[end][0]], b_layers[out[end][1]])
                for i, j in out[start:end]):
            end += 1
        group = out[start:end]
        a_last = [_tokens(a_layers[i].path)[-1:] for i, _ in group]
        b_last = [_tokens(b_layers[j].path)[-1:] for _, j in group]
        common = {n for n in a_last if n and a_last.count(n) == 1 and b_last.count(n) == 1}
        if len(group) > 1 and len(common) > 1:
            # Names both sides share (query, key, value) pair by name; the rest (the torch output
            # projection `dense`, Keras's `attention_output`) keep the places left, in order.
            by_name = {name: j for name, (_, j) in zip(b_last, group) if name in common}
            rest = iter(j for name, (_, j) in zip(b_last, group) if name not in common)
            out[start:end] = [(i, by_name[name] if name in common else next(rest)) for name, (i, _) in zip(a_last, group)]
        start = end
    return out


def _unique_fits(paired: list[tuple[int, int]], a_layers: list[Layer], b_layers: list[Layer],
                 context: _Context) -> list[tuple[int, int]]:
    """Layers the order left unpaired because two libraries run them in another order (transformers adds
    token types before positions, keras-hub after): among what is left, a layer that fits exactly one
    layer of the other model, which fits it alone too, pairs with it."""
    left_a = [i for i in range(len(a_layers)) if i not in {i for i, _ in paired}]
    left_b = [j for j in range(len(b_layers)) if j not in {j for _, j in paired}]
    fit = {(i, j) for i in left_a for j in left_b
           if context.takes(a_layers[i], b_layers[j])}
    found = []
    for i in left_a:
        partners = [j for j in left_b if (i, j) in fit]
        if len(partners) == 1 and sum((k, partners[0]) in fit for k in left_a) == 1:
            found.append((i, partners[0]))
    return found


def _alike_in_order(paired: list[tuple[int, int]], a_layers: list[Layer], b_layers: list[Layer],
                    context: _Context) -> list[list[tuple[int, int]]]:
    """Layers left over that come as alike sets, one on each side (keras-hub's T5 keeps each stack's
    relative attention bias on the attention block, which starts before the projections it calls, while
    transformers' is a layer of its own that runs after them: the order alignment cannot take them):
    where every layer of one set fits every layer of the other and of nothing else left, and both sets
    have as many, they pair in execution order. The confirmation by outputs may reassign them."""
    left_a = [i for i in range(len(a_layers)) if i not in {i for i, _ in paired}]
    left_b = [j for j in range(len(b_layers)) if j not in {j for _, j in paired}]
    partners = {i: frozenset(j for j in left_b if context.takes(a_layers[i], b_layers[j])) for i in left_a}
    groups, seen = [], set()
    for i in left_a:
        same = [k for k in left_a if partners[k] == partners[i]]
        if i in seen or len(same) < 2 or len(same) != len(partners[i]):
            continue
        seen.update(same)
        if all({k for k in left_a if j in partners[k]} == set(same) for j in partners[i]):
            groups.append(list(zip(same, sorted(partners[i]))))
    return groups


def _relative_tokens(layers: list[Layer]) -> list[tuple[str, ...]]:
    """Each layer's name tokens without the leading tokens every layer of the model shares."""
    every = [_tokens(layer.path) for layer in layers]
    if len(every) < 2:
        return every
    common = 0
    while all(len(t) > common + 1 for t in every) and len({t[common] for t in every}) == 1:
        common += 1
    return [t[common:] for t in every]


def _names_cross(a_layers: list[Layer], b_layers: list[Layer]) -> bool:
    """True when order would pair a layer with one of another name while its own name is found on the
    other side (torch registers ``head`` first, Keras calls it last): two Linear(8, 8) swapped fit every
    shape and give wrong numbers, so names must decide."""
    a_tokens, b_tokens = _relative_tokens(a_layers), _relative_tokens(b_layers)
    a_set, b_set = set(a_tokens), set(b_tokens)
    return any(ta != tb and ((ta and ta in b_set) or (tb and tb in a_set)) for ta, tb in zip(a_tokens, b_tokens))


def _name_anchors(a_layers: list[Layer], b_layers: list[Layer], context: _Context) -> list[tuple[int, int]]:
    """Layers whose names, below each model's own prefix (transformers TF nests everything in ``vit/``
    or ``bert/``), are the same and unique: ``encoder.layer.0.attention.attention.query`` and
    ``vit/encoder/layer_._0/attention/attention/query``. Names hold where execution order does not
    (transformers' torch ViT computes the key before the query, its TF twin the query first)."""
    by_tokens: dict[tuple[str, ...], list[int]] = {}
    a_tokens, b_tokens = _relative_tokens(a_layers), _relative_tokens(b_layers)
    for j, tokens in enumerate(b_tokens):
        by_tokens.setdefault(tokens, []).append(j)
    anchors, taken = [], set()
    for i, layer in enumerate(a_layers):
        same = [j for j in by_tokens.get(a_tokens[i], []) if j not in taken]
        fitting = [j for j in same if context.takes(layer, b_layers[j])]
        if len(fitting) == 1 and a_tokens[i]:
            anchors.append((i, fitting[0]))
            taken.add(fitting[0])
    return anchors


def _order_alignment(rest_a: list[int], rest_b: list[int], a_layers: list[Layer], b_layers: list[Layer],
                     context: _Context) -> list[tuple[int, int]]:
    """Longest chain of compatible pairs that keeps both orders (an edit-distance table); names that
    share tokens break ties."""
    n, m = len(rest_a), len(rest_b)
    score = np.zeros((n + 1, m + 1))
    for x in range(n - 1, -1, -1):
        la = a_layers[rest_a[x]]
        for y in range(m - 1, -1, -1):
            best = max(score[x + 1, y], score[x, y + 1])
            lb = b_layers[rest_b[y]]
            if context.compatible(la, lb):
                best = max(best, score[x + 1, y + 1] + context.weight(la, lb))
            score[x, y] = best
    pairs, x, y = [], 0, 0
    while x < n and y < m:
        la, lb = a_layers[rest_a[x]], b_layers[rest_b[y]]
        if context.compatible(la, lb) and score[x, y] == score[x + 1, y + 1] + context.weight(la, lb):
            pairs.append((rest_a[x], rest_b[y]))
            x, y = x + 1, y + 1
        elif score[x, y] == score[x + 1, y]:
            x += 1
        else:
            y += 1
    return pairs


def _similarity(a: str, b: str) -> float:
    ta, tb = set(_tokens(a)), set(_tokens(b))
    return 0.5 * len(ta & tb) / len(ta | tb) if ta | tb else 0.0


def _describe(layer: Layer) -> str:
    kind = layer.kind or ("a tensor of a block" if _is_leaf(layer) else layer.lineage[0] if layer.lineage
                          else "weights only")
    return f"{layer.path or '(top)'} ({kind})"


# --- warnings -------------------------------------------------------------------------------------------
def _axes_of(value: Any) -> tuple[int, ...]:
    """A stride setting as one int per axis (torch and Keras both take an int or a list)."""
    if isinstance(value, int):
        return (value,)
    return tuple(int(v) for v in value) if isinstance(value, (list, tuple)) else ()


def _warnings(plan: TransferPlan, a_framework: str, tensors_of: list[tuple[str, list[TensorInfo]]]) -> list[str]:
    found = []
    for match in plan.matches:
        found += _match_warnings(match, a_framework)
    for name, tensors in tensors_of:
        for tensor in tensors:
            if tensor.tied_to:
                found.append(f"{name}: {tensor.name} is tied to {tensor.tied_to} (one tensor, copied once)")
    return found


def _match_warnings(match: LayerMatch, a_framework: str) -> list[str]:
    if match.rule is None:
        return []
    t_path, k_path = (match.a_path, match.b_path) if a_framework == "torch" else (match.b_path, match.a_path)
    t_config, k_config = match.torch_config, match.keras_config
    found = []
    for key, t_key, k_key in _NORM_PAIRS:
        if match.rule.key == key and t_key in t_config and k_key in k_config \
                and abs(t_config[t_key] - k_config[k_key]) > _EPSILON_THAT_MATTERS:
            found.append(f"{t_path} eps={t_config[t_key]:g} but {k_path} epsilon={k_config[k_key]:g}: "
                         "outputs will differ; make them equal")
    if match.rule.key == "gru" and k_config.get("reset_after") is False:
        found.append(f"{k_path}: GRU reset_after=False computes a different GRU than torch; use reset_after=True")
    t_stride, k_stride = _axes_of(t_config.get("stride")), _axes_of(k_config.get("strides"))
    if t_stride and k_stride and len(t_stride) == len(k_stride) and t_stride != k_stride:
        found.append(f"{t_path} stride={list(t_stride)} but {k_path} strides={list(k_stride)}: the outputs differ "
                     "in size, and the function with them")
    strides, padding = k_config.get("strides") or [1], t_config.get("padding")
    if k_config.get("padding") == "same" and max(strides) > 1 and isinstance(padding, list) and any(padding):
        found.append(f"{k_path}: stride-2 'same' pads (0,1) where {t_path} padding={padding} pads both sides: "
                     "same shapes, different numbers")
    return found
