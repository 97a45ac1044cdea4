"""Porting real models (issue 12, Performance): `pair` and `copy` on BERT-base and VGG16, real classes.

    .venv/bin/python benchmarks/bench_porting.py [--runs 3] [--profile] [--only bert,vgg]

Every model is built offline from its config or constructor, random weights, nothing downloaded:

* BERT-base: transformers' ``BertModel(BertConfig())`` against ``TFBertModel(BertConfig())`` (109.5M
  parameters; the TF class runs on tf-keras).
* VGG16: torchvision's ``vgg16(weights=None)`` against ``keras.applications.VGG16(weights=None)`` at
  224x224 (138.4M parameters; Keras 3).

Measured in one run, warm process, median of ``--runs`` runs interleaved so that machine noise hits every
column alike (one warm-up run of each first):

1. ``pair t k`` on BERT-base through ``Session.run_line``; the pairing traces both models once on the
   seeded input, so the trace is in the figure (target < 2 s);
2. ``copy t k`` / ``copy k t`` on BERT-base, against transformers' own cross-loaders on the same models
   (``load_pytorch_model_in_tf2_model``, ``load_tf2_model_in_pytorch_model``): target <= 1.0x. ``copy``
   runs both models once, layer by layer, to confirm the pairing with the converted values before
   writing, and reads the written tensors back (that run is then its check); it is measured so and with
   ``--no-verify``, which runs nothing. transformers' loaders check nothing, so the like-for-like ratio
   is the ``--no-verify`` one;
   Beside them, each model's own forward pass on the same input, no hooks, no values swapped in: what
   any copy that proves its outputs must spend on top of pairing and writing;
3. ``copy`` of VGG16 both ways against a hand-written floor (a plain loop: read each tensor, apply its
   transpose, ``variable.assign`` / ``param.copy_``): target <= 0.9x, with and without ``--no-verify``;
   and the peak extra memory of each (in a fresh process, as bench_transfer.py measures it: peak RSS over
   the RSS before the copy, the kernel's high-water mark reset just before it) against the size of the
   weights: target <= 1.5 copies.

A target that is missed gets a cProfile of the operation printed under the table (``--profile``: all).
"""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import argparse
import gc
import json
import resource
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

warnings.filterwarnings("ignore")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
import real_models  # noqa: E402  (the torchvision shim, before transformers imports torchvision)

real_models.import_torchvision()

import keras  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torchvision.models as tvm  # noqa: E402
import transformers  # noqa: E402
from transformers.modeling_tf_pytorch_utils import (  # noqa: E402
    load_pytorch_model_in_tf2_model,
    load_tf2_model_in_pytorch_model,
)

from _bench import machine, print_table  # noqa: E402
from bench_transfer import _status, child, profile_text, run_ok, timed  # noqa: E402
from modelshell.core.session import Session  # noqa: E402

TARGETS = {"pair": 2.0, "bert": 1.0, "vgg": 0.9, "memory": 1.5}


# --- the models ------------------------------------------------------------------------------------------
def build_bert() -> tuple[torch.nn.Module, object]:
    torch.manual_seed(0)
    t = transformers.BertModel(transformers.BertConfig()).eval()
    k = transformers.TFBertModel(transformers.BertConfig())
    k(k.dummy_inputs, training=False)  # a TF model has its weights once called
    return t, k


def build_vgg() -> tuple[torch.nn.Module, keras.Model]:
    torch.manual_seed(0)
    return tvm.vgg16(weights=None).eval(), keras.applications.VGG16(
        weights=None, input_shape=(224, 224, 3), classifier_activation=None)  # torchvision ends in logits too


def weights_bytes(t: torch.nn.Module) -> int:
    return sum(v.numel() * v.element_size() for v in t.state_dict().values())


# --- the VGG16 floor: a plain loop, one transpose per tensor ---------------------------------------------
def _vgg_pairs(t: torch.nn.Module, k: keras.Model) -> list[tuple[torch.Tensor, object, str]]:
    """torch parameters against Keras variables in order (both list conv/dense kernel then bias), with the
    layout of each: conv, the dense after the flatten of the (512, 7, 7) map, or a plain dense."""
    params = [p for _, p in t.named_parameters()]
    variables = [v for layer in k.layers for v in layer.weights]
    assert len(params) == len(variables) == 32, (len(params), len(variables))
    first_dense = next(i for i, p in enumerate(params) if p.ndim == 2)
    layouts = ["conv" if p.ndim == 4 else "flatten" if i == first_dense else "dense" if p.ndim == 2 else "bias"
               for i, p in enumerate(params)]
    return list(zip(params, variables, layouts))


def floor_torch_to_keras(t: torch.nn.Module, k: keras.Model) -> None:
    for p, v, layout in _vgg_pairs(t, k):
        w = p.detach().numpy()
        if layout == "conv":
            w = w.transpose(2, 3, 1, 0)  # (O, I, kh, kw) -> (kh, kw, I, O)
        elif layout == "flatten":  # torch flattens (C, H, W), Keras (H, W, C)
            w = w.reshape(w.shape[0], 512, 7, 7).transpose(2, 3, 1, 0).reshape(-1, w.shape[0])
        elif layout == "dense":
            w = w.T
        v.assign(w)


def floor_keras_to_torch(k: keras.Model, t: torch.nn.Module) -> None:
    with torch.no_grad():
        for p, v, layout in _vgg_pairs(t, k):
            w = v.numpy()
            if layout == "conv":
                w = w.transpose(3, 2, 0, 1)
            elif layout == "flatten":
                w = w.reshape(7, 7, 512, -1).transpose(3, 2, 0, 1).reshape(w.shape[-1], -1)
            elif layout == "dense":
                w = w.T
            p.copy_(torch.from_numpy(np.ascontiguousarray(w)))


# --- one model pair, its operations ----------------------------------------------------------------------
def operations(model: str, t, k) -> dict[str, Callable[[], None]]:
    session = Session()
    session.namespace.update(t=t, k=k)
    ops = {
        "copy t k": lambda: run_ok(session, "copy t k"),
        "copy t k --no-verify": lambda: run_ok(session, "copy t k --no-verify"),
        "copy k t": lambda: run_ok(session, "copy k t"),
        "copy k t --no-verify": lambda: run_ok(session, "copy k t --no-verify"),
    }
    if model == "bert":
        ops["pair t k"] = lambda: run_ok(session, "pair t k")
        ops["reference t k"] = lambda: load_pytorch_model_in_tf2_model(k, t)
        ops["reference k t"] = lambda: load_tf2_model_in_pytorch_model(t, k)
    else:
        ops["reference t k"] = lambda: floor_torch_to_keras(t, k)
        ops["reference k t"] = lambda: floor_keras_to_torch(k, t)
    ops["both forward passes"] = plain_runs(session)
    ops["_session"] = session  # type: ignore[assignment]
    return ops


def plain_runs(session: Session) -> Callable[[], None]:
    """Each model's own forward pass on the seeded input the check runs on, without hooks or values
    swapped in: the least a copy that proves its outputs must add to the copy itself."""
    from modelshell.transfer.inputs import paired_inputs

    a, b = session.model("t"), session.model("k")
    inputs = paired_inputs(a, b, a.layers(), b.layers())

    def run() -> None:
        a.forward(inputs.a)
        b.forward(inputs.b)

    return run


def outputs_diff(model: str, t, k) -> float:
    rng = np.random.default_rng(0)
    if model == "bert":
        ids = rng.integers(0, 30522, (2, 16))
        with torch.no_grad():
            yt = t(input_ids=torch.from_numpy(ids)).last_hidden_state.numpy()
        yk = k(input_ids=ids.astype(np.int32), training=False).last_hidden_state.numpy()
    else:
        x = rng.standard_normal((1, 3, 224, 224)).astype(np.float32)
        with torch.no_grad():
            yt = t(torch.from_numpy(x)).numpy()
        yk = np.asarray(k(x.transpose(0, 2, 3, 1), training=False))
    return float(np.abs(yt - yk).max())


def measure(model: str, runs: int) -> dict:
    start = time.perf_counter()
    t, k = build_bert() if model == "bert" else build_vgg()
    n = sum(v.numel() for v in t.state_dict().values())
    print(f"{model}: {n / 1e6:.1f}M parameters, {weights_bytes(t) / 2**20:.0f} MiB, {len(t.state_dict())} torch "
          f"tensors, {len(k.weights)} Keras variables (built in {time.perf_counter() - start:.1f} s)", flush=True)
    ops = operations(model, t, k)
    session = ops.pop("_session")
    diffs = {}
    for name, fn in ops.items():  # warm-up; the diffs after each direction's copy prove it ported
        fn()
        if name in ("copy t k --no-verify", "copy k t --no-verify"):
            diffs[name[:8]] = outputs_diff(model, t, k)
    times: dict[str, list[float]] = {name: [] for name in ops}
    for _ in range(runs):
        for name, fn in ops.items():
            times[name].append(timed(fn))
    print(f"{model} runs (s): " + "; ".join(f"{name}: {', '.join(f'{x:.3f}' for x in values)}"
                                            for name, values in times.items()), flush=True)
    return {"ops": ops, "session": session, "times": times, "diffs": diffs, "t": t, "k": k,
            "med": {name: statistics.median(v) for name, v in times.items()}}


# --- memory, in a fresh process --------------------------------------------------------------------------
def memory_child(what: str) -> None:
    t, k = build_vgg()
    ops = operations("vgg", t, k)
    session = ops.pop("_session")
    session.model("t"), session.model("k")
    gc.collect()
    before = _status("VmRSS")
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (the peak RSS) to the current RSS
        reset = True
    except OSError:
        before, reset = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, False
    ops[what]()
    peak = _status("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"rss": peak - before, "weights": weights_bytes(t), "reset": reset}))


def memory(what: str) -> dict:
    return child("memory", what, __file__, timeout=900)


# --- the table -------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per measurement (the median is shown)")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of every operation")
    parser.add_argument("--only", default="bert,vgg", help="bert, vgg or both (comma-separated)")
    parser.add_argument("--quick", action="store_true", help=argparse.SUPPRESS)  # run_all's flag: 3 runs anyway
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child)
        return

    print(f"transformers {transformers.__version__}, torch {torch.__version__}, keras {keras.__version__}; "
          f"{machine()}; median of {args.runs} runs", flush=True)
    rows, missed = [], []
    chosen = args.only.split(",")
    for model in ("bert", "vgg"):
        if model not in chosen:
            continue
        found = measure(model, args.runs)
        med, ops = found["med"], found["ops"]
        if model == "bert":
            met = med["pair t k"] < TARGETS["pair"]
            rows.append(("BERT-base pair t k (trace included)", f"{med['pair t k']:.3f} s", "", "",
                         f"< {TARGETS['pair']:.0f} s", met))
            if not met:
                missed.append(("pair t k (BERT)", ops["pair t k"]))
        label, ref_label, target = ("BERT-base", "transformers", TARGETS["bert"]) if model == "bert" else \
            ("VGG16", "floor", TARGETS["vgg"])
        for direction, src_dst in (("torch -> TF" if model == "bert" else "torch -> keras", "t k"),
                                   ("TF -> torch" if model == "bert" else "keras -> torch", "k t")):
            ref = med[f"reference {src_dst}"]
            runs = med["both forward passes"]
            rows.append((f"{label} both models' own forward passes alone, against {direction}",
                         f"{runs:.3f} s", f"{ref_label} {ref:.3f} s", f"{runs / ref:.2f}x", "", ""))
            for suffix in (" --no-verify", ""):
                name = f"copy {src_dst}{suffix}"
                ratio = med[name] / ref
                what = "copy --no-verify" if suffix else "copy (with its check)"
                rows.append((f"{label} {what} {direction}", f"{med[name]:.3f} s", f"{ref_label} {ref:.3f} s",
                             f"{ratio:.2f}x", f"<= {target}x", ratio <= target))
                if ratio > target:
                    missed.append((f"{name} ({label})", ops[name]))
        print(f"{model}: outputs max|diff| after copy t k {found['diffs']['copy t k']:.1e}, "
              f"after copy k t {found['diffs']['copy k t']:.1e}", flush=True)
        if args.profile:
            missed = [(f"{name} ({label})", fn) for name, fn in ops.items()]
        for name, fn in missed:
            print(f"\ncProfile of {name}, by own time:\n{profile_text(fn)}", flush=True)
        missed = []
        del found, ops
        gc.collect()
        if model == "vgg":
            for src_dst, direction in (("t k", "torch -> keras"), ("k t", "keras -> torch")):
                floor = memory(f"reference {src_dst}")
                for suffix in (" --no-verify", ""):
                    extra = memory(f"copy {src_dst}{suffix}")
                    copies = extra["rss"] / extra["weights"]
                    what = "--no-verify" if suffix else "(with its check)"
                    rows.append((f"VGG16 peak extra memory {what} {direction}", f"{extra['rss'] / 2**20:.0f} MiB",
                                 f"floor {floor['rss'] / 2**20:.0f} MiB", f"{copies:.2f} copies",
                                 f"<= {TARGETS['memory']} copies", copies <= TARGETS["memory"]))
    print_table(f"porting real models, median of {args.runs} runs", rows)


if __name__ == "__main__":
    main()
