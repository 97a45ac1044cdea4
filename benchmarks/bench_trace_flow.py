"""What recording where each layer's output went costs the torch trace (issue 12, the bias fold).

    .venv/bin/python benchmarks/bench_trace_flow.py [--runs 7]

The torch trace sees every operation through a ``TorchFunctionMode`` (``_Flow``) so that a fold is made
only where a conv's output goes into its BatchNorm alone. Measured in one process, interleaved, median of
``--runs`` after a warm-up: ``TorchModule.trace`` of transformers' BERT-base (``BertModel(BertConfig())``,
input (2, 8)) and of torchvision's ResNet50 (64 x 64), with the flow mode and with a mode that records
nothing in its place. Target: the flow adds at most 1.2x to the trace (the trace is part of ``pair``'s
< 2 s for BERT-base).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import real_models  # noqa: E402  (quiets TF and transformers; the torchvision shim, before transformers)

real_models.import_torchvision()

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torchvision.models as tvm  # noqa: E402
import transformers  # noqa: E402

import modelshell.frameworks.torch as torch_adapter  # noqa: E402
from _bench import machine, print_table  # noqa: E402

TARGET = 1.2


class _NoFlow(torch_adapter._Flow):
    """The flow mode recording nothing: every hook and operation passes straight through."""

    def entered(self, path, args) -> None:
        pass

    def left(self, path, output) -> None:
        pass

    def escaped(self, output) -> None:
        pass

    def __torch_function__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


def models() -> dict[str, tuple[torch_adapter.TorchModule, object]]:
    torch.manual_seed(0)
    bert = transformers.BertModel(transformers.BertConfig()).eval()
    ids = np.random.default_rng(0).integers(0, 1000, (2, 8))
    resnet = tvm.resnet50(weights=None).eval()
    image = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    return {"BERT-base": (torch_adapter.TorchModule(bert, "bert"), {"input_ids": ids, "attention_mask": np.ones_like(ids)}),
            "ResNet50": (torch_adapter.TorchModule(resnet, "resnet"), [image])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help=argparse.SUPPRESS)  # run_all's flag
    args = parser.parse_args()
    real = torch_adapter._Flow
    rows = []
    for name, (handle, given) in models().items():
        times: dict[str, list[float]] = {"flow": [], "none": []}
        for run in range(args.runs + 1):
            for key, mode in (("flow", real), ("none", _NoFlow)):
                torch_adapter._Flow = mode
                start = time.perf_counter()
                handle.trace(given)
                if run:  # the first round warms up
                    times[key].append(time.perf_counter() - start)
        torch_adapter._Flow = real
        flow, none = statistics.median(times["flow"]), statistics.median(times["none"])
        rows.append((f"{name} torch trace", f"{flow:.3f} s", f"{none:.3f} s", f"{flow / none:.2f}x",
                     f"<= {TARGET}x", flow / none <= TARGET))
    print_table(f"the torch trace with the flow mode against without it ({machine()})", rows,
                header=("measure", "with flow", "without", "ratio", "target", "met"))


if __name__ == "__main__":
    main()
