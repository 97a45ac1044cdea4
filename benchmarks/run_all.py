"""Every benchmark of issues 7, 12, 14 and 15, one after the other (``make bench``); ``--quick`` for fewer runs.

    .venv/bin/python benchmarks/run_all.py [--quick] [--only startup,checkpoints,first_look,scale,transfer,porting,folders,interactive,trace_flow]

Each script prints its own table (measure, modelshell, reference, ratio, target, met), every figure
against its reference measured in the same run. Nothing here is a test: a missed target is printed, with
its profile, and the run goes on.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = {
    "startup": "bench_startup.py",
    "checkpoints": "bench_checkpoints.py",
    "first_look": "bench_first_look.py",
    "scale": "bench_scale.py",
    "transfer": "bench_transfer.py",
    "porting": "bench_porting.py",
    "folders": "bench_folders.py",
    "interactive": "bench_interactive.py",
    "trace_flow": "bench_trace_flow.py",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="5 runs each (the minimum for a median)")
    parser.add_argument("--only", help="comma-separated subset of " + ",".join(SCRIPTS))
    args = parser.parse_args()
    chosen = args.only.split(",") if args.only else list(SCRIPTS)
    print(f"modelshell benchmarks, {datetime.now():%Y-%m-%d %H:%M}")
    failed = []
    for name in chosen:
        script = HERE / SCRIPTS[name]
        extra = ["--runs", "5"] if args.quick and name == "transfer" else (["--quick"] if args.quick else [])
        print(f"\n=== {SCRIPTS[name]} {' '.join(extra)}", flush=True)
        start = time.perf_counter()
        code = subprocess.call([sys.executable, str(script), *extra])
        print(f"=== {SCRIPTS[name]}: {time.perf_counter() - start:.0f} s{'' if code == 0 else f', exit {code}'}",
              flush=True)
        if code:
            failed.append(name)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
