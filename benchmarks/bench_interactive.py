"""Interactive speed: completion over thousands of tensors, drawing thousands of rows, a 2 MB command line.

    .venv/bin/python benchmarks/bench_interactive.py [--runs 5] [--rows 5000] [--quick]

These used to be wall-clock bounds inside tests (2 s, 4 s, 5 s), which fail on a loaded machine and say
nothing on a fast one. Here each figure is a ratio against a baseline measured in the same process,
interleaved (median of ``--runs``), so the machine's load hits both sides alike:

* completing ``weights big `` on a model of 5,000 tensors against one of 500: time per tensor, which a
  completer that does quadratic work makes grow tenfold (target: at most 1.5x);
* modelshell's ``Printer`` drawing a 5,000-row table (``--rows``) against rich drawing the same table
  (the renderer modelshell falls back to; target: at most 0.5x);
* refusing a 2,000,001-character command line against running a 100,000-character one, the longest
  accepted (``shlex.split`` is quadratic: the refusal must come before it; target: at most 1.0x).

The tests keep what each of these must do (every completion, every row, the one-line refusal).
"""
from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench import ROOT, machine, print_table  # noqa: E402

sys.path.insert(0, str(ROOT))


def timed(work: Callable[[], object]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def side_by_side(works: dict[str, Callable[[], object]], runs: int) -> dict[str, float]:
    """The median seconds of each work, run round-robin after one warm-up round."""
    for work in works.values():
        work()
    found: dict[str, list[float]] = {name: [] for name in works}
    for _ in range(runs):
        for name, work in works.items():
            found[name].append(timed(work))
    return {name: statistics.median(times) for name, times in found.items()}


def completion_row(runs: int) -> tuple:
    from prompt_toolkit.completion import CompleteEvent
    from prompt_toolkit.document import Document

    from modelshell.core.session import Session
    from modelshell.terminal.completion import SessionCompleter

    session = Session()
    small, large = 250, 2500  # Linear layers: 500 and 5,000 tensors
    session.run_line(f"import torch; small = torch.nn.Sequential(*[torch.nn.Linear(2, 2) for _ in range({small})])")
    session.run_line(f"import torch; big = torch.nn.Sequential(*[torch.nn.Linear(2, 2) for _ in range({large})])")

    def complete(name: str, count: int) -> Callable[[], object]:
        def work() -> None:
            line = f"weights {name} "
            found = list(SessionCompleter(session).get_completions(
                Document(line, len(line)), CompleteEvent(completion_requested=True)))
            assert len(found) == 2 * count, len(found)
        return work

    times = side_by_side({"small": complete("small", small), "big": complete("big", large)}, runs)
    per_small, per_big = times["small"] / (2 * small), times["big"] / (2 * large)
    ratio = per_big / per_small
    return ("complete `weights big ` (5,000 tensors), per tensor vs 500", f"{times['big']:.3f} s",
            f"{times['small']:.3f} s", f"{ratio:.2f}x", "<= 1.5x", ratio <= 1.5)


def rows_row(runs: int, rows: int) -> tuple:
    from rich.console import Console

    from modelshell.core.results import Column, Outcome, Table
    from modelshell.render import Printer
    from modelshell.render.rich import _rich_table

    columns = [Column("name", no_wrap=True), Column("shape", no_wrap=True), Column("dtype"),
               Column("params", justify="right"), Column("note")]
    table = Table("t", columns, [[f"layer_{i}.weight", f"({i}, 4)", "float32", f"{4 * i:,}", "tied" * (i % 2)]
                                 for i in range(rows)], footer=[f"{rows} tensors"])

    def ours() -> None:
        out = io.StringIO()
        Printer(out=out, width=120).show(Outcome(results=[table]))
        assert out.getvalue().count(".weight") == rows

    def rich() -> None:
        console = Console(file=io.StringIO(), width=120, color_system=None)
        console.print(_rich_table(table, False, [None] * len(columns)))
        assert console.file.getvalue().count(".weight") == rows

    times = side_by_side({"ours": ours, "rich": rich}, runs)
    ratio = times["ours"] / times["rich"]
    return (f"draw a {rows:,}-row table vs rich drawing it", f"{times['ours']:.3f} s", f"{times['rich']:.3f} s",
            f"{ratio:.2f}x", "<= 0.5x", ratio <= 0.5)


def long_line_row(runs: int) -> tuple:
    from modelshell.core.session import Session

    session = Session()
    longest, refused = "weights " + "a" * (100_000 - len("weights ")), "weights " + "a" * 2_000_000

    def run(line: str, says: str) -> Callable[[], object]:
        def work() -> None:
            outcome = session.run_line(line)
            assert not outcome.ok and says in outcome.error, outcome.error
        return work

    times = side_by_side({"refused": run(refused, "at most 100,000"), "longest": run(longest, "a" * 20)}, runs)
    ratio = times["refused"] / times["longest"]
    return ("refuse a 2 MB command line vs run a 100 KB one", f"{times['refused']:.4f} s",
            f"{times['longest']:.4f} s", f"{ratio:.2f}x", "<= 1.0x", ratio <= 1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rows", type=int, default=5000, help="rows of the drawn table (rich takes ~2 ms a row)")
    parser.add_argument("--quick", action="store_true", help="3 runs, a 2,000-row table")
    args = parser.parse_args()
    runs, rows = (3, 2000) if args.quick else (args.runs, args.rows)
    print(f"{machine()}; median of {runs} interleaved runs in one process")
    print_table("Interactive speed (each against its baseline, side by side)",
                [completion_row(runs), rows_row(runs, rows), long_line_row(runs)])


if __name__ == "__main__":
    main()
