"""A memory-mapped ``.pt`` that another program truncates while it is loaded (issue 15).

Each case runs in a child process, since the failure it guards against is the kernel killing the process
(SIGBUS) when a mapped page past the file's new end is read. The truncation is done by yet another
process, as it would be in life. The first test shows the fault is real: plain ``torch.load(mmap=True)``
dies of it; the others show the session does not.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

_TRUNCATE = "import os, sys; os.truncate(sys.argv[1], 1000)"


def _files(tmp_path: Path) -> tuple[Path, Path, np.ndarray]:
    """Two real torch archives: a 12 MB one that will be truncated, and another that must stay loaded."""
    big = torch.arange(3_000_000, dtype=torch.float32) * 0.5 + 1.0
    torch.save({"w": big, "b": torch.full((7,), 3.0)}, tmp_path / "a.pt")
    torch.save({"kept": torch.linspace(-1, 1, 5)}, tmp_path / "other.pt")
    return tmp_path / "a.pt", tmp_path / "other.pt", big.numpy()


def _child(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script), *args], capture_output=True, text=True,
                          timeout=240)


_SESSION = """
    import json, subprocess, sys
    from modelshell.core.session import Session
    a, other, hold_open = sys.argv[1], sys.argv[2], sys.argv[3] == "hold"
    writer = open(a, "r+b") if hold_open else None   # a file open for writing elsewhere cannot be leased
    s = Session()
    assert s.run_line(f"load {a} as a").ok and s.run_line(f"load {other} as other").ok
    assert s.run_line("a['w'][-1].item()").ok        # pages of the mapping are in use
    if writer is not None:
        writer.truncate(1000); writer.close()
    else:
        subprocess.run([sys.executable, "-c", %r, a], check=True, timeout=60)
    out = {}
    for line in ("weights a --stats", "weights other --stats", "models"):
        o = s.run_line(line)
        out[line] = {"ok": o.ok, "error": o.error, "notes": [r.text for r in o.results if hasattr(r, "text")]}
    out["names"] = s.model_names()
    out["kept"] = s.model("other").read("kept").tolist()
    if "a" in s.model_names():
        out["w"] = s.model("a").read("w").tolist()[::100000]
    print(json.dumps(out))
""" % _TRUNCATE


def test_without_the_guard_a_truncated_mapping_kills_the_process(tmp_path):
    """The positive control: what the session would suffer without its lease."""
    a, _, _ = _files(tmp_path)
    result = _child(f"""
        import subprocess, sys, torch
        sd = torch.load(sys.argv[1], mmap=True, weights_only=True)
        print(float(sd["w"][-1]), flush=True)
        subprocess.run([sys.executable, "-c", {_TRUNCATE!r}, sys.argv[1]], check=True)
        print(float(sd["w"].sum()))
    """, str(a))
    assert result.returncode == -signal.SIGBUS, (result.returncode, result.stderr[-2000:])


def test_a_leased_mapping_keeps_its_values_when_the_file_is_truncated(tmp_path):
    a, other, big = _files(tmp_path)
    result = _child(_SESSION, str(a), str(other), "lease")
    assert result.returncode == 0, (result.returncode, result.stderr[-2000:])
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert a.stat().st_size == 1000  # the truncation went through
    first = out["weights a --stats"]
    assert first["ok"], first
    assert any("a.pt was changed on disk by another program" in n and "a kept the values loaded" in n
               for n in first["notes"]), first
    np.testing.assert_array_equal(np.array(out["w"], dtype=np.float32), big[::100000])
    assert out["names"] == ["a", "other"]
    assert out["kept"] == pytest.approx(np.linspace(-1, 1, 5).tolist())
    assert out["weights other --stats"]["ok"] and out["models"]["ok"]


def test_an_unleased_mapping_that_shrank_is_dropped_in_one_line(tmp_path):
    """A file another writer holds open cannot be leased: the check before each line finds it shorter
    than its mapping, moves what is left out of a fault's way and drops the model it no longer holds."""
    a, other, _ = _files(tmp_path)
    result = _child(_SESSION, str(a), str(other), "hold")
    assert result.returncode == 0, (result.returncode, result.stderr[-2000:])
    out = json.loads(result.stdout.strip().splitlines()[-1])
    first = out["weights a --stats"]
    assert first["ok"] is False and "no model named 'a'" in first["error"], first
    notes = [n for n in first["notes"] if "truncated by another program" in n]
    assert len(notes) == 1 and "a no longer hold what was loaded and were dropped" in notes[0], first
    assert out["names"] == ["other"]
    assert out["kept"] == pytest.approx(np.linspace(-1, 1, 5).tolist())


def test_a_safetensors_file_truncated_after_loading_fails_in_one_line_saying_so(tmp_path):
    """safetensors tensors are mapped one read at a time: a file shortened since the load is caught
    before the mapping, and said to have changed (not a bare "mmap length is greater than file size")."""
    from safetensors.torch import save_file

    from modelshell.core.session import Session
    from tests.test_formats import run_fail, run_ok

    path = tmp_path / "s.safetensors"
    save_file({"w": torch.arange(100_000, dtype=torch.float32), "b": torch.ones(3)}, str(path))
    session = Session()
    run_ok(session, f"load {path} as s")
    run_ok(session, "other = __import__('torch').nn.Linear(2, 2)")
    path.write_bytes(path.read_bytes()[:300])
    run_fail(session, "weights s --stats", "s.safetensors", "was changed on disk since it was loaded")
    assert session.model_names() == ["s", "other"]
