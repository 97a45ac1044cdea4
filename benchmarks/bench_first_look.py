"""First look at a framework model: `load` + `weights` in a fresh process, against the framework alone.

    .venv/bin/python benchmarks/bench_first_look.py [--runs 7] [--quick]

The tutorial's LeNet-5 (``modelshell.demo``) is saved to a temporary folder as a legacy Keras ``lenet5.h5``
(whole model) and a torch state dict ``lenet5.pt``. Measured side by side, interleaved (median of
``--runs``), each in a fresh process:

* ``modelshell run`` of ``load lenet5.h5`` + ``weights lenet5`` against
  ``python -c "import keras; keras.models.load_model('lenet5.h5').weights"``;
* ``modelshell run`` of ``load lenet5.pt`` + ``weights lenet5`` against
  ``python -c "import torch; sd = torch.load('lenet5.pt', weights_only=True); [v.shape for v in sd.values()]"``.

Target: at most 1.1x each. Both sides import the framework, which is most of the time.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench import PY, ROOT, fmt_mb, fmt_s, interleaved, machine, median_peak, median_s, modelshell_argv, \
    print_table, run_process  # noqa: E402

MAKE = f"""
import os, sys
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, {str(ROOT)!r})
import torch
from modelshell.demo import keras_lenet5, torch_lenet5
folder = sys.argv[1]
keras_lenet5().save(os.path.join(folder, "lenet5.h5"))
torch.save(torch_lenet5().state_dict(), os.path.join(folder, "lenet5.pt"))
"""

REFERENCE = {
    "keras": "import keras; keras.models.load_model({path!r}).weights",
    "torch": "import torch; sd = torch.load({path!r}, weights_only=True); [v.shape for v in sd.values()]",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="5 runs")
    parser.add_argument("--profile", action="store_true", help="cProfile of each modelshell run")
    args = parser.parse_args()
    runs = 5 if args.quick else args.runs
    folder = Path(tempfile.mkdtemp(prefix="ms-bench-first-"))
    try:
        print(f"{machine()}; median of {runs} interleaved runs")
        run_process([PY, "-c", MAKE, str(folder)])
        rows, notes = [], []
        for fmt, name in (("keras", "lenet5.h5"), ("torch", "lenet5.pt")):
            path = folder / name
            script = folder / f"{name}.ms"
            script.write_text(f"load {path}\nweights lenet5\n")
            found = interleaved({"modelshell": modelshell_argv("run", str(script)),
                                 "reference": [PY, "-c", REFERENCE[fmt].format(path=str(path))]}, runs)
            ms, ref = median_s(found["modelshell"]), median_s(found["reference"])
            rows.append((f"load {name} + weights ({fmt})", fmt_s(ms), fmt_s(ref), f"{ms / ref:.2f}x", "<= 1.1x",
                         ms / ref <= 1.1))
            notes.append(f"{fmt}: modelshell {', '.join(f'{r.seconds:.3f}' for r in found['modelshell'])}; "
                         f"reference {', '.join(f'{r.seconds:.3f}' for r in found['reference'])}; peak memory "
                         f"{fmt_mb(median_peak(found['modelshell']))} vs {fmt_mb(median_peak(found['reference']))}")
            if args.profile or ms / ref > 1.1:
                prof = run_process([PY, "-m", "cProfile", "-s", "cumtime", str(ROOT / "modelshell" / "__main__.py"),
                                    "run", str(script)])
                body = [line for line in prof.stdout.splitlines() if line.strip()]
                start = next(i for i, line in enumerate(body) if "ncalls" in line)
                notes.append(f"cProfile of modelshell on {name} (by cumulative time):\n" + "\n".join(body[start:start + 20]))
        print_table("First look at a framework model (fresh process each run)", rows)
        print("\n" + "\n".join(notes))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
