"""A pytest plugin: every ``modelshell`` block of a transcript under a ``transcripts`` folder is a test.

Active only where a project asks for it, with ``-p modelshell.pytest_plugin`` or a conftest line
``pytest_plugins = ["modelshell.pytest_plugin"]``: not in every pytest run of every environment modelshell
is installed in. This repository asks in pyproject.toml, so ``make test`` replays the tutorials; a failing
block is reported by file and line with the unified diff of what changed.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from modelshell.transcript import Block, Mismatch, Replayer, Transcript, parse

__all__ = ["pytest_collect_file"]


def pytest_collect_file(file_path: Path, parent: pytest.Collector):
    if file_path.suffix == ".md" and "transcripts" in file_path.parts:
        return TranscriptFile.from_parent(parent, path=file_path)
    return None


class TranscriptFile(pytest.File):
    """One transcript: its blocks run in order in one session, as the file reads."""

    transcript: Transcript
    replayer: Replayer | None = None

    def collect(self):
        self.transcript = parse(self.path)
        for block in self.transcript.blocks:
            yield TranscriptBlock.from_parent(self, name=f"line {block.line}", block=block)


class TranscriptFailure(Exception):
    def __init__(self, mismatches: list[Mismatch]) -> None:
        super().__init__(f"{len(mismatches)} outputs differ")
        self.mismatches = mismatches


class TranscriptBlock(pytest.Item):
    def __init__(self, *, block: Block, **kwargs) -> None:
        super().__init__(**kwargs)
        self.block = block

    def runtest(self) -> None:
        file: TranscriptFile = self.parent
        if file.replayer is None:
            file.replayer = Replayer(file.transcript)
        if file.replayer.skipped:
            pytest.skip(f"not replayed: {file.replayer.skipped}")
        mismatches = file.replayer.run_block(self.block)
        if mismatches:
            raise TranscriptFailure(mismatches)
        if file.replayer.skipped:
            pytest.skip(f"not replayed: {file.replayer.skipped}")

    def repr_failure(self, excinfo, style=None) -> str:
        if isinstance(excinfo.value, TranscriptFailure):
            return "\n\n".join(m.diff for m in excinfo.value.mismatches)
        return super().repr_failure(excinfo, style)

    def reportinfo(self):
        return self.path, self.block.line - 1, f"{self.path.name}:{self.block.line}"
