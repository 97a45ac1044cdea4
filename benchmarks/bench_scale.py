"""Scale: `weights` and `pair` time per tensor on 1k, 10k and 50k-tensor weights files.

    .venv/bin/python benchmarks/bench_scale.py [--runs 5] [--quick] [--sizes 1000,10000,50000]

For each size N, two synthetic safetensors files of N tiny tensors (N/2 Dense layers, weight + bias) are
written to a temporary folder: one in torch naming (``layers.<i>.weight`` (4, 3)), one in Keras naming
(``dense_<i>/kernel`` (3, 4)). In one warm process (median of ``--runs``):

* ``load`` (the header read) of the torch file;
* ``weights NAME --json`` (the listing, rendered to its JSON line);
* ``pair T K`` (every layer matched and every transform chosen; rendered to JSON).

The target is linear growth: time per tensor at the largest size at most 1.3x the time per tensor at
the smallest (the reference column is the smallest size's time per tensor).
"""
from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import os
import pstats
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench import PY, ROOT, interleaved, machine, print_table, run_process  # noqa: E402

FLAT = 1.3


def make(folder: Path, n: int) -> tuple[Path, Path]:
    import numpy as np
    from safetensors.numpy import save_file

    layers = n // 2
    w, b = np.zeros((4, 3), np.float32), np.zeros(4, np.float32)
    t, k = folder / f"t{n}.safetensors", folder / f"k{n}.safetensors"
    save_file({name: v for i in range(layers) for name, v in ((f"layers.{i}.weight", w), (f"layers.{i}.bias", b))},
              str(t), metadata={"format": "pt"})
    save_file({name: v for i in range(layers) for name, v in ((f"dense_{i}/kernel", w.T.copy()), (f"dense_{i}/bias", b))},
              str(k), metadata={"format": "keras"})
    return t, k


def child(folder: str, n: int, runs: int, profile: bool) -> None:
    """One size, in a fresh process: times of each operation, and cProfiles when asked."""
    sys.path.insert(0, str(ROOT))
    from modelshell.render.json import to_json_line
    from modelshell.core.session import Session

    t, k = make(Path(folder), n)
    session = Session()

    def run(line: str, where: Session | None = None) -> None:
        outcome = (where or session).run_line(line)
        if not outcome.ok:
            raise SystemExit(f"{line}: {outcome.error}")
        for result in outcome.results:
            to_json_line(result)

    run(f"load {k} as k")
    run(f"load {t} as t")
    ops = {"load": lambda: run(f"load {t} as t", Session()), "weights": lambda: run("weights t --json"),
           "pair": lambda: run("pair t k")}
    for fn in ops.values():
        fn()  # warm-up
    times = {name: [] for name in ops}
    for _ in range(runs):
        for name, fn in ops.items():
            gc.collect()
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    profiles = {}
    if profile:
        for name, fn in ops.items():
            profiler = cProfile.Profile()
            profiler.enable()
            fn()
            profiler.disable()
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(10)
            lines = [line for line in out.getvalue().splitlines() if line.strip()]
            profiles[name] = "\n".join(lines[next(i for i, line in enumerate(lines) if "ncalls" in line):])
    print(json.dumps({"times": times, "profiles": profiles}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="5 runs (the minimum)")
    parser.add_argument("--sizes", default="1000,10000,50000")
    parser.add_argument("--profile", action="store_true", help="cProfile of each operation at every size")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), int(args.child[2]), args.profile)
        return
    runs = 5 if args.quick else args.runs
    sizes = [int(s) for s in args.sizes.split(",")]
    folder = Path(tempfile.mkdtemp(prefix="ms-bench-scale-"))
    try:
        print(f"{machine()}; median of {runs} runs in one warm process per size")
        med: dict[int, dict[str, float]] = {}
        notes = []
        for n in sizes:
            out = run_process([PY, __file__, "--child", str(folder), str(n), str(runs)]
                              + (["--profile"] if args.profile else []))
            data = json.loads(out.stdout.strip().splitlines()[-1])
            med[n] = {name: statistics.median(values) for name, values in data["times"].items()}
            notes.append(f"{n}: " + "; ".join(f"{name} {', '.join(f'{x:.3f}' for x in values)}"
                                             for name, values in data["times"].items()))
            for name, text in data["profiles"].items():
                notes.append(f"cProfile of {name} at {n} tensors, by own time:\n{text}")
        rows = []
        smallest, largest = sizes[0], sizes[-1]
        for name in ("load", "weights", "pair"):
            base = med[smallest][name] / smallest
            for n in sizes:
                per = med[n][name] / n
                ratio = per / base
                last = n == largest and n != smallest
                rows.append((f"{name}, {n} tensors", f"{med[n][name]:.3f} s = {per * 1e6:.1f} us/tensor",
                             f"{base * 1e6:.1f} us/tensor @ {smallest}", f"{ratio:.2f}x",
                             f"<= {FLAT}x" if last else "", (ratio <= FLAT) if last else ""))
        print_table("Scale: time per tensor (warm process; reference = per-tensor time at the smallest size)", rows)
        print("\nall runs (s):\n" + "\n".join(notes))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    main()
