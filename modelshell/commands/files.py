"""load and save: model files in, model files out."""
from __future__ import annotations

import argparse
import builtins
import keyword
import shlex
from pathlib import Path

from modelshell import loaders
from modelshell.formats import FORMATS
from modelshell.formats.writers import DEFAULT_MAX_SHARD_SIZE, parse_size
from modelshell.safety.atomic import atomic_folder, atomic_target, full_suffix
from modelshell.commands.format import count_text
from modelshell.commands.registry import arg, command
from modelshell.core.errors import ModelshellError, first_line
from modelshell.safety.resources import check_free_space, tensor_bytes
from modelshell.core.results import Message

__all__: list[str] = []

SAVE_SUFFIXES = FORMATS.save_suffixes()


@command(
    "load",
    "files",
    "load a model file, or call FACTORY() from Python code",
    args=[
        arg("spec", metavar="PATH", help="a model file, FILE.py:FACTORY or pkg.module:FACTORY"),
        arg("alias", nargs="*", metavar="as NAME", help="the variable name (default: the file's stem)"),
        arg("--trust", action="store_true", help="allow formats that run code when loaded (pickled modules, "
            "Keras Lambda layers and custom objects, a transformers folder's own code with --build); `trust on` does this for the whole session"),
        arg("--force", action="store_true", help="allow an `as NAME` that hides a Python builtin (print, len, ...)"),
        arg("--build", action="store_true", help="build a model folder into the real model with its library, "
            "offline (transformers `from_pretrained`, keras-hub `from_preset`), instead of reading its weights"),
    ],
    examples=["load lenet5.pt", "load lenet5.h5 as keras_model", "load models.py:build_lenet as net",
              "load bert-folder/ --build as bert"],
    json=True,
    details=FORMATS.load_details() + " --build makes the model itself of a folder, where its library is "
    "installed; without --trust, code shipped in a folder (transformers `auto_map`) is refused and named."
    " FILE.py:FACTORY and pkg.module:FACTORY call FACTORY() from Python code. "
    "Without --trust, nothing that runs code on load is opened: a refused file's message lists the code it "
    "would import (read, not run). FILE.py:FACTORY and pkg.module:FACTORY run that Python code by design, "
    "with or without --trust: load only code you trust. See SECURITY.md.",
)
def load(session, args: argparse.Namespace) -> Message:
    name = _alias(args.alias, args.force, args.spec) or session.free_name(loaders.default_name(args.spec))
    if name in session.namespace:
        raise ModelshellError(f"the name {name!r} is already taken", f"choose another with `as`, or `del {name}` first")
    handle = loaders.load(args.spec, trust=args.trust or session.trust, build=args.build)
    session.add(name, handle)
    counts = handle.param_counts()
    kind = handle.class_name if handle.has_architecture else f"{handle.class_name}, no architecture"
    note = getattr(handle, "note", None)
    return Message(
        f"loaded {name}: {handle.framework} {kind}, {count_text(counts['total'])} parameters, from {args.spec}"
        + (f" ({note})" if note else ""),
        data={"name": name, "framework": handle.framework, "class": handle.class_name,
              "params": counts["total"], "source": args.spec, "trusted": handle.trusted},
    )


def _alias(words: list[str], force: bool = False, spec: str = "") -> str | None:
    if not words:
        return None
    if len(words) != 2 or words[0] != "as":
        # Most often a file name with spaces, split at them: say how to quote it.
        rest = words[: words.index("as")] if "as" in words else words
        whole = shlex.quote(" ".join([spec, *rest]))
        raise ModelshellError(f"expected `as NAME` after the path, got {' '.join(words)!r}",
                              f"a path with spaces goes in quotes: `load {whole}`; see `help load`")
    name = words[1]
    if not name.isidentifier() or keyword.iskeyword(name):
        why = "a Python keyword: Python reserves it" if keyword.iskeyword(name) else "not a valid Python identifier"
        raise ModelshellError(f"{name!r} cannot name a model: it is {why}",
                              "a name is letters, digits and _, not starting with a digit, e.g. `as net_3`")
    if name.startswith("__"):
        raise ModelshellError(f"{name!r} cannot name a model: Python reserves it", "choose another name with `as`")
    if hasattr(builtins, name) and not force:
        raise ModelshellError(f"{name!r} would hide Python's builtin {name}()" if callable(getattr(builtins, name))
                              else f"{name!r} would hide Python's builtin {name}",
                              "choose another name, or `--force` to hide it")
    return name


@command(
    "save",
    "files",
    "write a model to a file (the suffix picks the format), or to a folder its library loads, atomically",
    args=[arg("name", help="a model in the session"),
          arg("path", metavar="PATH", help="the file to write, or DIR/ (ending in /) for a folder"),
          arg("--max-shard-size", default=DEFAULT_MAX_SHARD_SIZE, metavar="SIZE",
              help=f"with DIR/: the largest shard, as transformers reads it (default {DEFAULT_MAX_SHARD_SIZE})")],
    examples=["save torch_model lenet5-keras.pt", "save keras_model lenet5-torch.keras",
              "save bert bert-copy/ --max-shard-size 500MB"],
    json=True,
    details=FORMATS.save_details(),
)
def save(session, args: argparse.Namespace) -> Message:
    handle = session.model(args.name)
    path = Path(args.path).expanduser()
    if args.path.endswith("/"):
        return _save_folder(args, handle, path)
    if full_suffix(path) not in SAVE_SUFFIXES:
        raise ModelshellError(f"cannot tell the format of {path}", "use one of " + " ".join(SAVE_SUFFIXES))
    if not path.parent.is_dir():
        raise ModelshellError(f"{path.parent} is not a folder")
    if path.is_dir():
        raise ModelshellError(f"{path} is a folder")
    try:
        _check_room(handle, path)
        with atomic_target(path) as temporary:
            handle.save(temporary)
    except ModelshellError:
        raise
    except Exception as exc:  # noqa: BLE001 - permissions, full disks and framework errors alike
        raise ModelshellError(f"cannot save {args.name} to {path}: {first_line(exc)}") from exc
    handle.changed = False
    size = path.stat().st_size
    return Message(f"saved {args.name} to {path} ({count_text(size)} bytes)",
                   data={"name": args.name, "path": str(path), "bytes": size})


def _save_folder(args: argparse.Namespace, handle, folder: Path) -> Message:
    """``save NAME DIR/``: the folder the model's library loads (transformers' ``save_pretrained``,
    keras-hub's ``save_to_preset``), or safetensors shards and their index for any other model; written
    into a temporary folder beside DIR and renamed into place whole."""
    max_bytes = parse_size(args.max_shard_size)
    if folder.exists() and not folder.is_dir():
        raise ModelshellError(f"{folder} is not a folder")
    if folder.is_dir() and any(folder.iterdir()):
        raise ModelshellError(f"{folder} is not empty", "save into a new or empty folder")
    if not folder.parent.is_dir():
        raise ModelshellError(f"{folder.parent} is not a folder")
    form = FORMATS.folder_writer_for(handle)
    try:
        check_free_space(folder / "model.safetensors", tensor_bytes(handle.tensors()))
        with atomic_folder(folder) as temporary:
            how = form.folder_writer(handle, temporary, max_bytes)
    except ModelshellError:
        raise
    except Exception as exc:  # noqa: BLE001 - permissions, full disks and dtypes safetensors cannot hold
        raise ModelshellError(f"cannot save {args.name} to {folder}: {first_line(exc)}") from exc
    handle.changed = False
    written = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    size = sum((folder / name).stat().st_size for name in written)
    shards = [name for name in written if name.endswith((".safetensors", ".h5"))]
    return Message(f"saved {args.name} to {folder} ({how}: {len(shards)} weights file{'s' * (len(shards) > 1)}, "
                   f"{len(written)} files, {count_text(size)} bytes)",
                   data={"name": args.name, "path": str(folder), "bytes": size, "files": written,
                         "format": form.name, "writer": how})


def _check_room(handle, path: Path) -> None:
    """Refuse up front a save the folder has no room for. Every format but ``.keras`` (a zip that may
    compress) stores the values uncompressed, so their bytes are a sure lower bound of the file."""
    if full_suffix(path) != ".keras":
        check_free_space(path, tensor_bytes(handle.tensors()))
