"""pair, copy, verify: line two models' weights up, move them across, and prove the result."""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from modelshell.commands.format import count_text, shape_text
from modelshell.commands.registry import arg, command
from modelshell.errors import ModelshellError
from modelshell.results import Column, Failed, Message, Table

if TYPE_CHECKING:
    from modelshell.transfer.plan import TransferPlan

__all__: list[str] = []


@command(
    "pair",
    "transfer",
    "two models' tensors side by side, with the transform between them",
    args=[arg("a", metavar="A", help="the source model"), arg("b", metavar="B", help="the destination model")],
    examples=["pair torch_model keras_model", "pair keras_model torch_model --json"],
    json=True,
    listing=True,
    details="Layers pair by kind through the layout rules, by name where names agree, and by order; "
    "tensors then pair by role. At the end: missing (in B, nothing from A), unexpected (in A, unused), "
    "mismatched (paired, but the shapes disagree after the rule) and warnings.",
)
def pair(session, args: argparse.Namespace) -> Table:
    from modelshell.transfer.plan import make_plan  # numpy, only once models are paired

    plan = make_plan(session.model(args.a), session.model(args.b), args.a, args.b)
    return _plan_table(plan, f"{args.a} -> {args.b}")


def _plan_table(plan: TransferPlan, title: str) -> Table:
    rows = []
    for p in plan.pairs:
        rows.append([
            "\n".join(p.a) or "-", "\n".join(shape_text(s) for s in p.a_shapes) or "-",
            "\n".join(p.b) or "-", "\n".join(shape_text(s) for s in p.b_shapes) or "-", p.transform,
        ])
    return Table(
        title=title,
        columns=[Column(plan.a), Column("shape"), Column(plan.b), Column("shape"), Column("transform")],
        rows=rows,
        footer=_plan_footer(plan),
        data=plan.as_json(),
    )


def _plan_footer(plan: TransferPlan) -> list[str]:
    lines = [f"{len(plan.pairs)} pairs; {len(plan.missing)} missing, {len(plan.unexpected)} unexpected, "
             f"{len(plan.mismatched)} mismatched"]
    for label, problems in (("missing", plan.missing), ("unexpected", plan.unexpected),
                            ("mismatched", plan.mismatched)):
        lines += [f"{label}: {p.name}: {p.reason}" for p in problems]
    lines += [f"warning: {w}" for w in plan.warnings]
    lines += [f"note: {n}" for n in plan.notes]
    return lines


@command(
    "copy",
    "transfer",
    "copy SRC's weights into DST by the pairing, all or nothing",
    args=[
        arg("src", metavar="SRC", help="the model to read"),
        arg("dst", metavar="DST", help="the model to write"),
        arg("--dry-run", action="store_true", help="show the plan, write nothing"),
    ],
    examples=["copy keras_model torch_model", "copy torch_model keras_model --dry-run"],
    json=True,
    listing=True,
    details="Every tensor is converted and its shape checked before the first write, so a copy that "
    "cannot be done leaves DST exactly as it was. DST tensors with nothing from SRC keep their values "
    "(they are counted; `pair SRC DST` lists them).",
)
def copy(session, args: argparse.Namespace) -> Table | Message:
    from modelshell.transfer.plan import converted_values, make_plan

    source, destination = session.model(args.src), session.model(args.dst)
    plan = make_plan(source, destination, args.src, args.dst)
    if args.dry_run:
        return _plan_table(plan, f"plan: {args.src} -> {args.dst} (dry run, nothing written)")
    values = converted_values(plan, source)
    if not values:
        raise ModelshellError(f"nothing in {args.src} pairs with {args.dst}; nothing was copied",
                              f"`pair {args.src} {args.dst}` shows why")
    tensors, params = len(values), sum(int(v.size) for v in values.values())
    destination.write(values)  # consumes values, giving their memory back as it goes
    destination.changed = True
    notes = [f"; {len(plan.missing)} tensors of {args.dst} got nothing and kept their values"] if plan.missing else []
    notes += [f"; warning: {w}" for w in plan.warnings]
    text = f"copied {tensors} tensors ({count_text(params)} parameters) from {args.src} into {args.dst}"
    return Message(text + "".join(notes), data={
        "src": args.src, "dst": args.dst, "tensors": tensors, "params": params,
        "missing": [p.as_json() for p in plan.missing], "warnings": plan.warnings,
    })


@command(
    "verify",
    "transfer",
    "run both models on the same seeded input and compare every output",
    args=[
        arg("a", metavar="A", help="a model"),
        arg("b", metavar="B", help="the model to compare with"),
        arg("--atol", type=float, default=1e-4, help="absolute tolerance (default 1e-4)"),
        arg("--rtol", type=float, default=1e-4, help="relative tolerance (default 1e-4)"),
        arg("--input", metavar="FILE", help=".npy or .npz input in A's layout (default: seeded random)"),
        arg("--seed", type=int, default=0, help="seed of the random input (default 0)"),
        arg("--layers", action="store_true", help="also compare every paired layer's output; name the first "
            "that diverges"),
    ],
    examples=["verify torch_model keras_model", "verify torch_model keras_model --layers --atol 1e-6"],
    json=True,
    listing=True,
    details="Inference mode on both (torch eval(), Keras training=False). The input comes from the models' "
    "input specs: channels first for torch and last for Keras when the models start with a convolution, "
    "integers when they start with an embedding. A mismatch fails the line (exit status 1 in `run`).",
)
def verify(session, args: argparse.Namespace) -> Table | Failed:
    from modelshell.transfer.verify import verify as run_verification

    result = run_verification(session.model(args.a), session.model(args.b), args.atol, args.rtol,
                              args.input, args.seed, args.layers)
    verdict = "ok" if result.ok else "MISMATCH"
    footer = [f"{verdict}: max abs diff {result.max_abs_diff:.3g}, max rel diff {result.max_rel_diff:.3g} "
              f"(atol {args.atol:g}, rtol {args.rtol:g}; input {', '.join(shape_text(s) for s in result.input_shapes)})"]
    if args.layers:
        footer.append(f"first layer that diverges: {result.first_divergence}" if result.first_divergence
                      else "every paired layer agrees")
    table = Table(
        title=f"verify {args.a} {args.b}",
        columns=[Column("output" if not args.layers else "output / paired layers"), Column("shape"),
                 Column("max abs diff", justify="right"), Column("max rel diff", justify="right"),
                 Column("status"), Column("note")],
        rows=[_comparison_row(o) for o in [*result.outputs, *result.layers]],
        footer=footer,
        data=result.as_json(),
    )
    if result.ok:
        return table
    where = f"; the first layer that diverges is {result.first_divergence}" if result.first_divergence else ""
    return Failed([table], f"{args.a} and {args.b} differ: max abs diff {result.max_abs_diff:.3g} "
                           f"> atol {args.atol:g} + rtol {args.rtol:g} x |output|{where}")


def _comparison_row(o) -> list[str]:
    return [o.name, shape_text(o.shape), f"{o.max_abs_diff:.3g}", f"{o.max_rel_diff:.3g}",
            "ok" if o.ok else "MISMATCH", o.note]
