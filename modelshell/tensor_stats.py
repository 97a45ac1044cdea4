"""Mean, spread, range and histogram of one tensor's values, with numpy alone.

A tensor is read in fixed-size chunks and each chunk converted to float64 on its own: a float32 tensor of
a billion values is never doubled in memory, and sums over millions of values keep their precision. NaN
and infinite values are counted apart and left out of every number, so one bad value shows as a count
instead of turning the mean, the range and the histogram into nan.

The histogram is ``np.histogram``'s: ``bins`` equal bins from the smallest finite value to the largest
(half-open, the last one closed), and for a constant tensor numpy's one-wide range around the value.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["TensorStats", "tensor_stats", "CHUNK"]

CHUNK = 1 << 20  # values per float64 chunk: 8 MiB of scratch, whatever the tensor's size


@dataclass(frozen=True)
class TensorStats:
    """What ``weights --stats`` and ``hist`` show of one tensor. The numbers are None when there is no
    finite value to compute them from (an empty tensor, all NaN, or a dtype with no order: ``reason``)."""

    count: int
    nan: int = 0
    posinf: int = 0
    neginf: int = 0
    mean: float | None = None
    std: float | None = None  # population (ddof=0), as np.std
    min: float | None = None
    max: float | None = None
    edges: list[float] = field(default_factory=list)  # len(counts) + 1, empty when there are no numbers
    counts: list[int] = field(default_factory=list)
    reason: str = ""

    def nonfinite_text(self) -> str:
        """``2 nan, 1 +inf``: the values the numbers leave out, or "" when there are none."""
        parts = [(self.nan, "nan"), (self.posinf, "+inf"), (self.neginf, "-inf")]
        return ", ".join(f"{n:,} {label}" for n, label in parts if n)

    def as_json(self) -> dict[str, Any]:
        return {
            "count": self.count, "nan": self.nan, "posinf": self.posinf, "neginf": self.neginf,
            "mean": self.mean, "std": self.std, "min": self.min, "max": self.max,
            "histogram": {"edges": self.edges, "counts": self.counts},
        }


def tensor_stats(array: np.ndarray, bins: int = 10) -> TensorStats:
    """Statistics of every value of ``array`` (any shape; float, integer, bool, or an ml_dtypes float)."""
    values = np.asarray(array).reshape(-1)
    reason = _unsupported(values.dtype)
    if reason:
        return TensorStats(values.size, reason=reason)
    total, nan, posinf, neginf, low, high = _first_pass(values)
    finite = values.size - nan - posinf - neginf
    if finite == 0:
        return TensorStats(values.size, nan, posinf, neginf)
    if not (math.isfinite(total) and math.isfinite(high - low)):
        return TensorStats(values.size, nan, posinf, neginf, min=low, max=high,
                           reason="values too large for float64 sums: no mean, std or histogram")
    mean = total / finite
    squares, scale, counts, edges = _second_pass(values, mean, (low, high), bins)
    return TensorStats(values.size, nan, posinf, neginf, mean, scale * math.sqrt(squares / finite), low, high,
                       [float(e) for e in edges], [int(c) for c in counts])


def _unsupported(dtype: np.dtype) -> str:
    """Why values of ``dtype`` have no mean or order (complex, text, objects), or "" when they do."""
    if dtype.kind in "biuf":
        return ""
    if dtype.kind == "V":  # ml_dtypes' bfloat16 and float8 are numbers that numpy files as "void"
        try:
            np.zeros(1, dtype).astype(np.float64)
            return ""
        except (TypeError, ValueError):
            pass
    return f"no statistics for {dtype} values"


def _chunks(values: np.ndarray) -> Iterator[np.ndarray]:
    """The values, CHUNK at a time, as float64 (a view of the tensor is sliced, never copied whole)."""
    for start in range(0, values.size, CHUNK):
        yield values[start:start + CHUNK].astype(np.float64)


def _first_pass(values: np.ndarray) -> tuple[float, int, int, int, float, float]:
    """The sum, the NaN and infinity counts and the finite range; the mean needs all of them first."""
    sums: list[float] = []
    nan = posinf = neginf = 0
    low, high = math.inf, -math.inf
    for chunk in _chunks(values):
        finite = np.isfinite(chunk)
        if not finite.all():
            nan += int(np.isnan(chunk).sum())
            posinf += int(np.isposinf(chunk).sum())
            neginf += int(np.isneginf(chunk).sum())
            chunk = chunk[finite]
        if chunk.size:
            sums.append(float(chunk.sum()))
            low, high = min(low, float(chunk.min())), max(high, float(chunk.max()))
    return math.fsum(sums), nan, posinf, neginf, low, high


def _second_pass(values: np.ndarray, mean: float, value_range: tuple[float, float],
                 bins: int) -> tuple[float, float, np.ndarray, np.ndarray]:
    """Squared deviations from the mean (two passes: a one-pass sum of squares loses the spread of
    values far from zero) and the bin counts, over the range the first pass found. Deviations are
    divided by a power of two near the largest one, which is exact and keeps squares of huge values
    from overflowing; ``std`` multiplies it back."""
    squares: list[float] = []
    edges = _edges(value_range, bins)
    bins = len(edges) - 1 if edges is not None else 1
    counts = np.zeros(bins, dtype=np.int64)
    scale = _power_of_two_near(max(value_range[1] - mean, mean - value_range[0]))
    for chunk in _chunks(values):
        chunk = chunk[np.isfinite(chunk)]
        squares.append(float(np.square((chunk - mean) / scale).sum()))
        if edges is None:  # one value too large for numpy to widen into a bin: one bin holds it
            counts[0] += chunk.size
        else:
            counts += np.histogram(chunk, bins=bins, range=value_range)[0]  # every chunk: the same edges
    return math.fsum(squares), scale, counts, np.array(value_range) if edges is None else edges


def _edges(value_range: tuple[float, float], bins: int) -> np.ndarray | None:
    """``bins`` equal bins over the range, or as many as it holds: values a few float64 steps apart
    (1.0 and the next float or two) cannot make ten bins of finite, distinct width, and numpy refuses.
    None for a single huge value (3e38 alone), which numpy cannot widen by 0.5 into a bin at all."""
    for count in range(bins, 0, -1):
        try:
            return np.histogram_bin_edges(np.empty(0), bins=count, range=value_range)
        except ValueError:
            continue
    return None


def _power_of_two_near(value: float) -> float:
    """2**e with 2**e <= value < 2**(e+1) (1 for 0): dividing by it changes no bit of a mantissa."""
    return math.ldexp(1.0, math.frexp(value)[1] - 1) if value > 0 else 1.0
