"""members, weights, shapes, doc, help and the Python fallback, through ``Session.run_line`` with real
torch and Keras models (the LeNet-5 demo plus small models with buffers, tied weights and nesting).

Expected values come from the frameworks themselves (``state_dict()``, ``parameters()``,
``count_params()``, ``named_children()``), so the tests check modelshell against an independent count.
"""
from __future__ import annotations

import io
import json
import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from modelshell.cli import load_demo  # noqa: E402
from modelshell.commands import default_registry  # noqa: E402
from modelshell.frameworks.detect import wrap_object  # noqa: E402
from modelshell.core.lines import complete_inputs  # noqa: E402
from modelshell.render.printer import Printer  # noqa: E402
from modelshell.core.results import Outcome, Table, Text, Tree  # noqa: E402
from modelshell.core.session import Session, is_command_line  # noqa: E402

TORCH_NAMES = [f"{layer}.{role}" for layer in (0, 3, 6, 9, 11) for role in ("weight", "bias")]
TORCH_SHAPES = ["(6, 1, 5, 5)", "(6,)", "(16, 6, 5, 5)", "(16,)", "(120, 16, 5, 5)", "(120,)",
                "(84, 120)", "(84,)", "(10, 84)", "(10,)"]
KERAS_SHAPES = ["(5, 5, 1, 6)", "(6,)", "(5, 5, 6, 16)", "(16,)", "(5, 5, 16, 120)", "(120,)",
                "(120, 84)", "(84,)", "(84, 10)", "(10,)"]


# --- models the demo lacks: buffers, tied weights, nesting, members of every kind ----------------------
class Net(nn.Module):
    """Nested torch module: a conv, a BatchNorm (buffers), a Sequential head, a bare Parameter, a buffer,
    and a property that raises (listing members must survive it)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        self.scale = nn.Parameter(torch.ones(3))
        self.register_buffer("mask", torch.zeros(2))

    def forward(self, x):
        return self.head(self.bn(self.conv(x)))

    @property
    def broken(self):
        raise RuntimeError("reading this property fails")


class Tied(nn.Module):
    """A language-model-style head whose decoder shares the embedding matrix."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(10, 4)
        self.decoder = nn.Linear(4, 10)
        self.decoder.weight = self.embedding.weight


class SubclassedKeras(keras.Model):
    """A subclassed Keras model whose sub-layers are attributes, one of them a Sequential."""

    def __init__(self) -> None:
        super().__init__(name="sub")
        self.encoder = keras.layers.Dense(4, name="encoder")
        self.block = keras.Sequential([keras.layers.Dense(3, name="b1"), keras.layers.Dense(2, name="b2")],
                                      name="block")

    def call(self, x):
        return self.block(self.encoder(x))


def _keras_functional_with_bn():
    """A functional model with a Sequential (Dense + BatchNormalization) inside it."""
    inputs = keras.Input((8,), name="features")
    inner = keras.Sequential([keras.layers.Dense(4, name="d1"), keras.layers.BatchNormalization(name="bn")],
                             name="block")
    outputs = keras.layers.Dense(2, name="head")(inner(inputs))
    return keras.Model(inputs, outputs, name="outer")


def _keras_subclassed():
    model = SubclassedKeras()
    model(keras.ops.zeros((1, 5)))  # build the variables
    return model


@pytest.fixture(scope="module")
def insp_session() -> Session:
    """The demo plus the extra models, built once for the module; tests here only read it."""
    session = Session()
    load_demo(session)
    extras = {"net": Net().eval(), "tied": Tied(), "kbn": _keras_functional_with_bn(), "ksub": _keras_subclassed()}
    for name, obj in extras.items():
        session.add(name, wrap_object(obj, "built by the test"))
    return session


@pytest.fixture
def insp_fresh(insp_session: Session) -> Session:
    """A new session holding the same model objects, for tests that bind variables or break things."""
    session = Session()
    for name in ("torch_model", "keras_model"):
        session.add(name, insp_session.model(name))
    return session


# --- helpers --------------------------------------------------------------------------------------------
def run_ok(session: Session, line: str) -> Outcome:
    outcome = session.run_line(line)
    assert outcome.ok, f"{line!r} failed: {outcome.error}"
    assert outcome.error is None
    return outcome


def run_fail(session: Session, line: str) -> Outcome:
    outcome = session.run_line(line)
    assert not outcome.ok, f"{line!r} should have failed"
    assert outcome.error and "\n" not in outcome.error, f"not one line: {outcome.error!r}"
    assert not outcome.results
    return outcome


def single(outcome: Outcome, kind: type):
    assert len(outcome.results) == 1, outcome.results
    result = outcome.results[0]
    assert isinstance(result, kind), result
    return result


def render(outcome: Outcome) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    Printer(out=out, err=err).show(outcome)
    return out.getvalue(), err.getvalue()


def column(table: Table, header: str) -> list[str]:
    index = [c.header for c in table.columns].index(header)
    return [row[index] for row in table.rows]


def row_of(table: Table, name: str) -> dict[str, str]:
    headers = [c.header for c in table.columns]
    rows = [dict(zip(headers, row)) for row in table.rows if row[headers.index("name")] == name]
    assert len(rows) == 1, f"{name} appears {len(rows)} times"
    return rows[0]


def text_of(outcome: Outcome) -> str:
    return single(outcome, Text).text


# --- weights --------------------------------------------------------------------------------------------
def test_weights_torch_rows_follow_state_dict(insp_session):
    table = single(run_ok(insp_session, "weights torch_model"), Table)
    torch_model = insp_session.namespace["torch_model"]
    assert column(table, "name") == TORCH_NAMES == list(torch_model.state_dict())
    assert column(table, "shape") == TORCH_SHAPES
    assert set(column(table, "dtype")) == {"float32"}
    assert set(column(table, "trainable")) == {"yes"}
    assert table.footer == ["10 tensors, 61,706 parameters (61,706 trainable, 0 non-trainable)"]
    out, err = render(run_ok(insp_session, "weights torch_model"))
    assert "0.weight" in out and "(6, 1, 5, 5)" in out and "61,706 parameters" in out
    assert err == ""


def test_weights_keras_shapes_follow_model_weights(insp_session):
    table = single(run_ok(insp_session, "weights keras_model"), Table)
    keras_model = insp_session.namespace["keras_model"]
    assert column(table, "shape") == KERAS_SHAPES
    assert column(table, "shape") == [str(tuple(v.shape)) for v in keras_model.weights]
    assert column(table, "name") == [v.path for v in keras_model.weights]
    assert column(table, "name")[0].endswith("conv2d/kernel")


def test_weights_totals_match_the_frameworks_own_counts(insp_session):
    torch_model = insp_session.namespace["torch_model"]
    keras_model = insp_session.namespace["keras_model"]
    torch_total = sum(p.numel() for p in torch_model.parameters())
    keras_total = keras_model.count_params()
    assert torch_total == keras_total == 61_706
    torch_table = single(run_ok(insp_session, "weights torch_model"), Table)
    keras_table = single(run_ok(insp_session, "weights keras_model"), Table)
    assert torch_table.data["totals"] == {"total": torch_total, "trainable": torch_total, "non_trainable": 0, "buffers": 0}
    assert keras_table.data["totals"]["total"] == keras_total
    assert sum(int(n.replace(",", "")) for n in column(keras_table, "params")) == keras_total
    assert f"{keras_total:,} parameters" in keras_table.footer[0]


def test_weights_filter_is_a_case_insensitive_substring(insp_session):
    table = single(run_ok(insp_session, "weights torch_model bias"), Table)
    assert column(table, "name") == [n for n in TORCH_NAMES if n.endswith(".bias")]
    torch_model = insp_session.namespace["torch_model"]
    bias_total = sum(p.numel() for n, p in torch_model.named_parameters() if "bias" in n)
    assert table.data["totals"]["total"] == bias_total == 236
    assert table.footer[0].startswith("5 tensors of 10 matching 'bias', 236 parameters")
    kernels = single(run_ok(insp_session, "weights keras_model KERNEL"), Table)
    assert len(kernels.rows) == 5 and all(n.endswith("/kernel") for n in column(kernels, "name"))


def test_weights_filter_glob(insp_session):
    table = single(run_ok(insp_session, "weights torch_model '*.weight'"), Table)
    assert column(table, "name") == [n for n in TORCH_NAMES if n.endswith(".weight")]
    first = single(run_ok(insp_session, "weights torch_model '1?.*'"), Table)
    assert column(first, "name") == ["11.weight", "11.bias"]
    none = single(run_ok(insp_session, "weights torch_model '*.nothing'"), Table)
    assert none.rows == [] and none.footer[0].startswith("0 tensors of 10")


def test_weights_json_is_one_parseable_line(insp_session):
    outcome = run_ok(insp_session, "weights torch_model --json")
    assert outcome.as_json
    out, err = render(outcome)
    assert err == ""
    assert out.endswith("\n") and out.count("\n") == 1
    data = json.loads(out)
    assert data["model"] == "torch_model" and data["framework"] == "torch"
    assert [w["name"] for w in data["weights"]] == TORCH_NAMES
    assert [str(tuple(w["shape"])) for w in data["weights"]] == TORCH_SHAPES
    assert {w["dtype"] for w in data["weights"]} == {"float32"}
    assert data["totals"]["total"] == 61_706


def test_weights_json_keras_with_filter(insp_session):
    out, _ = render(run_ok(insp_session, "weights keras_model kernel --json"))
    assert out.count("\n") == 1
    data = json.loads(out)
    assert data["framework"] == "keras"
    assert [tuple(w["shape"]) for w in data["weights"]] == [(5, 5, 1, 6), (5, 5, 6, 16), (5, 5, 16, 120),
                                                            (120, 84), (84, 10)]


# --- buffers and tied weights ---------------------------------------------------------------------------
def test_weights_torch_batchnorm_buffers_in_state_dict_order(insp_session):
    net = insp_session.namespace["net"]
    table = single(run_ok(insp_session, "weights net"), Table)
    assert column(table, "name") == list(net.state_dict())
    for buffer in ("bn.running_mean", "bn.running_var", "bn.num_batches_tracked", "mask"):
        row = row_of(table, buffer)
        assert row["trainable"] == "no" and row["note"] == "buffer", row
    for parameter in ("conv.weight", "bn.weight", "bn.bias", "head.1.weight", "scale"):
        row = row_of(table, parameter)
        assert row["trainable"] == "yes" and row["note"] == "", row
    assert row_of(table, "bn.num_batches_tracked")["dtype"] == "int64"
    assert row_of(table, "bn.num_batches_tracked")["shape"] == "()"
    kinds = {w["name"]: w["kind"] for w in table.data["weights"]}
    assert kinds["bn.running_var"] == "buffer" and kinds["bn.weight"] == "parameter"
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    assert table.data["totals"]["trainable"] == trainable
    # as torchinfo: parameters are counted, buffers reported apart
    assert table.data["totals"]["total"] == sum(p.numel() for p in net.parameters())
    assert table.data["totals"]["buffers"] == sum(b.numel() for b in net.buffers())
    assert f"and {sum(b.numel() for b in net.buffers()):,} values in buffers" in table.footer[0]


def test_weights_keras_batchnorm_moving_stats_are_non_trainable(insp_session):
    model = insp_session.namespace["kbn"]
    table = single(run_ok(insp_session, "weights kbn"), Table)
    assert column(table, "name") == [v.path for v in model.weights]
    trainable = dict(zip(column(table, "name"), column(table, "trainable")))
    assert trainable["block/bn/moving_mean"] == "no"
    assert trainable["block/bn/moving_variance"] == "no"
    assert trainable["block/bn/gamma"] == "yes" and trainable["block/bn/beta"] == "yes"
    totals = table.data["totals"]
    assert totals["total"] == model.count_params()
    assert totals["trainable"] == sum(int(v.numpy().size) for v in model.trainable_weights)
    assert totals["non_trainable"] == 8


def test_weights_tied_parameters_count_once(insp_session):
    tied = insp_session.namespace["tied"]
    table = single(run_ok(insp_session, "weights tied"), Table)
    assert column(table, "name") == ["embedding.weight", "decoder.weight", "decoder.bias"]
    assert row_of(table, "decoder.weight")["note"] == "tied to embedding.weight"
    assert row_of(table, "embedding.weight")["note"] == ""
    unique = sum(p.numel() for p in tied.parameters())  # parameters() yields a shared tensor once
    assert unique == 50
    assert table.data["totals"]["total"] == unique
    assert "3 tensors, 50 parameters" in table.footer[0]
    out, _ = render(run_ok(insp_session, "weights tied"))
    assert "tied to embedding.weight" in out
    tree = single(run_ok(insp_session, "shapes tied"), Tree)
    assert tree.data["tree"]["params"] == unique


# --- members --------------------------------------------------------------------------------------------
def test_members_torch_state(insp_session):
    table = single(run_ok(insp_session, "members torch_model state"), Table)
    names = column(table, "name")
    assert {"state_dict", "load_state_dict"} <= set(names)
    assert all("state" in n.lower() and not n.startswith("_") for n in names)
    assert names == sorted(n for n in dir(insp_session.namespace["torch_model"])
                           if "state" in n.lower() and not n.startswith("_"))
    assert row_of(table, "state_dict")["kind"] == "method"
    assert table.data["members"][0].keys() == {"name", "kind", "type", "doc"}


def test_members_keras_weight(insp_session):
    table = single(run_ok(insp_session, "members keras_model weight"), Table)
    names = column(table, "name")
    assert {"get_weights", "set_weights", "weights"} <= set(names)
    assert row_of(table, "get_weights")["kind"] == "method"
    assert row_of(table, "weights")["kind"] == "property"
    assert row_of(table, "weights")["type"] == "list"
    assert "NumPy" in row_of(table, "set_weights")["doc"]


def test_members_private_adds_underscore_names(insp_session):
    public = set(column(single(run_ok(insp_session, "members torch_model state"), Table), "name"))
    private = set(column(single(run_ok(insp_session, "members torch_model state --private"), Table), "name"))
    assert "_load_from_state_dict" in private and "_save_to_state_dict" in private
    assert public < private
    assert all(n.startswith("_") for n in private - public)


def test_members_kinds_of_a_custom_module(insp_session):
    table = single(run_ok(insp_session, "members net"), Table)
    kinds = dict(zip(column(table, "name"), column(table, "kind")))
    types = dict(zip(column(table, "name"), column(table, "type")))
    assert kinds["conv"] == "module" and types["conv"] == "Conv2d"
    assert kinds["head"] == "module" and types["head"] == "Sequential"
    assert kinds["scale"] == "parameter"
    assert kinds["mask"] == "buffer"
    assert kinds["forward"] == "method"
    assert kinds["training"] == "attribute" and types["training"] == "bool"
    assert kinds["broken"] == "property" and types["broken"] == "?"
    conv_only = single(run_ok(insp_session, "members net conv"), Table)
    assert column(conv_only, "name") == ["conv"]
    assert "convolution" in row_of(conv_only, "conv")["doc"]


def test_members_of_a_subclassed_keras_model_lists_layers(insp_session):
    table = single(run_ok(insp_session, "members ksub '*e*r'"), Table)
    kinds = dict(zip(column(table, "name"), column(table, "kind")))
    assert kinds["encoder"] == "layer"
    block = single(run_ok(insp_session, "members ksub block"), Table)
    assert row_of(block, "block")["type"] == "Sequential"


# --- shapes ---------------------------------------------------------------------------------------------
def _weights_of(node: dict) -> dict[str, tuple[int, ...]]:
    return {w["role"]: tuple(w["shape"]) for w in node["weights"]}


def test_shapes_torch_tree(insp_session):
    tree = single(run_ok(insp_session, "shapes torch_model"), Tree)
    torch_model = insp_session.namespace["torch_model"]
    root = tree.data["tree"]
    assert root["class"] == "Sequential" and root["params"] == 61_706
    assert [(c["name"], c["class"]) for c in root["children"]] == [
        (name, type(module).__name__) for name, module in torch_model.named_children()]
    first, last = root["children"][0], root["children"][11]
    assert _weights_of(first) == {"weight": (6, 1, 5, 5), "bias": (6,)}
    assert _weights_of(last) == {"weight": (10, 84), "bias": (10,)}
    assert root["children"][1]["weights"] == [] and root["children"][1]["params"] == 0
    assert tree.root.label == "torch_model"
    out, _ = render(run_ok(insp_session, "shapes torch_model"))
    assert "Conv2d  weight (6, 1, 5, 5)  bias (6,)" in out
    assert "61,706 parameters in 10 tensors" in out


def test_shapes_keras_tree(insp_session):
    tree = single(run_ok(insp_session, "shapes keras_model"), Tree)
    keras_model = insp_session.namespace["keras_model"]
    root = tree.data["tree"]
    assert [(c["name"], c["class"]) for c in root["children"]] == [
        (layer.name, type(layer).__name__) for layer in keras_model.layers]
    assert _weights_of(root["children"][0]) == {"kernel": (5, 5, 1, 6), "bias": (6,)}
    assert root["params"] == keras_model.count_params()


def test_shapes_nested_torch_module(insp_session):
    root = single(run_ok(insp_session, "shapes net"), Tree).data["tree"]
    children = {c["name"]: c for c in root["children"]}
    assert list(children) == ["conv", "bn", "head"]
    assert children["bn"]["class"] == "BatchNorm2d"
    assert set(_weights_of(children["bn"])) == {"weight", "bias", "running_mean", "running_var",
                                                 "num_batches_tracked"}
    head = children["head"]
    assert [(c["name"], c["class"]) for c in head["children"]] == [("0", "Flatten"), ("1", "Linear")]
    assert _weights_of(head["children"][1]) == {"weight": (2, 4), "bias": (2,)}
    assert head["params"] == 10
    assert _weights_of(root) == {"scale": (3,), "mask": (2,)}  # owned by the root module itself


def test_shapes_nested_keras_functional(insp_session):
    root = single(run_ok(insp_session, "shapes kbn"), Tree).data["tree"]
    assert root["class"] == "Functional"
    assert [(c["name"], c["class"]) for c in root["children"]] == [("block", "Sequential"), ("head", "Dense")]
    block = root["children"][0]
    assert [(c["name"], c["class"]) for c in block["children"]] == [("d1", "Dense"), ("bn", "BatchNormalization")]
    assert _weights_of(block["children"][1]) == {"gamma": (4,), "beta": (4,), "moving_mean": (4,),
                                                 "moving_variance": (4,)}
    assert _weights_of(root["children"][1]) == {"kernel": (4, 2), "bias": (2,)}
    assert block["params"] == 8 * 4 + 4 + 4 * 4


def test_shapes_subclassed_keras(insp_session):
    tree = single(run_ok(insp_session, "shapes ksub"), Tree)
    root = tree.data["tree"]
    assert [(c["name"], c["class"]) for c in root["children"]] == [("encoder", "Dense"), ("block", "Sequential")]
    assert [c["name"] for c in root["children"][1]["children"]] == ["b1", "b2"]
    assert _weights_of(root["children"][0]) == {"kernel": (5, 4), "bias": (4,)}
    assert root["params"] == insp_session.namespace["ksub"].count_params()


# --- doc --------------------------------------------------------------------------------------------------
def test_doc_of_a_method(insp_session):
    outcome = run_ok(insp_session, "doc torch_model.load_state_dict")
    text = single(outcome, Text)
    assert "state_dict" in text.text and "load_state_dict" in text.text


def test_doc_question_mark_forms(insp_session):
    before = text_of(run_ok(insp_session, "?torch_model"))
    assert "Sequential" in before
    after = text_of(run_ok(insp_session, "torch_model.state_dict?"))
    assert "Return a dictionary containing references" in after
    assert after == text_of(run_ok(insp_session, "doc torch_model.state_dict"))
    assert "NumPy" in text_of(run_ok(insp_session, "? keras_model.set_weights"))


def test_doc_unknown_member_is_one_error_line(insp_session):
    outcome = run_fail(insp_session, "doc torch_model.nosuch")
    assert "torch_model has no member 'nosuch'" in outcome.error
    out, err = render(outcome)
    assert out == "" and err.startswith("error: ") and err.count("\n") == 1
    assert "no model or variable named 'nosuch'" in run_fail(insp_session, "?nosuch.attr").error


# --- Python lines -----------------------------------------------------------------------------------------
def test_python_assignment_and_display(insp_fresh):
    assert run_ok(insp_fresh, 'x = torch_model.state_dict()["0.weight"].shape').results == []
    assert text_of(run_ok(insp_fresh, "x")).strip() == "torch.Size([6, 1, 5, 5])"
    assert insp_fresh.namespace["_"] == torch.Size([6, 1, 5, 5])
    assert text_of(run_ok(insp_fresh, "_[0] * 7")).strip() == "42"
    assert insp_fresh.namespace["_"] == 42


def test_python_print_is_captured(insp_fresh, capsys):
    outcome = run_ok(insp_fresh, "print('hello', 1 + 1)")
    assert text_of(outcome) == "hello 2\n"
    assert capsys.readouterr().out == ""


def test_python_exception_is_one_line_and_models_survive(insp_fresh):
    outcome = run_fail(insp_fresh, "1/0")
    assert outcome.error == "ZeroDivisionError: division by zero"
    assert outcome.traceback is None
    _, err = render(outcome)
    assert err == "error: ZeroDivisionError: division by zero\n"
    assert insp_fresh.model_names() == ["torch_model", "keras_model"]
    assert len(single(run_ok(insp_fresh, "weights torch_model"), Table).rows) == 10
    name_error = run_fail(insp_fresh, "undefined_thing + 1")
    assert name_error.error == "NameError: name 'undefined_thing' is not defined"


def test_python_exception_with_debug_keeps_the_traceback(insp_session):
    session = Session(debug=True)
    outcome = session.run_line("int('x')")
    assert not outcome.ok and outcome.error.startswith("ValueError: invalid literal")
    assert "Traceback" in outcome.traceback


def test_python_syntax_error_is_one_line(insp_fresh):
    assert run_fail(insp_fresh, "x = (1,").error.startswith("SyntaxError")


def test_python_block_via_complete_inputs(insp_fresh):
    lines = ["total = 0", "for i in range(3):", "    total += i", "", "if total > 100:", "    kind = 'big'",
             "else:", "    kind = 'small'", "print(total, kind)"]
    inputs = list(complete_inputs(lines, insp_fresh.needs_more))
    assert [number for number, _ in inputs] == [1, 2, 5, 9]
    assert inputs[1][1] == "for i in range(3):\n    total += i"
    outcomes = [run_ok(insp_fresh, text) for _, text in inputs]
    assert text_of(outcomes[-1]) == "3 small\n"


def test_python_block_printing_in_a_loop(insp_fresh):
    inputs = list(complete_inputs(["for i in range(2):", "    print(i)", ""], insp_fresh.needs_more))
    assert len(inputs) == 1
    assert text_of(run_ok(insp_fresh, inputs[0][1])) == "0\n1\n"


def test_complete_inputs_keeps_open_brackets_and_decorators_together(insp_fresh):
    lines = ["import torch", "lin = torch.nn.Sequential(", "    torch.nn.Linear(3, 4),", ")", "weights lin",
             "@staticmethod", "def f():", "    return 1", "", "values = [", "", "1, 2]", "values"]
    inputs = list(complete_inputs(lines, insp_fresh.needs_more))
    assert [number for number, _ in inputs] == [1, 2, 5, 6, 10, 13]
    assert inputs[1][1] == "lin = torch.nn.Sequential(\n    torch.nn.Linear(3, 4),\n)"
    outcomes = [run_ok(insp_fresh, text) for _, text in inputs]
    assert column(single(outcomes[2], Table), "name") == ["0.weight", "0.bias"]
    assert isinstance(insp_fresh.namespace["f"], staticmethod)
    assert text_of(outcomes[-1]).strip() == "[1, 2]"


def test_needs_more_keeps_a_block_open_until_a_blank_line(insp_fresh):
    assert insp_fresh.needs_more("for i in range(2):")
    assert insp_fresh.needs_more("for i in range(2):\n    print(i)")  # the REPL waits for a blank line
    assert not insp_fresh.needs_more("x = 1")
    assert not insp_fresh.needs_more("weights torch_model")
    assert not insp_fresh.needs_more("")


def test_python_bound_torch_module_becomes_a_model(insp_fresh):
    run_ok(insp_fresh, "import torch; lin = torch.nn.Linear(3, 4)")
    table = single(run_ok(insp_fresh, "weights lin"), Table)
    assert column(table, "name") == ["weight", "bias"]
    assert column(table, "shape") == ["(4, 3)", "(4,)"]
    models = single(run_ok(insp_fresh, "models"), Table)
    assert column(models, "name") == ["torch_model", "keras_model", "lin"]
    assert row_of(models, "lin")["source"] == "Python variable"
    assert row_of(models, "lin")["params"] == "16"
    run_ok(insp_fresh, "lin = 5")
    assert "lin is an int, not a model" in run_fail(insp_fresh, "weights lin").error
    assert "lin" not in column(single(run_ok(insp_fresh, "models"), Table), "name")


def test_python_bound_keras_model_becomes_a_model(insp_fresh):
    run_ok(insp_fresh, "import keras; km = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name='out')])")
    table = single(run_ok(insp_fresh, "weights km"), Table)
    assert column(table, "shape") == ["(3, 2)", "(2,)"]
    assert "km" in insp_fresh.model_names()


def test_rebinding_a_model_name_follows_the_namespace(insp_fresh):
    run_ok(insp_fresh, "torch_model = torch_model[:1]")  # Sequential slicing: only the first conv
    assert column(single(run_ok(insp_fresh, "weights torch_model"), Table), "name") == ["0.weight", "0.bias"]
    run_ok(insp_fresh, "del keras_model")
    assert insp_fresh.model_names() == ["torch_model"]
    assert "no model named 'keras_model'" in run_fail(insp_fresh, "weights keras_model").error


def test_non_model_variable_gives_a_clear_error(insp_fresh):
    run_ok(insp_fresh, "x = 3")
    assert run_fail(insp_fresh, "weights x").error == "x is an int, not a model (a torch module or Keras model)"
    run_ok(insp_fresh, "s = {'a': 1}")
    assert run_fail(insp_fresh, "shapes s").error.startswith("s is a dict, not a model")
    assert run_fail(insp_fresh, "weights nosuch").error.startswith("no model named 'nosuch'")


# --- command or Python? ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "line, is_command",
    [
        ("models", True),
        ("weights torch_model", True),
        ("  weights torch_model bias --json", True),
        ("weights --help", True),
        ("weights -h", True),
        ("help\tweights", True),
        ("doc torch_model.state_dict", True),
        ("load /tmp/lenet5.pt", True),
        ("load ./lenet5.pt as net", True),
        ("weights * 2", False),
        ("weights += 1", False),
        ("models in things", False),
        ("weights = 3", False),
        ("weights == 3", False),
        ("weights - 1", False),
        ("help(len)", False),
        ("help (len)", False),
        ("models.keys()", False),
        ("models[0]", False),
        ("weightsx torch_model", False),
        ("x = 1", False),
        ("print('weights torch_model')", False),
    ],
)
def test_is_command_line(line, is_command):
    assert is_command_line(line, default_registry()) is is_command


def test_command_names_used_as_python(insp_fresh):
    run_ok(insp_fresh, "weights = 3")
    assert insp_fresh.namespace["weights"] == 3
    assert len(single(run_ok(insp_fresh, "weights torch_model"), Table).rows) == 10  # still the command
    assert "len(obj" in text_of(run_ok(insp_fresh, "help(len)"))
    assert isinstance(single(run_ok(insp_fresh, "models"), Table), Table)
    assert "lists modelshell's commands" in text_of(run_ok(insp_fresh, "help()"))  # no hidden pydoc prompt


def test_tab_after_a_command_name(insp_fresh):
    assert "usage: weights" in text_of(run_ok(insp_fresh, "help\tweights"))
    assert len(single(run_ok(insp_fresh, "weights\ttorch_model"), Table).rows) == 10


def test_load_with_a_path_is_the_command_not_python_division(insp_fresh):
    outcome = run_fail(insp_fresh, "load /nonexistent/dir/lenet5.pt")
    assert outcome.error == "/nonexistent/dir/lenet5.pt: no such file"
    assert run_fail(insp_fresh, "load ./nonexistent.pt").error == "nonexistent.pt: no such file"


def test_unknown_words_fall_through_to_python(insp_fresh):
    assert run_fail(insp_fresh, "frobnicate").error == "NameError: name 'frobnicate' is not defined"
    # a word followed by arguments is neither Python nor a command: say so rather than "invalid syntax"
    assert run_fail(insp_fresh, "frobnicate torch_model").error.startswith("unknown command 'frobnicate'")


# --- help ---------------------------------------------------------------------------------------------------
def test_help_lists_every_command(insp_fresh):
    text = text_of(run_ok(insp_fresh, "help"))
    for name, command in insp_fresh.commands.items():
        assert f"  {name}" in text and command.summary in text
    assert "Any other line is Python" in text


def test_help_for_one_command_has_usage_and_examples(insp_fresh):
    text = text_of(run_ok(insp_fresh, "help weights"))
    assert text.startswith("usage: weights")
    assert "examples:" in text and "  weights torch_model" in text
    assert "--json" in text and "filter" in text
    assert text_of(run_ok(insp_fresh, "weights --help")) == text
    assert text_of(run_ok(insp_fresh, "weights -h")) == text
    assert text_of(run_ok(insp_fresh, "weights torch_model --help")) == text


def test_question_mark_on_a_command_name_shows_its_help(insp_fresh):
    assert text_of(run_ok(insp_fresh, "weights?")) == text_of(run_ok(insp_fresh, "help weights"))
    assert text_of(run_ok(insp_fresh, "?members")).startswith("usage: members")


def test_help_for_an_unknown_command(insp_fresh):
    outcome = run_fail(insp_fresh, "help nosuch")
    assert outcome.error == "no command 'nosuch' (`help` lists the commands)"


def test_bad_arguments_are_one_line(insp_fresh):
    assert "arguments are required" in run_fail(insp_fresh, "weights").error
    assert "unrecognized arguments" in run_fail(insp_fresh, "weights torch_model --nosuch").error
    assert "close the quote" in run_fail(insp_fresh, "weights torch_model 'bias").error


@pytest.mark.parametrize(
    "line, expected",
    [
        ("wieghts torch_model", "unknown command 'wieghts' (and not valid Python either) (did you mean `weights`?"),
        ("foo bar", "unknown command 'foo' (and not valid Python either) (`help` lists the commands)"),
        ("modles", "NameError: name 'modles' is not defined (did you mean the command `models`?)"),
    ],
)
def test_unknown_commands_say_so_and_suggest_the_close_one(insp_fresh, line, expected):
    before = insp_fresh.model_names()
    outcome = run_fail(insp_fresh, line)
    assert outcome.error.startswith(expected), outcome.error
    assert insp_fresh.model_names() == before


def test_invalid_python_that_is_not_a_command_line_stays_a_syntax_error(insp_fresh):
    outcome = run_fail(insp_fresh, "x = (1,")
    assert outcome.error.startswith("SyntaxError:"), outcome.error
