"""Listing a sharded checkpoint folder: `load DIR` + `weights` of 4 GB of safetensors in 8 shards.

    .venv/bin/python benchmarks/bench_folders.py [--runs 7] [--quick] [--gb 4] [--shards 8] [--keep DIR]

A transformers-style folder is written under /tmp and deleted at the end: ``model-0000N-of-00008.safetensors``
shards of float32 matrices (1024x2048, 8 MiB each, and their biases), their
``model.safetensors.index.json`` and a ``config.json``, as ``save_pretrained`` lays them out.

Measured side by side, interleaved (median of ``--runs``), with the shards in the page cache for both:
a fresh ``modelshell run`` of ``load DIR`` + ``weights NAME --json`` (every tensor listed; the count is
checked) against a fresh bare ``python -c`` that opens every shard with ``safe_open`` and reads each
tensor's shape and dtype (``get_slice``), the safetensors library's own fastest listing. Targets (issue
14): time <= 1.3x, peak memory (the child's own ``ru_maxrss``, from ``wait4``) <= 300 MB. A third
column, measured with them, is the floor: ``modelshell run`` of a script that only imports what the
reference imports (numpy comes with ``safe_open``), so its ratio is what start-up alone costs.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench import PY, fmt_mb, fmt_s, interleaved, machine, median_cpu, median_peak, median_s, modelshell_argv, \
    print_table, run_process  # noqa: E402

ROWS, COLS = 1024, 2048  # one matrix: 8 MiB of float32

REFERENCE = (
    "import json, os\n"
    "from safetensors import safe_open\n"
    "folder = {folder!r}\n"
    "shards = sorted(set(json.load(open(os.path.join(folder, 'model.safetensors.index.json')))['weight_map'].values()))\n"
    "shapes = {{}}\n"
    "for shard in shards:\n"
    "    with safe_open(os.path.join(folder, shard), 'numpy') as f:\n"
    "        for k in f.keys():\n"
    "            s = f.get_slice(k)\n"
    "            shapes[k] = (s.get_shape(), s.get_dtype())\n"
)


def generate(folder: Path, gb: float, shards: int) -> int:
    """The folder; returns the number of tensors."""
    import numpy as np
    from safetensors.numpy import save_file

    per_shard = max(1, int(gb * 1e9 / shards / (ROWS * COLS * 4)))
    rng = np.random.default_rng(0)
    block = rng.standard_normal((ROWS, COLS), dtype=np.float32)
    bias = rng.standard_normal(ROWS, dtype=np.float32)
    weight_map = {}
    total = 0
    started = time.perf_counter()
    for s in range(shards):
        name = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        state = {}
        for i in range(s * per_shard, (s + 1) * per_shard):
            state[f"layers.{i}.weight"] = block
            state[f"layers.{i}.bias"] = bias
        save_file(state, str(folder / name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(state, name))
        total += sum(a.nbytes for a in state.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    config = {"architectures": ["BenchModel"], "model_type": "bench", "hidden_size": COLS,
              "num_hidden_layers": shards * per_shard}
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    size = sum(p.stat().st_size for p in folder.glob("*.safetensors"))
    print(f"generated in {time.perf_counter() - started:.1f} s: {shards} shards, {size / 1e9:.2f} GB, "
          f"{len(weight_map)} tensors")
    return len(weight_map)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="5 runs")
    parser.add_argument("--gb", type=float, default=4.0, help="size of the checkpoint")
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--keep", help="generate into (and keep) this folder; reuse a checkpoint already there")
    parser.add_argument("--generate-child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.generate_child:
        folder, gb, shards = args.generate_child
        print(generate(Path(folder), float(gb), int(shards)))
        return
    runs = 5 if args.quick else args.runs
    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="ms-bench-folder-", dir="/tmp"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        print(f"{machine()}; median of {runs} interleaved runs")
        index = folder / "model.safetensors.index.json"
        if args.keep and index.is_file():
            count = len(json.loads(index.read_text())["weight_map"])
        else:
            free = shutil.disk_usage(folder).free
            if free < 1.5 * args.gb * 1e9:
                raise SystemExit(f"{folder}: {free / 1e9:.0f} GB free, {args.gb:.0f} GB needed")
            # In a child: a child inherits its parent's peak RSS through fork + exec, so the process that
            # starts the measured ones must never hold a shard itself.
            made = run_process([PY, __file__, "--generate-child", str(folder), str(args.gb), str(args.shards)])
            print(made.stdout.splitlines()[0])
            count = int(made.stdout.strip().splitlines()[-1])
        script = Path(tempfile.mkdtemp(prefix="ms-bench-script-")) / "list.ms"
        script.write_text(f"load {folder} as big\nweights big --json\n")
        floor = script.with_name("floor.ms")
        floor.write_text("import numpy, safetensors\n")  # what both import, without the listing
        commands = {"modelshell": modelshell_argv("run", str(script)),
                    "reference": [PY, "-c", REFERENCE.format(folder=str(folder))],
                    "floor": modelshell_argv("run", str(floor))}
        found = interleaved(commands, runs)
        listed = json.loads(found["modelshell"][-1].stdout.strip().splitlines()[-1])
        if len(listed["weights"]) != count:
            raise SystemExit(f"weights listed {len(listed['weights'])} tensors, not {count}")
        ms, ref = median_s(found["modelshell"]), median_s(found["reference"])
        ms_cpu, ref_cpu = median_cpu(found["modelshell"]), median_cpu(found["reference"])
        peak, ref_peak = median_peak(found["modelshell"]), median_peak(found["reference"])
        size = sum(p.stat().st_size for p in folder.glob("*.safetensors")) / 1e9
        shards = len(list(folder.glob("model-*-of-*.safetensors")))
        label = f"{size:.1f} GB in {shards} shards, {count} tensors"
        print_table("Listing a sharded safetensors folder (load DIR + weights --json)", [
            (f"{label}: time, fresh process", fmt_s(ms), fmt_s(ref), f"{ms / ref:.2f}x", "<= 1.3x", ms / ref <= 1.3),
            (f"{label}: CPU time (user + system) of the same runs", fmt_s(ms_cpu), fmt_s(ref_cpu),
             f"{ms_cpu / ref_cpu:.2f}x", "", ""),
            (f"{label}: peak memory", fmt_mb(peak), fmt_mb(ref_peak), f"{peak / ref_peak:.2f}x", "<= 300 MB",
             peak <= 300e6),
            ("start-up floor: `modelshell run` of `import numpy, safetensors` only", fmt_s(median_s(found["floor"])),
             fmt_s(ref), f"{median_s(found['floor']) / ref:.2f}x", "", ""),
        ])
        print("\nall runs (s):\n" + "\n".join(f"  {name:<10} " + ", ".join(f"{r.seconds:.3f}" for r in runs_)
                                              for name, runs_ in found.items()))
        shutil.rmtree(script.parent, ignore_errors=True)
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
