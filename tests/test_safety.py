"""Safety (issue 6): untrusted code is refused and described, broken files fail in one line, saves and
copies are all or nothing, the session keeps its models, and loads that cannot fit are refused up front.

The fuzz test feeds seeded mutations of a small generated corpus of every format through ``load``; the
other tests each defeat one protection's purpose if that protection is removed.
"""
from __future__ import annotations

import builtins
import contextlib
import faulthandler
import importlib.util
import json
import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import h5py  # noqa: E402
import keras  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import save_file as save_safetensors  # noqa: E402
from torch import nn  # noqa: E402

from modelshell.safety import pickle_scan, probe, resources  # noqa: E402
from modelshell.cli import load_demo  # noqa: E402
from modelshell.core.session import Session  # noqa: E402
from tests.test_formats import MarkerPayload, run_fail, run_ok, snapshot, assert_unchanged, values  # noqa: E402

MODELSHELL = str(Path(sys.executable).parent / "modelshell")


# --- untrusted code --------------------------------------------------------------------------------------
def _exec_payload(marker: Path):
    class ExecPayload:
        def __reduce__(self):
            return exec, (f"open({str(marker)!r}, 'w').close()",)

    return ExecPayload()


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip archive", "legacy pickle"])
def test_a_refused_pickle_lists_what_it_would_import_and_runs_nothing(session, tmp_path, zip_format):
    marker = tmp_path / "payload-ran"
    path = tmp_path / "evil.pt"
    torch.save({"weight": torch.ones(2), "a": MarkerPayload(marker), "b": _exec_payload(marker)}, path,
               _use_new_zipfile_serialization=zip_format)
    error = run_fail(session, f"load {path}", "evil.pt", "run code", "--trust", "trust on",
                     f"{os.system.__module__}.system (DANGEROUS)", "builtins.exec (DANGEROUS)")
    assert "_rebuild_tensor" not in error  # plain tensors are not listed: they would hide the rest
    assert not marker.exists()
    assert session.model_names() == []


def test_the_scan_reads_globals_without_running_them(tmp_path):
    import pickle

    marker = tmp_path / "ran"
    found = pickle_scan.classify(pickle_scan.scan_bytes(pickle.dumps([MarkerPayload(marker), nn.Linear])))
    assert f"{os.system.__module__}.system" in found.dangerous
    assert "torch.nn.modules.linear.Linear" in found.names and "torch.nn.modules.linear.Linear" not in found.dangerous
    assert not marker.exists()
    assert pickle_scan.scan_bytes(b"\x80\x05garbage") == []  # damage ends the scan quietly


def _b(text: str) -> bytes:
    return text.encode("utf8")


def _short_unicode(text: str) -> bytes:
    return b"\x8c" + bytes([len(text)]) + _b(text)


def _framed(body: bytes) -> bytes:
    return b"\x80\x04\x95" + len(body).to_bytes(8, "little") + body


# Hand-built opcode streams (never unpickled): each hides ``posix.system`` from a scan that reads only
# the strings just before a STACK_GLOBAL, or only the text GLOBAL opcode.
HAND_BUILT = {
    # protocol 2: the module and name, put in the memo and popped, come back from it (BINPUT, BINGET)
    "memo BINGET": b"\x80\x02X\x05\x00\x00\x00posixq\x000X\x06\x00\x00\x00systemq\x010h\x00h\x01\x93)R.",
    # protocol 4: FRAME, MEMOIZE, and LONG_BINGET of memoized strings
    "frame MEMOIZE LONG_BINGET": _framed(_short_unicode("posix") + b"\x940" + _short_unicode("system") + b"\x940"
                                         + b"j\x00\x00\x00\x00j\x01\x00\x00\x00\x93)R."),
    # a decoy pair pushed and popped after the real one: the last two strings are not the top of the stack
    "decoy popped": b"\x80\x04" + _short_unicode("posix") + _short_unicode("system")
    + _short_unicode("builtins") + _short_unicode("len") + b"00\x93)R.",
    # a decoy pushed after a MARK and popped with POP_MARK
    "decoy under a mark": b"\x80\x04" + _short_unicode("posix") + _short_unicode("system")
    + b"(" + _short_unicode("builtins") + _short_unicode("len") + b"1\x93)R.",
    # protocol 0: the text GLOBAL opcode
    "protocol 0 GLOBAL": b"cposix\nsystem\n(S'true'\ntR.",
    # protocol 0 INST, which imports and calls in one opcode
    "protocol 0 INST": b"(S'true'\niposix\nsystem\n.",
}


@pytest.mark.parametrize("case", list(HAND_BUILT))
def test_the_scan_models_the_stack_and_the_memo(case):
    found = pickle_scan.classify(pickle_scan.scan_bytes(HAND_BUILT[case]))
    assert found.dangerous == ["posix.system"], found
    assert "builtins.len" not in found.names


@pytest.mark.parametrize("protocol", range(6))
def test_the_scan_reads_every_protocol(tmp_path, protocol):
    import pickle

    marker = tmp_path / "ran"
    data = pickle.dumps({"w": [1.0, 2.0], "a": MarkerPayload(marker), "b": _exec_payload(marker), "c": nn.Linear},
                        protocol=protocol)
    found = pickle_scan.classify(pickle_scan.scan_bytes(data))
    assert found.dangerous == [f"{os.system.__module__}.system", "builtins.exec"], found
    assert "torch.nn.modules.linear.Linear" in found.names
    assert not marker.exists()


@pytest.mark.parametrize("protocol", range(6))
def test_a_plain_pickle_of_any_protocol_is_refused_with_what_it_would_call(session, tmp_path, protocol):
    """A bare ``pickle.dumps`` named .pt: torch's unpickler refuses it (protocols 0 and 1 do not even look
    like a torch file, 4 and 5 frame their data), and the message must say what it would call, not
    that the file is damaged."""
    import pickle

    marker = tmp_path / "ran"
    path = tmp_path / "plain.pt"
    path.write_bytes(pickle.dumps({"w": torch.ones(2), "a": MarkerPayload(marker)}, protocol=protocol))
    run_fail(session, f"load {path}", "plain.pt", f"{os.system.__module__}.system (DANGEROUS)", "nothing was run")
    assert not marker.exists()


def _protocol_pickles() -> dict[str, bytes]:
    import pickle

    payload = {"w": [1.0, 2.0], "a": MarkerPayload(Path("ran")), "b": _exec_payload(Path("ran")), "c": nn.Linear}
    return {f"protocol {p}": pickle.dumps(payload, protocol=p) for p in range(6)}


@pytest.mark.skipif(importlib.util.find_spec("picklescan") is None, reason="picklescan is a test dependency")
def test_the_scan_agrees_with_picklescan():
    """On every pickle of these tests, picklescan's globals are ours, and what it calls dangerous we flag.
    Deliberate differences: we name Python 2's ``__builtin__`` as ``builtins``; we flag more (what
    picklescan only calls "suspicious": ``codecs.open``, ``pathlib.Path.write_text``, ``torch.jit.load``,
    ``torch.os.system``); and where picklescan reads the last two strings before a STACK_GLOBAL and so
    names an "unknown" global (the decoys), we follow the stack and name the real one."""
    import io

    from picklescan.scanner import scan_pickle_bytes

    for case, data in {**HAND_BUILT, **_protocol_pickles()}.items():
        theirs = scan_pickle_bytes(io.BytesIO(data), case).globals
        ours = pickle_scan.classify(pickle_scan.scan_bytes(data))
        if any("unknown" in (g.module, g.name) for g in theirs):
            assert case.startswith("decoy") and ours.dangerous == ["posix.system"], case
            continue
        assert {str(pickle_scan.Global(g.module, g.name)) for g in theirs} == set(ours.names), case
        dangerous = {str(pickle_scan.Global(g.module, g.name)) for g in theirs if g.safety.name == "Dangerous"}
        assert dangerous <= set(ours.dangerous), case


# Globals that call code, each as a file of its own (never unpickled): (module, qualified name).
_CALLS = [("posix", "system"), ("os", "popen"), ("subprocess", "Popen"), ("builtins", "exec"), ("builtins", "eval"),
          ("builtins", "open"), ("builtins", "__import__"), ("pydoc", "pipepager"), ("timeit", "timeit"),
          ("cProfile", "run"), ("codecs", "open"), ("pathlib", "Path.write_text"), ("torch.jit", "load"),
          ("torch", "load"), ("torch", "os.system"), ("torch.serialization", "os.system"), ("runpy", "_run_code"),
          ("webbrowser", "open"), ("socket", "create_connection"), ("shutil", "rmtree"), ("pty", "spawn"),
          ("functools", "partial"), ("operator", "attrgetter"), ("numpy.testing._private.utils", "runstring")]
# Where we flag more than picklescan calls "Dangerous" (it says "Suspicious", or nothing): deliberate, and
# listed in SECURITY.md. Anything else picklescan flags, we must flag too.
_WE_FLAG_MORE = {"codecs.open", "pathlib.Path.write_text", "torch.jit.load", "torch.load", "torch.os.system",
                 "torch.serialization.os.system", "builtins.__import__"}


def _calling(module: str, name: str) -> bytes:
    """A protocol 4 pickle that imports ``module.name`` and calls it with one string."""
    return b"\x80\x04" + _short_unicode(module) + _short_unicode(name) + b"\x93" + _short_unicode("true") + b"\x85R."


def _pickle_files(d: Path) -> dict[str, Path]:
    """Every kind of pickle file these tests make: each dangerous call as a bare pickle and inside a torch
    zip archive, the hand-built opcode streams, plain pickles of every protocol, torch files (zip and
    legacy) with payloads, a pickled module, the allocation balloon and a TorchScript archive."""
    files: dict[str, bytes | Path] = {}
    for module, name in _CALLS:
        files[f"{module}.{name}.pkl"] = _calling(module, name)
    files.update({f"{case}.pkl": data for case, data in HAND_BUILT.items()})
    files.update({f"{case}.pkl": data for case, data in _protocol_pickles().items()})
    for zip_format in (True, False):
        path = d / f"payloads-{'zip' if zip_format else 'legacy'}.pt"
        torch.save({"weight": torch.ones(2), "a": MarkerPayload(d / "ran"), "b": _exec_payload(d / "ran")}, path,
                   _use_new_zipfile_serialization=zip_format)
        files[path.name] = path
    torch.save(nn.Linear(2, 2), d / "module.pt")
    torch.save({"b": _Allocates()}, d / "balloon.pt")
    torch.jit.save(torch.jit.script(nn.Linear(2, 2)), str(d / "script.pt"))
    for name in ("module.pt", "balloon.pt", "script.pt"):
        files[name] = d / name
    base = d / "payloads-zip.pt"
    for module, name in _CALLS[:6]:  # the call as data.pkl of a torch archive
        path = d / f"zip-{module}.{name}.pt"
        with zipfile.ZipFile(base) as source, zipfile.ZipFile(path, "w") as out:
            for info in source.infolist():
                out.writestr(info, _calling(module, name) if info.filename.endswith("data.pkl") else source.read(info))
        files[path.name] = path
    paths = {}
    for name, content in files.items():
        path = content if isinstance(content, Path) else d / name
        if not isinstance(content, Path):
            path.write_bytes(content)
        paths[name] = path
    return paths


@pytest.mark.skipif(importlib.util.find_spec("picklescan") is None, reason="picklescan is a test dependency")
def test_the_scan_agrees_with_picklescan_on_every_pickle_file(tmp_path):
    """picklescan read as a file (zip members and all): the same globals as ours once the plain-data
    ones torch writes are set aside, everything it calls dangerous flagged by us, and where we flag more,
    only the deliberate differences listed."""
    import io

    from picklescan.scanner import scan_bytes as picklescan_bytes

    more: set[str] = set()
    for name, path in _pickle_files(tmp_path).items():
        data = path.read_bytes()
        theirs = picklescan_bytes(io.BytesIO(data), name, path.suffix).globals
        ours = pickle_scan.scan_torch_file(path)
        if any("unknown" in (g.module, g.name) for g in theirs):
            assert name.startswith("decoy") and ours.dangerous == ["posix.system"], name
            continue
        their_names = pickle_scan.classify([pickle_scan.Global(g.module, g.name) for g in theirs])
        assert set(their_names.names) == set(ours.names), (name, their_names.names, ours.names)
        dangerous = {str(pickle_scan.Global(g.module, g.name)) for g in theirs if g.safety.name == "Dangerous"}
        assert dangerous <= set(ours.dangerous), (name, dangerous, ours.dangerous)
        more |= set(ours.dangerous) - dangerous
    assert more == _WE_FLAG_MORE, more


def test_the_scan_reads_every_pickle_member_past_a_damaged_one(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"weight": torch.ones(2), "a": MarkerPayload(tmp_path / "ran")}, path)
    repacked = tmp_path / "repacked.pt"
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(repacked, "w") as out:
        out.writestr("evil/aaa.pkl", b"\x80\x02\x94garbage")  # first, and damaged
        for info in source.infolist():
            out.writestr(info, source.read(info))
    assert pickle_scan.scan_torch_file(repacked).dangerous == [f"{os.system.__module__}.system"]


@pytest.mark.parametrize("name", [
    "posix.system", "nt.system", "os.popen", "subprocess.Popen", "builtins.exec", "builtins.eval",
    "builtins.compile", "builtins.open", "builtins.__import__", "__builtin__.eval", "pydoc.pipepager",
    "timeit.timeit", "cProfile.run", "codecs.open", "pathlib.Path.write_text", "torch.jit.load",
    "torch.os.system", "torch.serialization.os.system", "numpy.testing._private.utils.runstring",
    "runpy._run_code", "(unknown global)", "torch.serialization.pickle.loads"])
def test_the_scan_flags_what_a_global_resolves_to(name):
    assert pickle_scan.is_dangerous(name)


def test_the_scan_resolves_re_exports_through_the_attribute_chain():
    for module, attr in [("torch", "serialization.os.system"), ("torch.serialization", "os.system"),
                         ("torch", "jit.load"), ("pathlib", "PosixPath.write_bytes")]:
        assert pickle_scan.is_dangerous(pickle_scan.Global(module, attr)), (module, attr)


@pytest.mark.parametrize("name", ["torch.nn.modules.linear.Linear", "collections.OrderedDict", "builtins.len",
                                  "mylib.code.Net", "mylib.types.Config", "numpy.core.multiarray._reconstruct",
                                  "torch.jit._pickle.build_intlist", "torch.jit._pickle.restore_type_tag"])
def test_the_scan_does_not_flag_plain_classes(name):
    assert not pickle_scan.is_dangerous(name)


class _Allocates:
    """Unpickles as ``bytearray(2**30)``: a gigabyte from a kilobyte, which torch's weights-only unpickler allows."""

    def __reduce__(self):
        return bytearray, (2**30,)


def test_a_pickle_that_allocates_more_than_the_file_holds_is_refused_first(tmp_path):
    path = tmp_path / "balloon.pt"
    torch.save({"weight": torch.ones(2), "x": _Allocates()}, path)
    assert path.stat().st_size < 4096
    code = textwrap.dedent(f"""
        import json, resource
        from modelshell.core.session import Session
        s = Session()
        s.namespace["keeper"] = 1
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        outcome = s.run_line("load {path}")
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
        print(json.dumps({{"error": outcome.error, "grown_kb": grown}}))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    found = json.loads(done.stdout.splitlines()[-1])
    assert found["error"] and "balloon.pt is refused" in found["error"] and "1.0 GB" in found["error"], found
    assert found["grown_kb"] < 256 * 1024, found  # the gigabyte was never allocated


def test_a_pickled_module_lists_its_classes(session, tmp_path):
    path = tmp_path / "whole.pt"
    torch.save(nn.Sequential(nn.Linear(2, 2)), path)
    error = run_fail(session, f"load {path}", "torch.nn.modules.container.Sequential")
    assert "DANGEROUS" not in error


class _SetstateWritesAFile(nn.Module):
    """A scripted module whose ``__setstate__`` (TorchScript code, run by torch.jit.load) writes a file."""

    def __init__(self, marker: str) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(2))
        self.marker = marker

    def forward(self, x):
        return x * self.weight

    @torch.jit.export
    def __getstate__(self) -> tuple[str, bool, torch.Tensor]:
        return (self.marker, self.training, self.weight)

    @torch.jit.export
    def __setstate__(self, state: tuple[str, bool, torch.Tensor]) -> None:
        self.marker = state[0]
        self.training = state[1]
        self.weight = state[2]
        torch.save(torch.ones(1), state[0])


def test_a_torchscript_archive_runs_no_code_without_trust(session, tmp_path):
    marker = tmp_path / "setstate-ran"
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(_SetstateWritesAFile(str(marker))), str(path))
    assert not marker.exists()
    run_fail(session, f"load {path}", "scripted.pt", "TorchScript", "_SetstateWritesAFile.__setstate__",
             "nothing was run", "--trust")
    assert not marker.exists() and session.model_names() == []
    run_ok(session, f"load {path} --trust")  # the payload is live: trusted, torch.jit.load runs it
    assert marker.exists()


@pytest.fixture(scope="module")
def lambda_files(tmp_path_factory):
    """A Keras model whose Lambda layer creates a marker file when it runs (Keras runs it on load)."""
    d = tmp_path_factory.mktemp("lambda")
    marker = d / "lambda-ran"

    def make(path=str(marker)):
        return lambda x: (open(path, "w").close(), x)[1]

    inputs = keras.Input((2,))
    model = keras.Model(inputs, keras.layers.Lambda(make(), name="sneaky")(keras.layers.Dense(2)(inputs)))
    model.save(str(d / "lambda.keras"))
    model.save(str(d / "lambda.h5"))
    marker.unlink()
    return d, marker


@pytest.mark.parametrize("name", ["lambda.keras", "lambda.h5"])
def test_keras_code_is_refused_described_and_not_run(session, lambda_files, name):
    d, marker = lambda_files
    run_fail(session, f"load {d / name}", name, "safe mode", "Lambda layer 'sneaky'", "--trust")
    assert not marker.exists()
    run_ok(session, f"load {d / name} --trust")  # the payload is live: trusted, it runs
    assert marker.exists()
    marker.unlink()


def test_help_load_says_factories_run_code(session):
    text = session.run_line("help load").results[0].text
    assert "FILE.py:FACTORY" in text and "run that Python code by design" in text and "SECURITY.md" in text


def test_trust_on_for_the_session_and_models_shows_trusted(session, tmp_path):
    marker = tmp_path / "payload-ran"
    path = tmp_path / "evil.pt"
    torch.save({"weight": torch.ones(2), "payload": MarkerPayload(marker)}, path)
    safe = tmp_path / "safe.pt"
    torch.save({"weight": torch.ones(2)}, safe)
    run_ok(session, f"load {safe}")
    run_ok(session, "trust on")
    run_ok(session, f"load {path}")
    assert marker.exists()
    run_ok(session, "trust off")
    run_fail(session, f"load {path} as again", "--trust")
    table = session.run_line("models").results[0]
    assert "loaded trusted (code in them may have run): evil" in table.footer
    assert {m["name"]: m["trusted"] for m in session.run_line("models --json").results[0].data["models"]} == {
        "safe": False, "evil": True}


# --- broken files ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, bytes]:
    """One small, good file of every format, generated here: the seeds of the mutations."""
    d = tmp_path_factory.mktemp("seeds")
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    torch.save(net.state_dict(), d / "seed.pt")
    save_safetensors({k: v.contiguous() for k, v in net.state_dict().items()}, str(d / "seed.safetensors"))
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Dense(4)(inputs)))
    model.save(str(d / "seed.keras"))
    model.save(str(d / "seed.h5"))
    model.save_weights(str(d / "seed.weights.h5"))
    return {suffix: (d / f"seed{suffix}").read_bytes() for suffix in (".pt", ".safetensors", ".keras", ".h5", ".weights.h5")}


def _mutate(data: bytes, rng: random.Random) -> bytes:
    """One of the damages files suffer: flipped bits, overwritten or zeroed runs, truncation, insertion."""
    b = bytearray(data)
    kind = rng.randrange(6)
    if kind == 0:
        for _ in range(rng.randint(1, 8)):
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
    elif kind == 1:
        start = rng.randrange(len(b))
        b[start:start + rng.randint(1, 64)] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    elif kind == 2:
        start = rng.randrange(len(b))
        end = min(len(b), start + rng.randint(1, 512))
        b[start:end] = bytes(end - start)
    elif kind == 3:
        del b[rng.randrange(1, len(b)):]
    elif kind == 4:
        at = rng.randrange(len(b))
        b[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 32)))
    else:  # a header field blown up: the largest values a length or shape could take
        at = rng.randrange(max(1, min(len(b) - 8, 4096)))
        b[at:at + 8] = rng.choice([b"\xff" * 8, (2**40).to_bytes(8, "little"), b"\x7f" * 8])
    return bytes(b)


class Hang(BaseException):
    """Raised by the alarm: a BaseException, so nothing in modelshell can swallow it as a user error."""


# Byte damage of the whole file; the structure-aware mutations of tests/test_fuzz_structured.py reach the
# parsers behind the containers. HDF5's byte damage costs a killed probe now and then (a hang): fewer.
FUZZ_COUNT = {".pt": 500, ".safetensors": 500, ".keras": 500, ".h5": 80, ".weights.h5": 80}
FUZZ_TIME_BOUND = 10.0  # seconds for any one file


def load_and_read(session: Session, path: Path, bound: float = FUZZ_TIME_BOUND) -> tuple[bool, float]:
    """Load ``path`` as ``mutant`` and read every tensor of what loads (``weights --stats``), within
    ``bound`` seconds, each failure one plain line; then forget it. Whether it loaded, and the seconds."""

    def alarm(signum, frame):
        raise Hang()

    old = signal.signal(signal.SIGALRM, alarm)
    started = time.monotonic()
    # The alarm stops a hang in Python; a hang inside a C library ignores it until it returns, so
    # faulthandler ends the run with the stuck stack instead (a failed CI job, not a stuck one).
    faulthandler.dump_traceback_later(3 * bound, exit=True)
    signal.setitimer(signal.ITIMER_REAL, bound)
    try:
        outcome = session.run_line(f"load {path} as mutant")
        loaded = outcome.ok
        if loaded:
            outcome = session.run_line("weights mutant --stats --all")
    except Hang:
        pytest.fail(f"{path.name} took more than {bound} s")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        faulthandler.cancel_dump_traceback_later()
        signal.signal(signal.SIGALRM, old)
    took = time.monotonic() - started
    assert took < bound, (path.name, took, outcome.error)
    if not outcome.ok:
        error = outcome.error
        assert "\n" not in error and "Traceback" not in error, (path.name, error)
        assert "internal error" not in error, (path.name, error)
        assert path.name in error or "mutant" in error, (path.name, error)
    session.namespace.pop("mutant", None)
    session.handles.pop("mutant", None)
    return loaded, took


@pytest.mark.fuzz
@pytest.mark.parametrize("suffix", [".pt", ".safetensors", ".keras",
                                    pytest.param(".h5", marks=pytest.mark.slow),  # HDF5 hangs, probed
                                    pytest.param(".weights.h5", marks=pytest.mark.slow)])
def test_fuzzed_files_fail_in_one_line_without_a_crash_or_a_hang(corpus, tmp_path, suffix, monkeypatch):
    # Some mutated HDF5 files hang the HDF5 library (the probe's child is killed): a short probe keeps the
    # run within CI's time; the per-file bound is what the test asserts.
    monkeypatch.setattr(probe, "PROBE_SECONDS", 1.0)
    rng = random.Random(f"modelshell-fuzz{suffix}")
    session = Session()
    session.namespace["keeper"] = nn.Linear(2, 2)
    kept = values(session, "keeper")
    failed = 0
    for i in range(FUZZ_COUNT[suffix]):
        path = tmp_path / f"fuzz{i}{suffix}"
        path.write_bytes(_mutate(corpus[suffix], rng))
        failed += not load_and_read(session, path)[0]
        path.unlink()
    assert session.model_names() == ["keeper"]
    np.testing.assert_array_equal(values(session, "keeper")["weight"], kept["weight"])
    assert failed > FUZZ_COUNT[suffix] // 10, failed  # the mutations do damage


def _hdf5_reaching_out(d: Path, kind: str) -> tuple[Path, str]:
    """A Keras 3 weights file whose second tensor lies in another file, as ``kind`` puts it there; and
    that other file."""
    secret = d / "secret.bin"
    secret.write_bytes(b"private bytes of another file".ljust(32))
    other = d / "other.h5"
    with h5py.File(other, "w") as f:
        f["kernel"] = np.arange(8, dtype="uint8")
    path = d / f"{kind.replace(' ', '-')}.weights.h5"
    with h5py.File(path, "w") as f:
        f["layers/dense/vars/0"] = np.ones(8, dtype="uint8")
        name = "layers/dense/vars/1"
        if kind == "external storage":
            f.create_dataset(name, shape=(8,), dtype="uint8", external=[(str(secret), 0, 8)])
        elif kind == "external link":
            f[name] = h5py.ExternalLink(str(other), "/kernel")
        else:
            layout = h5py.VirtualLayout(shape=(8,), dtype="uint8")
            layout[:] = h5py.VirtualSource(str(other), "kernel", shape=(8,))
            f.create_virtual_dataset(name, layout)
    return path, str(secret if kind == "external storage" else other)


@pytest.mark.parametrize("kind", ["external storage", "external link", "virtual dataset"])
def test_hdf5_data_outside_the_file_is_refused_before_reading_it(session, tmp_path, kind):
    path, target = _hdf5_reaching_out(tmp_path, kind)
    run_fail(session, f"load {path}", path.name, "is refused", "layers/dense/vars/1", kind, target,
             "nothing was read")
    assert session.model_names() == []
    with h5py.File(path, "r") as f:  # the file is what the test says: its tensor reads the other file
        assert bytes(np.array(f["layers/dense/vars/1"])) in ((tmp_path / "secret.bin").read_bytes()[:8],
                                                              bytes(range(8)))


def test_an_hdf5_link_to_a_fifo_is_refused_without_opening_it(tmp_path):
    """Following the link would open the FIFO and wait for a writer forever (Ctrl-C does not free it): the
    load runs in a child with a timeout, so that without the protection this test fails instead of hanging."""
    fifo = tmp_path / "pipe.h5"
    os.mkfifo(fifo)
    path = tmp_path / "to-fifo.weights.h5"
    with h5py.File(path, "w") as f:
        f["layers/dense/vars/0"] = np.ones(8, dtype="uint8")
        f["layers/dense/vars/1"] = h5py.ExternalLink(str(fifo), "/kernel")
    code = textwrap.dedent(f"""
        from modelshell.core.session import Session
        s = Session()
        print(s.run_line({f"load {path}"!r}).error)
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    error = done.stdout.splitlines()[-1]
    for mention in (path.name, "is refused", "layers/dense/vars/1", "external link", str(fifo), "nothing was read"):
        assert mention in error, (mention, error)


MODEL_SUFFIXES = [".pt", ".keras", ".safetensors", ".h5", ".weights.h5"]


def test_fifos_and_devices_named_like_models_are_refused_at_once(tmp_path):
    """Opening a FIFO waits for a writer forever and /dev/zero reads without end: the loads run in a child
    with a timeout, so that without the protection this test fails instead of hanging."""
    paths = []
    for suffix in MODEL_SUFFIXES:
        fifo = tmp_path / f"fifo{suffix}"
        os.mkfifo(fifo)
        (tmp_path / f"to-fifo{suffix}").symlink_to(fifo)
        (tmp_path / f"to-zero{suffix}").symlink_to("/dev/zero")
        paths += [fifo, tmp_path / f"to-fifo{suffix}", tmp_path / f"to-zero{suffix}"]
    code = textwrap.dedent(f"""
        import json
        from modelshell.core.session import Session
        s = Session()
        s.namespace["keeper"] = 1
        print(json.dumps([s.run_line("load " + p).error for p in {[str(p) for p in paths]!r}]))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    errors = dict(zip(paths, json.loads(done.stdout.splitlines()[-1])))
    for path, error in errors.items():
        kind = "a character device" if "zero" in path.name else "a FIFO"
        assert error is not None and error.startswith(f"{path} is {kind}") and "not a regular file" in error, error
        assert "\n" not in error
    assert "(it links to /dev/zero)" in errors[tmp_path / "to-zero.pt"]


def _safetensors_file(path: Path, header: bytes, data: bytes) -> Path:
    header += b" " * (-len(header) % 8)
    path.write_bytes(len(header).to_bytes(8, "little") + header + data)
    return path


def _entry(shape, start: int, end: int, dtype: str = "F32") -> dict:
    return {"dtype": dtype, "shape": shape, "data_offsets": [start, end]}


FORBIDDEN_SAFETENSORS = {  # header -> data; each is a header the format forbids
    "overlapping": ({"a": _entry([2], 0, 8), "b": _entry([2], 4, 12)}, 12),
    "hole": ({"a": _entry([1], 0, 4), "b": _entry([1], 8, 12)}, 12),
    "negative dims": ({"a": _entry([-1, -4], 0, 16)}, 16),
    "float dims": ({"a": _entry([2.0], 0, 8)}, 8),
    "overflowing dims": ({"a": _entry([2**32, 2**32, 4], 0, 0)}, 0),
    "deep nesting": ({"__metadata__": {"x": "{}"}, "a": _entry([2], 0, 8)}, 8),
    "UTF-16": ({"a": _entry([2], 0, 8)}, 8),
}


@pytest.mark.parametrize("case", list(FORBIDDEN_SAFETENSORS))
def test_safetensors_headers_the_format_forbids_are_refused(session, tmp_path, case):
    header, size = FORBIDDEN_SAFETENSORS[case]
    text = json.dumps(header)
    if case == "deep nesting":  # 200,000 nested arrays: a recursive parser's end
        text = text.replace('"{}"', "[" * 200_000 + "]" * 200_000)
    raw = text.encode("utf-16") if case == "UTF-16" else text.encode()
    path = _safetensors_file(tmp_path / f"{case.replace(' ', '-')}.safetensors", raw, bytes(size))
    run_fail(session, f"load {path}", path.name, "cannot read", "as safetensors")
    assert session.model_names() == []


def test_a_keras_archive_whose_weights_lie_outside_it_is_refused(session, tmp_path):
    """Keras reads a .keras file's model.weights.h5 from inside the zip with h5py: a dataset with external
    storage there would load another file's bytes (/etc/passwd) into the model's kernel."""
    inputs = keras.Input((2,))
    keras.Model(inputs, keras.layers.Dense(2, name="dense")(inputs)).save(str(tmp_path / "good.keras"))
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"private bytes of another file!!!")  # 8 float32s
    weights = tmp_path / "model.weights.h5"
    with zipfile.ZipFile(tmp_path / "good.keras") as archive:
        weights.write_bytes(archive.read("model.weights.h5"))
        members = {n: archive.read(n) for n in archive.namelist() if n != "model.weights.h5"}
    with h5py.File(weights, "r+") as f:
        kernel = next(n for n in ("layers/dense/vars/0", "_layer_checkpoint_dependencies/dense/vars/0") if n in f)
        del f[kernel]
        f.create_dataset(kernel, shape=(2, 2), dtype="float32", external=[(str(secret), 0, 16)])
    path = tmp_path / "outside.keras"
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
        archive.write(weights, "model.weights.h5")
    run_fail(session, f"load {path}", "outside.keras is refused", "model.weights.h5", kernel, "external storage",
             str(secret))
    assert session.model_names() == []


def _wrong_extension_cases(corpus: dict[str, bytes]):
    return [(".pt", corpus[".keras"]), (".pt", corpus[".h5"]), (".keras", corpus[".pt"][:0] + corpus[".safetensors"]),
            (".h5", corpus[".pt"]), (".weights.h5", corpus[".keras"]), (".safetensors", corpus[".h5"])]


def test_wrong_extensions_fail_in_one_line(corpus, tmp_path):
    session = Session()
    session.namespace["keeper"] = nn.Linear(2, 2)
    for i, (suffix, data) in enumerate(_wrong_extension_cases(corpus)):
        path = tmp_path / f"wrong{i}{suffix}"
        path.write_bytes(data)
        run_fail(session, f"load {path}", path.name)
    assert session.model_names() == ["keeper"]


@pytest.mark.parametrize("suffix", [".pt", ".safetensors", ".keras", ".h5", ".weights.h5", ".py:build"])
def test_a_directory_instead_of_a_file(session, tmp_path, suffix):
    folder = tmp_path / f"folder{suffix.split(':')[0]}"
    folder.mkdir()
    run_fail(session, f"load {folder}{suffix[len(suffix.split(':')[0]):]}", folder.name, "directory")


def test_permission_denied_for_every_format(corpus, tmp_path):
    """Root reads any file, so the script runs without the capabilities that let it (capsh drops them
    from the bounding set before exec): the kernel then refuses as it would a user."""
    lines = []
    for suffix, data in corpus.items():
        path = tmp_path / f"locked{suffix}"
        path.write_bytes(data)
        path.chmod(0)
        lines.append(f"load {path}")
    script = tmp_path / "script.ms"
    script.write_text("\n".join(lines + ["models --json"]) + "\n")
    command = f"{shlex.quote(MODELSHELL)} run --keep-going {shlex.quote(str(script))}"
    done = subprocess.run(["capsh", "--drop=cap_dac_override,cap_dac_read_search", "--", "-c", command],
                          capture_output=True, text=True, timeout=120)
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    for suffix in corpus:
        assert f"locked{suffix}: cannot read (Permission denied)" in output, output
    assert "Traceback" not in output and '"models": []' in output


# --- atomic writes ---------------------------------------------------------------------------------------
@contextlib.contextmanager
def tiny_tmpfs(path: Path, size: str = "64k"):
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True, timeout=30)
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True, timeout=30)


@pytest.mark.parametrize("model, suffix", [("torch_model", ".pt"), ("torch_model", ".safetensors"),
                                           ("keras_model", ".keras"), ("keras_model", ".weights.h5")])
def test_a_save_onto_a_full_disk_leaves_the_old_file_and_no_temporary(demo_session, tmp_path, model, suffix):
    with tiny_tmpfs(tmp_path / "small") as small:
        target = small / f"model{suffix}"
        target.write_bytes(b"the previous, good model")
        run_fail(demo_session, f"save {model} {target}", str(target))
        assert target.read_bytes() == b"the previous, good model"
        assert os.listdir(small) == [target.name]


def test_a_save_that_cannot_fit_is_refused_before_writing(demo_session, tmp_path):
    with tiny_tmpfs(tmp_path / "small") as small:
        run_fail(demo_session, f"save keras_model {small / 'm.weights.h5'}", "needs at least 241.0 KB", "free")
        assert os.listdir(small) == []


@pytest.mark.slow
def test_a_failed_keras_weights_save_does_not_crash_the_shell_when_it_exits(tmp_path):
    """Keras' HDF5 writer, stopped by a full disk, leaves HDF5 a file it cannot close, and the process
    dies with SIGSEGV at exit (exit status -11), losing nothing only by luck. The space check keeps HDF5
    from starting a write that cannot fit."""
    with tiny_tmpfs(tmp_path / "small") as small:
        script = tmp_path / "save.ms"
        script.write_text(f"save keras_model {small / 'm.weights.h5'}\nprint('after the failed save')\n")
        done = subprocess.run([str(Path(sys.executable).parent / "modelshell"), "run", "--keep-going", "--demo",
                               str(script)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, (done.returncode, done.stderr[-2000:])
    assert "after the failed save" in done.stdout and "needs at least" in done.stderr


def test_a_save_into_a_read_only_folder_leaves_the_old_file(demo_session, tmp_path):
    with tiny_tmpfs(tmp_path / "ro") as folder:
        target = folder / "model.pt"
        target.write_bytes(b"old")
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True, timeout=30)
        run_fail(demo_session, f"save torch_model {target}", str(target), "Read-only")
        assert target.read_bytes() == b"old" and os.listdir(folder) == ["model.pt"]


@pytest.mark.parametrize("name", ["w.safetensors", "zip.pt", "m.weights.h5"])
def test_a_save_onto_the_models_own_source_keeps_its_tensors(sized_files, tmp_path, name):
    """The file a model reads its tensors from (memory-mapped, or read lazily) is replaced by the save:
    what the model holds must not change with it, now or at the next save."""
    path = tmp_path / name
    path.write_bytes((sized_files / name).read_bytes())
    session = Session()
    run_ok(session, f"load {path} as own")
    before = values(session, "own")
    for _ in range(2):
        run_ok(session, f"save own {path}")
        for tensor, array in values(session, "own").items():
            np.testing.assert_array_equal(array, before[tensor], err_msg=tensor)
    run_ok(session, f"load {path} as reloaded")
    for tensor, array in values(session, "reloaded").items():
        np.testing.assert_array_equal(array, before[tensor], err_msg=tensor)


def test_a_save_removes_the_temporaries_of_killed_saves_and_keeps_running_ones(demo_session, tmp_path):
    """kill -9 during a save leaves its temporary file; the next save into the folder removes it, but not
    the temporary of a save still running in another process, nor files that are not modelshell's."""
    gone = subprocess.Popen(["true"])
    gone.wait()
    running = subprocess.Popen(["sleep", "60"])
    try:
        stale = tmp_path / f".lenet5.tmp-{gone.pid}-0badcafe.pt"
        live = tmp_path / f".lenet5.tmp-{running.pid}-deadbeef.weights.h5"
        other = tmp_path / ".notes.tmp-backup"
        for path in (stale, live, other):
            path.write_bytes(b"partial")
        run_ok(demo_session, f"save torch_model {tmp_path / 'lenet5.pt'}")
        assert sorted(os.listdir(tmp_path)) == sorted([live.name, other.name, "lenet5.pt"])
    finally:
        running.kill()
        running.wait()


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace shows the system calls a save makes")
def test_a_save_flushes_the_file_before_the_rename_and_the_folder_after(tmp_path):
    target = tmp_path / "net.pt"
    code = (f"from modelshell.core.session import Session; import torch; s = Session(); "
            f"s.namespace['net'] = torch.nn.Linear(2, 2); assert s.run_line('save net {target}').ok")
    trace = tmp_path / "trace"
    subprocess.run(["strace", "-f", "--seccomp-bpf", "-e", "trace=fsync,fdatasync,rename,renameat,renameat2",
                    "-o", str(trace), sys.executable, "-c", code], check=True, timeout=300, capture_output=True)
    calls = [line.split(None, 1)[1] for line in trace.read_text().splitlines() if " = 0" in line]
    renames = [i for i, call in enumerate(calls) if call.startswith("rename") and str(target) in call]
    assert len(renames) == 1, calls
    assert any(c.startswith(("fsync", "fdatasync")) for c in calls[: renames[0]]), calls  # the new file
    assert any(c.startswith(("fsync", "fdatasync")) for c in calls[renames[0] + 1:]), calls  # the folder


# --- copy interrupted midway -----------------------------------------------------------------------------
class Injected(Exception):
    pass


def _fail_after(n: int, error: BaseException):
    """A counter shared by the patched writers: the (n+1)-th write raises, after n went through."""
    state = {"calls": 0}

    def wrap(original):
        def write(*args, **kwargs):
            state["calls"] += 1
            if state["calls"] > n:
                raise error
            return original(*args, **kwargs)

        return write

    return wrap, state


@pytest.mark.parametrize("error, message", [(Injected("disk on fire"), "disk on fire"),
                                            (KeyboardInterrupt(), "interrupted")])
def test_a_copy_interrupted_midway_leaves_the_destination_unchanged(demo_session, error, message):
    """A Keras destination: each variable is backed up (a free snapshot) before its assign, and a failure
    or interrupt at the fifth assign puts back the four before it."""
    before = snapshot(demo_session)
    wrap, state = _fail_after(4, error)
    handle = demo_session.model("keras_model")
    for variable in handle.obj.weights:
        variable.assign = wrap(variable.assign)
    try:
        outcome = demo_session.run_line("copy torch_model keras_model")
    finally:
        for variable in handle.obj.weights:
            with contextlib.suppress(AttributeError):
                del variable.__dict__["assign"]
    assert state["calls"] == 5  # four tensors were written before the failure
    assert not outcome.ok and message in outcome.error
    assert_unchanged(demo_session, before)
    assert demo_session.unsaved() == []
    run_ok(demo_session, "copy torch_model keras_model")  # and the models are still fine to copy into
    assert demo_session.unsaved() == ["keras_model"]


@pytest.mark.parametrize("error", [Injected("disk on fire"), KeyboardInterrupt()])
def test_a_torch_write_that_fails_where_nothing_can_fail_says_the_model_is_partly_changed(demo_session, error):
    """A torch destination whose values are checked to be plain copies (same dtype and shape, memory of
    their own) is written with no backup, Ctrl-C held until the last tensor (tests/test_progress_and_
    interrupts.py). Should torch fail anyway (a failure injected into ``copy_``), the line says how much
    was written and that the model is partly changed, the model counts as unsaved, and the session goes
    on; nothing claims it is unchanged."""
    wrap, state = _fail_after(4, error)
    handle = demo_session.model("torch_model")
    tensors = list(handle.obj.state_dict(keep_vars=True).values())
    for tensor in tensors:
        tensor.copy_ = wrap(tensor.copy_)
    try:
        outcome = demo_session.run_line("copy keras_model torch_model")
    finally:
        for tensor in tensors:
            with contextlib.suppress(AttributeError, KeyError):
                del tensor.__dict__["copy_"]
    assert state["calls"] == 5
    assert not outcome.ok and f"after 4 of {len(tensors)} tensors were written: the model is partly changed" \
        in outcome.error, outcome.error
    assert demo_session.unsaved() == ["torch_model"]
    run_ok(demo_session, "copy keras_model torch_model")  # the session goes on, and a new copy mends it


@pytest.mark.parametrize("direction", ["keras_model torch_model", "torch_model keras_model"])
def test_an_interrupt_after_the_last_write_says_the_copy_completed(demo_session, direction):
    """Ctrl-C that arrives once every tensor is written (here: the moment the write returns) must not be
    reported as "nothing changed": the destination holds the new values and is unsaved."""
    src, dst = direction.split()
    before = values(demo_session, dst)
    handle = demo_session.model(dst)
    write = handle.write

    def write_then_interrupt(new_values):
        write(new_values)
        raise KeyboardInterrupt

    handle.write = write_then_interrupt
    try:
        outcome = demo_session.run_line(f"copy {src} {dst}")
    finally:
        del handle.write
    assert not outcome.ok and "nothing changed" not in outcome.error, outcome.error
    assert f"after the copy into {dst} had completed" in outcome.error
    assert demo_session.unsaved() == [dst]
    after = values(demo_session, dst)
    assert any(not np.array_equal(after[n], before[n]) for n in before)


# --- session safety --------------------------------------------------------------------------------------
@pytest.mark.parametrize("line", ["raise RuntimeError('user code failed')", "raise KeyboardInterrupt",
                                  "del nothing_here", "weights nosuch", "copy torch_model nosuch",
                                  "(lambda g: g(g))(lambda g: g(g))",
                                  "load /nonexistent.pt as torch_model", "torch_model.nosuch()"])
def test_a_failing_line_never_drops_a_model(demo_session, line):
    before = snapshot(demo_session)
    outcome = demo_session.run_line(line)
    assert not outcome.ok and "\n" not in outcome.error
    assert_unchanged(demo_session, before)


def test_a_line_too_deep_to_compile_is_one_error_and_the_session_survives(demo_session):
    """4,000 terms of ``1+1+...`` make Python's compiler give up (RecursionError), in the check for a
    continued block too: that check must not raise (the shell would die with both demo models)."""
    before = snapshot(demo_session)
    line = "+".join(["1"] * 4000)
    assert demo_session.needs_more(line) is False
    run_fail(demo_session, line, "too long or too deeply nested", "RecursionError")
    run_fail(demo_session, f"x = [{line}]\ny = 2", "too long or too deeply nested")  # the "exec" path too
    assert_unchanged(demo_session, before)


def test_a_script_with_a_200_kb_line_prints_one_error_and_goes_on(tmp_path):
    script = tmp_path / "long.ms"
    script.write_text("x = " + "+".join(["1"] * 70000) + "\nprint('still here')\n")
    done = subprocess.run([MODELSHELL, "run", "--keep-going", str(script)], capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 1 and "still here" in done.stdout, done.stdout + done.stderr
    assert "Traceback" not in done.stderr and "too long or too deeply nested" in done.stderr, done.stderr


def test_a_2_mb_command_line_is_refused_before_it_is_split(session, monkeypatch):
    """Refused before ``shlex.split`` (quadratic: minutes for 2 MB) sees it; the time, against a 100 KB
    line, is measured in benchmarks/bench_interactive.py."""
    import shlex

    split, real = [], shlex.split

    def spied(text: str, *args, **kwargs) -> list[str]:
        split.append(len(text))
        if len(text) > 100_000:  # without the refusal: fail now rather than split for minutes
            raise AssertionError(f"shlex.split was given {len(text):,} characters")
        return real(text, *args, **kwargs)

    monkeypatch.setattr(shlex, "split", spied)
    run_fail(session, "weights " + "a" * 2_000_000, "2,000,001 characters", "at most 100,000")
    assert split == []
    run_fail(session, "weights " + "a" * 1000, "a" * 20)  # the control: a line that is let through is split
    assert split == [len(" " + "a" * 1000)]  # what follows the command word


@pytest.mark.parametrize("alias, says", [("print", "would hide Python's builtin print()"),
                                         ("None", "Python reserves it"), ("class", "Python reserves it"),
                                         ("__builtins__", "Python reserves it")])
def test_load_refuses_a_name_that_would_hide_python(session, tmp_path, alias, says):
    path = tmp_path / "w.pt"
    torch.save({"w": torch.ones(2)}, path)
    run_fail(session, f"load {path} as {alias}", repr(alias), says)
    assert session.model_names() == []
    assert session.namespace["__builtins__"] is builtins and (alias == "__builtins__" or alias not in session.namespace)
    assert session.run_line("print('print still works')").ok
    if alias == "print":  # forced, it is the user's choice
        run_ok(session, f"load {path} as print --force")
        assert session.model_names() == ["print"]


def test_a_file_named_like_a_builtin_gets_a_name_that_hides_nothing(session, tmp_path):
    path = tmp_path / "print.pt"
    torch.save({"w": torch.ones(2)}, path)
    run_ok(session, f"load {path}")
    assert session.model_names() == ["m_print"] and "print" not in session.namespace


def test_copy_marks_changed_and_save_clears_it(demo_session, tmp_path):
    assert demo_session.unsaved() == []
    run_ok(demo_session, "copy keras_model torch_model")
    assert demo_session.unsaved() == ["torch_model"]
    run_ok(demo_session, f"save torch_model {tmp_path / 'lenet5.pt'}")
    assert demo_session.unsaved() == []


def test_run_scripts_do_not_ask_before_leaving(tmp_path):
    script = tmp_path / "script.ms"
    script.write_text(textwrap.dedent("""
        import torch
        a = torch.nn.Linear(2, 2)
        b = torch.nn.Linear(2, 2)
        copy a b
        exit
    """))
    done = subprocess.run([MODELSHELL, "run", str(script)], capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Leave anyway" not in done.stdout + done.stderr


# --- resource bounds -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sized_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("sized")
    torch.manual_seed(0)  # its own seed: a test's net made after the same seed would equal it
    net = nn.Sequential(nn.Linear(64, 64))
    torch.save(net.state_dict(), d / "zip.pt")
    torch.save(net.state_dict(), d / "legacy.pt", _use_new_zipfile_serialization=False)
    torch.jit.script(net).save(str(d / "script.pt"))
    save_safetensors(dict(net.state_dict()), str(d / "w.safetensors"))
    inputs = keras.Input((64,))
    model = keras.Model(inputs, keras.layers.Dense(64)(inputs))
    model.save(str(d / "m.keras"))
    model.save(str(d / "m.h5"))
    model.save_weights(str(d / "m.weights.h5"))
    return d


def test_a_load_larger_than_free_memory_is_refused_or_memory_mapped(sized_files, monkeypatch):
    monkeypatch.setattr(resources, "available_memory", lambda: 4096)  # less than any file's tensors
    session = Session()
    for name in ("legacy.pt", "script.pt", "m.keras", "m.h5"):
        run_fail(session, f"load {sized_files / name}", name, "too large", "4.0 KB are free")
    # Memory-mapped (torch zip archives) or read lazily (weights files): these load all the same.
    for name in ("zip.pt", "w.safetensors", "m.weights.h5"):
        run_ok(session, f"load {sized_files / name}")
    assert session.model_names() == ["m_zip", "w", "m"]  # zip.pt: `zip` would hide the builtin zip()
    np.testing.assert_array_equal(values(session, "m_zip")["0.bias"], values(session, "w")["0.bias"])


def test_a_memory_mapped_state_dict_can_be_copied_into_and_saved(sized_files, tmp_path):
    session = Session()
    run_ok(session, f"load {sized_files / 'zip.pt'} as mapped")
    torch.manual_seed(1)
    session.namespace["net"] = nn.Sequential(nn.Linear(64, 64))
    run_ok(session, "copy net mapped")
    run_ok(session, f"save mapped {tmp_path / 'out.pt'}")
    saved = torch.load(tmp_path / "out.pt", weights_only=True)
    np.testing.assert_array_equal(saved["0.weight"].numpy(), session.namespace["net"][0].weight.detach().numpy())
    assert torch.load(sized_files / "zip.pt", weights_only=True)["0.weight"].ne(saved["0.weight"]).any()
