"""members, weights, shapes, doc: what the tutorial did with dir(), state_dict() and help()."""
from __future__ import annotations

import argparse
import contextlib
import inspect
import io
import warnings
from typing import Any, NamedTuple

from modelshell.commands.format import count_text, matches, shape_text
from modelshell.commands.registry import arg, command
from modelshell.core.errors import ModelshellError, first_line
from modelshell.frameworks.base import LayerCall, LayerNode, TensorInfo, count_params
from modelshell.frameworks.detect import framework_of
from modelshell.core.results import Cell, Column, Table, Text, Tree, TreeNode

__all__ = ["describe_member", "resolve_dotted"]


@command(
    "members",
    "inspect",
    "dir() of a model: each member's kind, type and first doc line",
    args=[
        arg("name", help="a model in the session"),
        arg("filter", nargs="?", help="substring (case-insensitive) or glob such as '*weight*'"),
        arg("--private", action="store_true", help="include _private and __dunder__ members"),
    ],
    examples=["members torch_model state", "members keras_model '*weight*' --private"],
    json=True,
    listing=True,
)
def members(session, args: argparse.Namespace) -> Table:
    obj = session.model(args.name).obj
    names = [n for n in dir(obj) if (args.private or not n.startswith("_")) and matches(n, args.filter)]
    found = [describe_member(obj, n) for n in names]
    rows = [[m["name"], m["kind"], m["type"], m["doc"]] for m in found]
    shown = f"{len(found)} member{'' if len(found) == 1 else 's'}" + (f" matching {args.filter!r}" if args.filter else "")
    hidden = "" if args.private else " (--private adds _private ones)"
    return Table(
        title=f"{args.name}: {type(obj).__name__}",
        columns=[Column("name", no_wrap=True), Column("kind"), Column("type"), Column("doc")],
        rows=rows,
        footer=[shown + hidden],
        data={"model": args.name, "class": type(obj).__name__, "members": found},
    )


def describe_member(obj: Any, name: str) -> dict[str, str]:
    """Name, kind, type and first doc line of one member, looked up statically first so that merely
    listing members does not run methods; properties are evaluated, quietly, to learn their type."""
    static = inspect.getattr_static(obj, name, None)
    if isinstance(static, (staticmethod, classmethod)):
        static = static.__func__
    if isinstance(static, type):
        return _member(name, "class", "type", static)
    if inspect.isfunction(static) or inspect.ismethoddescriptor(static) or inspect.isbuiltin(static):
        return _member(name, "method", "method", static)
    is_property = isinstance(static, property) or inspect.isdatadescriptor(static)
    value, failed = _quiet_getattr(obj, name)
    if is_property:
        return _member(name, "property", "?" if failed else type(value).__name__, static)
    if failed:
        return {"name": name, "kind": "attribute", "type": "?", "doc": f"(reading it failed: {value})"}
    kind = _value_kind(value)
    documented = value if kind in ("module", "layer", "method") else None
    return _member(name, kind, type(value).__name__, documented)


def _value_kind(value: Any) -> str:
    framework = framework_of(value)
    if framework == "torch":
        return "module"
    if framework == "keras":
        return "layer"
    kind_by_class = {"Parameter": "parameter", "Tensor": "buffer"}
    if type(value).__name__ in kind_by_class and type(value).__module__.startswith("torch"):
        return kind_by_class[type(value).__name__]
    return "method" if callable(value) and not isinstance(value, type) else "attribute"


def _member(name: str, kind: str, type_name: str, documented: Any) -> dict[str, str]:
    doc = inspect.getdoc(documented) if documented is not None else None
    return {"name": name, "kind": kind, "type": type_name, "doc": (doc or "").strip().split("\n")[0]}


def _quiet_getattr(obj: Any, name: str) -> tuple[Any, bool]:
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        try:
            return getattr(obj, name), False
        except Exception as exc:  # noqa: BLE001 - a property that raises is still a member to list
            return f"{type(exc).__name__}: {first_line(exc)}", True


@command(
    "weights",
    "inspect",
    "every tensor: name, shape, dtype, parameters, trainable; totals",
    args=[
        arg("name", help="a model in the session"),
        arg("filter", nargs="?", help="substring (case-insensitive) or glob of tensor names"),
        arg("--stats", action="store_true",
            help="mean, std, min, max and a sparkline histogram of each tensor (reads every value)"),
    ],
    examples=["weights torch_model", "weights keras_model kernel --json", "weights torch_model bias --stats"],
    json=True,
    listing=True,
    details="torch models list state_dict() in order, buffers included; Keras models list model.weights "
    "in order, with each variable's path. --stats reads the tensors one at a time; its numbers are over the "
    "finite values, in float64 (std as np.std), with NaN and infinities counted in the note.",
)
def weights(session, args: argparse.Namespace) -> Table:
    handle = session.model(args.name)
    every = handle.tensors()
    shown = [t for t in every if matches(t.name, args.filter)]
    # --limit cuts the table after the command: only the rows people will see are worth reading for
    # --stats (--json keeps every row, so it reads them all).
    read = shown if args.json or args.limit is None else shown[:args.limit]
    view = _stats_view(handle, shown, read) if args.stats else _plain_view(shown, rows=not args.json)
    columns, rows = view.columns, view.rows
    if any(view.notes):
        columns = columns + [Column("note")]
        rows = [row + [note] for row, note in zip(rows, view.notes)]
    totals = count_params(shown)
    return Table(
        title=f"{args.name}: {handle.class_name} ({handle.framework})",
        columns=columns,
        rows=rows,
        footer=[_totals_line(len(shown), len(every), totals, handle.has_architecture, args.filter), *view.footer,
                *handle.summary()],
        data={"model": args.name, "framework": handle.framework, "class": handle.class_name,
              "weights": view.entries, "totals": totals},
    )


class _WeightsView(NamedTuple):
    """What differs between `weights` and `weights --stats`: the columns and rows, each row's note, each
    tensor's JSON entry, and lines under the totals."""

    columns: list[Column]
    rows: list[list[Cell]]
    notes: list[str]
    entries: list[dict[str, Any]]
    footer: list[str]


def _plain_view(shown: list[TensorInfo], rows: bool = True) -> _WeightsView:
    """``rows``: the table people read; ``--json`` prints only the entries, so a listing of thousands of
    tensors does not format a row for each that nobody sees."""
    columns = [Column("name", no_wrap=True), Column("shape", no_wrap=True), Column("dtype"),
               Column("params", justify="right"), Column("trainable")]
    table = [[t.name, shape_text(t.shape), t.dtype, count_text(t.size), _trainable_text(t.trainable)]
             for t in shown] if rows else []
    notes = [_tensor_note(t) for t in shown] if rows else []
    return _WeightsView(columns, table, notes, [t.as_json() for t in shown], [])


def _stats_view(handle, shown: list[TensorInfo], read: list[TensorInfo]) -> _WeightsView:
    """The numbers in place of params and trainable (the totals keep the counts), so that a LeNet-sized
    model still fits 100 columns. Only the tensors in ``read`` are read; the rows of the others are the
    ones --limit cuts, and carry no numbers."""
    # Imported here, not above, so that `hist` registers after `doc` and `help` lists it there.
    from modelshell.commands.stats import SPARK_BINS, read_stats, stats_cells, stats_note

    by_name = read_stats(handle, read, SPARK_BINS)
    stats = [by_name.get(t.name) for t in shown]
    columns = [Column("name", no_wrap=True), Column("shape", no_wrap=True), Column("dtype", no_wrap=True)]
    columns += [Column(header, justify="right", no_wrap=True) for header in ("mean", "std", "min", "max")]
    columns.append(Column("histogram", no_wrap=True))
    unread = [""] * (len(columns) - 3)  # a row --limit cuts: never drawn
    rows = [[t.name, shape_text(t.shape), t.dtype, *(stats_cells(s) if s else unread)] for t, s in zip(shown, stats)]
    notes = ["; ".join(filter(None, [_tensor_note(t), s and stats_note(s)])) for t, s in zip(shown, stats)]
    entries = [{**t.as_json(), "stats": s.as_json()} for t, s in zip(shown, stats) if s]
    footer = [f"numbers of the finite values, in float64; histogram: {SPARK_BINS} equal bins from min to max"]
    return _WeightsView(columns, rows, notes, entries, footer)


def _trainable_text(trainable: bool | None) -> str:
    return {True: "yes", False: "no", None: "-"}[trainable]


def _tensor_note(tensor) -> str:
    if tensor.tied_to:
        return f"tied to {tensor.tied_to}"
    return "buffer" if tensor.kind == "buffer" else ""


def _totals_line(shown: int, every: int, totals: dict[str, int], known: bool, pattern: str | None) -> str:
    line = f"{shown} tensors" + (f" of {every} matching {pattern!r}" if pattern else "")
    line += f", {count_text(totals['total'])} parameters"
    if known:
        line += f" ({count_text(totals['trainable'])} trainable, {count_text(totals['non_trainable'])} non-trainable)"
    else:
        line += " (a weights-only file: trainable or not is unknown)"
    if totals["buffers"]:
        line += f", and {count_text(totals['buffers'])} values in buffers"
    return line


@command(
    "shapes",
    "inspect",
    "the layers as a tree: class, each weight's shape, parameters, output shape",
    args=[
        arg("name", help="a model in the session"),
        arg("--input", metavar="FILE", help="trace with this input (.npy, or .npz by input name) instead of a seeded one"),
    ],
    examples=["shapes torch_model", "shapes keras_model --json"],
    json=True,
    listing=True,
    details="The output shapes (batch first) come from one forward pass in inference mode, with hooks, on the "
    "seeded input `verify` would give the model, or on --input; a layer that ran more than once shows its "
    "first call, and one with several outputs its first. A model that cannot run (a weights-only file, an "
    "input that cannot be made up) shows its tree without them, and the footer says why.",
)
def shapes(session, args: argparse.Namespace) -> Tree:
    handle = session.model(args.name)
    root = handle.layer_tree()
    totals = handle.param_counts()
    calls, inputs, traced = _trace(handle, args.input)
    return Tree(
        title=f"{args.name} ({handle.framework})",
        root=_tree_node(root, calls, label=args.name),
        footer=[f"{count_text(totals['total'])} parameters in {len(handle.tensors())} tensors", traced,
                *handle.summary()],  # a model folder's architecture and sizes, from its config
        data={"model": args.name, "framework": handle.framework, "tree": _tree_json(root, calls), "totals": totals,
              "inputs": inputs, "trace": traced},
    )


def _trace(handle, input_file: str | None) -> tuple[dict[str, LayerCall], list[dict[str, Any]] | None, str]:
    """Each layer's call in one forward pass, the inputs it ran on (None when it did not run), and a
    footer line that says which input, or why there are no output shapes."""
    if not handle.has_architecture:
        return {}, None, "no output shapes: a weights-only file has no architecture to run"
    from modelshell.transfer.inputs import IMAGE_SIDES, model_inputs  # numpy: not for the shell's start-up

    try:
        candidates = model_inputs(handle, handle.layers(), input_file=input_file)
    except ModelshellError as exc:
        return {}, None, f"no output shapes: {exc.one_line()}"
    where = f"the input of {input_file}" if input_file else "a seeded input"
    guessed = f" (its size a guess: the first of {', '.join(map(str, IMAGE_SIDES))} pixels a side that ran)"
    failure = None
    for given in candidates:
        inputs = _described(given)
        try:
            calls = handle.trace(given)
        except Exception as exc:  # noqa: BLE001 - a model that cannot run on the input still has its tree
            failure = failure or f"{type(exc).__name__}: {first_line(exc)[:120]}"
            continue
        where += guessed if len(candidates) > 1 else ""
        return calls, inputs, f"output shapes from one forward pass on {where}: {_inputs_text(inputs)}"
    tried = "; ".join(_inputs_text(_described(given)) for given in candidates)
    what = "any of the seeded inputs tried" if len(candidates) > 1 else where
    return {}, None, f"no output shapes: it did not run on {what}, {tried} ({failure}); --input FILE gives it one"


def _described(given: Any) -> list[dict[str, Any]]:
    named = given.items() if isinstance(given, dict) else [("", x) for x in given]
    return [{"name": name, "shape": list(x.shape), "dtype": str(x.dtype)} for name, x in named]


def _inputs_text(inputs: list[dict[str, Any]]) -> str:
    return ", ".join(" ".join(filter(None, [i["name"], shape_text(tuple(i["shape"])), i["dtype"]])) for i in inputs)


def _tree_node(layer: LayerNode, calls: dict[str, LayerCall], label: str | None = None) -> TreeNode:
    parts = [layer.class_name] if layer.class_name else []
    parts += [f"{t.role} {shape_text(t.shape)}" for t in layer.tensors]
    params = layer.param_count()
    if params:
        parts.append(f"{count_text(params)} params")
    output = _output_shape(layer, calls)
    if output is not None:
        parts.append(f"output {shape_text(output)}")
    children = [_tree_node(child, calls) for child in layer.children]
    return TreeNode(label or layer.name, "  ".join(parts), children)


def _output_shape(layer: LayerNode, calls: dict[str, LayerCall]) -> tuple[int, ...] | None:
    call = calls.get(layer.path) if layer.path else None
    return None if call is None else call.output_shape


def _tree_json(layer: LayerNode, calls: dict[str, LayerCall]) -> dict[str, Any]:
    output = _output_shape(layer, calls)
    return {
        "name": layer.name,
        "class": layer.class_name,
        "params": layer.param_count(),
        "weights": [{"role": t.role, "name": t.name, "shape": list(t.shape)} for t in layer.tensors],
        "output_shape": None if output is None else list(output),
        "children": [_tree_json(child, calls) for child in layer.children],
    }


@command(
    "doc",
    "inspect",
    "the help() text of a model or a member, paged when long",
    args=[arg("target", metavar="NAME[.ATTR...]", help="a model, or a dotted member such as torch_model.state_dict")],
    examples=["doc torch_model.load_state_dict", "doc keras_model.set_weights"],
    details="`?NAME` and `NAME?` are short for `doc NAME`, as in IPython.",
)
def doc(session, args: argparse.Namespace) -> Text:
    obj = resolve_dotted(session.namespace, args.target)
    import pydoc  # here, not at start-up: it costs ~8 ms that only `doc` needs

    text = pydoc.render_doc(obj, title=f"Help on %s ({args.target}):", renderer=pydoc.plaintext)
    return Text(text, data={"target": args.target, "doc": text})


def resolve_dotted(namespace: dict[str, Any], target: str) -> Any:
    """``torch_model.state_dict`` -> the bound method, by getattr only (nothing is called or evaluated)."""
    head, *attrs = target.split(".")
    if head not in namespace:
        raise ModelshellError(f"no model or variable named {head!r}", "`models` lists the models")
    obj = namespace[head]
    for depth, attr in enumerate(attrs, start=1):
        try:
            obj = getattr(obj, attr)
        except Exception as exc:  # noqa: BLE001
            so_far = ".".join([head, *attrs[: depth - 1]])
            raise ModelshellError(f"{so_far} has no member {attr!r} ({type(exc).__name__})",
                                  f"`members {head}` lists what there is") from exc
    return obj
