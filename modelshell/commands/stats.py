"""hist, and the statistics ``weights --stats`` shares with it: looking at values rather than reading them.

Tensors are read through the handle one at a time, so a weights-only file far larger than memory still
has statistics; numpy (through ``modelshell.tensor_stats``) is imported when a command first needs it,
never at start-up.
"""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from modelshell.commands.format import count_text, shape_text
from modelshell.commands.registry import arg, command
from modelshell.core.errors import ModelshellError, first_line
from modelshell.core.results import Cell, Histogram, Sparkline

if TYPE_CHECKING:
    from modelshell.frameworks.base import ModelHandle, TensorInfo
    from modelshell.tensor_stats import TensorStats

__all__ = ["read_stats", "find_tensor", "number_text", "summary_text", "stats_cells", "stats_note", "SPARK_BINS"]

# The sparkline of `weights --stats`: enough bins to see a shape, and no wider than the width a narrow
# terminal leaves every column (render.fit.READABLE), so a sparkline is never folded onto two lines.
SPARK_BINS = 10
HIST_BINS = 20  # the bars of `hist`: twenty lines fit a terminal with the prompt still in sight
MAX_BINS = 1000


@command(
    "hist",
    "inspect",
    "a histogram of one tensor's values, drawn as bars in the terminal",
    args=[
        arg("name", help="a model in the session"),
        arg("tensor", help="a tensor name as `weights NAME` lists it"),
        arg("--bins", type=int, default=HIST_BINS, metavar="N",
            help=f"how many equal bins from the smallest value to the largest (default {HIST_BINS})"),
    ],
    examples=["hist torch_model 0.weight", "hist keras_model lenet5/dense/kernel --bins 8 --json"],
    json=True,
    details="Bins as np.histogram makes them: equal widths from the smallest finite value to the largest, each "
    "holding a <= x < b, the last a <= x <= b. NaN and infinite values are counted under the bars, not drawn.",
)
def hist(session, args: argparse.Namespace) -> Histogram:
    if not 1 <= args.bins <= MAX_BINS:
        raise ModelshellError(f"hist: --bins takes a whole number from 1 to {MAX_BINS}, not {args.bins}")
    handle = session.model(args.name)
    info = find_tensor(handle, args.name, args.tensor)
    stats = read_stats(handle, [info], args.bins)[info.name]
    return Histogram(
        title=f"{args.name} {info.name}: {shape_text(info.shape)} {info.dtype}, {_values_text(stats.count)}",
        edges=stats.edges,
        counts=stats.counts,
        footer=[_hist_footer(stats)],
        data={"model": args.name, "framework": handle.framework, "tensor": info.name, "shape": list(info.shape),
              "dtype": info.dtype, "stats": stats.as_json()},
    )


def _values_text(count: int) -> str:
    return f"{count_text(count)} value{'' if count == 1 else 's'}"


def _hist_footer(stats: TensorStats) -> str:
    left_out = stats.nonfinite_text()
    if stats.reason:
        return stats.reason
    if stats.mean is None:
        return f"no finite values to draw ({left_out})" if left_out else "no values: the tensor is empty"
    return summary_text(stats) + (f"; not drawn: {left_out}" if left_out else "")


def summary_text(stats: TensorStats) -> str:
    """``mean 0.0123, std 0.115, min -0.199, max 0.198``, as a line under a histogram."""
    names = ("mean", "std", "min", "max")
    return ", ".join(f"{n} {number_text(v)}" for n, v in zip(names, (stats.mean, stats.std, stats.min, stats.max)))


def stats_cells(stats: TensorStats) -> list[Cell]:
    """The cells mean, std, min, max and histogram of one row of ``weights --stats``."""
    numbers: list[Cell] = [number_text(v) for v in (stats.mean, stats.std, stats.min, stats.max)]
    return numbers + [Sparkline(tuple(stats.counts))]


def number_text(value: float | None) -> str:
    """Three significant digits: enough to compare tensors at a glance; ``--json`` has them all."""
    return "-" if value is None else f"{value:.3g}"


def stats_note(stats: TensorStats) -> str:
    """What a row's numbers leave out: NaN and infinities (counted, not averaged), or why there are none."""
    if stats.reason:
        return stats.reason
    if stats.count == 0:
        return "empty"
    return stats.nonfinite_text()


def find_tensor(handle: ModelHandle, model: str, name: str) -> TensorInfo:
    """The tensor ``name`` of the model, or an error naming the close ones (a typo in ``0.wieght``)."""
    infos = {t.name: t for t in handle.tensors()}
    if name in infos:
        return infos[name]
    import difflib  # only on a miss

    close = difflib.get_close_matches(name, list(infos), n=3, cutoff=0.6)
    suggestion = f"did you mean {' or '.join(f'`{c}`' for c in close)}? " if close else ""
    raise ModelshellError(f"{model} has no tensor named {name!r}", f"{suggestion}`weights {model}` lists them")


def read_stats(handle: ModelHandle, infos: list[TensorInfo], bins: int) -> dict[str, TensorStats]:
    """Statistics of each tensor by name, read one at a time: only one tensor is ever held, and a tied
    tensor is not read again (it has the statistics of the one it shares its storage with)."""
    from modelshell.tensor_stats import tensor_stats

    listed = {t.name for t in infos}
    names = [t.name for t in infos if t.tied_to not in listed]
    found: dict[str, TensorStats] = {}
    arrays = handle.iter_arrays(names)
    for name in names:
        array = _next_array(arrays, name)
        found[name] = tensor_stats(array, bins)
        del array  # before the next read, so two tensors are never held together
    for info in infos:
        found.setdefault(info.name, found.get(info.tied_to))
    return found


def _next_array(arrays, name: str):
    try:
        return next(arrays)
    except ModelshellError:
        raise
    except Exception as exc:  # noqa: BLE001 - a framework that cannot hand out a dtype as numpy
        raise ModelshellError(f"cannot read {name}: {type(exc).__name__}: {first_line(exc)}") from exc
