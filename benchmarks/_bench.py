"""Shared by the benchmark scripts: timing a fresh process with its own peak memory, medians, the table.

A process is timed from just before ``fork`` to its exit (``perf_counter`` around ``Popen`` + ``wait4``), so
the interpreter's start-up is part of every figure, modelshell's and the reference's alike. Its peak
memory is the ``ru_maxrss`` that ``os.wait4`` returns for that one child (not the ``RUSAGE_CHILDREN``
maximum over all children, which only ever grows).
"""
from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
PY = sys.executable


@dataclass
class Run:
    seconds: float
    peak_bytes: int
    stdout: str
    stderr: str
    cpu_seconds: float | None = None  # the child's own user + system time, from wait4: on a shared machine,
    # less moved than wall time by what the other cores' processes do


def env(**extra: str) -> dict[str, str]:
    """The same environment for modelshell and its reference: quiet TensorFlow, a private history file."""
    base = dict(os.environ)
    base.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    base.setdefault("XDG_DATA_HOME", tempfile.gettempdir() + "/modelshell-bench-home")
    base.pop("PYTHONPROFILEIMPORTTIME", None)
    # Bytecode cached, as an installed package has it: with PYTHONDONTWRITEBYTECODE set, a source checkout
    # compiles all of modelshell in every process (about 0.25 s here) while the reference's libraries come
    # compiled. The warm-up run of `interleaved` writes the cache.
    base.pop("PYTHONDONTWRITEBYTECODE", None)
    base.update(extra)
    return base


def run_process(argv: list[str], cwd: Path | None = None, extra_env: dict[str, str] | None = None,
                check: bool = True) -> Run:
    out_path = tempfile.TemporaryFile()
    err_path = tempfile.TemporaryFile()
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=out_path, stderr=err_path, stdin=subprocess.DEVNULL, cwd=cwd,
                            env=env(**(extra_env or {})))
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    out_path.seek(0)
    err_path.seek(0)
    out, err = out_path.read().decode(errors="replace"), err_path.read().decode(errors="replace")
    if check and proc.returncode:
        raise SystemExit(f"{' '.join(map(str, argv))} failed ({proc.returncode}):\n{err[-3000:]}\n{out[-2000:]}")
    return Run(seconds, usage.ru_maxrss * 1024, out, err, usage.ru_utime + usage.ru_stime)


def interleaved(commands: dict[str, object], runs: int, warmup: int = 1) -> dict[str, list[Run]]:
    """Every command ``runs`` times, round-robin, so that noise from the other core hits every column alike.
    A command is an argv list, or a zero-argument callable returning a Run."""
    def once(command) -> Run:
        return command() if callable(command) else run_process(command)

    for _ in range(warmup):
        for command in commands.values():
            once(command)
    found: dict[str, list[Run]] = {name: [] for name in commands}
    for _ in range(runs):
        for name, command in commands.items():
            found[name].append(once(command))
    return found


def median_s(runs: list[Run]) -> float:
    return statistics.median(r.seconds for r in runs)


def median_cpu(runs: list[Run]) -> float:
    return statistics.median(r.cpu_seconds for r in runs)


def median_peak(runs: list[Run]) -> int:
    return int(statistics.median(r.peak_bytes for r in runs))


def fmt_s(seconds: float) -> str:
    return f"{seconds:.3f} s"


def fmt_mb(n: float) -> str:
    return f"{n / 1e6:.0f} MB"


def print_table(title: str, rows: list[tuple], header=("measure", "modelshell", "reference", "ratio", "target",
                                                        "met")) -> None:
    print(f"\n{title}")
    table = [tuple(header)] + [tuple("yes" if c is True else "NO" if c is False else str(c) for c in row)
                               for row in rows]
    widths = [max(len(row[i]) if i < len(row) else 0 for row in table) for i in range(len(header))]
    for i, row in enumerate(table):
        print("| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths)) + " |")
        if i == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        load = " load %.2f %.2f %.2f" % os.getloadavg()
    except OSError:
        load = ""
    return f"Python {platform.python_version()}, {os.cpu_count()} cores ({cpu}),{load}"


def modelshell_argv(*args: str) -> list[str]:
    return [str(VENV_BIN / "modelshell"), *args]
