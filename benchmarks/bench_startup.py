"""Time to prompt: how long before modelshell, started with no model, is ready for input.

    .venv/bin/python benchmarks/bench_startup.py [--runs 15] [--quick]

Measured side by side, interleaved, in one run (median of ``--runs``):

* ``modelshell`` in a pseudo-terminal, from just before the fork to the ``ms> `` prompt being on the screen
  (prompt_toolkit has drawn it and waits for a key);
* ``modelshell run EMPTY`` (an empty script: start-up, a session, exit);
* the references: ``python -c pass`` (the same venv interpreter) and ``ipython -c pass``.

Targets: modelshell at most 0.6x ``ipython -c pass`` and at most 0.4 s over ``python -c pass``; and none of
torch, TensorFlow/Keras, h5py, safetensors or numpy imported before a model needs them
(``-X importtime`` of both start-ups).
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench import PY, VENV_BIN, Run, env, fmt_s, interleaved, machine, median_s, modelshell_argv, print_table, \
    run_process  # noqa: E402

HEAVY = ("torch", "tensorflow", "keras", "h5py", "numpy", "safetensors", "ml_dtypes", "scipy", "pandas")


def to_prompt(extra_env: dict[str, str] | None = None) -> tuple[Run, str]:
    """Start ``modelshell`` in a pty; the time until the prompt is drawn. Returns the run and what it printed."""
    import pexpect

    start = time.perf_counter()
    child = pexpect.spawn(str(VENV_BIN / "modelshell"), env=env(**(extra_env or {})), encoding="utf8",
                          dimensions=(40, 200), timeout=60)
    child.delaybeforesend = None  # pexpect sleeps 50 ms before each send by default
    seen = []
    while True:  # a real terminal answers prompt_toolkit's cursor-position request; so does this one
        index = child.expect([r"\x1b\[6n", r"ms>.*?\x1b\[\?25h"])
        seen.append(child.before)
        if index == 0:
            child.send("\x1b[1;1R")
            continue
        break
    seconds = time.perf_counter() - start  # the prompt is drawn and the cursor shown: ready for a key
    before = "".join(seen)
    child.sendeof()
    child.expect(pexpect.EOF)
    child.close()
    return Run(seconds, 0, before, ""), before


def heavy_imports(importtime_text: str) -> list[str]:
    found = set()
    for line in importtime_text.splitlines():
        if "import time:" not in line or "|" not in line:
            continue
        module = line.rsplit("|", 1)[1].strip()
        top = module.split(".")[0]
        if top in HEAVY:
            found.add(top)
    return sorted(found)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--quick", action="store_true", help="5 runs")
    args = parser.parse_args()
    runs = 5 if args.quick else args.runs
    work = Path(tempfile.mkdtemp(prefix="ms-bench-startup-"))
    try:
        empty = work / "empty.ms"
        empty.write_text("")
        ipython = shutil.which("ipython", path=str(VENV_BIN))
        commands: dict[str, object] = {
            "python -c pass": [PY, "-c", "pass"],
            "modelshell (to prompt)": lambda: to_prompt()[0],
            "modelshell run EMPTY": modelshell_argv("run", str(empty)),
        }
        if ipython:
            commands["ipython -c pass"] = [ipython, "-c", "pass"]
        print(f"{machine()}; median of {runs} interleaved runs")
        found = interleaved(commands, runs)
        med = {name: median_s(r) for name, r in found.items()}
        bare = med["python -c pass"]
        rows = []
        for name in ("modelshell (to prompt)", "modelshell run EMPTY"):
            if ipython:
                ratio = med[name] / med["ipython -c pass"]
                rows.append((f"{name} vs ipython -c pass", fmt_s(med[name]), fmt_s(med["ipython -c pass"]),
                             f"{ratio:.2f}x", "<= 0.6x", ratio <= 0.6))
            over = med[name] - bare
            rows.append((f"{name} vs python -c pass", fmt_s(med[name]), fmt_s(bare), f"+{over:.3f} s", "<= +0.4 s",
                         over <= 0.4))
        if not ipython:
            rows.append(("ipython -c pass", "", "not installed", "", "<= 0.6x", "n/a"))

        run_imports = run_process([PY, "-X", "importtime", "-m", "modelshell", "run", str(empty)]).stderr
        _, prompt_text = to_prompt({"PYTHONPROFILEIMPORTTIME": "1"})
        for label, text in (("run EMPTY", run_imports), ("to prompt", prompt_text)):
            heavy = heavy_imports(text)
            rows.append((f"heavy imports at start-up ({label})", ", ".join(heavy) or "none", "", "", "none",
                         not heavy))
        print_table("Time to prompt (fresh process each run)", rows)
        print("\nall runs (s): " + "; ".join(f"{n}: {', '.join(f'{r.seconds:.3f}' for r in rs)}"
                                             for n, rs in found.items()))
        spread = {n: statistics.pstdev(r.seconds for r in rs) for n, rs in found.items()}
        print("stdev (s): " + ", ".join(f"{n} {s:.3f}" for n, s in spread.items()))
        top = sorted(((int(line.split("|")[1]), line.rsplit("|", 1)[1].strip()) for line in run_imports.splitlines()
                      if line.startswith("import time:") and line.split("|")[1].strip().isdigit()), reverse=True)[:8]
        print("largest cumulative imports of `modelshell run EMPTY` (us): "
              + ", ".join(f"{name.strip()} {us}" for us, name in top))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    main()
