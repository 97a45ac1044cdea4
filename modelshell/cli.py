"""The command line: the interactive shell, ``run SCRIPT``, piped input, ``--demo`` and preloaded files."""
from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Iterable
from pathlib import Path

from modelshell import __version__

__all__ = ["main"]


def _shell_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modelshell",
        description="Look inside PyTorch and Keras models and move weights between them. "
        "`modelshell run SCRIPT` runs a file of shell lines; `modelshell replay FILE` checks a transcript; "
        "`modelshell record PATH` records one.",
    )
    parser.add_argument("paths", nargs="*", metavar="PATH", help="model files to load (names from the file stems)")
    parser.add_argument("--demo", action="store_true", help="load the tutorial's LeNet-5 as torch_model and keras_model")
    _common_options(parser)
    return parser


def _run_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="modelshell run", description="Run a file of shell lines.")
    parser.add_argument("script", metavar="SCRIPT", help="a file of shell lines ('-' reads standard input)")
    parser.add_argument("--keep-going", action="store_true", help="run every line; exit 1 if any failed")
    parser.add_argument("--demo", action="store_true", help="load the LeNet-5 demo models first")
    _common_options(parser)
    return parser


def _common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser.add_argument("--version", action="version", version=f"modelshell {__version__}")


def _replay_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="modelshell replay",
                                     description="Replay transcripts and check that every output still matches.")
    parser.add_argument("files", nargs="+", metavar="FILE", help="Markdown transcripts with modelshell blocks")
    parser.add_argument("--update", action="store_true", help="rewrite the outputs that no longer match")
    parser.add_argument("--format", choices=("html", "svg"), help="render the transcript instead of checking it")
    _common_options(parser)
    return parser


def _record_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="modelshell record", description="The shell, recording a transcript.")
    parser.add_argument("path", metavar="PATH", help="the transcript to write")
    parser.add_argument("--title", help="its title")
    parser.add_argument("--demo", action="store_true", help="load the LeNet-5 demo models first")
    _common_options(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["run"]:
        return _run(_run_parser().parse_args(argv[1:]))
    if argv[:1] == ["replay"]:
        return _replay(_replay_parser().parse_args(argv[1:]))
    if argv[:1] == ["record"]:
        args = _record_parser().parse_args(argv[1:])
        session = _new_session(args.debug, args.demo)
        outcome = session.run_line(f"record {shlex.quote(args.path)}" + (f" --title {shlex.quote(args.title)}" if args.title else ""))
        from modelshell.render import Printer

        Printer().show(outcome)
        return _interact(session) if outcome.ok else 1
    args = _shell_parser().parse_args(argv)
    session = _new_session(args.debug, args.demo)
    # The `loaded ...` notices of the files named here go to stderr: stdout is what the lines print, so a
    # stream of `--json` lines stays pure JSON Lines.
    preload = [f"load {shlex.quote(path)}" for path in args.paths]
    if not sys.stdin.isatty():
        _keep_undecodable_bytes(sys.stdin)
        status = run_lines(session, preload, keep_going=False, out=sys.stderr)
        return status or run_lines(session, sys.stdin, keep_going=False)
    run_lines(session, preload, keep_going=True, out=sys.stderr)  # errors are printed; the shell opens all the same
    return _interact(session)


def _interact(session) -> int:
    from modelshell.terminal.shell import run_interactive

    try:
        return run_interactive(session)
    finally:
        session.close()


def _replay(args: argparse.Namespace) -> int:
    from modelshell import transcript

    if args.format:
        from modelshell.render.page import render_transcript

        for name in args.files:
            sys.stdout.write(render_transcript(Path(name), args.format))
        return 0
    failed = False
    for name in args.files:
        path = Path(name)
        if not path.is_file():
            sys.stderr.write(f"error: {path}: no such file\n")
            failed = True
            continue
        if args.update:
            count = transcript.update_file(path)
            print(f"{path}: {count} outputs rewritten" if count else f"{path}: every output matches")
            continue
        skipped: list[str] = []
        mismatches = transcript.replay_file(path, skipped)
        for mismatch in mismatches:
            print(mismatch.diff)
        steps = sum(len(block.steps) for block in transcript.parse(path).blocks)
        print(f"{path}: {steps} inputs, {len(mismatches)} differ" + (f"; skipped from {skipped[0]}" if skipped else ""))
        failed = failed or bool(mismatches)
    return 1 if failed else 0


def _run(args: argparse.Namespace) -> int:
    session = _new_session(args.debug, args.demo)
    if args.script == "-":
        _keep_undecodable_bytes(sys.stdin)
        return run_lines(session, sys.stdin, keep_going=args.keep_going)
    path = Path(args.script)
    try:
        text = path.read_bytes().decode("utf8", "surrogateescape")  # a bad line fails alone, in run_lines
    except OSError as exc:
        sys.stderr.write(f"error: cannot read {path}: {exc.strerror or exc}\n")
        return 1
    return run_lines(session, text.splitlines(), keep_going=args.keep_going, label=str(path))


def _keep_undecodable_bytes(stream) -> None:
    """Read a piped stdin so that bytes that are not UTF-8 do not end the session: each line holding some
    is refused on its own by ``run_lines``, the others run."""
    try:
        stream.reconfigure(encoding="utf8", errors="surrogateescape")
    except (AttributeError, ValueError):  # not a text file of Python's own
        pass


def _new_session(debug: bool, demo: bool):
    from modelshell.core.output import StreamSink
    from modelshell.core.session import Session

    # A Python line's output shows as it is written: in scripts and pipes on stdout; the interactive shell
    # gives the session its terminal's sink instead (modelshell.terminal.shell).
    session = Session(debug=debug, output=StreamSink())
    if demo:
        from modelshell.core.errors import ModelshellError

        try:
            notes = load_demo(session)
        except ModelshellError as exc:
            sys.stderr.write(f"error: {exc.one_line()}\n")
            raise SystemExit(1) from None
        for note in notes:
            sys.stderr.write(note + "\n")
    return session


def load_demo(session) -> list[str]:
    """Bind the tutorial's two LeNet-5 models as ``torch_model`` and ``keras_model``: those whose framework
    is installed. The lines to tell the user about the others (none when both were built); a demo with
    neither framework is refused in one line."""
    from modelshell.demo import keras_lenet5, torch_lenet5
    from modelshell.core.errors import ModelshellError
    from modelshell.frameworks import quiet
    from modelshell.frameworks.detect import wrap_object

    notes, built = [], 0
    for name, package, build in (("torch_model", "torch", torch_lenet5), ("keras_model", "keras", keras_lenet5)):
        try:
            quiet.require(package, f"the demo's {name}")
        except quiet.MissingFrameworkError as exc:
            notes.append(f"note: {exc.one_line()}")
            continue
        session.add(name, wrap_object(build(), "demo: LeNet-5 built in code"))
        built += 1
    if not built:
        raise ModelshellError("the demo needs PyTorch or TensorFlow, and neither is installed",
                              "pip install 'modelshell[all]'")
    return notes


def run_lines(session, lines: Iterable[str], keep_going: bool, label: str = "<stdin>", out=None) -> int:
    """Run lines as a script. Exit status 1 at the first failing line, or at the end with ``keep_going``.
    ``out``: where results go (stdout unless told)."""
    from modelshell.core.lines import complete_inputs, undecodable
    from modelshell.core.results import Outcome
    from modelshell.render import Printer

    printer = Printer(out=out)
    failed = False
    try:
        for number, text in complete_inputs(lines, session.needs_more):
            bad = undecodable(text)
            # Not run: undecoded bytes would change what the line says (a file name, a string).
            where = f"line {number}: " if label == "<stdin>" else ""
            outcome = session.run_line(text) if bad is None else Outcome(ok=False, error=f"{where}{bad}; not run")
            if outcome.error and label != "<stdin>":
                outcome.error = f"{label}:{number}: {outcome.error}"
            printer.show(outcome)
            if outcome.exit_requested:
                break
            if not outcome.ok:
                failed = True
                if not keep_going and bad is None:  # bytes that are not UTF-8 spoil that line alone
                    break
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
    finally:
        session.close()  # a recording started by the script ends with it
    return 1 if failed else 0
