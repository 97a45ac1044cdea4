"""Framework start-up chatter never reaches the user, and a missing framework is one line saying what to
install (issue 11).

TensorFlow's C++ start-up writes to descriptor 2 before its logging exists (oneDNN's ``port.cc``,
``cpu_feature_guard``, ``absl::InitializeLog``), on some processors and not others. Each entry point is
run as a user runs it, with ``TF_CPP_MIN_LOG_LEVEL`` and ``TF_ENABLE_ONEDNN_OPTS`` unset; a bare
``python -c "import tensorflow"`` in the same environment shows whether this machine speaks at all, so
the tests say which case they saw. The missing-framework tests block imports with a ``sitecustomize``
module on ``PYTHONPATH``, as a torch-only (or TensorFlow-only) install would fail them.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tmux_terminal import MODELSHELL, TermPane

CHATTER = re.compile(r"oneDNN|absl::InitializeLog|cudart_stub|cpu_feature_guard|port\.cc|retracing")
TIMEOUT = 180


def _environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS")}
    env.pop("PYTHONWARNINGS", None)
    return {**env, **extra}


def _run(args: list[str], stdin: str = "", cwd: Path | None = None, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, input=stdin, capture_output=True, text=True, timeout=TIMEOUT, cwd=cwd,
                          env=_environment(**extra))


@pytest.fixture(scope="module")
def machine_speaks() -> bool:
    """Whether importing TensorFlow prints start-up lines on this machine (Intel hosts with oneDNN do)."""
    done = _run([sys.executable, "-c", "import tensorflow"])
    return bool(CHATTER.search(done.stderr))


def test_descriptor_2_is_captured_while_a_framework_imports(capfd):
    from modelshell.frameworks import quiet

    before = len(quiet.startup_text)
    with quiet._descriptor_2_captured("a_framework"):
        os.write(2, b"I0000 port.cc:153] oneDNN custom operations are on\n")
    assert capfd.readouterr().err == ""
    assert quiet.startup_text[before:] == [("a_framework", "I0000 port.cc:153] oneDNN custom operations are on\n")]


def test_a_failing_import_keeps_what_it_wrote_in_the_error():
    from modelshell.frameworks import quiet

    with pytest.raises(ImportError) as caught:
        with quiet._descriptor_2_captured("broken"):
            os.write(2, b"libtensorflow_framework.so.2: cannot open shared object file\n")
            raise ImportError("DLL load failed")
    assert "cannot open shared object file" in "\n".join(caught.value.__notes__)


@pytest.mark.parametrize("entry", ["run", "pipe"])
def test_run_and_pipes_show_no_framework_chatter(tmp_path, machine_speaks, entry):
    lines = "import keras\nimport tensorflow as tf\nmodels\nweights keras_model kernel\nverify torch_model keras_model\n"
    if entry == "run":
        script = tmp_path / "steps.ms"
        script.write_text(lines)
        done = _run([MODELSHELL, "run", "--demo", "--keep-going", str(script)])
    else:
        done = _run([MODELSHELL, "--demo"], stdin=lines)
    assert "lenet5/dense/kernel" in done.stdout
    assert not CHATTER.search(done.stdout + done.stderr), (machine_speaks, done.stderr)
    # The only stderr line is verify's verdict on two models with different weights.
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("error: ") and line.endswith(
        "torch_model and keras_model differ: max abs diff 0.0103 > atol 0.0001 + rtol 0.0001 x |output|")


def test_debug_shows_the_start_up_text_this_machine_writes(machine_speaks):
    done = _run([MODELSHELL, "--debug"], stdin="import tensorflow\nprint('ok')\n")
    assert done.stdout.strip() == "ok"
    assert bool(CHATTER.search(done.stderr)) == machine_speaks


def test_replay_shows_no_framework_chatter(tmp_path, machine_speaks):
    transcript = tmp_path / "t.md"
    transcript.write_text(textwrap.dedent("""\
        # t

        ```modelshell
        ms> import keras
        ms> print(keras.ops.ones((2,)).shape)
        (2,)
        ```
        """))
    done = _run([MODELSHELL, "replay", str(transcript)])
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == f"{transcript}: 2 inputs, 0 differ"
    assert not CHATTER.search(done.stdout + done.stderr), machine_speaks


def test_the_shell_in_a_terminal_shows_no_framework_chatter(machine_speaks):
    env = "env -u TF_CPP_MIN_LOG_LEVEL -u TF_ENABLE_ONEDNN_OPTS"
    pane = TermPane(f"{env} {shlex.quote(MODELSHELL)} --demo")
    try:
        pane.wait_for_prompt(timeout=120)
        pane.enter("import tensorflow as tf; print('marker', tf.constant(3).numpy())")
        pane.wait_for_text("marker 3")
        pane.wait_for_prompt()
        assert not CHATTER.search(pane.text()), (machine_speaks, pane.text())
    finally:
        pane.close()


# --- missing frameworks ---------------------------------------------------------------------------
_BLOCKER = '''
import sys


class _Blocked:
    """As if these packages were not installed."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None


sys.meta_path.insert(0, _Blocked())
'''


def _blocked(tmp_path: Path, *packages: str) -> dict[str, str]:
    folder = tmp_path / ("blocked_" + "_".join(packages))
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(_BLOCKER.format(blocked=set(packages)))
    return {"PYTHONPATH": str(folder)}


@pytest.fixture(scope="module")
def model_files(tmp_path_factory) -> Path:
    """A real .keras file and a real .pt file, made with the frameworks this environment has."""
    import keras
    import torch

    folder = tmp_path_factory.mktemp("files")
    keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]).save(folder / "k.keras")
    torch.save(torch.nn.Linear(3, 2).state_dict(), folder / "t.pt")
    return folder


def test_without_tensorflow_loading_a_keras_file_says_what_to_install(tmp_path, model_files):
    done = _run([MODELSHELL], stdin=f"load {model_files / 'k.keras'}\nload {model_files / 't.pt'}\nmodels\n",
                **_blocked(tmp_path, "tensorflow", "keras", "tf_keras"))
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        "error: loading k.keras needs Keras 3 (with TensorFlow), which is not installed here "
        "(pip install 'modelshell[tensorflow]')"]


def test_without_torch_loading_a_torch_file_says_what_to_install(tmp_path, model_files):
    done = _run([MODELSHELL, "run", "--keep-going", "-"], stdin=f"load {model_files / 't.pt'}\nimport torch\n",
                **_blocked(tmp_path, "torch"))
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        "error: loading t.pt needs PyTorch, which is not installed here (pip install 'modelshell[torch]')",
        "error: ModuleNotFoundError: No module named 'torch' (pip install 'modelshell[torch]')",
    ]


def test_the_demo_opens_with_the_models_it_can_build(tmp_path):
    done = _run([MODELSHELL, "--demo"], stdin="models --json\n", **_blocked(tmp_path, "tensorflow", "keras"))
    assert done.returncode == 0, done.stderr
    assert [m["name"] for m in __import__("json").loads(done.stdout)["models"]] == ["torch_model"]
    assert done.stderr.splitlines() == [
        "note: the demo's keras_model needs Keras 3 (with TensorFlow), which is not installed here "
        "(pip install 'modelshell[tensorflow]')"]


def test_the_demo_with_no_framework_is_refused_in_one_line(tmp_path):
    done = _run([MODELSHELL, "--demo"], stdin="models\n", **_blocked(tmp_path, "tensorflow", "keras", "torch"))
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        "error: the demo needs PyTorch or TensorFlow, and neither is installed (pip install 'modelshell[all]')"]


def test_replay_skips_a_transcript_that_needs_a_missing_framework(tmp_path):
    transcript = tmp_path / "k.md"
    transcript.write_text(textwrap.dedent("""\
        # k

        ```modelshell
        ms> print('before')
        before
        ms> import keras
        ms> keras.ops.ones((2,)).shape
        (2,)
        ```
        """))
    done = _run([MODELSHELL, "replay", str(transcript)], **_blocked(tmp_path, "keras", "tensorflow"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == (
        f"{transcript}: 3 inputs, 0 differ; skipped from line 6: ModuleNotFoundError: No module named 'keras' "
        "(pip install 'modelshell[tensorflow]')")
