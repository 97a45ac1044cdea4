"""Tab completion: the completer on a real session with the demo's torch and Keras models, then the same in a
real terminal (tmux), where Tab is pressed as a user would.

The function-level tests read what each completion would make of the line (``applied``), which is what a
user sees after Tab, rather than the completions' internals.
"""
from __future__ import annotations

import logging
import subprocess
import sys
import traceback
import warnings
from pathlib import Path

import pytest
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document

import modelshell
import modelshell.terminal.completion
from modelshell.commands.registry import arg, command
from modelshell.terminal.completion import SessionCompleter, shell_words, wants_menu_while_typing
from modelshell.core.errors import ModelshellError


def completions(session, before: str, after: str = ""):
    document = Document(before + after, cursor_position=len(before))
    return list(SessionCompleter(session).get_completions(document, CompleteEvent(completion_requested=True)))


def applied(session, before: str, after: str = "") -> list[str]:
    """The line as each completion would leave it."""
    return [before[: len(before) + c.start_position] + c.text + after for c in completions(session, before, after)]


# --- the first word ------------------------------------------------------------------------------
def test_first_word_completes_command_names_with_their_summary(demo_session):
    found = completions(demo_session, "wei")
    assert [c.text for c in found] == ["weights"]
    assert found[0].display_meta_text.startswith("every tensor")
    assert {"save", "shapes"} <= set(applied(demo_session, "s"))


def test_first_word_also_completes_python_names(demo_session):
    assert applied(demo_session, "tor") == ["torch_model"]
    assert "print" in applied(demo_session, "pri")
    assert applied(demo_session, "  ker") == ["  keras_model"]
    assert "__name__" not in applied(demo_session, "")  # _private names only after a typed _
    assert "__name__" in applied(demo_session, "__n")


# --- command arguments -----------------------------------------------------------------------------
@pytest.mark.parametrize("before, expected", [
    ("weights ", ["weights torch_model", "weights keras_model"]),
    ("members k", ["members keras_model"]),
    ("shapes t", ["shapes torch_model"]),
    ("save k", ["save keras_model"]),
    ("copy keras_model t", ["copy keras_model torch_model"]),
    ("pair torch_model k", ["pair torch_model keras_model"]),
    ("verify torch_model ", ["verify torch_model torch_model", "verify torch_model keras_model"]),
])
def test_model_names_where_the_parser_expects_a_model(demo_session, before, expected):
    assert applied(demo_session, before) == expected


def test_a_model_made_in_python_completes_too(demo_session):
    demo_session.run_line("import torch; lin = torch.nn.Linear(3, 4)")
    assert applied(demo_session, "weights li") == ["weights lin"]
    assert applied(demo_session, "weights lin ") == ["weights lin weight", "weights lin bias"]


def test_member_names_after_members_name(demo_session):
    assert applied(demo_session, "members torch_model sta") == ["members torch_model state_dict"]
    assert "members keras_model get_weights" in applied(demo_session, "members keras_model get_")


def test_private_members_only_after_an_underscore_or_with_private(demo_session):
    public = applied(demo_session, "members torch_model ")
    assert "members torch_model state_dict" in public
    assert not any(line.split()[-1].startswith("_") for line in public)
    assert applied(demo_session, "members torch_model _para") == ["members torch_model _parameters"]
    assert "members torch_model --private _parameters" in applied(demo_session, "members torch_model --private ")


def test_a_filter_that_begins_no_name_completes_the_names_containing_it(demo_session):
    # FILTER is a substring for `members` and `weights`, so completion offers what the filter would show.
    assert applied(demo_session, "members keras_model et_weig") == [
        "members keras_model get_weights", "members keras_model set_weights"]
    assert applied(demo_session, "weights keras_model dense_1/k") == ["weights keras_model lenet5/dense_1/kernel"]


def test_tensor_names_after_weights_name_with_their_shapes(demo_session):
    found = completions(demo_session, "weights torch_model 0.")
    assert [c.text for c in found] == ["0.weight", "0.bias"]  # the model's own order, not sorted
    assert [c.display_meta_text for c in found] == ["(6, 1, 5, 5)", "(6,)"]
    assert applied(demo_session, "weights keras_model lenet5/dense/") == [
        "weights keras_model lenet5/dense/kernel", "weights keras_model lenet5/dense/bias"]
    assert len(completions(demo_session, "weights torch_model ")) == 10


@pytest.fixture
def tensor_command(demo_session):
    """A command with a positional named ``tensor`` (as `hist NAME TENSOR`), in the session's registry for
    one test."""
    name = "probe_tensor_completion"

    @command(name, "inspect", "a test command", args=[arg("name"), arg("tensor")])
    def probe(session, args):  # pragma: no cover - never run, only completed
        return None

    demo_session.commands.add_function(probe)
    yield name
    demo_session.commands.remove(name)


def test_any_positional_named_tensor_completes_tensor_names(demo_session, tensor_command):
    assert applied(demo_session, f"{tensor_command} torch_model 11.") == [
        f"{tensor_command} torch_model 11.weight", f"{tensor_command} torch_model 11.bias"]
    assert applied(demo_session, f"{tensor_command} k") == [f"{tensor_command} keras_model"]


def test_doc_completes_dotted_members(demo_session):
    assert applied(demo_session, "doc tor") == ["doc torch_model"]
    assert applied(demo_session, "doc torch_model.sta") == ["doc torch_model.state_dict"]
    assert "doc torch_model.state_dict.__func__" in applied(demo_session, "doc torch_model.state_dict.__fu")
    found = completions(demo_session, "doc keras_model.set_w")
    assert [c.display_text for c in found] == ["set_weights"]  # the menu shows the member, not the whole path
    assert applied(demo_session, "?torch_model.load_sta") == ["?torch_model.load_state_dict"]


def test_paths_after_load_save_and_record(demo_session, tmp_path, monkeypatch):
    (tmp_path / "lenet5.pt").write_bytes(b"")
    (tmp_path / "lenet5.h5").write_bytes(b"")
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "big.safetensors").write_bytes(b"")
    (tmp_path / ".hidden.pt").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    assert applied(demo_session, "load len") == ["load lenet5.h5", "load lenet5.pt"]
    assert applied(demo_session, "load mo") == ["load models/"]  # a folder ends in /, so Tab goes on inside
    assert applied(demo_session, "load models/") == ["load models/big.safetensors"]
    assert applied(demo_session, "save torch_model lenet5.p") == ["save torch_model lenet5.pt"]
    assert applied(demo_session, "record ") == ["record stop", "record lenet5.h5", "record lenet5.pt", "record models/"]
    assert applied(demo_session, "load .h") == ["load .hidden.pt"]  # dotfiles only when asked for
    assert applied(demo_session, f"verify torch_model keras_model --input {tmp_path}/models/b") == [
        f"verify torch_model keras_model --input {tmp_path}/models/big.safetensors"]


def test_paths_with_spaces_are_quoted_and_a_folder_keeps_its_quote_open(demo_session, tmp_path, monkeypatch):
    (tmp_path / "my models").mkdir()
    (tmp_path / "my models" / "le net.keras").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    assert applied(demo_session, "load my") == ["load 'my models/"]
    assert applied(demo_session, "load 'my models/") == ["load 'my models/le net.keras'"]
    assert applied(demo_session, 'load "my models/le') == ['load "my models/le net.keras"']
    assert applied(demo_session, "load my\\ models/le") == ["load 'my models/le net.keras'"]


def test_a_path_from_home_keeps_its_tilde(demo_session, tmp_path, monkeypatch):
    (tmp_path / "lenet5.keras").write_bytes(b"")
    monkeypatch.setenv("HOME", str(tmp_path))
    # `load` and `save` expand ~ themselves, so the line keeps what the user typed.
    assert applied(demo_session, "load ~/len") == ["load ~/lenet5.keras"]
    assert applied(demo_session, "save keras_model ~/") == ["save keras_model ~/lenet5.keras"]


def test_options_of_each_command_not_given_yet(demo_session):
    found = completions(demo_session, "verify torch_model keras_model --at")
    assert [c.text for c in found] == ["--atol"]
    assert found[0].display_meta_text.startswith("absolute tolerance")
    assert "copy keras_model torch_model --dry-run" in applied(demo_session, "copy keras_model torch_model --")
    assert "copy keras_model torch_model --dry-run --dry-run" not in applied(
        demo_session, "copy keras_model torch_model --dry-run --")
    assert applied(demo_session, "members torch_model --pr") == ["members torch_model --private"]
    # with every positional given, an empty word offers the options
    assert "weights torch_model 0.bias --json" in applied(demo_session, "weights torch_model 0.bias ")


def test_an_option_value_is_not_taken_for_a_positional(demo_session, tmp_path, monkeypatch):
    (tmp_path / "input.npy").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    assert applied(demo_session, "verify torch_model keras_model --atol ") == []  # a number: nothing to offer
    assert applied(demo_session, "verify torch_model keras_model --input in") == [
        "verify torch_model keras_model --input input.npy"]
    assert applied(demo_session, "verify --atol 1e-3 torch_model k") == ["verify --atol 1e-3 torch_model keras_model"]


def test_choices_and_literal_words_of_the_parsers(demo_session):
    assert applied(demo_session, "trust ") == ["trust on", "trust off"]
    assert applied(demo_session, "record st") == ["record stop"]
    assert applied(demo_session, "load lenet5.h5 a") == ["load lenet5.h5 as"]
    assert applied(demo_session, "load lenet5.h5 as ") == []  # a new name: nothing to offer
    assert applied(demo_session, "help wei") == ["help weights"]


# --- Python lines ------------------------------------------------------------------------------------
def test_attributes_of_session_objects(demo_session):
    assert applied(demo_session, "torch_model.sta") == ["torch_model.state_dict"]
    assert applied(demo_session, "x = keras_model.get_w") == ["x = keras_model.get_weights"]
    assert "print(torch_model.state_dict.__self__" in applied(demo_session, "print(torch_model.state_dict.__se")
    public = applied(demo_session, "torch_model.")
    assert "torch_model.state_dict" in public and "torch_model._modules" not in public
    assert applied(demo_session, "torch_model._modu") == ["torch_model._modules"]


def test_names_in_python_lines(demo_session):
    assert applied(demo_session, "x = tor") == ["x = torch_model"]
    assert "print(len" in applied(demo_session, "print(le")
    assert applied(demo_session, "x = 1") == []


class _Recorder:
    """Counts every call, so a test can tell that completion ran none of its code."""

    calls: list[str] = []

    def method(self):
        self.calls.append("method")
        return self

    def __getitem__(self, key):
        self.calls.append("getitem")
        return self


def test_calls_and_subscripts_are_never_evaluated(demo_session):
    probe = _Recorder()
    probe.calls = []
    demo_session.namespace["probe"] = probe
    assert "probe.method.__func__" in applied(demo_session, "probe.method.__fu")  # attribute access is fine
    assert applied(demo_session, "probe.method().me") == []
    assert applied(demo_session, "probe[0].me") == []
    assert applied(demo_session, 'probe["a"].me') == []
    assert applied(demo_session, "doc probe.method.__fu") == ["doc probe.method.__func__"]
    assert probe.calls == []


def test_dict_keys_close_the_quote_and_the_bracket(demo_session):
    demo_session.run_line("sd = torch_model.state_dict()")
    assert applied(demo_session, 'sd["0.w') == ['sd["0.weight"]']
    assert applied(demo_session, "x = sd['11") == ["x = sd['11.weight']", "x = sd['11.bias']"]
    assert applied(demo_session, "sd[")[:2] == ['sd["0.weight"]', 'sd["0.bias"]']
    # What already follows the cursor is not typed twice.
    assert applied(demo_session, 'sd["0.w', '"]') == ['sd["0.weight"]']
    assert applied(demo_session, 'sd["0.w', "]") == ['sd["0.weight"]']
    found = completions(demo_session, 'sd["6.')
    assert [c.display_text for c in found] == ["6.weight", "6.bias"]


def test_dict_keys_are_read_without_running_code_of_the_object(demo_session):
    class Lazy(dict):
        def keys(self):
            raise AssertionError("completion called a dict subclass's own keys()")

        def __iter__(self):
            raise AssertionError("completion iterated a dict subclass with its own __iter__")

    class NotADict:
        def __getitem__(self, key):
            raise AssertionError("completion subscripted an object")

    demo_session.namespace["lazy"] = Lazy({"alpha": 1, 2: "not a string key"})
    demo_session.namespace["other"] = NotADict()
    assert applied(demo_session, "lazy['a") == ["lazy['alpha']"]
    assert applied(demo_session, 'other["') == []


# --- robustness --------------------------------------------------------------------------------------
class _Loud:
    @property
    def loud(self):
        print("a property printed this")
        warnings.warn("a property warned", UserWarning)
        return self


class _Hostile(_Loud):
    def __dir__(self):
        raise RuntimeError("no dir for you")


@pytest.mark.parametrize("before", [
    "hostile.", "hostile.loud.", "doc hostile.", "weights nosuch ", "members nosuch x", "doc nosuch.x",
    'load "', "load '", "weights torch_model '0.", "\\", '"""', "sd[", "x = )(.", "?", "? ", "?.", "members ",
    "weights torch_model 0.bias extra ", "help wei --", "copy --dry-run ",
])
def test_completion_never_raises(demo_session, before, caplog):
    """Any exception means no completions, never a traceback on the prompt; but the ones completion
    swallows (it logs them) must be the expected kinds, not a bug of its own."""
    demo_session.namespace["hostile"] = _Hostile()
    caplog.set_level(logging.DEBUG, logger="modelshell.terminal.completion")
    completions(demo_session, before)
    assert _bugs(caplog) == []


_PACKAGE = Path(modelshell.__file__).parent


def _bugs(caplog) -> list[str]:
    """The swallowed exceptions that are neither a ModelshellError (a deliberate "no model named ...")
    nor raised by the user's own code (an object whose ``__dir__`` or property raises): modelshell's own
    code failing, which completion hides from the user and a test must not."""
    found = []
    for record in caplog.records:
        error = record.exc_info[1]
        innermost = traceback.extract_tb(error.__traceback__)[-1].filename
        if not isinstance(error, ModelshellError) and Path(innermost).is_relative_to(_PACKAGE):
            found.append("".join(traceback.format_exception(error)))
    return found


def test_a_bug_inside_completion_is_reported_by_the_never_raises_check(demo_session, caplog, monkeypatch):
    """The check above can fail: an error in modelshell's own code is caught and named."""
    monkeypatch.setattr(modelshell.terminal.completion, "_TAIL", None)  # _python_tail's regex: `None.search` fails
    caplog.set_level(logging.DEBUG, logger="modelshell.terminal.completion")
    assert completions(demo_session, "x = torch_model.sta") == []  # still no traceback for the user
    bugs = _bugs(caplog)
    assert len(bugs) == 1 and "AttributeError" in bugs[0] and "_python_tail" in bugs[0]


def test_a_property_that_prints_or_warns_stays_off_the_screen(demo_session, capsys):
    demo_session.namespace["loud"] = _Loud()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning that got out would fail the test
        assert applied(demo_session, "loud.loud.lo") == ["loud.loud.loud"]
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_thousands_of_tensors_complete(session):
    """Every one of 5,000 tensors is offered; how fast (per tensor, against 500) is measured side by side
    in benchmarks/bench_interactive.py, not bounded here."""
    session.run_line("import torch; big = torch.nn.Sequential(*[torch.nn.Linear(2, 2) for _ in range(2500)])")
    assert applied(session, "weights big 2499.") == ["weights big 2499.weight", "weights big 2499.bias"]
    offered = [c.text for c in completions(session, "weights big ")]
    assert len(offered) == 5000 and set(offered) == {f"{i}.{r}" for i in range(2500) for r in ("weight", "bias")}


def test_completing_does_not_count_as_using_a_model(demo_session):
    before = list(demo_session.recent)
    completions(demo_session, "weights keras_model lenet5/")
    assert demo_session.recent == before  # `models` marks the model last used; a Tab is not a use


def test_shell_words_read_quotes_and_the_word_being_typed():
    assert shell_words("load 'my file.pt' as x", 4) == [("my file.pt", 5), ("as", 18), ("x", 21), ]
    assert shell_words('load "a b', 4) == [("a b", 5)]
    assert shell_words("weights m ", 7) == [("m", 8), ("", 10)]


def test_the_menu_while_typing_is_wanted_only_after_a_dot_in_python(demo_session):
    assert wants_menu_while_typing(demo_session, "torch_model.")
    assert wants_menu_while_typing(demo_session, "x = torch_model.state_d")
    assert not wants_menu_while_typing(demo_session, "wei")
    assert not wants_menu_while_typing(demo_session, "weights torch_model 0.")
    assert not wants_menu_while_typing(demo_session, "doc torch_model.")
    assert not wants_menu_while_typing(demo_session, 'x = torch_model.state_dict()["0.weight"].shape')
    assert not wants_menu_while_typing(demo_session, 'sd["0.')
    assert not wants_menu_while_typing(demo_session, "x = 1.5")


def test_importing_the_completer_imports_no_framework():
    code = "import sys, modelshell.terminal.completion; print(sorted({'torch', 'tensorflow', 'keras'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[]"


# --- in a real terminal ----------------------------------------------------------------------------
def _prompt_line(lines: list[str]) -> str:
    """The last line with a prompt: a menu of completions may be drawn below it (with a menu while typing,
    Tab selects in the menu and leaves it open)."""
    return [line for line in lines if line.startswith("ms>")][-1]


def test_tab_completes_an_attribute_in_a_python_line(term_shell):
    term_shell.type("torch_model.sta")
    term_shell.keys("Tab")
    term_shell.wait_for(lambda lines: _prompt_line(lines) == "ms> torch_model.state_dict", what="state_dict completed")
    term_shell.type("()['0.b")
    term_shell.keys("Tab", "Z")  # Tab changes nothing: the Z typed after it shows that it was handled
    term_shell.wait_for(lambda lines: _prompt_line(lines) == "ms> torch_model.state_dict()['0.bZ",
                        what="no key completion after a call (it would have to be run)")
    term_shell.keys("C-c")
    term_shell.wait_for_prompt()


def test_tab_completes_a_dict_key_and_closes_it(term_shell):
    term_shell.enter("sd = torch_model.state_dict()")
    term_shell.wait_for_prompt()
    term_shell.type('sd["11.w')
    term_shell.keys("Tab")
    term_shell.wait_for(lambda lines: _prompt_line(lines) == 'ms> sd["11.weight"]', what="the key completed and closed")
    term_shell.type(".shape")
    term_shell.keys("Enter")
    term_shell.wait_for_text("torch.Size([10, 84])")
    term_shell.wait_for_prompt()


@pytest.mark.parametrize("typed, completed", [
    ("torch_model.state_d", "torch_model.state_dict"),  # a menu while typing is being computed
    ("x = keras_model.get_wei", "x = keras_model.get_weights"),
    ("print(keras_model.get_wei", "print(keras_model.get_weights"),
    ("doc torch_model.load_sta", "doc torch_model.load_state_dict"),
    ("weights torch_model 11.w", "weights torch_model 11.weight"),
])
def test_tab_right_after_a_paste_completes_the_pasted_text(term_shell, typed, completed):
    """The text and Tab in one write to the terminal, as a paste followed by Tab or very fast typing: the
    keys reach the shell together, and Tab must complete the whole text, not what it was keys before."""
    term_shell.keys(typed, "Tab")  # one send-keys call: no pause between the text and Tab
    term_shell.wait_for(lambda lines: _prompt_line(lines) == f"ms> {completed}", what=repr(completed))
    term_shell.keys("C-c")
    term_shell.wait_for_prompt()


def test_tab_shows_a_menu_of_tensor_names_with_shapes(term_shell):
    term_shell.type("weights torch_model 3.")
    term_shell.keys("Tab")
    lines = term_shell.wait_for(
        lambda lines: any("3.weight" in line and "(16, 6, 5, 5)" in line for line in lines), what="the menu")
    assert _prompt_line(lines) == "ms> weights torch_model 3."  # no common part beyond "3." to insert
    assert any("3.bias" in line and "(16,)" in line for line in lines)
    term_shell.keys("Tab")  # the next Tab takes the first entry
    term_shell.wait_for(lambda lines: _prompt_line(lines) == "ms> weights torch_model 3.weight", what="3.weight")
    term_shell.keys("C-c")
    term_shell.wait_for_prompt()


def test_tab_completes_members_doc_targets_and_options(term_shell):
    for typed, completed in [
        ("members keras_model set_w", "members keras_model set_weights"),
        ("doc torch_model.load_sta", "doc torch_model.load_state_dict"),
        ("weights keras_model --js", "weights keras_model --json"),
    ]:
        term_shell.type(typed)
        term_shell.keys("Tab")
        term_shell.wait_for(lambda lines: _prompt_line(lines) == f"ms> {completed}", what=repr(completed))
        term_shell.keys("C-c")
        term_shell.wait_for_prompt()


def test_tab_completes_a_path_then_load_reads_it(term_shell, tmp_path):
    term_shell.enter(f"save keras_model {tmp_path}/tabbed_lenet5.keras")
    term_shell.wait_for_text("saved keras_model to")
    term_shell.wait_for_prompt()
    term_shell.type(f"load {tmp_path}/tabb")
    term_shell.keys("Tab")
    term_shell.wait_for(lambda lines: _prompt_line(lines) == f"ms> load {tmp_path}/tabbed_lenet5.keras", what="the path")
    term_shell.keys("Enter")
    term_shell.wait_for_text("loaded tabbed_lenet5")
    term_shell.wait_for_prompt()
