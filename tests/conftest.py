"""Shared fixtures: a fresh session, and one with the tutorial's LeNet-5 demo models loaded."""
from __future__ import annotations

import os
import shutil

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ start-up chatter out of test output

from modelshell.cli import load_demo  # noqa: E402
from modelshell.core.session import Session  # noqa: E402
from tmux_terminal import FAILED, term_demo, term_plain, term_server, term_shell, tmux  # noqa: E402,F401 - fixtures

_NEEDS_ROOT = "needs root and capsh (to drop capabilities); run as root with libcap2-bin installed"


def pytest_collection_modifyitems(config, items):
    """``terminal`` on every test that runs the shell under tmux (by the ``tmux`` fixture, which each
    terminal fixture stands on, or marked by hand); ``needs_root`` tests skip, saying why, when this is not
    root or capsh is missing."""
    for item in items:
        if "tmux" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.terminal)
        if item.get_closest_marker("needs_root"):
            item.add_marker(pytest.mark.skipif(os.geteuid() != 0 or shutil.which("capsh") is None, reason=_NEEDS_ROOT))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Tell a shared terminal's fixture that its test failed (see tmux_terminal.start_afresh_after_a_failure)."""
    report = (yield).get_result()
    if report.when == "call" and report.failed:
        item.stash[FAILED] = True


@pytest.fixture
def session() -> Session:
    """An empty session, as `modelshell` starts without arguments."""
    return Session()


@pytest.fixture
def demo_session() -> Session:
    """A session with ``torch_model`` and ``keras_model`` bound, as `modelshell --demo` starts."""
    s = Session()
    load_demo(s)
    return s
