"""Framework imports without their start-up chatter, and one clear line when a framework is missing.

TensorFlow's C++ start-up writes straight to file descriptor 2 before its logging is set up
(``WARNING: All log messages before absl::InitializeLog()...``, oneDNN's ``port.cc`` notice,
``cpu_feature_guard``, ``cudart_stub``), and ``TF_CPP_MIN_LOG_LEVEL`` does not stop those lines. They
are not for the user of a shell, whose commands' output they would split. So the first import of a
framework, whoever asks for it (an adapter, a Python line, transformers), runs with descriptor 2
pointed at a temporary file: what it wrote is kept in ``startup_text`` and shown only with ``--debug``,
or, when the import itself fails, attached to the error. Nothing about the numerics changes
(``TF_ENABLE_ONEDNN_OPTS`` is left to the user) and a user's own ``TF_CPP_MIN_LOG_LEVEL`` is kept.

Python warnings that TensorFlow and Keras raise from their own code (retracing notices, NumPy 2
deprecations) are filtered by module, so a warning about the user's own code still shows.

Nothing here imports a framework: the hook is a ``sys.meta_path`` finder that wraps the loader of the
few top-level packages named in ``NOISY``.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
import threading
import warnings
from collections.abc import Iterator
from typing import Any

from modelshell.core.errors import ModelshellError

__all__ = [
    "NOISY", "EXTRAS", "MissingFrameworkError", "install", "startup_text", "missing_framework",
    "require",
]

#: Top-level packages whose first import is captured.
NOISY = frozenset({"tensorflow", "keras", "tf_keras", "torch", "torchvision", "transformers", "keras_hub",
                   "tensorflow_text", "jax"})

#: What to install for each package a feature may need: the extra of modelshell that brings it.
EXTRAS = {
    "torch": ("PyTorch", "pip install 'modelshell[torch]'"),
    "tensorflow": ("TensorFlow", "pip install 'modelshell[tensorflow]'"),
    "keras": ("Keras 3 (with TensorFlow)", "pip install 'modelshell[tensorflow]'"),
    "tf_keras": ("tf-keras (Keras 2)", "pip install --no-deps tf-keras"),
    "transformers": ("transformers", "pip install transformers"),
    "keras_hub": ("keras-hub", "pip install keras-hub"),
    "torchvision": ("torchvision", "pip install torchvision"),
    "h5py": ("h5py", "pip install h5py"),
    "safetensors": ("safetensors", "pip install safetensors"),
    "onnx": ("onnx", "pip install 'modelshell[onnx]'"),
}

# Modules whose own warnings are start-up or internal noise for a shell user.
_QUIET_WARNINGS = r"(tensorflow|keras|tf_keras|absl|tensorflow_text)(\.|$)"

#: What each captured import wrote to descriptor 2, in order: (package, text).
startup_text: list[tuple[str, str]] = []

_state = {"installed": False, "show": False}
_busy = threading.local()


class MissingFrameworkError(ModelshellError):
    """A feature needs a package that is not installed: one line saying which, and what to install."""

    def __init__(self, package: str, needed_for: str = "") -> None:
        label, command = EXTRAS.get(package, (package, f"pip install {package}"))
        what = f"{needed_for} needs" if needed_for else "this needs"
        super().__init__(f"{what} {label}, which is not installed here", command)
        self.package = package


def missing_framework(exc: BaseException) -> str | None:
    """The known package a ``ModuleNotFoundError`` is about (``keras`` for ``No module named 'keras.src'``),
    or None for any other error."""
    if not isinstance(exc, ModuleNotFoundError) or not exc.name:
        return None
    top = exc.name.split(".")[0]
    return top if top in EXTRAS else None


def require(package: str, needed_for: str) -> None:
    """Raise :class:`MissingFrameworkError` unless ``package`` can be imported (without importing it)."""
    if package in sys.modules:
        return
    try:
        found = importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise MissingFrameworkError(package, needed_for)


def install(show: bool | None = None) -> None:
    """Capture the start-up output of the frameworks imported from now on; ``show`` (``--debug``) writes
    it to stderr after each import instead of keeping it back (None keeps what was said before).
    Idempotent: the adapters call it too, before they import their framework."""
    if show is not None:
        _state["show"] = show
    if _state["installed"]:
        return
    _state["installed"] = True
    if not _state["show"]:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # the C++ logs after start-up; the user's value wins
        warnings.filterwarnings("ignore", module=_QUIET_WARNINGS)
    sys.meta_path.insert(0, _QuietFinder())


class _QuietFinder:
    """Finds the noisy packages with the other finders, and wraps their loader in a quiet one."""

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name not in NOISY or getattr(_busy, "finding", False):
            return None
        _busy.finding = True
        try:
            spec = importlib.util.find_spec(name)
        finally:
            _busy.finding = False
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _QuietLoader(spec.loader)
        return spec


class _QuietLoader:
    """Runs the real loader with descriptor 2 captured, then steps aside: the module's ``__loader__`` and
    ``__spec__.loader`` are the real loader again, for the resource lookups packages make of them."""

    def __init__(self, loader: Any) -> None:
        self._loader = loader

    def create_module(self, spec: Any) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        name = module.__name__
        try:
            with _descriptor_2_captured(name):
                self._loader.exec_module(module)
        finally:
            module.__loader__ = self._loader
            if module.__spec__ is not None:
                module.__spec__.loader = self._loader
        _after_import(name)

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self._loader, attribute)


@contextlib.contextmanager
def _descriptor_2_captured(name: str) -> Iterator[None]:
    """Descriptor 2 into a temporary file while the body runs; the text is kept (or shown with
    ``--debug``), and added to the exception when the body fails."""
    if getattr(_busy, "capturing", False):  # keras importing tensorflow: the outer capture has it
        yield
        return
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all: nothing to keep quiet
        yield
        return
    import tempfile  # only when a framework is imported: start-up is spared it

    _busy.capturing = True
    sink = tempfile.TemporaryFile()
    failure: BaseException | None = None
    try:
        _flush_stderr()
        os.dup2(sink.fileno(), 2)
        yield
    except BaseException as exc:
        failure = exc
        raise
    finally:
        _flush_stderr()
        os.dup2(saved, 2)
        os.close(saved)
        _busy.capturing = False
        sink.seek(0)
        text = sink.read().decode("utf8", errors="replace")
        sink.close()
        if text:
            startup_text.append((name, text))
            if _state["show"]:
                sys.stderr.write(text)
            elif failure is not None and hasattr(failure, "add_note"):
                failure.add_note(f"{name} wrote while importing:\n{text.rstrip()}")


def _flush_stderr() -> None:
    with contextlib.suppress(Exception):
        sys.stderr.flush()


def _after_import(name: str) -> None:
    """Framework loggers down to errors once they exist, unless ``--debug``."""
    if _state["show"]:
        return
    if name in ("tensorflow", "keras", "tf_keras"):
        import logging

        logging.getLogger("tensorflow").setLevel(logging.ERROR)
        absl = sys.modules.get("absl.logging")
        if absl is not None:
            absl.set_verbosity(absl.ERROR)
