"""Weight layouts between torch.nn and Keras 3, kept as data in one table.

Why a table: every rule of ``LAYOUTS.md`` (which torch tensor becomes which Keras variable, and how its
axes move) lives here exactly once, so the copy, the ``pair`` display and the tests all read the same
facts. A :class:`LayerRule` names the roles on each side with *symbolic* shapes (``("cout", "cin_g",
"kh", "kw")``); converting first binds the symbols from the arrays it is given, so a shape that disagrees
is refused with the expected and the actual shape, never "reshaped until it fits" (square kernels fit
in several orientations and give wrong numbers silently).

The module is pure numpy on purpose: it must not import torch or Keras, so it is cheap to import and its
rules can be tested and shown without either framework.

Roles are the names the frameworks use: torch roles are ``state_dict`` keys relative to the module
(``weight``, ``running_mean``, ``weight_ih_l0``, ``out_proj.weight``); Keras roles are the last part of
``variable.path`` (``kernel``, ``moving_mean``, ``query/kernel``), listed in ``layer.weights`` order.
For layer ``k`` of a stacked torch RNN, rename ``_lk`` to ``_l0`` first (one torch layer per Keras layer).
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Optional

import numpy as np

from modelshell.core.errors import ModelshellError
from modelshell.frameworks.copying import reshaped

__all__ = [
    "Direction",
    "LayoutError",
    "Role",
    "Step",
    "LayerRule",
    "RULES",
    "Fold",
    "FOLDS",
    "rule",
    "torch_to_keras",
    "keras_to_torch",
    "convert",
    "expected_shapes",
    "known_dims",
    "flatten_permutation",
    "gru_gates",
]

Direction = Literal["torch->keras", "keras->torch"]
Side = Literal["torch", "keras"]
Dims = Mapping[str, int]
#: A transform takes the source arrays of a step (``None`` for an absent optional role) and the bound
#: dimensions, and returns one array per target role.
TransformFn = Callable[[Sequence[Optional[np.ndarray]], Dims], Sequence[np.ndarray]]

_SYMBOL = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class LayoutError(ModelshellError, ValueError):
    """A layout the rule refuses: wrong shape, missing or unknown role, or a dimension it cannot tell.

    A ``ValueError`` for library callers, a ``ModelshellError`` so the shell prints it as one line.
    """


@dataclass(frozen=True)
class Role:
    """One tensor of a layer: its name and its symbolic shape, e.g. ``weight (cout, cin_g, kh, kw)``.

    A shape entry is a symbol, an integer, a product of them (``"3*H"``, ``"C*M"``), or a sum of such
    products (``"n+offset"``: a position table with rows before the first position). Symbols are bound
    per conversion, so ``bias (cout,)`` must agree with ``weight``'s ``cout``.
    """

    name: str
    shape: tuple[str, ...]
    optional: bool = False

    def __str__(self) -> str:
        return f"{self.name} ({', '.join(self.shape)})"


@dataclass(frozen=True)
class Step:
    """A transform from some source roles to some destination roles, with a name for display.

    Many-to-one steps exist (RNN ``b_ih + b_hh -> bias``), one-to-many (MHA ``in_proj_weight`` ->
    query/key/value kernels), one-to-none (``num_batches_tracked`` is dropped) and none-to-one (it is
    recreated as 0).
    """

    sources: tuple[str, ...]
    targets: tuple[str, ...]
    name: str
    fn: TransformFn = field(repr=False, compare=False)


@dataclass(frozen=True)
class LayerRule:
    """How the weights of one torch layer kind and one Keras layer kind correspond, both ways.

    ``torch_classes`` are the ``nn.Module`` class names the rule covers and ``keras_kind`` the Keras
    layer class name (the pairing looks rules up by them); ``torch_kind`` is a label for people.
    ``after_flatten`` is the number of spatial axes of the flattened feature map for the variant used by
    the first Linear/Dense after a flatten (1 for ``C,L``, 2 for ``C,H,W``; 0 elsewhere). ``notes`` are
    traps worth showing.
    The table checks itself when built: a misspelt role is an import error, not a silent skip.
    """

    key: str
    torch_kind: str
    keras_kind: str
    torch_classes: tuple[str, ...]
    torch_roles: tuple[Role, ...]
    keras_roles: tuple[Role, ...]
    to_keras: tuple[Step, ...]
    to_torch: tuple[Step, ...]
    after_flatten: int = 0
    notes: tuple[str, ...] = ()
    # Settings of the torch layer that the rule reads as dimensions (a position table's ``offset``); the
    # rule takes only a layer that has them, so a table of another size is never sliced to fit.
    torch_config: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for direction in ("torch->keras", "keras->torch"):
            _check_table(self, direction)

    @property
    def label(self) -> str:
        return f"{self.torch_kind} <-> {self.keras_kind}"

    def roles(self, side: Side) -> tuple[Role, ...]:
        return self.torch_roles if side == "torch" else self.keras_roles

    def role(self, side: Side, name: str) -> Role:
        for r in self.roles(side):
            if r.name == name:
                return r
        raise KeyError(name)

    def steps(self, direction: Direction) -> tuple[Step, ...]:
        return self.to_keras if direction == "torch->keras" else self.to_torch

    def symbols(self) -> frozenset[str]:
        """Every dimension symbol of the rule: the names :func:`convert` accepts as parameters."""
        return frozenset(s for r in (*self.torch_roles, *self.keras_roles) for d in r.shape
                         for _, syms in _terms(d) for s in syms)



# --------------------------------------------------------------------------------------------------
# Symbolic shapes


def _factors(spec: str) -> tuple[int, tuple[str, ...]]:
    """``"3*H*D"`` -> ``(3, ("H", "D"))``: the constant part and the symbols of a dimension."""
    const, syms = 1, []
    for part in spec.split("*"):
        part = part.strip()
        if part.isdigit():
            const *= int(part)
        elif _SYMBOL.match(part):
            syms.append(part)
        else:
            raise ValueError(f"bad dimension {spec!r}")
    return const, tuple(syms)


def _terms(spec: str) -> list[tuple[int, tuple[str, ...]]]:
    """``"n+offset"`` -> ``[(1, ("n",)), (1, ("offset",))]``: a dimension as a sum of products."""
    return [_factors(term) for term in spec.split("+")]


def _render(shape: tuple[str, ...], dims: Dims) -> str:
    """The expected shape with what is known filled in: ``(cout,) = (8,)``."""
    def one(spec: str) -> str:
        known = all(s in dims for _, syms in _terms(spec) for s in syms)
        return str(_dim(spec, dims)) if known else spec

    filled = tuple(one(d) for d in shape)
    comma = "," if len(shape) == 1 else ""
    sym = f"({', '.join(shape)}{comma})"
    val = f"({', '.join(filled)}{comma})"
    return sym if sym == val else f"{sym} = {val}"


def _solve(rule: LayerRule, side: Side, arrays: Mapping[str, np.ndarray], dims: dict[str, int], what: str) -> None:
    """Bind the symbols of ``side`` from the arrays' shapes into ``dims``; raise on any disagreement.

    Repeats until nothing new is learnt, so ``C*M`` is checked once ``C`` is known from elsewhere.
    """
    pending: list[tuple[Role, int]] = []
    wrong_rank: list[Role] = []
    for role in rule.roles(side):
        if role.name not in arrays:
            continue
        shape = arrays[role.name].shape
        if len(shape) != len(role.shape):
            wrong_rank.append(role)  # reported below, once the other roles have told what they can
        else:
            pending.extend((role, axis) for axis in range(len(shape)))
    progress = True
    while pending and progress:
        progress = False
        for role, axis in list(pending):
            size = arrays[role.name].shape[axis]
            terms = _terms(role.shape[axis])
            unknown = [s for _, syms in terms for s in syms if s not in dims]
            if len(unknown) > 1:
                continue
            # The terms that are known add up; the one with the unknown symbol takes the rest.
            rest = size - sum(c * math.prod(dims[s] for s in syms) for c, syms in terms
                              if all(s in dims for s in syms))
            if unknown:
                const, syms = next(t for t in terms if unknown[0] in t[1])
                known = const * math.prod(dims[s] for s in syms if s != unknown[0])
                ok = known != 0 and rest > 0 and rest % known == 0
                if ok:
                    dims[unknown[0]] = rest // known
            else:
                ok = rest == 0
            if not ok:
                raise LayoutError(
                    f"{rule.label}: {what} {side} '{role.name}' has shape {tuple(arrays[role.name].shape)}, "
                    f"expected {_render(role.shape, dims)}"
                )
            pending.remove((role, axis))
            progress = True
    if wrong_rank:
        role = wrong_rank[0]
        raise LayoutError(
            f"{rule.label}: {what} {side} '{role.name}' has shape {tuple(arrays[role.name].shape)}, "
            f"expected {len(role.shape)} axes {_render(role.shape, dims)}"
        )
    if pending:
        missing = sorted({s for role, axis in pending for _, syms in _terms(role.shape[axis]) for s in syms
                          if s not in dims})
        raise LayoutError(
            f"{rule.label}: cannot tell {', '.join(missing)} from the shapes",
            hint="pass " + " or ".join(f"{s}=..." for s in missing),
        )


# --------------------------------------------------------------------------------------------------
# Conversion


def _sides(direction: Direction) -> tuple[Side, Side]:
    if direction == "torch->keras":
        return "torch", "keras"
    if direction == "keras->torch":
        return "keras", "torch"
    raise ValueError(f"direction must be 'torch->keras' or 'keras->torch', not {direction!r}")


def convert(
    rule: LayerRule | str,
    arrays: Mapping[str, np.ndarray],
    direction: Direction,
    *,
    expect: Mapping[str, Sequence[int]] | None = None,
    copy: bool = True,
    **dims: int,
) -> dict[str, np.ndarray]:
    """Apply ``rule`` to the source ``arrays`` (role -> array) and return destination role -> array.

    With ``copy`` (the default) every result is a fresh C-ordered array the caller may keep; without it,
    results may be views of the inputs (a transpose costs nothing), for a caller that copies anyway, as a
    framework's own write does: a large model is then not held once more in between.

    ``dims`` bind symbols the shapes cannot tell (MHA heads ``H``, depthwise ``C``, the flattened
    feature map ``C, H, W``). ``expect`` is the destination's role -> shape; when given, a role missing
    on either side or a shape that differs is refused, which catches a GRU without ``reset_after`` or
    a bias on one side only. Results are contiguous and in destination role order.
    """
    if isinstance(rule, str):
        rule = _lookup(rule)
    src, dst = _sides(direction)
    known = {r.name: r for r in rule.roles(src)}
    given = {name: np.asarray(a) for name, a in arrays.items()}
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise LayoutError(
            f"{rule.label}: unknown {src} role(s) {', '.join(unknown)}",
            hint="roles are " + ", ".join(known),
        )
    missing = [r.name for r in known.values() if not r.optional and r.name not in given]
    if missing:
        raise LayoutError(f"{rule.label}: {src} role(s) {', '.join(missing)} missing")
    symbols = rule.symbols()
    for name, value in dims.items():
        if name not in symbols:
            hint = "parameters are " + ", ".join(sorted(symbols))
            raise LayoutError(f"{rule.label}: unknown parameter {name}", hint=hint)
        if not isinstance(value, (int, np.integer)) or value <= 0:
            raise LayoutError(f"{rule.label}: parameter {name} must be a positive integer, not {value!r}")
    bound = {k: int(v) for k, v in dims.items()}
    _solve(rule, src, given, bound, "source")

    out: dict[str, np.ndarray] = {}
    for step in rule.steps(direction):
        optional = [n for n in step.sources if known[n].optional]
        if optional and not any(n in given for n in optional):
            continue  # an absent bias (and its kind) has nothing to move
        results = step.fn([given.get(n) for n in step.sources], bound)
        for name, a in zip(step.targets, results):
            out[name] = np.array(a, order="C") if copy else a
    _solve(rule, dst, out, bound, "converted")  # the table's own promise about the result
    if expect is not None:
        _check_expect(rule, dst, out, expect)
    order = [r.name for r in rule.roles(dst)]
    return {name: out[name] for name in order if name in out}


class _Shape:
    """Stands in for an array where only the shape matters (``_solve`` reads ``.shape`` alone)."""

    def __init__(self, shape: Sequence[int]) -> None:
        self.shape = tuple(int(d) for d in shape)


def expected_shapes(
    rule: LayerRule | str, shapes: Mapping[str, Sequence[int]], direction: Direction, **dims: int
) -> dict[str, tuple[int, ...]]:
    """The destination shapes ``convert`` would produce, from the source shapes alone.

    ``pair`` needs this for models of any size: no array is touched, the rule's symbols are bound from the
    source shapes and the destination roles evaluated. Raises LayoutError where ``convert`` would.
    """
    if isinstance(rule, str):
        rule = _lookup(rule)
    src, dst = _sides(direction)
    bound = {k: int(v) for k, v in dims.items()}
    _solve(rule, src, {name: _Shape(shape) for name, shape in shapes.items()}, bound, "source")
    produced = {t for step in rule.steps(direction) if _step_applies(rule, src, step, shapes) for t in step.targets}
    out = {}
    for role in rule.roles(dst):
        if role.name not in produced:
            continue
        try:
            out[role.name] = tuple(_dim(spec, bound) for spec in role.shape)
        except KeyError as exc:
            raise LayoutError(f"{rule.label}: cannot tell {exc.args[0]} from the shapes",
                              hint=f"pass {exc.args[0]}=...") from None
    return out


def known_dims(rule: LayerRule | str, side: Side, shapes: Mapping[str, Sequence[int]]) -> dict[str, int]:
    """The symbols that one side's shapes bind (a Keras MHA kernel tells H and D, a depthwise kernel C and
    M); what they cannot tell, or contradict, is left out. Pairing binds the destination's dimensions
    with it, so a direction whose source shapes alone cannot tell (torch -> Keras attention) still works."""
    if isinstance(rule, str):
        rule = _lookup(rule)
    dims: dict[str, int] = {}
    try:
        _solve(rule, side, {name: _Shape(shape) for name, shape in shapes.items()}, dims, "given")
    except LayoutError:
        pass
    return dims


def _step_applies(rule: LayerRule, side: Side, step: Step, given: Mapping[str, object]) -> bool:
    optional = [n for n in step.sources if rule.role(side, n).optional]
    return not optional or any(n in given for n in optional)


def _dim(spec: str, dims: Dims) -> int:
    return sum(const * math.prod(dims[s] for s in syms) for const, syms in _terms(spec))


def torch_to_keras(
    rule: LayerRule | str,
    torch_arrays: Mapping[str, np.ndarray],
    *,
    expect: Mapping[str, Sequence[int]] | None = None,
    **dims: int,
) -> dict[str, np.ndarray]:
    """Torch ``state_dict`` arrays of one layer -> Keras variables by role, in ``layer.weights`` order."""
    return convert(rule, torch_arrays, "torch->keras", expect=expect, **dims)


def keras_to_torch(
    rule: LayerRule | str,
    keras_arrays: Mapping[str, np.ndarray],
    *,
    expect: Mapping[str, Sequence[int]] | None = None,
    **dims: int,
) -> dict[str, np.ndarray]:
    """Keras variables of one layer by role -> torch ``state_dict`` arrays, ready for ``load_state_dict``."""
    return convert(rule, keras_arrays, "keras->torch", expect=expect, **dims)


def _check_expect(
    rule: LayerRule, side: Side, out: Mapping[str, np.ndarray], expect: Mapping[str, Sequence[int]]
) -> None:
    names = {r.name for r in rule.roles(side)}
    strange = sorted(set(expect) - names)
    if strange:
        raise LayoutError(
            f"{rule.label}: the destination has {side} role(s) {', '.join(strange)} this rule does not know"
        )
    for name in [r.name for r in rule.roles(side)]:
        if name in expect and name not in out:
            raise LayoutError(
                f"{rule.label}: the destination has {side} '{name}' {tuple(expect[name])} but the source gives none",
                hint="bias / affine / reset_after settings differ between the two layers",
            )
        if name in out and name not in expect:
            raise LayoutError(
                f"{rule.label}: the source gives {side} '{name}' {out[name].shape} but the destination has none",
                hint="bias / affine / reset_after settings differ between the two layers",
            )
        if name in out and tuple(out[name].shape) != tuple(int(n) for n in expect[name]):
            raise LayoutError(
                f"{rule.label}: destination {side} '{name}' has shape {tuple(int(n) for n in expect[name])}, "
                f"the rule gives {out[name].shape}"
            )


def _check_table(rule: LayerRule, direction: Direction) -> None:
    """Make a wrong table fail at import: every step names real roles and every required role is made."""
    src, dst = _sides(direction)
    src_roles = {r.name: r for r in rule.roles(src)}
    dst_roles = {r.name: r for r in rule.roles(dst)}
    for roles in (rule.torch_roles, rule.keras_roles):
        if len({r.name for r in roles}) != len(roles):
            raise ValueError(f"{rule.key}: duplicate role names")
        for r in roles:
            for d in r.shape:
                _terms(d)
    made: list[str] = []
    used: set[str] = set()
    for step in rule.steps(direction):
        bad = [n for n in step.sources if n not in src_roles] + [n for n in step.targets if n not in dst_roles]
        if bad:
            raise ValueError(f"{rule.key} {direction}: step {step.name!r} names unknown roles {bad}")
        skippable = any(src_roles[n].optional for n in step.sources)
        if skippable and any(not dst_roles[n].optional for n in step.targets):
            raise ValueError(f"{rule.key} {direction}: step {step.name!r} may be skipped but makes a required role")
        used.update(step.sources)
        made.extend(step.targets)
    if len(made) != len(set(made)):
        raise ValueError(f"{rule.key} {direction}: a role is made twice")
    if set(src_roles) - used:
        raise ValueError(f"{rule.key} {direction}: roles {sorted(set(src_roles) - used)} are never read")
    required = {n for n, r in dst_roles.items() if not r.optional}
    if required - set(made):
        raise ValueError(f"{rule.key} {direction}: roles {sorted(required - set(made))} are never made")


# --------------------------------------------------------------------------------------------------
# Transforms (pure numpy). Each returns a tuple, one array per target role.


def _axes(axes: Sequence[int]) -> str:
    return ",".join(str(a) for a in axes)


def _same(src: str, dst: str) -> Step:
    return Step((src,), (dst,), "as is", lambda a, d: (a[0],))


def _transpose(src: str, dst: str, axes: tuple[int, ...]) -> Step:
    name = ".T" if axes == (1, 0) else f"transpose({_axes(axes)})"
    return Step((src,), (dst,), name, lambda a, d: (a[0].transpose(axes),))


def _drop(src: str) -> Step:
    return Step((src,), (), "drop", lambda a, d: ())


def _both_or_neither(a: Sequence[np.ndarray | None], what: str) -> None:
    if any(x is None for x in a):
        raise LayoutError(f"{what}: got some but not all of the biases")


def flatten_permutation(shape: Sequence[int], to: Literal["keras", "torch"] = "keras") -> np.ndarray:
    """Index map between torch's channels-first and Keras's channels-last flatten of one feature map.

    ``shape`` is the channels-first feature map without the batch: ``(C, H, W)``, ``(C, L)`` or
    ``(C, D, H, W)``. With ``to="keras"``: ``keras_flat = torch_flat[perm]``; with ``to="torch"``:
    ``torch_flat = keras_flat[perm]``. So the first Dense after the flatten is ``w[:, perm].T`` and back
    ``k[perm_back].T``. Why: both flattens give the same length, so a plain ``.T`` fits and is wrong.
    """
    shape = tuple(int(n) for n in shape)
    if len(shape) < 2 or any(n <= 0 for n in shape):
        raise LayoutError(f"flatten_permutation: need a channels-first feature map (C, ...), got {shape}")
    perm = np.moveaxis(np.arange(math.prod(shape)).reshape(shape), 0, -1).ravel()
    if to == "keras":
        return perm
    if to == "torch":
        return np.argsort(perm)
    raise ValueError(f"to must be 'keras' or 'torch', not {to!r}")


def _flatten_dense(shape_syms: tuple[str, ...]) -> tuple[Step, Step]:
    cf = ",".join(shape_syms)
    cl = ",".join((*shape_syms[1:], shape_syms[0]))

    # As a reshape and a transpose of the axes, not a gather by index (``w[:, perm].T``): one strided pass
    # over the kernel instead of a random-access one (4.5 s for VGG16's 4096 x 25088 first Dense).
    # ``flatten_permutation`` states the same map by index, and the tests hold the two to each other.
    def to_keras(a: Sequence[np.ndarray | None], d: Dims) -> tuple[np.ndarray]:
        sizes = [d[s] for s in shape_syms]  # C, then the spatial axes
        w = a[0].reshape(a[0].shape[0], *sizes)  # (out, C, *spatial)
        k = len(sizes) - 1
        return (reshaped(w.transpose(*range(2, 2 + k), 1, 0), (-1, a[0].shape[0])),)

    def to_torch(a: Sequence[np.ndarray | None], d: Dims) -> tuple[np.ndarray]:
        sizes = [d[s] for s in shape_syms]
        k = len(sizes) - 1
        kernel = a[0].reshape(*sizes[1:], sizes[0], a[0].shape[1])  # (*spatial, C, out)
        return (reshaped(kernel.transpose(k + 1, k, *range(k)), (a[0].shape[1], -1)),)

    return (
        Step(("weight",), ("kernel",), f"columns ({cf})->({cl}), .T", to_keras),
        Step(("kernel",), ("weight",), f"rows ({cl})->({cf}), .T", to_torch),
    )


def gru_gates(a: np.ndarray, axis: int = 0) -> np.ndarray:
    """``P`` of LAYOUTS.md: swap the first two gate blocks (torch r,z,n <-> Keras z,r,h); its own inverse."""
    n = a.shape[axis]
    if n % 3:
        raise LayoutError(f"GRU gates: axis {axis} of shape {a.shape} is not 3*H")
    r, z, rest = np.split(a, [n // 3, 2 * n // 3], axis=axis)
    return np.concatenate([z, r, rest], axis=axis)


def _rnn_bias_to_keras(a: Sequence[np.ndarray | None], d: Dims) -> tuple[np.ndarray]:
    _both_or_neither(a, "RNN bias_ih_l0 + bias_hh_l0")
    return (a[0] + a[1],)


def _rnn_bias_to_torch(a: Sequence[np.ndarray | None], d: Dims) -> tuple[np.ndarray, np.ndarray]:
    return (a[0], np.zeros_like(a[0]))


def _gru_bias_to_keras(a: Sequence[np.ndarray | None], d: Dims) -> tuple[np.ndarray]:
    _both_or_neither(a, "GRU bias_ih_l0, bias_hh_l0")
    return (np.stack([gru_gates(a[0]), gru_gates(a[1])]),)


def _depthwise_to_keras(n: int) -> TransformFn:
    def fn(a: Sequence[np.ndarray | None], d: Dims) -> tuple[np.ndarray]:
        w = a[0]
        return (reshaped(w.transpose(*range(2, 2 + n), 0, 1), (*w.shape[2:], d["C"], d["M"])),)

    return fn


def _depthwise_to_torch(n: int) -> TransformFn:
    def fn(a: Sequence[np.ndarray | None], d: Dims) -> tuple[np.ndarray]:
        k = a[0]
        return (k.reshape(*k.shape[:n], d["C"] * d["M"], 1).transpose(n, n + 1, *range(n)),)

    return fn


def _separable_bias(a: Sequence[np.ndarray | None], d: Dims) -> tuple[np.ndarray]:
    b_pw, b_dw, pw = a
    if b_dw is None:
        return (b_pw,)
    folded = pw[:, :, 0, 0] @ b_dw
    return (folded if b_pw is None else b_pw + folded,)


def _mha_kernels_to_keras(a: Sequence[np.ndarray | None], d: Dims) -> tuple[np.ndarray, ...]:
    H, D = d["H"], d["D"]
    w = a[0].reshape(3, H, D, H * D).transpose(0, 3, 1, 2)
    return (w[0], w[1], w[2])


def _mha_kernels_to_torch(a: Sequence[np.ndarray | None], d: Dims) -> tuple[np.ndarray]:
    H, D = d["H"], d["D"]
    return (np.stack(a).transpose(0, 2, 3, 1).reshape(3 * H * D, H * D),)


def _mha_biases_to_keras(a: Sequence[np.ndarray | None], d: Dims) -> tuple[np.ndarray, ...]:
    b = a[0].reshape(3, d["H"], d["D"])
    return (b[0], b[1], b[2])


def _mha_biases_to_torch(a: Sequence[np.ndarray | None], d: Dims) -> tuple[np.ndarray]:
    _both_or_neither(a, "MultiHeadAttention query/key/value bias")
    return (np.stack(a).reshape(-1),)


# --------------------------------------------------------------------------------------------------
# The table


def _conv(key: str, n: int, torch_cls: str, keras_cls: str, *, transposed: bool = False) -> LayerRule:
    k = {1: ("kl",), 2: ("kh", "kw"), 3: ("kd", "kh", "kw")}[n]
    if transposed:  # torch (cin, cout/g, *k); Keras has no groups for transposed convs
        t_shape, k_shape = ("cin", "cout", *k), (*k, "cout", "cin")
    else:
        t_shape, k_shape = ("cout", "cin_g", *k), (*k, "cin_g", "cout")
    to_k = (*range(2, 2 + n), 1, 0)
    to_t = (n + 1, n, *range(n))
    return LayerRule(
        key, torch_cls, keras_cls, (torch_cls,),
        (Role("weight", t_shape), Role("bias", ("cout",), optional=True)),
        (Role("kernel", k_shape), Role("bias", ("cout",), optional=True)),
        (_transpose("weight", "kernel", to_k), _same("bias", "bias")),
        (_transpose("kernel", "weight", to_t), _same("bias", "bias")),
        notes=("stride-2 'same' in Keras pads (0,1) where torch padding=1 pads (1,1)",) if not transposed else (),
    )


def _depthwise(key: str, n: int, torch_cls: str, keras_cls: str) -> LayerRule:
    k = {1: ("kl",), 2: ("kh", "kw")}[n]
    ks = ",".join(k)
    fwd = f"transpose({_axes((*range(2, 2 + n), 0, 1))}).reshape({ks},C,M)"
    back = f"reshape({ks},C*M,1).transpose({_axes((n, n + 1, *range(n)))})"
    return LayerRule(
        key, f"{torch_cls} depthwise (groups=C)", keras_cls, (torch_cls,),
        (Role("weight", ("C*M", "1", *k)), Role("bias", ("C*M",), optional=True)),
        (Role("kernel", (*k, "C", "M")), Role("bias", ("C*M",), optional=True)),
        (Step(("weight",), ("kernel",), fwd, _depthwise_to_keras(n)), _same("bias", "bias")),
        (Step(("kernel",), ("weight",), back, _depthwise_to_torch(n)), _same("bias", "bias")),
        notes=("torch -> Keras needs C (the groups) or M (the depth multiplier)",),
    )


def _rnn(key: str, torch_cls: str, keras_cls: str, gates: int) -> LayerRule:
    g = "H" if gates == 1 else f"{gates}*H"
    torch_roles = (
        Role("weight_ih_l0", (g, "cin")),
        Role("weight_hh_l0", (g, "H")),
        Role("bias_ih_l0", (g,), optional=True),
        Role("bias_hh_l0", (g,), optional=True),
    )
    keras_roles = (Role("kernel", ("cin", g)), Role("recurrent_kernel", ("H", g)), Role("bias", (g,), optional=True))
    return LayerRule(
        key, torch_cls, keras_cls, (torch_cls,), torch_roles, keras_roles,
        (
            _transpose("weight_ih_l0", "kernel", (1, 0)),
            _transpose("weight_hh_l0", "recurrent_kernel", (1, 0)),
            Step(("bias_ih_l0", "bias_hh_l0"), ("bias",), "b_ih + b_hh", _rnn_bias_to_keras),
        ),
        (
            _transpose("kernel", "weight_ih_l0", (1, 0)),
            _transpose("recurrent_kernel", "weight_hh_l0", (1, 0)),
            Step(("bias",), ("bias_ih_l0", "bias_hh_l0"), "b_ih = bias, b_hh = 0", _rnn_bias_to_torch),
        ),
        notes=("one layer, one direction: torch _l0 roles; batch_first=True to match Keras (batch, time, features)",),
    )


_GRU = LayerRule(
    "gru", "GRU", "GRU", ("GRU",),
    (
        Role("weight_ih_l0", ("3*H", "cin")),
        Role("weight_hh_l0", ("3*H", "H")),
        Role("bias_ih_l0", ("3*H",), optional=True),
        Role("bias_hh_l0", ("3*H",), optional=True),
    ),
    (Role("kernel", ("cin", "3*H")), Role("recurrent_kernel", ("H", "3*H")), Role("bias", ("2", "3*H"), optional=True)),
    (
        Step(("weight_ih_l0",), ("kernel",), "gates r,z,n->z,r,h; .T", lambda a, d: (gru_gates(a[0]).T,)),
        Step(("weight_hh_l0",), ("recurrent_kernel",), "gates r,z,n->z,r,h; .T", lambda a, d: (gru_gates(a[0]).T,)),
        Step(
            ("bias_ih_l0", "bias_hh_l0"), ("bias",), "stack(P(b_ih), P(b_hh)), gates r,z,n->z,r,h", _gru_bias_to_keras
        ),
    ),
    (
        Step(("kernel",), ("weight_ih_l0",), ".T; gates z,r,h->r,z,n", lambda a, d: (gru_gates(a[0].T),)),
        Step(("recurrent_kernel",), ("weight_hh_l0",), ".T; gates z,r,h->r,z,n", lambda a, d: (gru_gates(a[0].T),)),
        Step(
            ("bias",), ("bias_ih_l0", "bias_hh_l0"), "P(bias[0]), P(bias[1]), gates z,r,h->r,z,n",
            lambda a, d: (gru_gates(a[0][0]), gru_gates(a[0][1])),
        ),
    ),
    notes=("Keras must use reset_after=True (bias (2, 3H)); reset_after=False computes a different GRU",),
)

_QKV = ("query", "key", "value")
_MHA = LayerRule(
    "multi_head_attention", "MultiheadAttention", "MultiHeadAttention", ("MultiheadAttention",),
    (
        Role("in_proj_weight", ("3*H*D", "H*D")),
        Role("in_proj_bias", ("3*H*D",), optional=True),
        Role("out_proj.weight", ("H*D", "H*D")),
        Role("out_proj.bias", ("H*D",), optional=True),
    ),
    (
        *(
            r for p in _QKV
            for r in (Role(f"{p}/kernel", ("H*D", "H", "D")), Role(f"{p}/bias", ("H", "D"), optional=True))
        ),
        Role("attention_output/kernel", ("H", "D", "H*D")),
        Role("attention_output/bias", ("H*D",), optional=True),
    ),
    (
        Step(
            ("in_proj_weight",), tuple(f"{p}/kernel" for p in _QKV), "reshape(3,H,D,E).transpose(0,3,1,2)",
            _mha_kernels_to_keras,
        ),
        Step(("in_proj_bias",), tuple(f"{p}/bias" for p in _QKV), "reshape(3,H,D)", _mha_biases_to_keras),
        Step(
            ("out_proj.weight",), ("attention_output/kernel",), "reshape(E,H,D).transpose(1,2,0)",
            lambda a, d: (a[0].reshape(d["H"] * d["D"], d["H"], d["D"]).transpose(1, 2, 0),),
        ),
        _same("out_proj.bias", "attention_output/bias"),
    ),
    (
        Step(
            tuple(f"{p}/kernel" for p in _QKV), ("in_proj_weight",), "stack.transpose(0,2,3,1).reshape(3E,E)",
            _mha_kernels_to_torch,
        ),
        Step(tuple(f"{p}/bias" for p in _QKV), ("in_proj_bias",), "stack.reshape(3E)", _mha_biases_to_torch),
        Step(
            ("attention_output/kernel",), ("out_proj.weight",), "transpose(2,0,1).reshape(E,E)",
            lambda a, d: (reshaped(a[0].transpose(2, 0, 1), (d["H"] * d["D"], d["H"] * d["D"])),),
        ),
        _same("attention_output/bias", "out_proj.bias"),
    ),
    notes=(
        "E = H*D; torch -> Keras needs H (num_heads) or D (key_dim)",
        "torch kdim/vdim != E (q/k/v_proj_weight) and add_bias_kv are not covered",
    ),
)

_SEPARABLE = LayerRule(
    "separable_conv2d", "Conv2d depthwise (groups=C) + 1x1 Conv2d", "SeparableConv2D", (),
    (
        Role("depthwise.weight", ("C*M", "1", "kh", "kw")),
        Role("depthwise.bias", ("C*M",), optional=True),
        Role("pointwise.weight", ("cout", "C*M", "1", "1")),
        Role("pointwise.bias", ("cout",), optional=True),
    ),
    (
        Role("depthwise_kernel", ("kh", "kw", "C", "M")),
        Role("pointwise_kernel", ("1", "1", "C*M", "cout")),
        Role("bias", ("cout",), optional=True),
    ),
    (
        Step(
            ("depthwise.weight",), ("depthwise_kernel",), "transpose(2,3,0,1).reshape(kh,kw,C,M)",
            _depthwise_to_keras(2),
        ),
        _transpose("pointwise.weight", "pointwise_kernel", (2, 3, 1, 0)),
        Step(
            ("pointwise.bias", "depthwise.bias", "pointwise.weight"), ("bias",), "b_pw + pw[:,:,0,0] @ b_dw",
            _separable_bias,
        ),
    ),
    (
        Step(
            ("depthwise_kernel",), ("depthwise.weight",), "reshape(kh,kw,C*M,1).transpose(2,3,0,1)",
            _depthwise_to_torch(2),
        ),
        _transpose("pointwise_kernel", "pointwise.weight", (3, 2, 0, 1)),
        _same("bias", "pointwise.bias"),
    ),
    notes=(
        "torch roles are those of a module with .depthwise and .pointwise children",
        "a torch depthwise bias folds into the Keras bias; back, the torch depthwise conv must have bias=False",
        "torch -> Keras needs C (the groups) or M (the depth multiplier)",
    ),
)

_FLAT2 = _flatten_dense(("C", "H", "W"))
_FLAT1 = _flatten_dense(("C", "L"))


def _flatten_rule(key: str, syms: tuple[str, ...], steps: tuple[Step, Step]) -> LayerRule:
    cf, cl = "*".join(syms), "*".join((*syms[1:], syms[0]))
    return LayerRule(
        key, f"Linear after flatten ({', '.join(syms)})", "Dense",
        ("Linear",),
        (Role("weight", ("out", cf)), Role("bias", ("out",), optional=True)),
        (Role("kernel", (cl, "out")), Role("bias", ("out",), optional=True)),
        (steps[0], _same("bias", "bias")),
        (steps[1], _same("bias", "bias")),
        after_flatten=len(syms) - 1,
        notes=(
            f"needs the flattened feature map {', '.join(syms)} (trace a forward pass); a plain .T fits and is wrong",
        ),
    )


def _reshaped(src: str, dst: str, name: str, shape: Callable[[Dims], tuple[int, ...]], *, transpose: bool = False) -> Step:
    """A step that (transposes and) reshapes into a shape of the rule's symbols: only where the rule says
    the axes are one (a Linear's outputs are an EinsumDense's heads x head size), never to make a fit."""
    def fn(a: Sequence[np.ndarray | None], d: Dims) -> tuple[np.ndarray]:
        value = a[0].T if transpose else a[0]
        return (reshaped(value, shape(d)),)

    return Step((src,), (dst,), name, fn)


def _einsum(key: str, heads_out: bool) -> LayerRule:
    """torch ``Linear`` against a Keras ``EinsumDense`` that splits its outputs into heads (``abc,cde->abde``,
    kernel ``(E, H, D)``: attention's query, key, value, also grouped-query k/v with H the KV heads) or
    merges its inputs from heads (``abcd,cde->abe``, kernel ``(H, D, E)``: attention's output)."""
    if heads_out:
        t_roles = (Role("weight", ("H*D", "E")), Role("bias", ("H*D",), optional=True))
        k_roles = (Role("kernel", ("E", "H", "D")), Role("bias", ("H", "D"), optional=True))
        to_k = (_reshaped("weight", "kernel", ".T.reshape(E,H,D)", lambda d: (d["E"], d["H"], d["D"]), transpose=True),
                _reshaped("bias", "bias", "reshape(H,D)", lambda d: (d["H"], d["D"])))
        to_t = (Step(("kernel",), ("weight",), "reshape(E,H*D).T",
                     lambda a, d: (a[0].reshape(d["E"], d["H"] * d["D"]).T,)),
                _reshaped("bias", "bias", "reshape(H*D)", lambda d: (d["H"] * d["D"],)))
    else:
        t_roles = (Role("weight", ("E", "H*D")), Role("bias", ("E",), optional=True))
        k_roles = (Role("kernel", ("H", "D", "E")), Role("bias", ("E",), optional=True))
        to_k = (_reshaped("weight", "kernel", ".T.reshape(H,D,E)", lambda d: (d["H"], d["D"], d["E"]), transpose=True),
                _same("bias", "bias"))
        to_t = (Step(("kernel",), ("weight",), "reshape(H*D,E).T",
                     lambda a, d: (a[0].reshape(d["H"] * d["D"], d["E"]).T,)), _same("bias", "bias"))
    return LayerRule(
        key, "Linear", "EinsumDense", ("Linear",), t_roles, k_roles, to_k, to_t,
        notes=("the heads H and head size D come from the EinsumDense kernel",),
    )


def _after_zero_rows(table: np.ndarray, rows: int) -> np.ndarray:
    return np.concatenate([np.zeros((rows, *table.shape[1:]), table.dtype), table])


_BN_NOTES = ("epsilon defaults differ (Keras 1e-3, torch 1e-5); Keras momentum = 1 - torch momentum",)

#: Every rule, in the order of LAYOUTS.md.
RULES: tuple[LayerRule, ...] = (
    LayerRule(
        "linear", "Linear", "Dense", ("Linear",),
        (Role("weight", ("out", "in")), Role("bias", ("out",), optional=True)),
        (Role("kernel", ("in", "out")), Role("bias", ("out",), optional=True)),
        (_transpose("weight", "kernel", (1, 0)), _same("bias", "bias")),
        (_transpose("kernel", "weight", (1, 0)), _same("bias", "bias")),
    ),
    _conv("conv1d", 1, "Conv1d", "Conv1D"),
    _conv("conv2d", 2, "Conv2d", "Conv2D"),
    _conv("conv3d", 3, "Conv3d", "Conv3D"),
    _conv("conv_transpose2d", 2, "ConvTranspose2d", "Conv2DTranspose", transposed=True),
    _conv("conv_transpose1d", 1, "ConvTranspose1d", "Conv1DTranspose", transposed=True),
    _conv("conv_transpose3d", 3, "ConvTranspose3d", "Conv3DTranspose", transposed=True),
    _depthwise("depthwise_conv2d", 2, "Conv2d", "DepthwiseConv2D"),
    _depthwise("depthwise_conv1d", 1, "Conv1d", "DepthwiseConv1D"),
    _SEPARABLE,
    LayerRule(
        "batch_norm", "BatchNorm1d/2d/3d", "BatchNormalization", ("BatchNorm1d", "BatchNorm2d", "BatchNorm3d"),
        (
            Role("weight", ("C",), optional=True),
            Role("bias", ("C",), optional=True),
            Role("running_mean", ("C",)),
            Role("running_var", ("C",)),
            Role("num_batches_tracked", (), optional=True),
        ),
        (
            Role("gamma", ("C",), optional=True),
            Role("beta", ("C",), optional=True),
            Role("moving_mean", ("C",)),
            Role("moving_variance", ("C",)),
        ),
        (
            _same("weight", "gamma"), _same("bias", "beta"), _same("running_mean", "moving_mean"),
            _same("running_var", "moving_variance"), _drop("num_batches_tracked"),
        ),
        (
            _same("gamma", "weight"), _same("beta", "bias"), _same("moving_mean", "running_mean"),
            _same("moving_variance", "running_var"),
            Step((), ("num_batches_tracked",), "0", lambda a, d: (np.array(0, dtype=np.int64),)),
        ),
        notes=_BN_NOTES,
    ),
    LayerRule(
        "layer_norm", "LayerNorm", "LayerNormalization", ("LayerNorm",),
        (Role("weight", ("C",), optional=True), Role("bias", ("C",), optional=True)),
        (Role("gamma", ("C",), optional=True), Role("beta", ("C",), optional=True)),
        (_same("weight", "gamma"), _same("bias", "beta")),
        (_same("gamma", "weight"), _same("beta", "bias")),
        notes=("epsilon defaults differ (Keras 1e-3, torch 1e-5); only the last axis is covered",),
    ),
    LayerRule(
        "embedding", "Embedding", "Embedding", ("Embedding",),
        (Role("weight", ("n", "d")),),
        (Role("embeddings", ("n", "d")),),
        (_same("weight", "embeddings"),),
        (_same("embeddings", "weight"),),
        notes=("an output projection tied to the embedding is one tensor in torch: copy once, report the tie",),
    ),
    LayerRule(
        "embedding_offset", "Embedding (positions from offset)", "Embedding", ("Embedding",),
        (Role("weight", ("n+offset", "d")),),
        (Role("embeddings", ("n", "d")),),
        (Step(("weight",), ("embeddings",), "rows [offset:]", lambda a, d: (a[0][d["offset"]:],)),),
        (Step(("embeddings",), ("weight",), "offset zero rows + rows", lambda a, d: (_after_zero_rows(a[0], d["offset"]),)),),
        notes=("a learned position table whose positions start at row `offset` (transformers' BART: 2); "
               "the rows before are never read, and get zeros",),
        torch_config=("offset",),
    ),
    _rnn("simple_rnn", "RNN", "SimpleRNN", 1),
    _rnn("lstm", "LSTM", "LSTM", 4),
    _GRU,
    _MHA,
    _flatten_rule("flatten_linear", ("C", "H", "W"), _FLAT2),
    _flatten_rule("flatten_linear_1d", ("C", "L"), _FLAT1),
    _einsum("linear_einsum_heads", heads_out=True),
    _einsum("linear_einsum_merge", heads_out=False),
    LayerRule(
        "hf_conv1d", "transformers Conv1D", "Dense", ("Conv1D",),
        (Role("weight", ("in", "out")), Role("bias", ("out",), optional=True)),
        (Role("kernel", ("in", "out")), Role("bias", ("out",), optional=True)),
        (_same("weight", "kernel"), _same("bias", "bias")),
        (_same("kernel", "weight"), _same("bias", "bias")),
        notes=("transformers' Conv1D (GPT-2) stores its weight (in, out), as a Dense kernel: no transpose, "
               "even when square",),
    ),
    LayerRule(
        "linear_conv1x1", "Linear", "Conv2D", ("Linear",),
        (Role("weight", ("out", "in")), Role("bias", ("out",), optional=True)),
        (Role("kernel", ("1", "1", "in", "out")), Role("bias", ("out",), optional=True)),
        (Step(("weight",), ("kernel",), ".T[None, None]", lambda a, d: (a[0].T[None, None],)), _same("bias", "bias")),
        (Step(("kernel",), ("weight",), "[0, 0].T", lambda a, d: (a[0][0, 0].T,)), _same("bias", "bias")),
        notes=("a head after a keepdims pool: a 1x1 convolution is a Linear on every position",),
    ),
    LayerRule(
        "rms_norm", "RMSNorm", "RMSNormalization", ("RMSNorm",),
        (Role("weight", ("C",)),),
        (Role("scale", ("C",)),),
        (_same("weight", "scale"),),
        (_same("scale", "weight"),),
        notes=("compare epsilon",),
    ),
)

_BY_KEY = {r.key: r for r in RULES}


def rule(key: str) -> LayerRule:
    """The rule named ``key`` (``"conv2d"``, ``"gru"``, ...)."""
    return _lookup(key)


def _lookup(key: str) -> LayerRule:
    try:
        return _BY_KEY[key]
    except KeyError:
        raise LayoutError(f"no layout rule {key!r}", hint="rules are " + ", ".join(_BY_KEY)) from None


@dataclass(frozen=True)
class Fold:
    """A bias that a layer of one model has and its partner lacks, moved exactly into the norm after it.

    A linear layer (``layers``: the keys of its rules) gives ``W x + b``; a BatchNorm in inference
    subtracts its running mean ``m`` per channel, so ``BN(W x + b; m) == BN(W x; m - b)`` for any input.
    Biased -> unbiased: the destination norm's ``mean`` role takes ``m - b`` (``into``); unbiased ->
    biased: the destination's ``bias`` gets 0 and the norm is copied as it is. Exact only where the
    layer's output goes into that norm and nowhere else, with no activation between (a fused Keras
    ``activation`` is one): the pairing checks that on both models' traces, never by names.
    """

    key: str
    layers: tuple[str, ...]
    norm: str
    mean: dict[str, str]  # the norm's running mean role, by side
    bias: str = "bias"
    into: TransformFn = field(default=lambda a, d: (np.subtract(a[0], a[1]),), repr=False, compare=False)

    def __post_init__(self) -> None:
        for key in (*self.layers, self.norm):
            _lookup(key)  # a misspelt rule is an import error
        for key in self.layers:
            if not all(_lookup(key).role(side, self.bias).optional for side in ("torch", "keras")):
                raise ValueError(f"{self.key}: {key}'s {self.bias} is not optional on both sides")
        for side, role in self.mean.items():
            _lookup(self.norm).role(side, role)


#: Biases that fold into the norm after them, when one model's layers lack them.
FOLDS: tuple[Fold, ...] = (
    Fold(
        "bias_into_batch_norm",
        ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d",
         "depthwise_conv1d", "depthwise_conv2d", "flatten_linear", "flatten_linear_1d", "hf_conv1d",
         "linear_conv1x1"),
        "batch_norm", {"torch": "running_mean", "keras": "moving_mean"},
    ),
)


# --------------------------------------------------------------------------------------------------
# Fused layers: one torch tensor that is the concatenation of several Keras layers' tensors


def _part(p: int, role: str) -> str:
    return f"{p}/{role}"


def parts(rule: LayerRule | str) -> int:
    """How many Keras layers the rule's Keras side is: 1 for most rules; P for a fused rule, whose Keras
    roles are those of P layers of ``keras_kind``, prefixed ``0/``, ``1/``... in the order the fused
    tensor concatenates them (q, k, v of a fused attention projection)."""
    if isinstance(rule, str):
        rule = _lookup(rule)
    found = {r.name.partition("/")[0] for r in rule.keras_roles if "/" in r.name}
    return len(found) if found and all(p.isdigit() for p in found) else 1


def _split_out(p_count: int, in_out: bool, heads: bool) -> TransformFn:
    """The fused weight's output axis split into ``p_count`` parts, each (E, H, D) or (E, O)."""
    def fn(a: Sequence[np.ndarray | None], d: Dims) -> tuple[np.ndarray, ...]:
        w = a[0] if in_out else a[0].T  # (E, P*O)
        shape = (d["H"], d["D"]) if heads else (d["O"],)
        w = w.reshape(w.shape[0], p_count, *shape)
        return tuple(w[:, p] for p in range(p_count))

    return fn


def _join_out(in_out: bool) -> TransformFn:
    def fn(a: Sequence[np.ndarray | None], d: Dims) -> tuple[np.ndarray]:
        w = np.concatenate([k.reshape(k.shape[0], -1) for k in a], axis=1)  # (E, P*O)
        return (w if in_out else w.T,)

    return fn


def _split_bias(p_count: int, heads: bool) -> TransformFn:
    def fn(a: Sequence[np.ndarray | None], d: Dims) -> tuple[np.ndarray, ...]:
        b = a[0].reshape(p_count, *((d["H"], d["D"]) if heads else (d["O"],)))
        return tuple(b[p] for p in range(p_count))

    return fn


def _join_bias(a: Sequence[np.ndarray | None], d: Dims) -> tuple[np.ndarray]:
    _both_or_neither(a, "fused bias")
    return (np.concatenate([b.reshape(-1) for b in a]),)


def _fused(key: str, torch_cls: str, in_out: bool, heads: bool, p_count: int = 3) -> LayerRule:
    """One torch layer whose outputs are ``p_count`` Keras layers' outputs side by side: GPT-2's
    ``Conv1D`` (weight stored (in, out)) or a ``Linear`` of ``(P*E, E)``, against P ``EinsumDense``
    layers that split their outputs into heads (kernel (E, H, D)) or P ``Dense`` (kernel (E, O)). The
    fused axis is split in the order the torch layer concatenates them; within a part, by head."""
    out = ("H", "D") if heads else ("O",)
    fused = f"{p_count}*{'*'.join(out)}"
    weight = ("E", fused) if in_out else (fused, "E")
    names = [str(p) for p in range(p_count)]
    k_roles = tuple(r for p in range(p_count) for r in (
        Role(_part(p, "kernel"), ("E", *out)), Role(_part(p, "bias"), out, optional=True)))
    split = f"{'' if in_out else '.T'}.reshape(E,{p_count},{','.join(out)}), split by part"
    join = f"concat(parts){'' if in_out else '.T'}"
    keras_kind = "EinsumDense" if heads else "Dense"
    return LayerRule(
        key, f"{torch_cls} fused, {p_count} parts", keras_kind, (torch_cls,),
        (Role("weight", weight), Role("bias", (fused,), optional=True)), k_roles,
        (Step(("weight",), tuple(_part(p, "kernel") for p in range(p_count)), split,
              _split_out(p_count, in_out, heads)),
         Step(("bias",), tuple(_part(p, "bias") for p in range(p_count)), f"reshape({p_count},{','.join(out)})",
              _split_bias(p_count, heads))),
        (Step(tuple(_part(p, "kernel") for p in range(p_count)), ("weight",), join, _join_out(in_out)),
         Step(tuple(_part(p, "bias") for p in range(p_count)), ("bias",), "concat(parts)", _join_bias)),
        notes=(f"one torch layer against {p_count} Keras layers ({', '.join(names)}: q, k, v of a fused "
               "attention projection) in the order they run; the heads H and head size D come from the "
               "Keras kernels",),
    )


def _weight_norm_conv1d() -> LayerRule:
    """A weight-normalised Conv1d (``weight = g * v / |v|``, norm over all axes but the kernel's, torch
    ``weight_norm(dim=2)``) against a Keras Conv1D subclass that keeps ``weight_v`` in torch's layout and
    ``weight_g`` per kernel position (transformers' TF Wav2Vec2 positional conv). Both store v and g
    rather than the weight: copying the weight would lose nothing but fits no variable."""
    return LayerRule(
        "conv1d_weight_norm", "Conv1d weight-normalised (dim=2)", "Conv1D", ("Conv1d",),
        (Role("weight_g", ("1", "1", "kl")), Role("weight_v", ("cout", "cin_g", "kl")),
         Role("bias", ("cout",), optional=True)),
        (Role("weight_v", ("cout", "cin_g", "kl")), Role("weight_g", ("kl", "1", "1")),
         Role("bias", ("cout",), optional=True)),
        (_same("weight_v", "weight_v"),
         Step(("weight_g",), ("weight_g",), "reshape(kl,1,1) (unit axes)", lambda a, d: (a[0].reshape(-1, 1, 1),)),
         _same("bias", "bias")),
        (_same("weight_v", "weight_v"),
         Step(("weight_g",), ("weight_g",), "reshape(1,1,kl) (unit axes)", lambda a, d: (a[0].reshape(1, 1, -1),)),
         _same("bias", "bias")),
        notes=("torch's weight_norm or parametrizations.weight_norm (original0 = g, original1 = v) alike; "
               "a norm over another axis (dim=0) gives g of another shape and is refused",),
    )


def _conv1d_einsum_merge() -> LayerRule:
    """transformers' ``Conv1D`` (weight stored (in, out)) against an ``EinsumDense`` that merges heads
    (kernel (H, D, E)): GPT-2's attention output projection against keras-hub's. No transpose."""
    return LayerRule(
        "hf_conv1d_einsum_merge", "transformers Conv1D", "EinsumDense", ("Conv1D",),
        (Role("weight", ("H*D", "E")), Role("bias", ("E",), optional=True)),
        (Role("kernel", ("H", "D", "E")), Role("bias", ("E",), optional=True)),
        (_reshaped("weight", "kernel", "reshape(H,D,E)", lambda d: (d["H"], d["D"], d["E"])), _same("bias", "bias")),
        (_reshaped("kernel", "weight", "reshape(H*D,E)", lambda d: (d["H"] * d["D"], d["E"])), _same("bias", "bias")),
        notes=("the heads H and head size D come from the EinsumDense kernel",),
    )


def _einsum_heads_first() -> LayerRule:
    """torch ``Linear`` against an ``EinsumDense`` whose kernel puts the heads first (``btd,ndh->btnh``,
    kernel (H, E, D): keras-hub's Gemma q/k/v): the Linear's outputs are heads x head size, as for
    ``(E, H, D)``, with the input axis in the middle."""
    return LayerRule(
        "linear_einsum_heads_first", "Linear", "EinsumDense", ("Linear",),
        (Role("weight", ("H*D", "E")), Role("bias", ("H*D",), optional=True)),
        (Role("kernel", ("H", "E", "D")), Role("bias", ("H", "D"), optional=True)),
        (Step(("weight",), ("kernel",), "reshape(H,D,E).transpose(0,2,1)",
              lambda a, d: (a[0].reshape(d["H"], d["D"], d["E"]).transpose(0, 2, 1),)),
         _reshaped("bias", "bias", "reshape(H,D)", lambda d: (d["H"], d["D"]))),
        (Step(("kernel",), ("weight",), "transpose(0,2,1).reshape(H*D,E)",
              lambda a, d: (a[0].transpose(0, 2, 1).reshape(d["H"] * d["D"], d["E"]),)),
         _reshaped("bias", "bias", "reshape(H*D)", lambda d: (d["H"] * d["D"],))),
        notes=("the heads H and head size D come from the EinsumDense kernel; where H equals E the kernel "
               "alone cannot tell (E, H, D) from (H, E, D): the check after a copy does",),
    )


def _einsum_dense() -> LayerRule:
    """torch ``Linear`` against an ``EinsumDense`` with a 2-d kernel (``btd,df->btf``: keras-hub's Gemma
    feed-forward): a Dense by another name, kernel (in, out)."""
    return LayerRule(
        "linear_einsum_2d", "Linear", "EinsumDense", ("Linear",),
        (Role("weight", ("out", "in")), Role("bias", ("out",), optional=True)),
        (Role("kernel", ("in", "out")), Role("bias", ("out",), optional=True)),
        (_transpose("weight", "kernel", (1, 0)), _same("bias", "bias")),
        (_transpose("kernel", "weight", (1, 0)), _same("bias", "bias")),
    )


#: Rules added to the table after the first ones: fused projections, weight-normalised convolutions,
#: EinsumDense kernels in other layouts.
FUSED_RULES: tuple[LayerRule, ...] = (
    _fused("hf_conv1d_fused_heads", "Conv1D", in_out=True, heads=True),
    _fused("linear_fused_heads", "Linear", in_out=False, heads=True),
    _fused("hf_conv1d_fused_dense", "Conv1D", in_out=True, heads=False),
    _fused("linear_fused_dense", "Linear", in_out=False, heads=False),
    _conv1d_einsum_merge(),
    _weight_norm_conv1d(),
    _einsum_heads_first(),
    _einsum_dense(),
)
RULES = RULES + FUSED_RULES
_BY_KEY.update({r.key: r for r in FUSED_RULES})
