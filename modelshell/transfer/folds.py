"""A bias one model's layer has and its partner lacks, folded into the BatchNorm that alone reads it.

Keras builds convolutions with a bias by default; torch models that put a BatchNorm after a conv drop it
(``bias=False``). The two compute the same function, since the norm subtracts its running mean per
channel: ``BN(W x + b; mean m) == BN(W x; mean m - b)``. So a biased -> unbiased copy writes ``m - b``
into the destination norm's mean, and an unbiased -> biased one writes 0 into the destination's bias and
the norm as it is. That is exact only where the layer's output goes into that norm and nowhere else (a
shortcut that adds the conv's output before the norm would see the bias vanish) and the norm reads
nothing else: both models' traces say where each layer's output went (``LayerCall.readers`` and
``fed_by``), and a fold is made only where both agree. Which rules may fold into which norm is data
(``rules.FOLDS``); nothing here names an architecture or a parameter path. Anywhere else the pair keeps
the reason it had: one side has a bias the other cannot take or give.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from modelshell.core.errors import ModelshellError
from modelshell.frameworks.base import Layer, TensorInfo
from modelshell.transfer import rules as layouts

__all__ = ["Folding", "one_sided", "feeds_only_a_norm", "folded", "relabelled", "notes", "skip_comparison",
           "summary", "values_into_norms", "listed_pairs"]

# A Keras layer's fused activation: only a linear one leaves W x + b for the norm.
_LINEAR = (None, "linear")


@dataclass(frozen=True)
class Folding:
    """One fold of a plan: which side's layer has the bias, the bias tensor (A's, which goes into B's
    norm, or B's, which gets 0), and the norm pair's running means (None while pairing asks only whether
    a fold could be made)."""

    rule: layouts.Fold
    biased: str  # "a" or "b"
    bias: TensorInfo
    a_mean: TensorInfo | None = None
    b_mean: TensorInfo | None = None

    @property
    def into_norm(self) -> bool:
        """A has the bias and B does not: B's norm takes it."""
        return self.biased == "a"

    def pair_row(self, a_path: str) -> tuple[tuple[str, ...], tuple[str, ...], tuple, tuple, str]:
        """What ``pair`` shows for the bias: where it goes, or that it is made 0."""
        if self.into_norm:
            return ((self.bias.name,), (self.b_mean.name,), (self.bias.shape,), (self.b_mean.shape,),
                    f"bias folded into {self.b_mean.name}")
        return ((), (self.bias.name,), (), (self.bias.shape,), f"0 ({a_path or '(top)'} has no bias; norm as is)")


def one_sided(match: Any) -> Folding | None:
    """The fold a layer pair could make: its rule is one a fold covers and only one side has the bias."""
    if match.rule is None:
        return None
    for rule in layouts.FOLDS:
        if match.rule.key in rule.layers and (rule.bias in match.a_roles) != (rule.bias in match.b_roles):
            side = "a" if rule.bias in match.a_roles else "b"
            return Folding(rule, side, (match.a_roles if side == "a" else match.b_roles)[rule.bias])
    return None


def feeds_only_a_norm(layer: Layer, trace: dict | None, layers: dict[str, Layer], side: str,
                      rule: layouts.Fold) -> str | None:
    """The path of the norm of ``rule`` that alone reads ``layer``'s output and reads nothing else, with
    no activation fused into the layer; None where the trace does not show it (or cannot tell)."""
    if not trace or layer.config.get("activation", None) not in _LINEAR:
        return None
    call = trace.get(layer.path)
    if call is None or call.readers is None or len(call.readers) != 1:
        return None
    (norm_path,) = call.readers
    norm, norm_call = layers.get(norm_path), trace.get(norm_path)
    if norm is None or norm_call is None or norm_call.fed_by != frozenset({layer.path}):
        return None
    norm_rule = layouts.rule(rule.norm)
    kinds = norm_rule.torch_classes if side == "torch" else (norm_rule.keras_kind,)
    return norm_path if norm.kind in kinds and rule.mean[side] in norm.roles else None


def folded(matches: list[Any], context: Any) -> list[Any]:
    """The matches with ``fold`` set where a fold is exact: a layer pair with a bias on one side only,
    each layer feeding only a norm, and those two norms paired with each other by the rule of the fold."""
    by_paths = {(m.a_path, m.b_path): m for m in matches}
    out = []
    for match in matches:
        fold = one_sided(match)
        norms = context.norms_after(match, fold.rule) if fold else None
        norm = by_paths.get(norms) if norms else None
        if norm is not None and norm.rule is not None and norm.rule.key == fold.rule.norm:
            a_side, b_side = match.direction.split("->")
            a_mean, b_mean = norm.a_roles.get(fold.rule.mean[a_side]), norm.b_roles.get(fold.rule.mean[b_side])
            if a_mean is not None and b_mean is not None and _unit(b_mean.shape) == _unit(fold.bias.shape):
                match = dataclasses.replace(match, fold=dataclasses.replace(fold, a_mean=a_mean, b_mean=b_mean))
        out.append(match)
    return out


def _unit(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(d for d in shape if d != 1)


def relabelled(pairs: list[Any], matches: list[Any]) -> list[Any]:
    """The norm rows whose running mean takes a folded bias say so."""
    takes = {m.fold.b_mean.name: m.fold.bias.name for m in matches if m.fold and m.fold.into_norm}
    return [dataclasses.replace(p, transform=f"{p.transform}, less {takes[p.b[0]]}")
            if len(p.b) == 1 and p.b[0] in takes and p.a != (takes[p.b[0]],) else p for p in pairs]


def notes(matches: list[Any], a_name: str, b_name: str) -> list[str]:
    """One line per direction of fold, naming the first few."""
    into = [m for m in matches if m.fold and m.fold.into_norm]
    zero = [m for m in matches if m.fold and not m.fold.into_norm]
    lines = []
    if into:
        lines.append(f"{_biases(len(into))} of {a_name} folded into the running mean of the BatchNorm that alone "
                     f"reads each layer's output, as {b_name}'s layers have none (BN(x + b; mean m) = "
                     f"BN(x; mean m - b)): {listed_pairs(into)}")
    if zero:
        layers = f"{len(zero)} layers of {b_name} get" if len(zero) != 1 else f"1 layer of {b_name} gets"
        lines.append(f"{layers} a zero bias, as {a_name}'s have none and each feeds only its BatchNorm: "
                     f"{listed_pairs(zero)}")
    return lines


def summary(matches: list[Any], a_name: str, b_name: str) -> str:
    """What ``copy`` says of the folds it made, in one clause ("" when it made none)."""
    into = sum(1 for m in matches if m.fold and m.fold.into_norm)
    zero = sum(1 for m in matches if m.fold and not m.fold.into_norm)
    said = [f"{_biases(into)} of {a_name} folded into the BatchNorm after each layer ({b_name}'s layers have none)"
            if into else "",
            f"{_biases(zero)} of {b_name} set to 0 ({a_name}'s layers have none; a BatchNorm follows each)"
            if zero else ""]
    return "; ".join(s for s in said if s)


def _biases(count: int) -> str:
    return f"{count} bias" + ("es" if count != 1 else "")


def listed_pairs(matches: list[Any], limit: int = 3) -> str:
    """``A_LAYER ~ B_LAYER`` of the first few layer matches, and how many more (for one-line messages)."""
    shown = ", ".join(f"{m.a_path} ~ {m.b_path}" for m in matches[:limit])
    return shown + (f" and {len(matches) - limit} more" if len(matches) > limit else "")


def skip_comparison(match: Any) -> bool:
    """A layer whose bias went into the norm after it gives its output less the bias by design: the
    norm's output, compared next, is where the fold is proven."""
    fold = getattr(match, "fold", None)
    return fold is not None and fold.into_norm


def values_into_norms(values: dict[str, Any], pending: list[tuple[Folding, np.ndarray]]) -> None:
    """Each destination norm's running mean less the bias folded into it (computed before any write)."""
    for fold, bias in pending:
        name = fold.b_mean.tied_to or fold.b_mean.name
        if name not in values:  # the norm's pair was left out (--partial): the bias has nowhere to go
            raise ModelshellError(f"cannot copy: {fold.bias.name} folds into {fold.b_mean.name}, which is left out",
                                  "copy without --partial, or pair the norm with --map")
        mean = np.asarray(values[name])
        values[name] = fold.rule.into((mean, np.reshape(np.asarray(bias), mean.shape).astype(mean.dtype)), {})[0]
