"""Decide interchangeable layer pairs by what they compute, before anything is written.

Execution order and names pair most layers beyond doubt: only one layer of the other model fits. Where
two or more neighbouring pairs could take each other's partners (q, k and v of one block; two LayerNorms
of one shape; Keras running a block's shortcut conv before the convs whose shape it shares), order alone
may pair them crosswise, and every shape still fits. So the destination is run on the paired input *as
if* it held the converted source values (torch ``functional_call``, Keras ``StatelessScope``: neither
model changes), layer by layer against the source's own run; where the outputs part, the
interchangeable groups before that point get their other assignments tried, and an assignment that
moves the first difference later (or removes it) is kept. What is left is reported per layer:
confirmed by outputs, by an unambiguous rule, by ``--map``, or not at all.
"""
from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from typing import Any, Iterator

from modelshell.core.errors import ModelshellError
from modelshell.frameworks.base import ModelHandle, TensorInfo
from modelshell.transfer.plan import (
    Pairing, TransferPlan, converted_values, left_over, pair_layers, without_mismatched,
)
from modelshell.transfer.verify import Reference, Verification, compare_with, paired_paths, run_reference, tap_path

__all__ = ["Confirmation", "confirm", "confirmed_plan", "tolerance", "agrees", "parts", "written_as_run",
           "comparison_name", "MAX_TRIALS"]

#: Runs of the destination, at most, to decide a pairing (each is one forward pass).
MAX_TRIALS = 32
#: Interchangeable groups tried for one difference, nearest before it first.
_GROUPS_PER_DIFFERENCE = 4
# The check allows for the precision of the least precise float dtype either model holds.
_TOLERANCES = {"float64": 1e-4, "float32": 1e-4, "float16": 1e-2, "bfloat16": 5e-2}


@dataclass
class Trial:
    pairing: Pairing
    plan: TransferPlan
    result: Verification
    # Position in ``pairing.matched`` of the first pair whose outputs part (len() when only the outputs do).
    divergence: int | None
    # The converted values as B's own tensors (``prepared``), which the run used; None once let go.
    values: dict[str, Any] | None = None


@dataclass
class Confirmation:
    """The plan with each match's ``confirmed`` set; the source's run and the last trial's result, which
    the check after a copy reuses (the source does not change); ``why_not`` when nothing could run.
    ``values``: the plan's converted values as the destination's own tensors, made for the run that
    confirmed the plan, for the copy to write without converting them again (None when not kept)."""

    plan: TransferPlan
    reference: Reference | None = None
    result: Verification | None = None
    divergence: int | None = None
    trials: int = 0
    why_not: str = ""
    tolerance: float = 1e-4
    values: dict[str, Any] | None = None

    @property
    def parted_at(self) -> str | None:
        """``A_LAYER ~ B_LAYER``, the first paired layers whose outputs part in the last run."""
        if self.result is None:
            return None
        return next((c.name for c in self.result.layers if parts(c, self.tolerance)), None)

    @property
    def unconfirmed(self) -> list[Any]:
        """Interchangeable pairs that no run confirmed."""
        return [m for m in self.plan.matches if m.group is not None and not m.confirmed]


def tolerance(*tensor_lists: list[TensorInfo]) -> float:
    """The check's tolerance for models holding these tensors."""
    dtypes = {t.dtype for tensors in tensor_lists for t in tensors}
    return max((_TOLERANCES[d] for d in dtypes if d in _TOLERANCES), default=1e-4)


def agrees(comparison: Any, tol: float) -> bool:
    """Held relative to the output's own magnitude: a randomly initialised network's outputs are often
    tiny, and would agree with anything under an absolute tolerance."""
    return comparison.max_rel_diff <= tol


def parts(comparison: Any, tol: float) -> bool:
    """The two layers' outputs disagree; two layers that give other shapes say nothing."""
    return not agrees(comparison, tol) and not comparison.note.startswith("shapes differ")


def confirmed_plan(a: ModelHandle, b: ModelHandle, a_name: str = "A", b_name: str = "B",
                   overrides: list[tuple[str, str]] = ()) -> TransferPlan:
    return confirm(a, b, a_name, b_name, overrides).plan


def confirm(a: ModelHandle, b: ModelHandle, a_name: str = "A", b_name: str = "B",
            overrides: list[tuple[str, str]] = (), partial: bool = False,
            pairing: Pairing | None = None) -> Confirmation:
    """The plan of ``pair_layers(a, b)``, its interchangeable groups decided by running B with A's
    converted values. With ``partial``, pairs whose shapes disagree are left out first (as ``copy
    --partial`` leaves them), and only the paired layers are held to agree, not the outputs."""
    pairing = pairing or pair_layers(a, b, a_name, b_name, overrides=overrides)
    plan = _plan_of(pairing, partial)
    # Where tensors are left unpaired (--partial), the outputs differ by design: only layers are held.
    layers_only = bool(left_over(plan, pairing.a_tensors, pairing.b_tensors)[1])
    tol = tolerance(pairing.a_tensors, pairing.b_tensors)
    why_not = _why_not_run(a, b, plan)
    if why_not:
        return Confirmation(_labelled(pairing, plan, None, None), why_not=why_not, tolerance=tol)
    try:
        reference = run_reference(a, b, [tap_path(m.a_path) for m in plan.matches],
                                  tensors=(pairing.a_tensors, pairing.b_tensors))
        first = _trial(pairing, reference, b, tol, partial, layers_only)
    except ModelshellError as exc:
        return Confirmation(_labelled(pairing, plan, None, None), why_not=exc.message, tolerance=tol)
    best, trials = _search(first, reference, b, tol, partial, layers_only)
    labelled = _labelled(best.pairing, best.plan, best.result, best.divergence, tol)
    return Confirmation(labelled, reference, best.result, best.divergence, trials, tolerance=tol, values=best.values)


def _plan_of(pairing: Pairing, partial: bool) -> TransferPlan:
    plan = pairing.plan()
    return without_mismatched(plan) if partial else plan


def _why_not_run(a: ModelHandle, b: ModelHandle, plan: TransferPlan) -> str:
    if a.framework == b.framework:
        return "one framework: tensors pair by name"
    for handle in (a, b):
        if not handle.has_architecture:
            return f"{handle.class_name} has no architecture to run"
    if plan.mismatched:
        return "some pairs' shapes disagree"
    if not plan.matches:
        return "nothing pairs"
    return ""


def _trial(pairing: Pairing, reference: Reference, b: ModelHandle, tol: float, partial: bool,
           layers_only: bool) -> Trial:
    plan = _plan_of(pairing, partial)
    values = b.prepared(converted_values(plan, pairing.a))
    paths = paired_paths(pairing.a, b, plan)
    result = compare_with(reference, b, paths, tol, tol, values)
    return Trial(pairing, plan, result, _divergence(pairing, result, tol, layers_only), values)


def _positions(pairing: Pairing) -> dict[str, int]:
    """Each pair's position in ``pairing.matched``, by the name a layer comparison carries."""
    return {comparison_name(pairing.a_layers[i].path, pairing.b_layers[j].path): k
            for k, (i, j) in enumerate(pairing.matched)}


def comparison_name(a_path: str, b_path: str) -> str:
    """The name ``compare_with`` gives the comparison of two paired layers."""
    return f"{tap_path(a_path)} ~ {tap_path(b_path)}"


def _divergence(pairing: Pairing, result: Verification, tol: float, layers_only: bool) -> int | None:
    position = _positions(pairing)
    parted = [position[c.name] for c in result.layers if c.name in position and parts(c, tol)]
    if parted:
        return min(parted)
    if not layers_only and not (result.outputs and all(agrees(o, tol) for o in result.outputs)):
        return len(pairing.matched)
    return None


def _search(first: Trial, reference: Reference, b: ModelHandle, tol: float, partial: bool,
            layers_only: bool) -> tuple[Trial, int]:
    """From the first difference back: each interchangeable group before it gets its other assignments
    (fewest moved partners first, and first the one that fixed an earlier group of the same size); the
    first that moves the difference later is kept, and the search goes on from the new difference."""
    best, trials, tried, learned = first, 1, set(), {}
    while best.divergence is not None and trials < MAX_TRIALS:
        best.values = None  # another trial makes its own: a large model's values are held once at most
        groups = best.pairing.groups
        nearby = sorted((g for g, members in enumerate(groups) if members[0] <= best.divergence and g not in tried),
                        key=lambda g: -groups[g][0])[:_GROUPS_PER_DIFFERENCE]
        improved = None
        for g in nearby:
            tried.add(g)
            for moves in _assignments(best.pairing, groups[g], learned.get(len(groups[g]))):
                if trials >= MAX_TRIALS:
                    break
                trials += 1
                try:
                    trial = _trial(best.pairing.reassigned(groups[g], _apply(best.pairing, groups[g], moves)),
                                   reference, b, tol, partial, layers_only)
                except ModelshellError:
                    continue  # an assignment whose values cannot be made (a bias left nowhere to go) is no better
                if _later(trial.divergence, best.divergence):
                    improved, learned[len(groups[g])] = trial, moves
                    break
            if improved is not None:
                break
        if improved is None:
            break
        best = improved
    return best, trials


def _later(new: int | None, old: int) -> bool:
    return new is None or new > old


def _apply(pairing: Pairing, group: list[int], moves: tuple[int, ...]) -> tuple[int, ...]:
    """B's layers for the group's pairs under ``moves``, a permutation of the group's positions."""
    partners = [pairing.matched[p][1] for p in group]
    return tuple(partners[k] for k in moves)


def _assignments(pairing: Pairing, group: list[int], first: tuple[int, ...] | None) -> Iterator[tuple[int, ...]]:
    """The group's other assignments that every pair takes (a rule pairs them and the shapes fit)."""
    size = len(group)
    identity = tuple(range(size))
    others = [p for p in itertools.permutations(range(size)) if p != identity]
    others.sort(key=lambda p: sum(k != v for k, v in enumerate(p)))
    if first in others:
        others.remove(first)
        others.insert(0, first)
    partners = [pairing.matched[p][1] for p in group]
    for moves in others:
        if all(pairing.takes(position, partners[k]) for position, k in zip(group, moves)):
            yield moves


def _labelled(pairing: Pairing, plan: TransferPlan, result: Verification | None, divergence: int | None,
              tol: float = 0.0) -> TransferPlan:
    """Each match's ``confirmed``: "outputs" where the run agrees up to and past it (a pair of a group
    needs an agreeing layer after its group, since q and k swapped still give their own outputs right),
    "rule" where nothing could take its place, "--map" where the user said so, "" otherwise."""
    position = _positions(pairing)
    end = len(pairing.matched) if divergence is None else divergence
    agreeing = {position[c.name] for c in result.layers if c.name in position and agrees(c, tol)} \
        if result is not None else set()
    group_end = {g: members[-1] for g, members in enumerate(pairing.groups)}
    matches = []
    for match in plan.matches:
        k = position.get(comparison_name(match.a_path, match.b_path), end)
        proven_after = result is not None and (divergence is None or any(
            group_end.get(match.group, k) < q < end for q in agreeing))
        if result is not None and k < end and (match.group is None or proven_after):
            confirmed = "outputs"
        elif match.basis == "--map":
            confirmed = "--map"
        elif match.group is None:
            confirmed = "rule"
        else:
            confirmed = ""
        matches.append(dataclasses.replace(match, confirmed=confirmed))
    return dataclasses.replace(plan, matches=matches)


def written_as_run(plan: TransferPlan, source: ModelHandle, destination: ModelHandle,
                   positions: int = 4096) -> bool | str:
    """After a copy by ``plan``: whether every tensor the destination now holds is, bit for bit, the value
    the confirming run gave it, read back at ``positions`` places spread over each tensor at random (a
    seeded draw; a tensor in the wrong place or order differs at almost all of them, and reading every
    element back through a transpose costs more than running the model). Then that run, made before the
    write, is the destination's own run, and need not be made again. The name of the first tensor that
    differs when one does; False when a value was converted to another dtype on the way (the destination
    must then be run itself)."""
    import numpy as np

    rng = np.random.default_rng(0)
    values = converted_values(plan, source)
    names = list(values)
    for name, held in zip(names, destination.iter_arrays(names)):
        value = values.pop(name)
        if value.dtype != held.dtype or tuple(value.shape) != held.shape:
            return False
        flat = rng.integers(0, value.size, positions) if value.size > positions else np.arange(value.size)
        value, held = _at(value, flat), _at(held, flat)
        if not np.array_equal(value, held, equal_nan=value.dtype.kind in "fc"):
            return name
    return True


def _at(value: Any, flat: Any) -> Any:
    """The elements at C-order positions ``flat``; of a ``Reshaped``, read from its view (the same C
    order), so a 411 MB reordered kernel is never made to be sampled."""
    import numpy as np

    from modelshell.frameworks.copying import Reshaped

    array = value.view if isinstance(value, Reshaped) else np.asarray(value)
    return array[np.unravel_index(flat, array.shape)] if array.ndim else array.reshape(1)[flat]
