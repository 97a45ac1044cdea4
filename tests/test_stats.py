"""weights --stats and hist, with real torch and Keras models and a real safetensors file.

Every number is checked against numpy run on the tensor as the framework itself hands it out
(``state_dict()``, ``get_weights()``, the array written to the file), never as modelshell read it:
``np.mean``, ``np.std``, ``np.min``, ``np.max`` and ``np.histogram`` in float64 over the finite values.
The last two tests drive the real shell in tmux and compare with numbers computed in that same shell.
"""
from __future__ import annotations

import io
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import torch  # noqa: E402
from safetensors.numpy import save_file  # noqa: E402
from torch import nn  # noqa: E402

from modelshell import tensor_stats as tensor_stats_module  # noqa: E402
from modelshell.commands.stats import read_stats  # noqa: E402
from modelshell.frameworks.detect import wrap_object  # noqa: E402
from modelshell.render.printer import Printer  # noqa: E402
from modelshell.render.text import outcome_text  # noqa: E402
from modelshell.core.results import Histogram, Outcome, Sparkline, Table  # noqa: E402
from modelshell.core.session import Session  # noqa: E402
from modelshell.tensor_stats import tensor_stats  # noqa: E402
from tmux_terminal import SOCKET  # noqa: E402

SPARK_GLYPHS = " ▁▂▃▄▅▆▇█"
ASCII_GLYPHS = " .:-=+*#"
STAT_KEYS = {"count", "nan", "posinf", "neginf", "mean", "std", "min", "max", "histogram"}


# --- helpers --------------------------------------------------------------------------------------------
def run_ok(session: Session, line: str) -> Outcome:
    outcome = session.run_line(line)
    assert outcome.ok, f"{line!r} failed: {outcome.error}"
    return outcome


def run_fail(session: Session, line: str) -> Outcome:
    outcome = session.run_line(line)
    assert not outcome.ok, f"{line!r} should have failed"
    assert outcome.error and "\n" not in outcome.error, f"not one line: {outcome.error!r}"
    return outcome


def json_of(session: Session, line: str) -> dict:
    out = io.StringIO()
    Printer(out=out, err=io.StringIO()).show(run_ok(session, line))
    assert out.getvalue().count("\n") == 1, "--json prints one line"
    return json.loads(out.getvalue())


def expected(values: np.ndarray, bins: int) -> dict:
    """The statistics by plain numpy, over the finite values in float64."""
    flat = np.asarray(values, dtype=np.float64).reshape(-1)
    finite = flat[np.isfinite(flat)]
    counts, edges = np.histogram(finite, bins=bins)
    return {"count": flat.size, "nan": int(np.isnan(flat).sum()), "posinf": int(np.isposinf(flat).sum()),
            "neginf": int(np.isneginf(flat).sum()), "mean": np.mean(finite), "std": np.std(finite),
            "min": np.min(finite), "max": np.max(finite), "counts": counts.tolist(), "edges": edges.tolist()}


def assert_stats_equal(got: dict, values: np.ndarray, bins: int) -> None:
    want = expected(values, bins)
    assert set(got) == STAT_KEYS
    for key in ("count", "nan", "posinf", "neginf"):
        assert got[key] == want[key], key
    for key in ("mean", "std", "min", "max"):
        assert got[key] == pytest.approx(want[key], rel=1e-12, abs=1e-300), key
    assert got["histogram"]["counts"] == want["counts"]
    assert got["histogram"]["edges"] == pytest.approx(want["edges"], rel=1e-12, abs=1e-300)


def table_rows(table: Table) -> dict[str, dict]:
    headers = [c.header for c in table.columns]
    return {row[0]: dict(zip(headers, row)) for row in table.rows}


class WithOddTensors(nn.Module):
    """Tensors a weights table must survive: NaN and infinities, an empty buffer, integers, booleans."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 3)
        with torch.no_grad():
            self.linear.weight[0, 0] = float("nan")
            self.linear.weight[1, 1] = float("inf")
            self.linear.weight[2, 2] = float("-inf")
            self.linear.weight[2, 3] = float("nan")
        self.register_buffer("empty", torch.zeros(0))
        self.register_buffer("steps", torch.tensor([3, 1, 4, 1, 5, 9, 2, 6], dtype=torch.int64))
        self.register_buffer("mask", torch.tensor([True, False, True, True]))
        self.register_buffer("all_nan", torch.full((3,), float("nan")))


@pytest.fixture(scope="module")
def stats_session() -> Session:
    from modelshell.cli import load_demo

    session = Session()
    load_demo(session)
    session.add("odd", wrap_object(WithOddTensors(), "built by the test"))
    shared = nn.Linear(4, 4)  # the same layer twice: its tensors listed twice, tied to the first listing
    session.add("tied", wrap_object(nn.Sequential(shared, nn.ReLU(), shared), "built by the test"))
    return session


# --- the numbers against numpy --------------------------------------------------------------------------
def test_weights_stats_of_torch_match_numpy_on_state_dict(stats_session):
    data = json_of(stats_session, "weights torch_model --stats --json")
    state = stats_session.namespace["torch_model"].state_dict()
    assert [w["name"] for w in data["weights"]] == list(state)
    for entry in data["weights"]:
        assert_stats_equal(entry["stats"], state[entry["name"]].numpy(), bins=10)


def test_weights_stats_of_keras_match_numpy_on_get_weights(stats_session):
    data = json_of(stats_session, "weights keras_model --stats --json")
    arrays = stats_session.namespace["keras_model"].get_weights()
    assert len(data["weights"]) == len(arrays) == 10
    for entry, array in zip(data["weights"], arrays):
        assert entry["shape"] == list(array.shape)
        assert_stats_equal(entry["stats"], array, bins=10)


def test_the_table_shows_the_numbers_to_three_digits_and_a_sparkline(stats_session):
    table = run_ok(stats_session, "weights torch_model --stats").results[0]
    assert [c.header for c in table.columns] == ["name", "shape", "dtype", "mean", "std", "min", "max", "histogram"]
    state = stats_session.namespace["torch_model"].state_dict()
    for name, row in table_rows(table).items():
        want = expected(state[name].numpy(), bins=10)
        for key in ("mean", "std", "min", "max"):
            assert float(row[key]) == pytest.approx(want[key], rel=5e-3), (name, key)
        assert row["histogram"] == Sparkline(tuple(want["counts"]))
    # The counts stay in the footer; the table has the room for the numbers.
    assert table.footer[0] == "10 tensors, 61,706 parameters (61,706 trainable, 0 non-trainable)"


def test_sparkline_glyphs_follow_the_counts(stats_session):
    """In ASCII (transcripts) and in block characters (terminals): a blank exactly where a bin is empty,
    the tallest glyph where it is fullest, heights within half a step of the count's share of the
    fullest (a single value still a step up from blank), and more values never drawn lower."""
    state = stats_session.namespace["torch_model"].state_dict()
    text = outcome_text(run_ok(stats_session, "weights torch_model --stats"))
    unicode_out = io.StringIO()  # no encoding of its own: rich draws it in UTF-8, as a terminal
    Printer(out=unicode_out, err=io.StringIO(), width=100).show(run_ok(stats_session, "weights torch_model --stats"))
    for rendered, ramp in ((text, ASCII_GLYPHS), (unicode_out.getvalue(), SPARK_GLYPHS)):
        for name, tensor in state.items():
            counts = expected(tensor.numpy(), bins=10)["counts"]
            line = next(line for line in rendered.splitlines() if line.split()[:1] == [name])
            spark = line.rstrip()[-10:]
            _assert_sparkline(spark, counts, ramp)
    assert "#" in text and "█" not in text and "█" in unicode_out.getvalue()


def _assert_sparkline(spark: str, counts: list[int], ramp: str) -> None:
    assert len(spark) == len(counts) and set(spark) <= set(ramp), spark
    levels = [ramp.index(ch) for ch in spark]
    peak = max(counts)
    top = len(ramp) - 1
    for level, count in zip(levels, counts):
        assert (level == 0) == (count == 0)
        assert count != peak or level == top
        assert count == 0 or level == 1 or abs(level - count / peak * top) <= 0.5, (spark, counts)
    for a, ca in zip(levels, counts):
        for b, cb in zip(levels, counts):
            assert ca >= cb or a <= b, (spark, counts)


def test_nan_and_inf_are_counted_not_averaged(stats_session):
    data = json_of(stats_session, "weights odd --stats --json")
    by_name = {w["name"]: w["stats"] for w in data["weights"]}
    weight = stats_session.namespace["odd"].state_dict()["linear.weight"].numpy()
    stats = by_name["linear.weight"]
    assert (stats["nan"], stats["posinf"], stats["neginf"]) == (2, 1, 1)
    assert_stats_equal(stats, weight, bins=10)
    assert all(math.isfinite(stats[k]) for k in ("mean", "std", "min", "max"))
    assert sum(stats["histogram"]["counts"]) == weight.size - 4
    row = table_rows(run_ok(stats_session, "weights odd --stats").results[0])["linear.weight"]
    assert row["note"] == "2 nan, 1 +inf, 1 -inf"
    all_nan = by_name["all_nan"]
    assert all_nan["nan"] == 3 and all_nan["mean"] is None and all_nan["histogram"] == {"edges": [], "counts": []}


def test_empty_integer_and_bool_tensors(stats_session):
    data = json_of(stats_session, "weights odd --stats --json")
    by_name = {w["name"]: w["stats"] for w in data["weights"]}
    state = stats_session.namespace["odd"].state_dict()
    assert by_name["empty"] == {"count": 0, "nan": 0, "posinf": 0, "neginf": 0, "mean": None, "std": None,
                                "min": None, "max": None, "histogram": {"edges": [], "counts": []}}
    assert_stats_equal(by_name["steps"], state["steps"].numpy(), bins=10)
    assert by_name["steps"]["mean"] == pytest.approx(31 / 8)
    assert_stats_equal(by_name["mask"], state["mask"].numpy(), bins=10)
    assert by_name["mask"]["mean"] == 0.75 and by_name["mask"]["histogram"]["counts"][0] == 1
    rows = table_rows(run_ok(stats_session, "weights odd --stats").results[0])
    assert [rows["empty"][k] for k in ("mean", "std", "min", "max")] == ["-"] * 4
    assert rows["empty"]["note"] == "buffer; empty"
    assert rows["steps"]["dtype"] == "int64" and rows["steps"]["max"] == "9"


def test_a_constant_tensor_is_binned_as_numpy_bins_it():
    """np.histogram puts a constant in the middle of a one-wide range around it; so does tensor_stats."""
    values = np.full((4, 4), 0.25, dtype=np.float32)
    stats = tensor_stats(values, bins=10)
    assert stats.std == 0 and stats.min == stats.max == 0.25
    assert stats.counts == np.histogram(values.astype(np.float64), bins=10)[0].tolist()
    assert stats.edges[0] == -0.25 and stats.edges[-1] == 0.75


def test_complex_values_have_a_reason_instead_of_numbers():
    stats = tensor_stats(np.ones(3, dtype=np.complex64))
    assert stats.mean is None and stats.counts == [] and "complex64" in stats.reason


def test_tied_tensors_share_one_reading(stats_session):
    handle = stats_session.model("tied")
    infos = handle.tensors()
    assert [t.tied_to for t in infos] == [None, None, "0.weight", "0.bias"]
    found = read_stats(handle, infos, bins=10)
    assert found["2.weight"] is found["0.weight"] and found["2.bias"] is found["0.bias"]
    state = stats_session.namespace["tied"].state_dict()
    assert found["0.weight"].mean == pytest.approx(np.mean(state["0.weight"].numpy().astype(np.float64)), rel=1e-12)


# --- weights-only files, read one tensor at a time -------------------------------------------------------
def test_safetensors_file_stats_match_the_arrays_written(tmp_path):
    rng = np.random.default_rng(7)
    arrays = {
        "encoder.weight": rng.normal(0.5, 2.0, (300, 40)).astype(np.float32),
        "encoder.bias": rng.uniform(-1, 1, 40).astype(np.float16),
        "encoder.count": rng.integers(-5, 50, 17).astype(np.int32),
        "encoder.flags": rng.integers(0, 2, 9).astype(bool),
    }
    arrays["encoder.weight"][3, 4] = np.nan
    save_file(arrays, str(tmp_path / "w.safetensors"))
    session = Session()
    run_ok(session, f"load {tmp_path / 'w.safetensors'} as w")
    data = json_of(session, "weights w --stats --json")
    for entry in data["weights"]:
        assert_stats_equal(entry["stats"], arrays[entry["name"]], bins=10)
    hist = json_of(session, "hist w encoder.weight --bins 33 --json")
    assert_stats_equal(hist["stats"], arrays["encoder.weight"], bins=33)


def test_chunked_reading_gives_numpy_numbers(monkeypatch):
    """Chunks far smaller than the tensor (and a tail chunk) must add up to numpy's whole-array answer."""
    rng = np.random.default_rng(3)
    values = (rng.standard_normal(10_007) * 1e3 + 5e4).astype(np.float32)
    values[::997] = np.inf
    monkeypatch.setattr(tensor_stats_module, "CHUNK", 1000)
    stats = tensor_stats(values, bins=17)
    assert_stats_equal(stats.as_json(), values, bins=17)


def test_a_weights_only_file_never_holds_two_tensors(tmp_path, monkeypatch):
    """Peak memory while reading four 16 MB tensors stays under one and a half tensors: they are read
    one after another, and the float64 work is done in chunks, never on a whole tensor."""
    values = 4_000_000
    save_file({f"t{i}": np.full(values, i, dtype=np.float32) for i in range(4)}, str(tmp_path / "big.safetensors"))
    session = Session()
    run_ok(session, f"load {tmp_path / 'big.safetensors'} as big")
    monkeypatch.setattr(tensor_stats_module, "CHUNK", 1 << 16)
    tracemalloc.start()
    try:
        table = run_ok(session, "weights big --stats").results[0]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [row[3] for row in table.rows] == ["0", "1", "2", "3"]  # the mean of each constant tensor
    assert peak < 1.5 * values * 4, f"peak {peak:,} bytes"


# --- hist ---------------------------------------------------------------------------------------------------
def test_hist_matches_numpy_and_draws_every_bin(stats_session):
    weight = stats_session.namespace["torch_model"].state_dict()["0.weight"].numpy()
    outcome = run_ok(stats_session, "hist torch_model 0.weight")
    result = outcome.results[0]
    assert isinstance(result, Histogram)
    want = expected(weight, bins=20)
    assert result.counts == want["counts"] and result.edges == pytest.approx(want["edges"], rel=1e-12)
    assert result.title == "torch_model 0.weight: (6, 1, 5, 5) float32, 150 values"
    assert result.footer == [f"mean {want['mean']:.3g}, std {want['std']:.3g}, min {want['min']:.3g}, max {want['max']:.3g}"]
    lines = outcome_text(outcome, width=80).splitlines()
    bars = [line for line in lines if line.startswith(" [")]
    assert len(bars) == 20
    drawn = [(int(re.search(r"[)\]] +(\d+)", line).group(1)), len(line) - len(line.rstrip("#"))) for line in bars]
    assert [count for count, _ in drawn] == want["counts"]
    assert max(len(line) for line in bars) == 80  # the fullest bin runs to the edge of the width
    peak = max(want["counts"])
    room = 80 - bars[want["counts"].index(peak)].index("#")
    for count, length in drawn:
        assert length == max(int(count > 0), round(count / peak * room)), (count, length)
    closing = [re.search(r"[)\]]", line).group() for line in bars]
    assert closing == [")"] * 19 + ["]"]  # half-open bins, the last one closed, as np.histogram's


def test_hist_bars_fit_the_console_width(stats_session):
    outcome = run_ok(stats_session, "hist keras_model lenet5/dense/kernel --bins 7")
    for width in (50, 100, 160):
        out = io.StringIO()
        Printer(out=out, err=io.StringIO(), width=width).show(outcome)
        bars = [line for line in out.getvalue().splitlines() if line.startswith(" [")]
        assert len(bars) == 7 and all("█" in line for line in bars)
        assert max(len(line.rstrip()) for line in bars) == width


def test_hist_json(stats_session):
    data = json_of(stats_session, "hist keras_model lenet5/dense/kernel --bins 8 --json")
    assert set(data) == {"model", "framework", "tensor", "shape", "dtype", "stats"}
    assert (data["model"], data["framework"], data["tensor"]) == ("keras_model", "keras", "lenet5/dense/kernel")
    assert data["shape"] == [120, 84] and data["dtype"] == "float32"
    kernel = stats_session.namespace["keras_model"].get_weights()[6]
    assert_stats_equal(data["stats"], kernel, bins=8)
    assert len(data["stats"]["histogram"]["edges"]) == 9


def test_weights_stats_json_keeps_every_plain_field(stats_session):
    plain = json_of(stats_session, "weights torch_model bias --json")
    with_stats = json_of(stats_session, "weights torch_model bias --stats --json")
    assert plain["totals"] == with_stats["totals"]
    for before, after in zip(plain["weights"], with_stats["weights"]):
        assert {k: v for k, v in after.items() if k != "stats"} == before
        assert set(after["stats"]) == STAT_KEYS
        assert len(after["stats"]["histogram"]["counts"]) == 10 and len(after["stats"]["histogram"]["edges"]) == 11


def test_weights_stats_with_a_limit_reads_only_the_rows_it_shows():
    """A tensor with no data (a meta buffer) cannot be read: a --limit that cuts it off must not try;
    --json keeps every row, so it must."""
    m = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 2))
    m[1].register_buffer("late", torch.empty(4, device="meta"))
    session = Session()
    session.namespace["m"] = m
    outcome = session.run_line("weights m --stats")
    assert not outcome.ok and "cannot read 1.late" in outcome.error
    table = run_ok(session, "weights m --stats --limit 2").results[0]
    assert [row[0] for row in table.rows] == ["0.weight", "0.bias"]
    assert table.footer[0].startswith("showing 2 of 5 rows")
    weight = m.state_dict()["0.weight"].numpy().astype(np.float64)
    assert table.rows[0][3] == f"{weight.mean():.3g}"
    outcome = session.run_line("weights m --stats --limit 2 --json")
    assert not outcome.ok and "cannot read 1.late" in outcome.error


def test_hist_of_values_that_cannot_be_drawn(stats_session):
    empty = run_ok(stats_session, "hist odd empty").results[0]
    assert empty.counts == [] and empty.footer == ["no values: the tensor is empty"]
    all_nan = run_ok(stats_session, "hist odd all_nan").results[0]
    assert all_nan.footer == ["no finite values to draw (3 nan)"]
    weight = run_ok(stats_session, "hist odd linear.weight --bins 4").results[0]
    assert weight.footer[0].endswith("; not drawn: 2 nan, 1 +inf, 1 -inf")
    assert sum(weight.counts) == 8


def test_unknown_tensor_suggests_close_names_and_the_shell_goes_on(stats_session):
    outcome = run_fail(stats_session, "hist torch_model 0.wieght")
    assert outcome.error.startswith("torch_model has no tensor named '0.wieght' (did you mean `0.weight`")
    assert outcome.error.endswith("`weights torch_model` lists them)")
    far = run_fail(stats_session, "hist torch_model zzz").error
    assert far == "torch_model has no tensor named 'zzz' (`weights torch_model` lists them)"
    assert "arguments are required" in run_fail(stats_session, "hist torch_model").error
    assert "--bins takes a whole number from 1 to 1000" in run_fail(stats_session, "hist torch_model 0.bias --bins 0").error
    assert "invalid int value" in run_fail(stats_session, "hist torch_model 0.bias --bins x").error
    assert run_fail(stats_session, "hist nosuch 0.bias").error.startswith("no model named 'nosuch'")
    run_ok(stats_session, "hist torch_model 0.bias")


def test_hist_parser_dests_and_help():
    from modelshell.commands import default_registry

    hist = default_registry()["hist"]
    dests = [a.dest for a in hist.parser._actions if not a.option_strings]
    assert dests == ["name", "tensor"]
    assert hist.group == "inspect" and len(hist.examples) == 2


def test_importing_the_commands_imports_no_numpy():
    code = ("import sys, modelshell.commands.stats, modelshell.commands.inspect, modelshell.render.bars\n"
            "print('numpy' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


# --- the real shell in a terminal ----------------------------------------------------------------------------
@pytest.fixture(scope="module", autouse=True)
def _no_inherited_terminal_size():
    """Under pytest, readline has written COLUMNS=80 and LINES=24 into this process's C environment; tmux
    hands them to its panes, and rich believes them over the pane's real 120x40, drawing every table at 80
    columns and paging anything over 22 lines. Drop them here and from a tmux server already running, so
    this module's shell (term_demo is per module) sizes itself from its terminal, as a user's does."""
    for name in ("COLUMNS", "LINES"):
        os.unsetenv(name)
        if shutil.which("tmux") is not None:  # without it, the terminal tests fail saying so
            subprocess.run(["tmux", "-S", SOCKET, "set-environment", "-g", "-u", name], capture_output=True, timeout=30)
    yield


def _shell_quiet(term, line: str) -> None:
    """Run a Python line that prints nothing, and wait until the shell has run it (its prompt is back)."""
    term.enter(line)
    term.wait_for(lambda lines: lines[-2:] == [f"ms> {line}", "ms>"], what=f"{line!r} run")


def _shell_numbers(term, line: str, tag: str) -> list[str]:
    """Run a Python line in the shell that prints ``tag`` and values; those values, as printed."""
    term.enter(line)
    term.wait_for_text(f"\n{tag} ")
    term.wait_for_prompt()
    printed = [out for out in term.after(line) if out.startswith(tag + " ")]
    assert len(printed) == 1, term.text()
    return printed[0].split()[1:]


def _counts_in_shell(term, bins: int) -> list[int]:
    """np.histogram of torch_model's 0.weight, computed by a Python line in the shell under test."""
    _shell_quiet(term, 'import numpy as np; w = torch_model.state_dict()["0.weight"].double().numpy()')
    return [int(c) for c in _shell_numbers(term, f'print("counts", *np.histogram(w, {bins})[0])', "counts")]


def _screen_after(term, line: str, last: str) -> list[str]:
    """The screen under ``line``, run on a cleared screen, once ``last`` and the prompt under it show."""
    term.clear()
    term.enter(line)
    term.wait_for_text(last)
    term.wait_for_prompt()
    return term.after(line)


def test_weights_stats_in_the_terminal(term_shell):
    counts = _counts_in_shell(term_shell, 10)
    want = _shell_numbers(term_shell, 'print("want", *(f"{v:.3g}" for v in (w.mean(), w.std(), w.min(), w.max())))', "want")
    out = _screen_after(term_shell, "weights torch_model --stats", "equal bins from min to max")
    assert out[2].split() == ["name", "shape", "dtype", "mean", "std", "min", "max", "histogram"]
    row = re.match(r"^ 0\.weight +\(6, 1, 5, 5\) +float32 +(\S+) +(\S+) +(\S+) +(\S+) +(.+)$", out[4])
    assert row, out[4]
    assert list(row.groups()[:4]) == want
    _assert_sparkline(row.group(5), counts, SPARK_GLYPHS)
    sparks = [line.rstrip()[-10:] for line in out[4:14]]
    assert all(set(s) <= set(SPARK_GLYPHS) and "█" in s for s in sparks), sparks
    assert "10 tensors, 61,706 parameters (61,706 trainable, 0 non-trainable)" in out


def test_hist_in_the_terminal(term_shell):
    counts = _counts_in_shell(term_shell, 20)
    out = _screen_after(term_shell, "hist torch_model 0.weight", "\nmean ")
    assert out[0] == "torch_model 0.weight: (6, 1, 5, 5) float32, 150 values"
    bars = [re.match(r"^ \[[^\]\)]+[\]\)] +(\d+)(?:  ([█▏▎▍▌▋▊▉]+))?$", line) for line in out[2:22]]
    assert all(bars), out
    assert [int(m.group(1)) for m in bars] == counts
    lengths = [len(m.group(2) or "") for m in bars]
    assert all((length > 0) == (count > 0) for length, count in zip(lengths, counts))
    fullest = max(range(20), key=lambda i: counts[i])
    assert len(out[2 + fullest]) == 120  # the terminal's width, to the last cell
    assert out[-2].startswith("mean ") and out[-1] == "ms>"


@pytest.mark.parametrize("values", [[1.0, np.nextafter(1.0, 2.0)], [5e-324, 1e-323, 1e-323], [1.0, 1.0 + 4.5e-16],
                                    [3e38, 3e38], [1e300]],
                         ids=["one step apart", "subnormal", "two steps apart", "one huge value", "a float64 giant"])
def test_values_a_few_float_steps_apart_get_the_bins_they_hold(values):
    """Found by the structured fuzz test: numpy cannot make ten bins of a range a few float64 steps wide
    and raised; such a tensor gets fewer bins, every value counted, its range as edges."""
    array = np.array(values, dtype=np.float64)
    stats = tensor_stats(array)
    assert sum(stats.counts) == len(values)
    assert stats.edges[0] == array.min() and stats.edges[-1] == array.max()
    assert len(stats.counts) == len(stats.edges) - 1 >= 1
    assert stats.mean == pytest.approx(float(np.mean(array)))
