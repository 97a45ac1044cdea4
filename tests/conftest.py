"""Shared fixtures: a fresh session, and one with the tutorial's LeNet-5 demo models loaded."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ start-up chatter out of test output

from modelshell.cli import load_demo  # noqa: E402
from modelshell.session import Session  # noqa: E402
from tmux_terminal import term_demo, term_plain, term_server, term_shell  # noqa: E402,F401 - fixtures


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
