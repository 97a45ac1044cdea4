"""Small things that make scripted and mistaken use clearer: `models` with none, close model names,
names `load ... as` refuses, and the transcript plugin only where a project asks for it."""
from __future__ import annotations

import subprocess
import sys
import textwrap

from modelshell.render.text import outcome_text
from modelshell.core.results import Message


def test_models_with_none_is_only_its_message(session):
    outcome = session.run_line("models")
    assert outcome.ok and isinstance(outcome.results[0], Message)
    assert outcome_text(outcome) == "no models yet: `load PATH` adds one, or `help load`"
    assert session.run_line("models --json").results[0].data == {"models": []}


def test_a_misspelt_model_name_gets_a_did_you_mean(demo_session):
    outcome = demo_session.run_line("weights torch_modle")
    assert outcome.error == "no model named 'torch_modle' (did you mean 'torch_model'? `models` lists the models; " \
                            "`load PATH` adds one)"
    far = demo_session.run_line("weights zzz")
    assert far.error == "no model named 'zzz' (`models` lists the models; `load PATH` adds one)"


def test_load_as_a_name_that_is_not_an_identifier(session, tmp_path):
    import torch

    path = tmp_path / "tiny.pt"
    torch.save(torch.nn.Linear(2, 2).state_dict(), path)
    bad = session.run_line(f"load {path} as 3bad")
    assert bad.error == "'3bad' cannot name a model: it is not a valid Python identifier (a name is letters, " \
                        "digits and _, not starting with a digit, e.g. `as net_3`)"
    assert session.run_line(f"load {path} as for").error.startswith("'for' cannot name a model: it is a Python keyword")
    assert session.run_line(f"load {path} as tiny_3").ok and "tiny_3" in session.model_names()


def test_the_transcript_plugin_runs_only_where_a_project_asks(tmp_path):
    """pytest in a project of its own with a transcript: collected with `-p modelshell.pytest_plugin` (or a
    conftest line), ignored without."""
    (tmp_path / "transcripts").mkdir()
    (tmp_path / "transcripts" / "t.md").write_text(textwrap.dedent("""\
        # t
        ```modelshell
        ms> 6 * 7
        42
        ```
        """))
    (tmp_path / "pytest.ini").write_text("[pytest]\n")  # a project root of its own, not this repo's config

    def pytest(*args: str, cwd=tmp_path) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args, "transcripts"],
                              capture_output=True, text=True, timeout=120, cwd=cwd)

    assert "no tests ran" in pytest().stdout
    asked = pytest("-p", "modelshell.pytest_plugin")
    assert asked.returncode == 0 and "1 passed" in asked.stdout, asked.stdout
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["modelshell.pytest_plugin"]\n')
    in_conftest = pytest()
    assert in_conftest.returncode == 0 and "1 passed" in in_conftest.stdout, in_conftest.stdout


def test_a_long_name_folds_after_a_separator_not_mid_word():
    from modelshell.core.results import Column, Outcome, Table

    names = ["encoder/block_11/attention/query_projection/kernel", "encoder/block_11/attention/output/bias"]
    table = Table("t", [Column("name", no_wrap=True), Column("shape", no_wrap=True), Column("note")],
                  [[name, "(768, 768)", "a tensor of the encoder's attention"] for name in names])
    lines = outcome_text(Outcome(results=[table]), width=40).splitlines()
    assert lines[3].startswith(" ----")
    assert [line.split()[0] for line in lines[4:]] == [  # without this, `encoder/bloc`, `k_11/attenti`, ...
        "encoder/", "block_11/", "attention/", "query_", "projection/", "kernel",
        "encoder/", "block_11/", "attention/", "output/bias"]


def test_a_safetensors_file_lists_its_layers_in_natural_order(session, tmp_path):
    """safetensors stores names sorted as text (0, 1, 10, 11, 2, ...); `weights` shows a Sequential's order."""
    import json
    import struct

    import torch
    from safetensors.torch import save_file

    model = torch.nn.Sequential(*[torch.nn.Linear(2, 2) for _ in range(12)])
    path = tmp_path / "seq.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    with open(path, "rb") as handle:  # the file's own order, read from its header
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length))
    stored = [n for n, _ in sorted(((n, i) for n, i in header.items() if n != "__metadata__"),
                                   key=lambda item: item[1]["data_offsets"][0])]
    assert stored[:6] == ["0.bias", "0.weight", "1.bias", "1.weight", "10.bias", "10.weight"]  # text order
    assert session.run_line(f"load {path}").ok
    names = [w["name"] for w in session.run_line("weights seq --json").results[0].data["weights"]]
    assert [n.split(".")[0] for n in names[::2]] == [str(i) for i in range(12)]
    assert sorted(names) == sorted(stored) and names[:2] == ["0.bias", "0.weight"]
