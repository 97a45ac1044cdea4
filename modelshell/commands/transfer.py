"""pair, copy, verify: line two models' weights up, move them across, and prove the result."""
from __future__ import annotations

import argparse
import math
from typing import TYPE_CHECKING, Any

from modelshell.commands.format import count_text, shape_text
from modelshell.commands.registry import arg, command
from modelshell.core.errors import ModelshellError
from modelshell.core.results import Column, Failed, Message, Table

if TYPE_CHECKING:
    from modelshell.transfer.plan import TransferPlan

__all__: list[str] = []


@command(
    "pair",
    "transfer",
    "two models' tensors side by side, with the transform between them",
    args=[arg("a", metavar="A", help="the source model"), arg("b", metavar="B", help="the destination model"),
          arg("--values", action="store_true", help="also the max abs difference of each pair after the transform "
              "(which tensors already agree)"),
          arg("--map", action="append", metavar="A_NAME=B_NAME", help="pair these layers (or the layers owning "
              "these tensors; globs allowed; repeatable), checked like any other pair")],
    examples=["pair torch_model keras_model", "pair keras_model torch_model --json",
              "pair t k --map 'head=classifier' --values"],
    json=True,
    listing=True,
    details="Both models are traced once on the seeded input `verify` uses: layers pair in the order they run, "
    "by kind (a subclass of a known layer is that kind) through the layout rules, with names anchoring layers "
    "that run in another order; tensors a block owns directly pair as leaves; tensors then pair by role. At the "
    "end: missing (in B, nothing from A), unexpected (in A, unused), mismatched (paired, but the shapes disagree "
    "after the rule), warnings and notes.",
)
def pair(session, args: argparse.Namespace) -> Table:
    from modelshell.transfer.confirm import confirm  # numpy, only once models are paired

    a, b = session.model(args.a), session.model(args.b)
    confirmation = confirm(a, b, args.a, args.b, _overrides(args.map))
    plan = confirmation.plan
    table = _plan_table(plan, f"{args.a} -> {args.b}", confirmation)
    if args.values:
        _add_value_differences(table, plan, a, b)
    return table


def _overrides(maps: list[str] | None) -> list[tuple[str, str]]:
    found = []
    for text in maps or []:
        a_glob, sep, b_glob = text.partition("=")
        if not sep or not a_glob or not b_glob:
            raise ModelshellError(f"--map takes A_NAME=B_NAME, not {text!r}", "globs are allowed: 'head.*=classifier/*'")
        found.append((a_glob, b_glob))
    return found


def _add_value_differences(table: Table, plan, source, destination) -> None:
    """``--values``: per pair, the largest absolute difference between A's tensor after the transform and
    B's tensor as it is (0 where they already agree, as after a copy)."""
    import numpy as np

    from modelshell.transfer.plan import converted_values

    try:
        values = converted_values(plan, source)
    except ModelshellError as exc:
        table.footer.append(f"values not compared: {exc.message}")
        return
    table.columns.append(Column("max abs diff", justify="right"))
    diffs = {}
    for name, value in values.items():
        other = destination.read(name)
        diffs[name] = float(np.max(np.abs(np.asarray(value, np.float64) - other.astype(np.float64)))) \
            if np.size(other) else 0.0
    for row, entry, p in zip(table.rows, table.data["pairs"], plan.pairs):
        known = [diffs[n] for n in p.b if n in diffs]
        entry["max_abs_diff"] = max(known) if known else None
        row.append("-" if entry["max_abs_diff"] is None else f"{entry['max_abs_diff']:.3g}")
    agree = sum(1 for d in diffs.values() if d == 0)
    table.footer.append(f"{agree} of {len(diffs)} tensors of {plan.b} already equal what {plan.a} would give them")


# How each layer pair was proven, as the `confirmed` column shows it.
_CONFIRMED = {"outputs": "outputs", "rule": "rule", "--map": "--map", "": "NO"}


def _plan_table(plan: TransferPlan, title: str, confirmation: Any) -> Table:
    """The pairs; a `confirmed` column says how each one's layer pair was proven, where that differs
    from pair to pair (when every pair was proven alike, the footer's count says it once)."""
    by_a = {t.name: m.confirmed for m in plan.matches for t in m.a_roles.values()}
    by_b = {t.name: m.confirmed for m in plan.matches for t in m.b_roles.values()}
    # By A's tensors; a tensor B gets from nothing (a zero bias, a counter) by B's.
    proofs = [_CONFIRMED[next((by_a[n] for n in p.a if n in by_a), None) or
                         next((by_b[n] for n in p.b if n in by_b), "")] for p in plan.pairs]
    mixed = len(set(proofs)) > 1
    rows = []
    for p, proof in zip(plan.pairs, proofs):
        rows.append([
            "\n".join(p.a) or "-", "\n".join(shape_text(s) for s in p.a_shapes) or "-",
            "\n".join(p.b) or "-", "\n".join(shape_text(s) for s in p.b_shapes) or "-", p.transform,
            *([proof] if mixed else []),
        ])
    return Table(
        title=title,
        columns=[Column(plan.a), Column("shape"), Column(plan.b), Column("shape"), Column("transform", no_wrap=True),
                 *([Column("confirmed")] if mixed else [])],
        rows=rows,
        footer=_plan_footer(plan, confirmation),
        data=plan.as_json(),
    )


def _plan_footer(plan: TransferPlan, confirmation: Any) -> list[str]:
    lines = [f"{len(plan.pairs)} pairs; {len(plan.missing)} missing, {len(plan.unexpected)} unexpected, "
             f"{len(plan.mismatched)} mismatched"]
    for label, problems in (("missing", plan.missing), ("unexpected", plan.unexpected),
                            ("mismatched", plan.mismatched)):
        lines += [f"{label}: {p.name}: {p.reason}" for p in problems]
    lines += _confirmation_lines(confirmation)
    lines += [f"warning: {w}" for w in plan.warnings]
    lines += [f"note: {n}" for n in plan.notes]
    return lines


def _confirmation_lines(confirmation: Any) -> list[str]:
    """How the layer pairs were proven; the interchangeable pairs nothing confirmed, by name."""
    matches = confirmation.plan.matches
    count = {key: sum(1 for m in matches if m.confirmed == key) for key in _CONFIRMED}
    lines = [f"layer pairs confirmed by outputs: {count['outputs']}, by the only rule that fits: {count['rule']}"
             + (f", by --map: {count['--map']}" if count["--map"] else "")
             + f", not confirmed: {count['']}"]
    if confirmation.why_not and any(m.group is not None for m in matches):
        lines[0] += f" (not run: {confirmation.why_not})"
    elif confirmation.result is not None and confirmation.divergence is not None:
        where = f"from layer {confirmation.parted_at}" if confirmation.parted_at else "in the outputs only"
        lines[0] += f"; the run with {confirmation.plan.a}'s values parts {where}"
    unconfirmed = confirmation.unconfirmed
    if unconfirmed:
        lines.append(f"not confirmed: {_listed(unconfirmed)} (interchangeable with a neighbour: same kind and "
                     "shapes; only the order they run in, or their names, decided them)")
    return lines


def _listed(matches: list[Any]) -> str:
    from modelshell.transfer.folds import listed_pairs  # numpy: imported once models are paired

    return listed_pairs(matches)


@command(
    "copy",
    "transfer",
    "copy SRC's weights into DST by the pairing, all or nothing, then prove it",
    args=[
        arg("src", metavar="SRC", help="the model to read"),
        arg("dst", metavar="DST", help="the model to write"),
        arg("--dry-run", action="store_true", help="show the plan, write nothing"),
        arg("--map", action="append", metavar="A_NAME=B_NAME", help="pair these layers (or the layers owning these "
            "tensors; globs allowed; repeatable), checked like any other pair"),
        arg("--partial", action="store_true", help="copy what pairs and list the rest, instead of refusing"),
        arg("--no-verify", action="store_true", help="do not run both models afterwards to compare them"),
    ],
    examples=["copy keras_model torch_model", "copy torch_model keras_model --dry-run",
              "copy big small --partial"],
    json=True,
    listing=True,
    details="Strict, as load_state_dict(strict=True): every tensor of DST must get a value and every tensor of "
    "SRC be used, except tensors the framework derives (integer counters and index tables such as "
    "num_batches_tracked or relative_position_index, listed with why); anything else refuses the copy and "
    "lists what is left, unless --partial. Every tensor is converted and its shape checked before the first "
    "write, so a refused copy leaves DST exactly as it was. Between two models that can run, the copy is "
    "then checked layer by layer on the seeded input `verify` uses: it ends with `outputs agree` or "
    "`outputs differ from layer X` with the likely cause, and a difference fails the line (exit status 1 "
    "in `run`) unless --no-verify.",
)
def copy(session, args: argparse.Namespace) -> Table | Message | Failed:
    from modelshell.transfer import folds
    from modelshell.transfer.confirm import Confirmation, confirm
    from modelshell.transfer.plan import converted_values, left_over, pair_layers, refuse_mismatched, without_mismatched

    source, destination = session.model(args.src), session.model(args.dst)
    pairing = pair_layers(source, destination, args.src, args.dst, overrides=_overrides(args.map))
    if args.dry_run:
        confirmation = confirm(source, destination, args.src, args.dst, pairing=pairing)
        return _plan_table(confirmation.plan, f"plan: {args.src} -> {args.dst} (dry run, nothing written)", confirmation)
    plan = pairing.plan()
    if args.partial:
        plan = without_mismatched(plan)
    refuse_mismatched(plan)
    derived, left = left_over(plan, pairing.a_tensors, pairing.b_tensors)
    if left and not args.partial:
        shown = "; ".join(f"{p.name} ({side})" for side, p in left[:4])
        more = f" and {len(left) - 4} more" if len(left) > 4 else ""
        raise ModelshellError(
            f"cannot copy {args.src} into {args.dst}: {len(left)} tensors do not pair: {shown}{more}; "
            "nothing was copied", f"`pair {args.src} {args.dst}` shows why; --partial copies what pairs")
    # The interchangeable pairs are decided by running DST with the values before anything is written;
    # --no-verify skips every run, and then says which pairs nothing confirmed.
    confirmation = Confirmation(plan, why_not="--no-verify") if args.no_verify else \
        confirm(source, destination, args.src, args.dst, partial=args.partial, pairing=pairing)
    plan = confirmation.plan
    # The values the confirming run used, already DST's own tensors (made once), else made now.
    values, confirmation.values = confirmation.values or converted_values(plan, source), None
    if not values:
        raise ModelshellError(f"nothing in {args.src} pairs with {args.dst}; nothing was copied",
                              f"`pair {args.src} {args.dst}` shows why")
    tensors, params = len(values), sum(math.prod(tuple(v.shape)) for v in values.values())
    destination.write(values)  # consumes values, giving their memory back as it goes
    destination.changed = True
    notes = [f"; {len(left)} tensors did not pair and kept their values (--partial)"] if left else []
    if derived:
        notes.append(f"; not copied, derived by the framework: {', '.join(derived[:6])}"
                     + (f" and {len(derived) - 6} more" if len(derived) > 6 else ""))
    folded = folds.summary(plan.matches, args.src, args.dst)
    notes += [f"; {folded}"] if folded else []
    notes += [f"; warning: {w}" for w in _grouped(plan.warnings)]
    unconfirmed = [m for m in confirmation.unconfirmed if m.basis == "order"] if confirmation.result is None else []
    if unconfirmed:
        notes.append(f"; warning: {len(unconfirmed)} interchangeable layer pairs were decided by their order alone and "
                     f"not confirmed by running them ({confirmation.why_not}): {_listed(unconfirmed)}; "
                     "`--map` pins them")
    text = f"copied {tensors} tensors ({count_text(params)} parameters) from {args.src} into {args.dst}"
    data = {"src": args.src, "dst": args.dst, "tensors": tensors, "params": params,
            "missing": [p.as_json() for side, p in left if side == "dst"],
            "unexpected": [p.as_json() for side, p in left if side == "src"], "derived": derived,
            "warnings": plan.warnings,
            "confirmed": {_CONFIRMED[key]: sum(1 for m in plan.matches if m.confirmed == key) for key in _CONFIRMED}}
    if args.no_verify or not (source.has_architecture and destination.has_architecture):
        return Message(text + "".join(notes), data=data)
    verdict, ok = _check_copy(source, destination, confirmation, partial=bool(left))
    data["verified"] = ok
    message = Message(text + "".join(notes) + "; " + verdict, data=data)
    if ok is False:
        return Failed([message], f"{args.dst} does not compute what {args.src} does after the copy: {verdict}")
    return message


def _check_copy(source, destination, confirmation, partial: bool = False) -> tuple[str, bool | None]:
    """The destination's run layer by layer on the seeded input against the source's: ``outputs agree
    (max abs diff ...)``, or where they part and the warning that likely explains it. None when the
    models cannot be run on a made-up input (said, not hidden). The confirmation ran the destination
    with the converted values before the write: when the destination now holds exactly those values,
    that run is its run, and the check reads the tensors back instead of running the models again.
    After a partial copy the models differ by design: only the paired layers are held to agree."""
    import numpy as np

    from modelshell.transfer.confirm import agrees, parts, written_as_run
    from modelshell.transfer.verify import compare_with, paired_paths, run_reference

    plan = confirmation.plan
    tol = confirmation.tolerance
    written = written_as_run(plan, source, destination) if confirmation.result is not None else False
    if isinstance(written, str):
        return f"outputs not checked: {written} does not hold the value the check ran with", False
    if written:
        result = confirmation.result  # the run made before the write, with these very values
    else:
        paths = paired_paths(source, destination, plan)
        try:
            reference = confirmation.reference or run_reference(source, destination, [p for p, _ in paths])
            result = compare_with(reference, destination, paths, tol, tol)
        except ModelshellError as exc:
            return f"not verified: {exc.message}", None
    where = next((o.name for o in result.layers if parts(o, tol)), None)  # as the confirmation names it
    comparable = [o for o in result.outputs if np.isfinite(o.max_rel_diff)]  # a 3-class head against a 4-class one is not
    if partial and result.layers and not where and all(agrees(o, tol) for o in comparable):
        return f"every paired layer agrees (max abs diff {max(o.max_abs_diff for o in result.layers):.3g})", True
    if not partial and result.outputs and all(agrees(o, tol) for o in result.outputs):
        return (f"outputs agree (max abs diff {result.max_abs_diff:.3g}, "
                f"{result.max_rel_diff:.2g} of their largest value)"), True
    where, cause = _likely_cause(plan, result.layers, where)
    where = where and " ~ ".join(part or "(top)" for part in where.split(" ~ "))
    verdict = f"outputs differ (max abs diff {result.max_abs_diff:.3g})"
    if where:
        verdict += f" from layer {where}"
    if cause:
        verdict += f"; likely cause: {cause}"
    unconfirmed = confirmation.unconfirmed
    if unconfirmed:
        verdict += f"; not confirmed by any run: {_listed(unconfirmed)}"
    return verdict, False


def _likely_cause(plan: Any, layers: list[Any], where: str | None) -> tuple[str | None, str | None]:
    """Where the outputs part and the warning that likely explains it: the first layer pair whose
    outputs differ in value, unless a pair before it has a warning and outputs that could not be
    compared (other shapes: a stride on another conv; or not compared, a layer whose bias went into its
    norm), where the difference began."""
    from modelshell.transfer.confirm import comparison_name

    def about(name: str) -> str | None:
        return next((w for w in plan.warnings if w.split()[0].rstrip(":") in set(name.split(" ~ "))), None)

    compared = {c.name: c for c in layers}
    for match in plan.matches:
        name = comparison_name(match.a_path, match.b_path)
        if name == where:
            break
        comparison = compared.get(name)
        warning = about(name) if comparison is None or comparison.note.startswith("shapes differ") else None
        if warning:
            return name, warning
    return where, about(where) if where else None


def _grouped(warnings: list[str]) -> list[str]:
    """One line for many warnings that say the same thing of different layers (121 BatchNorm layers with
    the same epsilon difference)."""
    import re

    groups: dict[str, list[str]] = {}
    for warning in warnings:
        shape = re.sub(r"^\S+ (.*?) but \S+ ", r"\1 but ", warning)
        groups.setdefault(shape, []).append(warning)
    lines = []
    for shape, members in groups.items():
        lines.append(members[0] if len(members) == 1 else f"{len(members)} layers: {shape}")
    return lines


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
