"""The command line as users run it: real subprocesses of the ``modelshell`` console script and of
``python -m modelshell``, with scripts, piped standard input and preloaded files.

Only one test starts the demo (it imports TensorFlow, ~7 s); the others bind a small torch module from
Python, or need no framework at all, to keep the module quick.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from modelshell import __version__

VENV_BIN = Path(sys.executable).parent
MODELSHELL = str(VENV_BIN / "modelshell")
TIMEOUT = 120


def cli_run(*args: str, stdin: str = "", cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run the console script with ``args``, feeding ``stdin`` through a pipe (so never a terminal)."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([MODELSHELL, *args], input=stdin, capture_output=True, text=True, timeout=TIMEOUT,
                          cwd=cwd, env=env)


def cli_script(tmp_path: Path, *lines: str, name: str = "steps.ms") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf8")
    return path


LINEAR = "import torch; lin = torch.nn.Linear(3, 4)"


def test_version():
    for argv in ([MODELSHELL, "--version"], [MODELSHELL, "run", "--version"],
                 [sys.executable, "-m", "modelshell", "--version"]):
        done = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == f"modelshell {__version__}"


def test_run_script_success(tmp_path):
    script = cli_script(tmp_path, "# a comment", "import torch", "lin = torch.nn.Linear(", "    3, 4,", ")",
                        "weights lin", "for i in range(2):", "    print('row', i)", "", "print('done')")
    done = cli_run("run", str(script))
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    out = done.stdout
    assert "weight   (4, 3)" in out and "bias     (4,)" in out
    assert "2 tensors, 16 parameters (16 trainable, 0 non-trainable)" in out
    assert "row 0\nrow 1\n" in out
    assert out.rstrip().endswith("done")


def test_run_script_stops_at_the_first_failing_line(tmp_path):
    script = cli_script(tmp_path, "print('before')", "weights nosuch", "print('after')")
    done = cli_run("run", str(script))
    assert done.returncode == 1
    assert "before" in done.stdout and "after" not in done.stdout
    assert done.stderr == f"error: {script}:2: no model named 'nosuch' (`models` lists the models; " \
                          "`load PATH` adds one)\n"


def test_run_script_python_error_names_the_line_of_the_block(tmp_path):
    script = cli_script(tmp_path, "x = 1", "for i in range(3):", "    x = x / (1 - i)", "", "print('unreached')")
    done = cli_run("run", str(script))
    assert done.returncode == 1
    assert done.stderr == f"error: {script}:2: ZeroDivisionError: float division by zero\n"
    assert "unreached" not in done.stdout


def test_run_keep_going_runs_every_line_and_exits_1(tmp_path):
    script = cli_script(tmp_path, "weights nosuch", "1/0", "print('after')", "weights nosuch --bad")
    done = cli_run("run", "--keep-going", str(script))
    assert done.returncode == 1
    assert "after" in done.stdout
    errors = done.stderr.splitlines()
    assert len(errors) == 3, done.stderr
    assert errors[0].startswith(f"error: {script}:1: no model named 'nosuch'")
    assert errors[1] == f"error: {script}:2: ZeroDivisionError: division by zero"
    assert errors[2].startswith(f"error: {script}:4: weights: unrecognized arguments: --bad")


def test_run_keep_going_with_no_failure_exits_0(tmp_path):
    done = cli_run("run", "--keep-going", str(cli_script(tmp_path, "x = 2", "print(x * 21)")))
    assert done.returncode == 0 and done.stdout == "42\n"


def test_run_quit_stops_the_script_with_success(tmp_path):
    done = cli_run("run", str(cli_script(tmp_path, "print('one')", "quit", "1/0")))
    assert done.returncode == 0 and done.stdout == "one\n" and done.stderr == ""


def test_python_output_passes_through_unchanged():
    long_line = "x" * 150
    done = cli_run("run", "-", stdin=f"print('{long_line}')\nprint('a\\tb  [bold]c[/bold]')\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{long_line}\na\tb  [bold]c[/bold]\n"  # not wrapped at 100 columns, tab kept


def test_run_reads_standard_input_with_dash():
    done = cli_run("run", "-", stdin="print('from stdin')\nmodels --json\n")
    assert done.returncode == 0, done.stderr
    first, second = done.stdout.splitlines()
    assert first == "from stdin"
    assert json.loads(second) == {"models": []}


def test_run_missing_script_is_one_error_line(tmp_path):
    done = cli_run("run", str(tmp_path / "nosuch.ms"))
    assert done.returncode == 1
    assert done.stderr.startswith("error: cannot read") and done.stderr.count("\n") == 1
    assert "Traceback" not in done.stderr


def test_piped_stdin_with_the_demo_prints_the_table():
    done = cli_run("--demo", stdin="weights torch_model\nweights keras_model kernel --json\n")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # no TensorFlow start-up chatter either
    out = done.stdout
    assert "0.weight    (6, 1, 5, 5)" in out and "11.bias     (10,)" in out
    assert "10 tensors, 61,706 parameters (61,706 trainable, 0 non-trainable)" in out
    data = json.loads(out.splitlines()[-1])
    assert [tuple(w["shape"]) for w in data["weights"]] == [(5, 5, 1, 6), (5, 5, 6, 16), (5, 5, 16, 120),
                                                            (120, 84), (84, 10)]


def test_piped_stdin_stops_at_an_error_with_exit_1():
    done = cli_run(stdin="print('a')\nweights nosuch\nprint('b')\n")
    assert done.returncode == 1
    assert done.stdout == "a\n"
    assert done.stderr.startswith("error: no model named 'nosuch'")


@pytest.mark.parametrize("debug", [False, True])
def test_debug_shows_tracebacks_and_only_then(tmp_path, debug):
    script = cli_script(tmp_path, LINEAR, "weights nosuch", "lin.nosuch()", "1/0", "weights lin --nosuch",
                        "x = (1,")
    done = cli_run("run", "--keep-going", *(["--debug"] if debug else []), str(script))
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 5, done.stderr
    if debug:
        assert done.stderr.count("Traceback (most recent call last)") >= 4
        assert "ZeroDivisionError" in done.stderr and "AttributeError" in done.stderr
    else:
        assert "Traceback" not in done.stdout + done.stderr
        assert done.stderr.count("\n") == 5  # one line per failing line, nothing else


def test_debug_absent_means_no_traceback_for_bad_files(tmp_path):
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a torch file at all")
    done = cli_run(str(broken), stdin="models\n")
    assert done.returncode == 1
    assert "Traceback" not in done.stdout + done.stderr
    assert f"cannot read {broken} as a torch file" in done.stderr


def test_preloaded_file_is_named_by_its_stem(tmp_path):
    import torch

    torch.manual_seed(0)
    torch.save(torch.nn.Linear(3, 4).state_dict(), tmp_path / "tiny.pt")
    done = cli_run(str(tmp_path / "tiny.pt"), stdin="models --json\nweights tiny --json\n")
    assert done.returncode == 0, done.stderr
    # The notice goes to stderr: stdout is pure JSON Lines, one object a line.
    assert done.stderr == f"loaded tiny: torch state dict, no architecture, 16 parameters, from {tmp_path / 'tiny.pt'}\n"
    models, weights = [json.loads(line) for line in done.stdout.splitlines()]
    assert [m["name"] for m in models["models"]] == ["tiny"]
    assert done.stdout.count("\n") == 2 and "weight" in json.dumps(weights)
    table = cli_run(str(tmp_path / "tiny.pt"), stdin="weights tiny\n")
    assert "weight   (4, 3)" in table.stdout and "bias     (4,)" in table.stdout
    assert table.stdout.splitlines() == [line.rstrip() for line in table.stdout.splitlines()]  # no trailing spaces


def test_preloaded_path_that_is_missing_fails_with_exit_1(tmp_path):
    missing = tmp_path / "missing.pt"
    done = cli_run(str(missing), stdin="print('never')\n")
    assert done.returncode == 1
    assert done.stderr == f"error: {missing}: no such file\n"
    assert "never" not in done.stdout


def test_python_dash_m_matches_the_console_script():
    done = subprocess.run([sys.executable, "-m", "modelshell", "run", "-"], input="print(6 * 7)\n",
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0 and done.stdout == "42\n"


def test_import_leaves_the_frameworks_unimported():
    # numpy and h5py too: they cost start-up time and the shell needs neither before a model arrives
    code = (
        "import sys\n"
        "import modelshell, modelshell.core.session, modelshell.cli, modelshell.terminal.shell, modelshell.commands\n"
        "from modelshell.core.session import Session\n"
        "s = Session()\n"
        "for line in ['help', 'help weights', 'models', 'x = 2', 'weights x']:\n"
        "    s.run_line(line)\n"
        "assert s.run_line('help').ok\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in {'torch', 'tensorflow', 'keras', 'h5py', 'numpy'}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_unknown_option_is_an_argparse_error():
    done = cli_run("--nosuch")
    assert done.returncode == 2
    assert "unrecognized arguments: --nosuch" in done.stderr
