"""Looking into a big checkpoint: `load` + `weights` of a 2 GB file, time and peak memory.

    .venv/bin/python benchmarks/bench_checkpoints.py [--runs 7] [--quick] [--gb 2] [--keep DIR]

Three files of the same ~2 GB of float32 (256 matrices 1024x2048 and their biases) are written to a
temporary folder under /tmp and deleted at the end: a ``.safetensors``, a torch state dict saved with
``torch.save``, and a Keras 3 ``.weights.h5`` (``layers/dense_<i>/vars/<0|1>``, written with h5py in the
layout ``Model.save_weights`` writes).

Measured side by side, interleaved (median of ``--runs``), with the file in the page cache for both:

* fresh process: ``modelshell run`` of ``load FILE`` + ``weights NAME --json`` (every tensor listed; the
  count is checked), against a fresh ``python -c`` doing the format's own fastest header read:
  ``safe_open(...).keys()`` + ``get_slice(k)`` shape and dtype; ``torch.load(mmap=True, weights_only=True)``
  + shapes and dtypes; an ``h5py`` ``visititems`` walk collecting shapes and dtypes (``weights`` lists
  both). Peak memory is each process's own
  ``ru_maxrss`` (from ``wait4``); target <= 300 MB, time <= 1.2x;
* in one warm process (imports done, so only the reading is compared): ``Session.run_line('load ...')``
  + ``run_line('weights ... --json')`` against the same header read; time <= 1.2x.

And for the Keras file: ``weights`` must not import TensorFlow or Keras (checked in ``sys.modules``).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench import PY, ROOT, fmt_mb, fmt_s, interleaved, machine, median_peak, median_s, modelshell_argv, \
    print_table, run_process  # noqa: E402

ROWS, COLS = 1024, 2048  # one matrix: 8 MiB of float32

REFERENCE = {
    "safetensors": (
        "from safetensors import safe_open\n"
        "with safe_open({path!r}, 'numpy') as f:\n"
        "    shapes = {{k: (f.get_slice(k).get_shape(), f.get_slice(k).get_dtype()) for k in f.keys()}}\n"
    ),
    "torch": (
        "import torch\n"
        "sd = torch.load({path!r}, map_location='cpu', mmap=True, weights_only=True)\n"
        "shapes = {{k: (tuple(v.shape), str(v.dtype)) for k, v in sd.items()}}\n"
    ),
    "keras": (
        "import h5py\n"
        "shapes = {{}}\n"
        "with h5py.File({path!r}, 'r') as f:\n"
        "    f.visititems(lambda n, o: shapes.__setitem__(n, (o.shape, str(o.dtype))) if isinstance(o, h5py.Dataset) else None)\n"
    ),
}


def generate(folder: Path, gb: float) -> dict[str, tuple[Path, int]]:
    """The three files; returns format -> (path, number of tensors)."""
    import h5py
    import numpy as np

    n = max(1, int(gb * 1e9 / (ROWS * COLS * 4)))
    rng = np.random.default_rng(0)
    block = rng.standard_normal((ROWS, COLS), dtype=np.float32)
    bias = rng.standard_normal(ROWS, dtype=np.float32)
    files = {}
    started = time.perf_counter()

    path = folder / "big.safetensors"
    from safetensors.numpy import save_file

    state = {}
    for i in range(n):
        state[f"layers.{i}.weight"] = block
        state[f"layers.{i}.bias"] = bias
    save_file(state, str(path), metadata={"format": "pt"})
    files["safetensors"] = (path, len(state))

    path = folder / "big.pt"
    import torch

    state_t = {}
    for i in range(n):  # distinct storages, or torch.save would write one block n times by reference
        state_t[f"layers.{i}.weight"] = torch.from_numpy(block).clone()
        state_t[f"layers.{i}.bias"] = torch.from_numpy(bias).clone()
    torch.save(state_t, str(path))
    files["torch"] = (path, len(state_t))
    del state_t

    path = folder / "big.weights.h5"
    with h5py.File(path, "w") as f:
        layers = f.create_group("layers")
        for i in range(n):
            group = layers.create_group(f"dense_{i}").create_group("vars")
            group.create_dataset("0", data=block.T)  # a Keras Dense kernel is (in, out)
            group.create_dataset("1", data=bias)
        f.create_group("optimizer").create_group("vars")
        f.create_group("vars")
    files["keras"] = (path, 2 * n)
    sizes = ", ".join(f"{p.name} {p.stat().st_size / 1e9:.2f} GB" for p, _ in files.values())
    print(f"generated in {time.perf_counter() - started:.1f} s: {sizes}")
    return files


def _script(folder: Path, path: Path, check_imports: bool = False) -> Path:
    lines = [f"load {path}", "weights big --json"]
    if check_imports:
        lines.append("import sys; print('HEAVY', sorted(m for m in ('torch', 'tensorflow', 'keras') if m in sys.modules))")
    script = folder / f"{path.name}{'.check' if check_imports else ''}.ms"
    script.write_text("\n".join(lines) + "\n")
    return script


def warm_child(fmt: str, path: str, runs: int) -> None:
    """In this (fresh) process: import everything, then time the reading only, interleaved."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.path.insert(0, str(ROOT))
    from modelshell.render.json import to_json_line
    from modelshell.core.session import Session

    reference_code = compile(REFERENCE[fmt].format(path=path), "<reference>", "exec")

    def reference() -> None:
        exec(reference_code, {})

    def modelshell() -> None:
        session = Session()
        for line in (f"load {path}", "weights big --json"):
            outcome = session.run_line(line)
            if not outcome.ok:
                raise SystemExit(f"{line}: {outcome.error}")
        for result in outcome.results:
            to_json_line(result)  # what --json prints

    times = {"modelshell": [], "reference": []}
    for fn in (reference, modelshell):  # warm-up: imports, caches
        fn()
    for _ in range(runs):
        for name, fn in (("reference", reference), ("modelshell", modelshell)):
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    print(json.dumps(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="5 runs")
    parser.add_argument("--gb", type=float, default=2.0, help="size of each file")
    parser.add_argument("--keep", help="generate into (and keep) this folder; reuse files already there")
    parser.add_argument("--profile", action="store_true", help="cProfile each modelshell load + weights")
    parser.add_argument("--warm-child", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--generate-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.generate_child:
        folder, gb = args.generate_child
        files = generate(Path(folder), float(gb))
        print(json.dumps({fmt: [str(p), n] for fmt, (p, n) in files.items()}))
        return
    if args.warm_child:
        fmt, path, runs = args.warm_child
        warm_child(fmt, path, int(runs))
        return
    runs = 5 if args.quick else args.runs
    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="ms-bench-ckpt-", dir="/tmp"))
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if free < 4 * args.gb * 1e9:
        raise SystemExit(f"{folder}: {free / 1e9:.0f} GB free, {3 * args.gb:.0f} GB needed")
    try:
        print(f"{machine()}; median of {runs} interleaved runs")
        existing = args.keep and all((folder / name).exists() for name in ("big.safetensors", "big.pt", "big.weights.h5"))
        if existing:
            n = int(args.gb * 1e9 / (ROWS * COLS * 4))
            files = {"safetensors": (folder / "big.safetensors", 2 * n), "torch": (folder / "big.pt", 2 * n),
                     "keras": (folder / "big.weights.h5", 2 * n)}
        else:
            # In a child: a child process inherits its parent's peak RSS through fork + exec, so the process
            # that starts the measured ones must never hold the 2 GB itself.
            made = run_process([PY, __file__, "--generate-child", str(folder), str(args.gb)]).stdout.splitlines()
            print(made[0])
            files = {fmt: (Path(p), n) for fmt, (p, n) in json.loads(made[-1]).items()}
        rows = []
        notes = []
        for fmt, (path, count) in files.items():
            script = _script(folder, path)
            commands = {
                "modelshell": modelshell_argv("run", str(script)),
                "reference": [PY, "-c", REFERENCE[fmt].format(path=str(path))],
            }
            found = interleaved(commands, runs)
            listed = json.loads(found["modelshell"][-1].stdout.strip().splitlines()[-1])
            if len(listed["weights"]) != count:
                raise SystemExit(f"{path.name}: weights listed {len(listed['weights'])} tensors, not {count}")
            ms, ref = median_s(found["modelshell"]), median_s(found["reference"])
            peak, ref_peak = median_peak(found["modelshell"]), median_peak(found["reference"])
            label = f"{fmt} {path.stat().st_size / 1e9:.1f} GB, {count} tensors"
            rows.append((f"{label}: time, fresh process", fmt_s(ms), fmt_s(ref), f"{ms / ref:.2f}x", "<= 1.2x",
                         ms / ref <= 1.2))
            rows.append((f"{label}: peak memory", fmt_mb(peak), fmt_mb(ref_peak), f"{peak / ref_peak:.2f}x",
                         "<= 300 MB", peak <= 300e6))
            warm = json.loads(run_process([PY, __file__, "--warm-child", fmt, str(path), str(runs)]).stdout
                              .strip().splitlines()[-1])
            wms, wref = statistics.median(warm["modelshell"]), statistics.median(warm["reference"])
            rows.append((f"{label}: time, warm process", fmt_s(wms), fmt_s(wref), f"{wms / wref:.2f}x", "<= 1.2x",
                         wms / wref <= 1.2))
            if fmt == "keras":
                check = run_process(modelshell_argv("run", str(_script(folder, path, check_imports=True))))
                heavy = next(line for line in check.stdout.splitlines() if line.startswith("HEAVY"))
                imported = json.loads(heavy.split(" ", 1)[1].replace("'", '"'))
                rows.append(("keras .weights.h5: torch/TF/keras imported", ", ".join(imported) or "none", "", "",
                             "no TF", not {"tensorflow", "keras"} & set(imported)))
            notes.append(f"{fmt}: modelshell {', '.join(f'{r.seconds:.3f}' for r in found['modelshell'])}; "
                         f"reference {', '.join(f'{r.seconds:.3f}' for r in found['reference'])}; warm modelshell "
                         f"{', '.join(f'{x:.3f}' for x in warm['modelshell'])}; warm reference "
                         f"{', '.join(f'{x:.3f}' for x in warm['reference'])}")
            if args.profile:
                prof = run_process([PY, "-m", "cProfile", "-s", "cumtime", str(ROOT / "modelshell" / "__main__.py"),
                                    "run", str(script)])
                body = [line for line in prof.stdout.splitlines() if line.strip() and not line.startswith("{")]
                start = next(i for i, line in enumerate(body) if "ncalls" in line)
                print(f"\ncProfile of modelshell on {path.name} (by cumulative time):\n" + "\n".join(body[start:start + 25]))
        print_table("Looking into a big checkpoint (load + weights --json)", rows)
        print("\nall runs (s):\n  " + "\n  ".join(notes))
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
