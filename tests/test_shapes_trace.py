"""`shapes NAME` shows each layer's output shape from one traced forward pass, as torchinfo and Keras
``summary()`` do, and says in the footer which input it traced with, or why there are none.

Every output shape is checked against an independent run: torch forward hooks on the model itself, and
for Keras a ``keras.Model(inputs, layer.output)`` per layer; the input shapes are the ones the footer
names, made here with numpy.
"""
from __future__ import annotations

import io
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

import real_models  # noqa: E402

real_models.import_torchvision()

import keras  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from torch import nn  # noqa: E402

from modelshell.cli import load_demo  # noqa: E402
from modelshell.render.printer import Printer  # noqa: E402
from modelshell.core.results import Tree  # noqa: E402
from modelshell.core.session import Session  # noqa: E402


class Cnn(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(16 * 8 * 8, 10))

    def forward(self, x):
        return self.head(self.features(x))


def _shapes(session: Session, line: str) -> tuple[Tree, str]:
    outcome = session.run_line(line)
    assert outcome.ok, outcome.error
    (tree,) = outcome.results
    assert isinstance(tree, Tree)
    out = io.StringIO()
    Printer(out=out, err=io.StringIO()).show(outcome)
    return tree, out.getvalue()


def _by_path(node: dict, sep: str, path: str = "") -> dict[str, tuple[int, ...] | None]:
    """Each node below the root by its path, with the output shape ``--json`` gives it."""
    found = {}
    for child in node["children"]:
        child_path = f"{path}{sep}{child['name']}" if path else child["name"]
        found[child_path] = None if child["output_shape"] is None else tuple(child["output_shape"])
        found.update(_by_path(child, sep, child_path))
    return found


def _first_tensor(value):
    if isinstance(value, torch.Tensor):
        return value
    items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else []
    return next((t for t in map(_first_tensor, items) if t is not None), None)


def _hooked_shapes(module: nn.Module, *args, **kwargs) -> dict[str, tuple[int, ...]]:
    """The first output tensor's shape of every submodule's first call, by forward hooks."""
    seen: dict[str, tuple[int, ...]] = {}

    def hook(path):
        def record(_, __, output):
            tensor = _first_tensor(output)
            if tensor is not None:
                seen.setdefault(path, tuple(tensor.shape))
        return record

    handles = [m.register_forward_hook(hook(p)) for p, m in module.named_modules() if p]
    try:
        module.eval()
        with torch.no_grad():
            module(*args, **kwargs)
    finally:
        for handle in handles:
            handle.remove()
    return seen


def test_a_torch_cnn_shows_each_layers_output_shape():
    torch.manual_seed(0)
    session = Session()
    session.namespace["cnn"] = model = Cnn()
    tree, out = _shapes(session, "shapes cnn")
    expected = _hooked_shapes(model, torch.randn(2, 3, 32, 32))
    got = _by_path(tree.data["tree"], ".")
    assert set(got) == set(expected) == {p for p, _ in model.named_modules() if p}
    assert got == expected
    assert got["features.6"] == (2, 16, 8, 8) and got["head.1"] == (2, 10)
    assert "6  MaxPool2d  output (2, 16, 8, 8)" in out
    assert "1  Linear  weight (10, 1024)  bias (10,)  10,250 params  output (2, 10)" in out
    assert tree.footer[-1] == ("output shapes from one forward pass on a seeded input (its size a guess: the "
                               "first of 32, 28, 224 pixels a side that ran): (2, 3, 32, 32) float32")
    assert tree.data["inputs"] == [{"name": "", "shape": [2, 3, 32, 32], "dtype": "float32"}]
    assert tree.data["tree"]["output_shape"] is None  # the model itself: its output is its last layer's


def test_the_demo_lenet_runs_on_the_second_image_size_and_a_wrong_size_says_so():
    session = Session()
    load_demo(session)
    tree, _ = _shapes(session, "shapes torch_model")
    expected = _hooked_shapes(session.namespace["torch_model"], torch.randn(2, 1, 28, 28))
    assert _by_path(tree.data["tree"], ".") == expected and expected["11"] == (2, 10)
    assert tree.footer[-1].endswith("that ran): (2, 1, 28, 28) float32")

    session.namespace["tnet"] = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 8 * 8, 3))
    tree, out = _shapes(session, "shapes tnet")
    assert "output (" not in out
    assert set(_by_path(tree.data["tree"], ".").values()) == {None} and tree.data["inputs"] is None
    assert tree.footer[-1].startswith(
        "no output shapes: it did not run on any of the seeded inputs tried, (2, 1, 32, 32) float32; "
        "(2, 1, 28, 28) float32; (2, 1, 224, 224) float32 (RuntimeError: mat1 and mat2 shapes cannot be multiplied")
    assert tree.footer[-1].endswith("; --input FILE gives it one")


def test_input_gives_the_input_to_trace_with(tmp_path):
    torch.manual_seed(0)
    session = Session()
    session.namespace["tnet"] = model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 8 * 8, 3))
    np.save(tmp_path / "x.npy", np.zeros((5, 1, 10, 10), np.float32))
    tree, _ = _shapes(session, f"shapes tnet --input {tmp_path / 'x.npy'}")
    assert _by_path(tree.data["tree"], ".") == _hooked_shapes(model, torch.zeros(5, 1, 10, 10))
    assert tree.footer[-1] == (f"output shapes from one forward pass on the input of {tmp_path / 'x.npy'}: "
                               "(5, 1, 10, 10) float32")


def test_a_keras_cnn_shows_each_layers_output_shape():
    keras.utils.set_random_seed(0)
    block = keras.Sequential([keras.layers.Conv2D(16, 3, padding="same", name="conv2"),
                              keras.layers.MaxPooling2D(2, name="pool2")], name="block")
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = keras.layers.MaxPooling2D(2, name="pool1")(x)
    x = block(x)
    x = keras.layers.Flatten(name="flatten")(x)
    model = keras.Model(inputs, keras.layers.Dense(10, name="fc")(x), name="kcnn")
    session = Session()
    session.namespace["kcnn"] = model
    tree, out = _shapes(session, "shapes kcnn")
    x = np.random.default_rng(1).standard_normal((2, 16, 16, 3)).astype(np.float32)
    expected = {name: tuple(keras.Model(model.input, model.get_layer(name).output)(x).shape)
                for name in ("conv1", "pool1", "block", "flatten", "fc")}
    expected["block/conv2"] = tuple(block.get_layer("conv2")(model.get_layer("pool1")(model.get_layer("conv1")(x))).shape)
    expected["block/pool2"] = expected["block"]
    assert _by_path(tree.data["tree"], "/") == expected
    assert expected["block"] == (2, 4, 4, 16)
    assert "pool2  MaxPooling2D  output (2, 4, 4, 16)" in out
    assert tree.footer[-1] == "output shapes from one forward pass on a seeded input: (2, 16, 16, 3) float32"


def test_a_transformers_bert_traces_with_named_inputs():
    torch.manual_seed(0)
    model = transformers.BertModel(real_models.bert_config())
    session = Session()
    session.namespace["bert"] = model
    tree, out = _shapes(session, "shapes bert")
    assert tree.footer[-1] == ("output shapes from one forward pass on a seeded input: input_ids (2, 8) int64, "
                               "attention_mask (2, 8) int64, token_type_ids (2, 8) int64")
    given = {name: torch.zeros(2, 8, dtype=torch.int64) for name in ("input_ids", "attention_mask", "token_type_ids")}
    expected = _hooked_shapes(model, **given)
    got = _by_path(tree.data["tree"], ".")
    assert {p: s for p, s in got.items() if s is not None} == expected
    assert got["embeddings"] == (2, 8, 32) and got["pooler"] == (2, 32)
    assert got["encoder.layer.0.intermediate.dense"] == (2, 8, 37)
    assert "pooler  BertPooler  1,056 params  output (2, 32)" in out


def test_a_weights_only_file_has_no_output_shapes_and_says_why(tmp_path):
    state = Cnn().state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "cnn.safetensors"))
    session = Session()
    assert session.run_line(f"load {tmp_path / 'cnn.safetensors'} as w").ok
    tree, out = _shapes(session, "shapes w")
    assert "output (" not in out
    assert set(_by_path(tree.data["tree"], ".").values()) == {None} and tree.data["inputs"] is None
    assert len(tree.footer) == 2 and tree.footer[0].endswith(f" parameters in {len(state)} tensors")
    assert tree.footer[1] == "no output shapes: a weights-only file has no architecture to run"
    assert out.rstrip().endswith("no output shapes: a weights-only file has no architecture to run")


def test_a_model_whose_input_cannot_be_made_up_says_so():
    session = Session()
    session.namespace["act"] = nn.Sequential(nn.LayerNorm(4), nn.Linear(4, 2))  # a norm does not say its input
    tree, out = _shapes(session, "shapes act")
    assert "output (" not in out and tree.data["inputs"] is None
    assert tree.footer[-1] == "no output shapes: cannot tell the model's input shape (pass one with --input FILE.npy)"
