"""How much does modelshell's `copy` cost over the bare floor, and how fast is `pair` on a big model?

    .venv/bin/python benchmarks/bench_transfer.py [--runs 5] [--profile]

The model is a BERT-base-sized encoder (~110M parameters: 30522x768 token embeddings, position
embeddings, 12 blocks of attention + LayerNorm + 768->3072->768) written in both frameworks, with the
same layer names, so modelshell pairs them through its layout table.

Measured in one run (the median of ``--runs`` runs, interleaved so that machine noise hits both alike):

1. ``copy t k`` and ``copy k t`` through ``Session.run_line`` (pairing, conversion, checks, writes);
2. the bare floor, in the same run: every tensor read, its rule applied by hand-written numpy, and written
   with the framework's own call (Keras ``variable.assign``, torch ``load_state_dict``), no pairing, no
   checks; the ratio of the two (target <= 1.2x);
3. the peak extra memory of a copy (in a fresh subprocess: peak RSS over the RSS before the copy, the
   kernel's high-water mark reset just before it; and tracemalloc's peak of numpy/Python allocations)
   against the size of the weights (target <= 1 copy);
4. ``pair t k`` on a model with more than 1,000 tensors (90 small blocks; target < 0.5 s);
5. the first copy in a fresh process, against the floor's first run in a fresh process (no target: a
   user's first copy pays for fresh memory, which the warm runs of 1. reuse);
6. ``verify t k`` against its two forward passes done by hand on the same input (torch under ``no_grad``,
   Keras with ``training=False``, the (2, 8) integer input verify draws for an embedding): the overhead
   beyond the two passes (target <= 10%).

A target that is missed gets a cProfile of the operation printed under the table (``--profile`` prints
them all).
"""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import argparse
import cProfile
import gc
import io
import json
import pstats
import resource
import statistics
import subprocess
import sys
import time
import tracemalloc
import warnings
from collections.abc import Callable
from pathlib import Path

warnings.filterwarnings("ignore")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from modelshell.core.session import Session  # noqa: E402

L = keras.layers
BASE = dict(vocab=30522, d=768, heads=12, ff=3072, layers=12, max_pos=512)
DEEP = dict(vocab=1000, d=32, heads=4, ff=64, layers=90, max_pos=64)  # > 1,000 tensors on each side
TARGETS = {"copy": 1.2, "memory": 1.0, "pair": 0.5, "verify": 0.10}


# --- the encoder, in both frameworks -------------------------------------------------------------------
class TorchBlock(nn.Module):
    """Post-norm transformer block, modules registered in the order they are called."""

    def __init__(self, d: int, heads: int, ff: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.ln1 = nn.LayerNorm(d)
        self.ff1 = nn.Linear(d, ff)
        self.ff2 = nn.Linear(ff, d)
        self.ln2 = nn.LayerNorm(d)

    def forward(self, x):
        x = self.ln1(x + self.attn(x, x, x, need_weights=False)[0])
        return self.ln2(x + self.ff2(torch.relu(self.ff1(x))))


class TorchEncoder(nn.Module):
    def __init__(self, vocab: int, d: int, heads: int, ff: int, layers: int, max_pos: int) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(max_pos, d)
        self.emb_ln = nn.LayerNorm(d)
        self.blocks = nn.ModuleList([TorchBlock(d, heads, ff) for _ in range(layers)])

    def forward(self, ids):
        x = self.emb_ln(self.tok(ids) + self.pos(torch.arange(ids.shape[1]))[None])
        for block in self.blocks:
            x = block(x)
        return x


class KerasBlock(L.Layer):
    def __init__(self, d: int, heads: int, ff: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.attn = L.MultiHeadAttention(heads, d // heads, name="attn")
        self.ln1 = L.LayerNormalization(epsilon=1e-5, name="ln1")
        self.ff1 = L.Dense(ff, activation="relu", name="ff1")
        self.ff2 = L.Dense(d, name="ff2")
        self.ln2 = L.LayerNormalization(epsilon=1e-5, name="ln2")

    def call(self, x):
        x = self.ln1(x + self.attn(x, x))
        return self.ln2(x + self.ff2(self.ff1(x)))


class KerasEncoder(keras.Model):
    def __init__(self, vocab: int, d: int, heads: int, ff: int, layers: int, max_pos: int) -> None:
        super().__init__(name="encoder")
        self.tok = L.Embedding(vocab, d, name="tok")
        self.pos = L.Embedding(max_pos, d, name="pos")
        self.emb_ln = L.LayerNormalization(epsilon=1e-5, name="emb_ln")
        self.blocks = [KerasBlock(d, heads, ff, name=f"blocks_{i}") for i in range(layers)]

    def call(self, ids):
        x = self.emb_ln(self.tok(ids) + self.pos(keras.ops.arange(keras.ops.shape(ids)[1]))[None])
        for block in self.blocks:
            x = block(x)
        return x


def build(config: dict) -> tuple[nn.Module, keras.Model]:
    torch.manual_seed(0)
    t = TorchEncoder(**config).eval()
    k = KerasEncoder(**config)
    k(np.zeros((1, 4), np.int32))  # a subclassed Keras model has no weights until called
    return t, k


def weights_bytes(t: nn.Module) -> int:
    return sum(v.numel() * v.element_size() for v in t.state_dict().values())


# --- the bare floor: hand-written rules, the frameworks' own writes --------------------------------------
def _keras_name(torch_layer: str) -> str:
    """``blocks.3.attn`` -> ``blocks_3/attn`` (the names were chosen that way)."""
    parts = torch_layer.split(".")
    return f"blocks_{parts[1]}/{'/'.join(parts[2:])}" if parts[0] == "blocks" else torch_layer


def floor_torch_to_keras(t: nn.Module, k: keras.Model, heads: int) -> None:
    variables = {v.path.split("/", 1)[1]: v for v in k.weights}
    for name, tensor in t.state_dict().items():
        w = tensor.numpy()
        if ".attn." in name:
            layer = _keras_name(name.split(".attn.")[0] + ".attn")
            role = name.split(".attn.")[1]
            e = w.shape[-1]
            if role == "in_proj_weight":
                q, kk, v = w.reshape(3, heads, e // heads, e).transpose(0, 3, 1, 2)
                for part, value in zip(("query", "key", "value"), (q, kk, v)):
                    variables[f"{layer}/{part}/kernel"].assign(value)
            elif role == "in_proj_bias":
                for part, value in zip(("query", "key", "value"), w.reshape(3, heads, -1)):
                    variables[f"{layer}/{part}/bias"].assign(value)
            elif role == "out_proj.weight":
                variables[f"{layer}/attention_output/kernel"].assign(w.reshape(e, heads, e // heads).transpose(1, 2, 0))
            else:
                variables[f"{layer}/attention_output/bias"].assign(w)
            continue
        layer, role = name.rsplit(".", 1)
        layer = _keras_name(layer)
        if layer in ("tok", "pos"):
            variables[f"{layer}/embeddings"].assign(w)
        elif "ln" in layer:
            variables[f"{layer}/{'gamma' if role == 'weight' else 'beta'}"].assign(w)
        else:
            variables[f"{layer}/{'kernel' if role == 'weight' else 'bias'}"].assign(w.T if role == "weight" else w)


def floor_keras_to_torch(k: keras.Model, t: nn.Module, heads: int) -> None:
    values = {v.path.split("/", 1)[1]: v.numpy() for v in k.weights}
    state = {}
    for name in t.state_dict():
        if ".attn." in name:
            layer = _keras_name(name.split(".attn.")[0] + ".attn")
            role = name.split(".attn.")[1]
            if role == "in_proj_weight":
                w = np.stack([values[f"{layer}/{p}/kernel"] for p in ("query", "key", "value")])
                w = w.transpose(0, 2, 3, 1).reshape(-1, w.shape[1])
            elif role == "in_proj_bias":
                w = np.stack([values[f"{layer}/{p}/bias"] for p in ("query", "key", "value")]).reshape(-1)
            elif role == "out_proj.weight":
                w = values[f"{layer}/attention_output/kernel"]
                w = w.transpose(2, 0, 1).reshape(w.shape[2], -1)
            else:
                w = values[f"{layer}/attention_output/bias"]
        else:
            layer, role = name.rsplit(".", 1)
            layer = _keras_name(layer)
            if layer in ("tok", "pos"):
                w = values[f"{layer}/embeddings"]
            elif "ln" in layer:
                w = values[f"{layer}/{'gamma' if role == 'weight' else 'beta'}"]
            else:
                w = values[f"{layer}/{'kernel' if role == 'weight' else 'bias'}"]
                w = w.T if role == "weight" else w
        state[name] = torch.from_numpy(np.ascontiguousarray(w))
    t.load_state_dict(state)


# --- measuring -------------------------------------------------------------------------------------------
def timed(fn: Callable[[], object]) -> float:
    gc.collect()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run_ok(session: Session, line: str) -> None:
    outcome = session.run_line(line)
    if not outcome.ok:
        raise SystemExit(f"{line}: {outcome.error}")


def max_diff(t: nn.Module, k: keras.Model) -> float:
    ids = np.random.default_rng(0).integers(0, 1000, (2, 16)).astype(np.int64)
    with torch.no_grad():
        yt = t(torch.from_numpy(ids)).numpy()
    yk = np.asarray(k(ids.astype(np.int32), training=False))
    return float(np.abs(yt - yk).max())


def breakdown(session: Session, src: str, dst: str, runs: int) -> dict[str, float]:
    """Where a copy's time goes: pairing, reading + converting every tensor, writing them."""
    from modelshell.transfer.plan import converted_values, make_plan

    source, destination = session.model(src), session.model(dst)
    found: dict[str, list[float]] = {"make_plan": [], "converted_values": [], "write": []}
    for _ in range(runs):
        gc.collect()
        start = time.perf_counter()
        plan = make_plan(source, destination, src, dst)
        planned = time.perf_counter()
        values = converted_values(plan, source)
        converted = time.perf_counter()
        destination.write(values)
        found["make_plan"].append(planned - start)
        found["converted_values"].append(converted - planned)
        found["write"].append(time.perf_counter() - converted)
        del values
    return {stage: statistics.median(values) for stage, values in found.items()}


def profile_text(fn: Callable[[], object], top: int = 14) -> str:
    profiler = cProfile.Profile()
    profiler.enable()
    fn()
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(top)
    lines = [line for line in out.getvalue().splitlines() if line.strip()]
    start = next(i for i, line in enumerate(lines) if "ncalls" in line)
    return "\n".join(lines[start:])


def fresh_action(what: str) -> tuple[nn.Module, Callable[[], None]]:
    """In a fresh process: build the twins and wrap them, and return the operation ``what`` not yet run."""
    t, k = build(BASE)
    session = Session()
    session.namespace.update(t=t, k=k)
    session.model("t"), session.model("k")
    actions = {
        "copy t k": lambda: run_ok(session, "copy t k"),
        "copy k t": lambda: run_ok(session, "copy k t"),
        "floor t k": lambda: floor_torch_to_keras(t, k, BASE["heads"]),
        "floor k t": lambda: floor_keras_to_torch(k, t, BASE["heads"]),
    }
    return t, actions[what]


def cold_child(what: str) -> None:
    """In a fresh process: the time of the first run of ``what``."""
    _, action = fresh_action(what)
    print(json.dumps({"seconds": timed(action)}))


def memory_child(what: str) -> None:
    """In a fresh process: build the twins, then measure one copy's peak RSS and tracemalloc peak."""
    t, action = fresh_action(what)
    gc.collect()
    before = _status("VmRSS")
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (the peak RSS) to the current RSS
        reset = True
    except OSError:  # not Linux, or not allowed: the peak since start-up (building included) is all we get
        before, reset = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, False
    tracemalloc.start()
    action()
    _, traced = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    peak = _status("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"rss": peak - before, "traced": traced, "weights": weights_bytes(t), "reset": reset}))


def _status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def child(kind: str, what: str, script: str = __file__, timeout: int = 600) -> dict:
    """Run ``script --KIND-child WHAT`` in a fresh process and return the JSON of its last line."""
    proc = subprocess.run([sys.executable, script, f"--{kind}-child", what], capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode:
        raise SystemExit(f"{kind} child {what!r} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per measurement (the median is shown)")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of every operation")
    parser.add_argument("--cold-runs", type=int, default=3, help="fresh processes per first-copy measurement")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    parser.add_argument("--cold-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child)
        return
    if args.cold_child:
        cold_child(args.cold_child)
        return

    print(f"torch {torch.__version__}, keras {keras.__version__}, numpy {np.__version__}, "
          f"{os.cpu_count()} cores; median of {args.runs} runs")
    start = time.perf_counter()
    t, k = build(BASE)
    n_params = sum(v.numel() for v in t.state_dict().values())
    size = weights_bytes(t)
    print(f"encoder: {n_params / 1e6:.1f}M parameters, {size / 2**20:.0f} MiB, {len(t.state_dict())} torch tensors, "
          f"{len(k.weights)} Keras variables (built in {time.perf_counter() - start:.1f} s)")
    session = Session()
    session.namespace.update(t=t, k=k)

    heads = BASE["heads"]
    ops = {
        "copy t k": lambda: run_ok(session, "copy t k"),
        "floor t k": lambda: floor_torch_to_keras(t, k, heads),
        "copy k t": lambda: run_ok(session, "copy k t"),
        "floor k t": lambda: floor_keras_to_torch(k, t, heads),
    }
    ops["copy t k"]()  # warm-up (first calls build TF functions, handles, caches)
    diff_t2k = max_diff(t, k)
    ops["copy k t"]()
    diff_k2t = max_diff(t, k)
    times: dict[str, list[float]] = {name: [] for name in ops}
    for _ in range(args.runs):
        for name, fn in ops.items():  # interleaved: noise from the other core hits every column alike
            times[name].append(timed(fn))
    med = {name: statistics.median(values) for name, values in times.items()}
    stages = {f"{src} {dst}": breakdown(session, src, dst, args.runs) for src, dst in (("t", "k"), ("k", "t"))}

    ids = np.random.default_rng(0).integers(0, BASE["vocab"], (2, 8))

    def two_passes() -> None:
        with torch.no_grad():
            t(torch.from_numpy(ids)).numpy()
        np.asarray(k(ids.astype(np.int32), training=False))

    verify_ops = {"verify t k": lambda: run_ok(session, "verify t k"), "two forward passes": two_passes}
    for fn in verify_ops.values():
        fn()  # warm-up
    verify_times: dict[str, list[float]] = {name: [] for name in verify_ops}
    for _ in range(max(args.runs, 7)):
        for name, fn in verify_ops.items():
            verify_times[name].append(timed(fn))
    verify_med = {name: statistics.median(values) for name, values in verify_times.items()}
    times.update(verify_times)

    mem = {what: child("memory", what) for what in ops}
    cold: dict[str, list[float]] = {what: [] for what in ops}
    for _ in range(args.cold_runs):
        for what in cold:
            cold[what].append(child("cold", what)["seconds"])
    cold_med = {what: statistics.median(values) for what, values in cold.items()}

    deep_t, deep_k = build(DEEP)
    deep = Session()
    deep.namespace.update(t=deep_t, k=deep_k)
    n_deep = (len(deep_t.state_dict()), len(deep_k.weights))
    run_ok(deep, "pair t k")  # warm-up
    pair_times = [timed(lambda: run_ok(deep, "pair t k")) for _ in range(args.runs)]
    pair_time = statistics.median(pair_times)

    rows = []
    for direction, copy, floor, diff in (("torch -> keras", "copy t k", "floor t k", diff_t2k),
                                         ("keras -> torch", "copy k t", "floor k t", diff_k2t)):
        ratio = med[copy] / med[floor]
        rows.append((f"copy {direction}", f"{med[copy]:.3f} s", f"floor {med[floor]:.3f} s",
                     f"{ratio:.2f}x", f"<= {TARGETS['copy']}x", ratio <= TARGETS["copy"],
                     f"outputs max|diff| {diff:.1e}"))
    for direction, copy, floor in (("torch -> keras", "copy t k", "floor t k"),
                                   ("keras -> torch", "copy k t", "floor k t")):
        extra, fl = mem[copy], mem[floor]
        ratio = extra["rss"] / extra["weights"]
        rows.append((f"peak extra memory {direction}", f"{extra['rss'] / 2**20:.0f} MiB",
                     f"floor {fl['rss'] / 2**20:.0f} MiB", f"{ratio:.2f} copies", f"<= {TARGETS['memory']:.0f} copy",
                     ratio <= TARGETS["memory"],
                     f"tracemalloc peak {extra['traced'] / 2**20:.0f} MiB (floor {fl['traced'] / 2**20:.0f})"))
    for direction, copy, floor in (("torch -> keras", "copy t k", "floor t k"),
                                   ("keras -> torch", "copy k t", "floor k t")):
        rows.append((f"first copy in a process {direction}", f"{cold_med[copy]:.3f} s", f"floor {cold_med[floor]:.3f} s",
                     f"{cold_med[copy] / cold_med[floor]:.2f}x", "(no target)", None,
                     f"median of {args.cold_runs} fresh processes each"))
    pair_met = pair_time < TARGETS["pair"]
    rows.append((f"pair, {n_deep[0]} / {n_deep[1]} tensors", f"{pair_time:.3f} s", "", "", f"< {TARGETS['pair']} s",
                 pair_met, f"runs {', '.join(f'{x:.3f}' for x in pair_times)}"))

    overhead = verify_med["verify t k"] / verify_med["two forward passes"] - 1
    verify_met = overhead <= TARGETS["verify"]
    rows.append(("verify t k overhead", f"{verify_med['verify t k']:.3f} s",
                 f"passes {verify_med['two forward passes']:.3f} s", f"{overhead:+.0%}",
                 f"<= +{TARGETS['verify']:.0%}", verify_met, "input (2, 8) int"))

    print()
    header = ("measure", "modelshell", "bare floor", "ratio", "target", "met", "note")
    table = [header] + [(*r[:5], {True: "yes", False: "NO", None: ""}[r[5]], r[6]) for r in rows]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    for i, row in enumerate(table):
        print("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))
    for name, parts in stages.items():
        print(f"copy {name} by stage (median s): " + ", ".join(f"{stage} {value:.3f}" for stage, value in parts.items()))
    print("\nall runs (s): " + "; ".join(f"{name}: {', '.join(f'{x:.3f}' for x in values)}"
                                         for name, values in times.items()))
    print("first runs in fresh processes (s): " + "; ".join(f"{name}: {', '.join(f'{x:.3f}' for x in values)}"
                                                           for name, values in cold.items()))

    missed_copy = [name for name, row in zip(("copy t k", "copy k t"), rows[:2]) if not row[5]]
    missed_memory = [name for name, row in zip(("copy t k", "copy k t"), rows[2:4]) if not row[5]]
    to_profile = {name: ops[name] for name in ops if args.profile or name in missed_copy + missed_memory}
    if args.profile or not verify_met:
        to_profile["verify t k"] = verify_ops["verify t k"]
    if args.profile or not pair_met:
        to_profile["pair t k (deep model)"] = lambda: run_ok(deep, "pair t k")
    for name, fn in to_profile.items():
        print(f"\ncProfile of {name}, by own time:\n{profile_text(fn)}")


if __name__ == "__main__":
    main()
