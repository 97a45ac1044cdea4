"""verify: both models on the same input, every output compared, and with --layers every paired layer.

The expected numbers come from forward passes written here, not from modelshell's own comparison.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from modelshell.cli import load_demo
from modelshell.core.session import Session

MODELSHELL = str(Path(sys.executable).parent / "modelshell")


@pytest.fixture()
def lenet() -> Session:
    session = Session()
    load_demo(session)
    return session


def _outputs(session: Session, x_nchw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The two LeNet-5s on the same numbers, computed directly with each framework."""
    torch_model, keras_model = session.namespace["torch_model"], session.namespace["keras_model"]
    with torch.no_grad():
        yt = torch_model.eval()(torch.from_numpy(x_nchw)).numpy()
    yk = np.asarray(keras_model(np.transpose(x_nchw, (0, 2, 3, 1)), training=False))
    return yt, yk


def test_verify_agrees_with_an_independent_forward_pass(lenet):
    x = np.random.default_rng(0).standard_normal((2, 1, 28, 28)).astype("float32")  # verify's own seed-0 input
    yt, yk = _outputs(lenet, x)
    before = lenet.run_line("verify torch_model keras_model --json")
    assert not before.ok and "differ" in before.error and "\n" not in before.error
    data = before.results[0].data
    assert data["ok"] is False
    assert data["max_abs_diff"] == pytest.approx(float(np.abs(yt.astype(np.float64) - yk).max()), rel=1e-6)
    assert lenet.run_line("copy keras_model torch_model").ok
    yt, yk = _outputs(lenet, x)
    np.testing.assert_allclose(yt, yk, atol=1e-6)
    after = lenet.run_line("verify torch_model keras_model --json")
    assert after.ok, after.error
    assert after.results[0].data["max_abs_diff"] == pytest.approx(float(np.abs(yt.astype(np.float64) - yk).max()),
                                                                  abs=1e-9)
    assert set(after.results[0].data) >= {"ok", "max_abs_diff", "max_rel_diff", "outputs"}


def test_layers_name_the_first_layer_that_diverges(lenet):
    assert lenet.run_line("copy torch_model keras_model").ok
    agreeing = lenet.run_line("verify torch_model keras_model --layers --json")
    assert agreeing.ok, agreeing.error
    layers = agreeing.results[0].data["layers"]
    assert [layer["name"] for layer in layers] == ["0 ~ conv2d", "3 ~ conv2d_1", "6 ~ conv2d_2", "9 ~ dense",
                                                    "11 ~ dense_1"]
    assert all(layer["ok"] for layer in layers) and agreeing.results[0].data["first_divergence"] is None
    with torch.no_grad():
        lenet.namespace["torch_model"][6].bias += 0.5  # the third convolution now computes something else
    broken = lenet.run_line("verify torch_model keras_model --layers --json")
    assert not broken.ok
    data = broken.results[0].data
    assert data["first_divergence"] == "6 ~ conv2d_2"
    assert [layer["ok"] for layer in data["layers"]][:2] == [True, True]
    assert broken.error.endswith("the first layer that diverges is 6 ~ conv2d_2")


def test_input_from_a_file_in_the_first_models_layout(lenet, tmp_path):
    x = np.random.default_rng(7).standard_normal((3, 1, 28, 28)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    yt, yk = _outputs(lenet, x)
    outcome = lenet.run_line(f"verify torch_model keras_model --input {tmp_path / 'x.npy'} --json")
    data = outcome.results[0].data
    assert data["inputs"] == [[3, 1, 28, 28]]
    assert data["max_abs_diff"] == pytest.approx(float(np.abs(yt.astype(np.float64) - yk).max()), rel=1e-6)


def test_torch_models_without_an_input_spec_use_their_first_layer():
    session = Session()
    torch.manual_seed(0)
    session.namespace["a"] = torch.nn.Sequential(torch.nn.Linear(5, 3), torch.nn.Tanh())
    session.namespace["b"] = torch.nn.Sequential(torch.nn.Linear(5, 3), torch.nn.Tanh())
    assert not session.run_line("verify a b").ok
    assert session.run_line("copy a b").ok
    outcome = session.run_line("verify a b --json")
    assert outcome.ok and outcome.results[0].data["inputs"] == [[2, 5]]
    assert outcome.results[0].data["max_abs_diff"] == 0.0


def test_no_input_shape_is_a_clear_error():
    session = Session()
    session.namespace["a"] = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3))
    session.namespace["b"] = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3))
    outcome = session.run_line("verify a b")
    assert not outcome.ok
    assert outcome.error == ("cannot tell the input shape of either model (pass one with --input FILE.npy "
                             "(in the first model's layout))")


@pytest.mark.slow
def test_a_mismatch_fails_the_script_with_exit_status_1(tmp_path):
    script = tmp_path / "s.ms"
    script.write_text("verify torch_model keras_model\nmodels\n")
    done = subprocess.run([MODELSHELL, "run", str(script), "--demo"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "MISMATCH" in done.stdout and f"{script}:1: torch_model and keras_model differ" in done.stderr
    assert "name" not in done.stdout.split("MISMATCH")[-1]  # stopped before `models`
    script.write_text("copy keras_model torch_model\nverify torch_model keras_model --json\n")
    done = subprocess.run([MODELSHELL, "run", str(script), "--demo"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])["ok"] is True


def test_runs_take_one_torch_thread_only_while_the_machine_is_busy_and_give_the_setting_back(lenet):
    """modelshell's own runs (verify, the trace, the confirmation) take one torch thread while other
    processes hold every core (a parallel kernel then waits for a core at each op), the user's setting
    otherwise; either way the user's setting is back afterwards."""
    import os

    torch_model = lenet.namespace["torch_model"]
    seen = []
    hook = torch_model.register_forward_pre_hook(lambda module, args: seen.append(torch.get_num_threads()))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        busy_before = os.getloadavg()[0] >= (os.cpu_count() or 1)
        assert lenet.run_line("copy keras_model torch_model").ok  # the trace and the confirmation run torch
        assert lenet.run_line("verify torch_model keras_model").ok
        busy_after = os.getloadavg()[0] >= (os.cpu_count() or 1)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
        hook.remove()
    assert seen
    if busy_before and busy_after:
        assert set(seen) == {1}, seen
    elif not busy_before and not busy_after:
        assert set(seen) == {2}, seen
