"""A transcript as a page (HTML) or a picture (SVG): its prose as Markdown, its blocks replayed live and
drawn in colour, for a web page or a talk. The checks stay with ``modelshell replay``; this only shows."""
from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console
from rich.markdown import Markdown
from rich.text import Text as RichText

from modelshell.render.json import to_json_line
from modelshell.render.rich import to_renderable
from modelshell.core.results import Outcome, Text

__all__ = ["render_transcript"]


def render_transcript(path: Path, kind: str) -> str:
    from modelshell.transcript import Replayer, parse

    transcript = parse(path)
    width = transcript.blocks[0].width if transcript.blocks else 100
    console = Console(record=True, width=width, file=io.StringIO(), force_terminal=True, color_system="truecolor")
    replayer = Replayer(transcript)
    cursor = 0
    for block in transcript.blocks:
        _prose(console, transcript.lines[cursor:block.line - 1])
        with replayer.in_block(block):  # seeded as a replay is, so the page shows the numbers it checks
            for step in block.steps:
                _input(console, step.prompt_lines)
                _outcome(console, replayer.run(step))
        cursor = block.end
    _prose(console, transcript.lines[cursor:])
    if kind == "svg":
        return console.export_svg(title=path.name)
    return console.export_html(inline_styles=True)


def _prose(console: Console, lines: list[str]) -> None:
    text = "\n".join(lines).strip()
    if text:
        console.print(Markdown(text))


def _input(console: Console, lines: list[str]) -> None:
    for line in lines:
        prompt, rest = line[:4], line[4:]
        console.print(RichText(prompt, style="bold green") + RichText(rest, style="bold"))


def _outcome(console: Console, outcome: Outcome) -> None:
    for result in outcome.results:
        if outcome.as_json:
            console.print(RichText(to_json_line(result)))
        elif isinstance(result, Text):
            console.print(RichText(result.text.rstrip("\n")))
        else:
            console.print(to_renderable(result))
    if outcome.error:
        console.print(RichText(f"error: {outcome.error}", style="red"))
