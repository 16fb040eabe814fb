"""The code blocks of README.md and docs/*.md, for the tests that run them (one reader, not one per test file).

A block is found by the language of its fence (```python, ```sh; a fence may be indented, as in a list
item) and, optionally, by the heading of the section it sits in: the section runs from its heading to the
next heading of the same level or above, headings inside code blocks not counting.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>[\w-]*)\s*$")
HEADING = re.compile(r"^(?P<level>#{1,6}) ")


@dataclass(frozen=True)
class Block:
    """One fenced code block: its language, its text (dedented to its fence), and where it is."""

    lang: str
    text: str
    path: Path
    line: int  # the line of the block's first line of code, 1-based
    headings: tuple[str, ...]  # the headings it sits under, outermost first

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def pages() -> list[Path]:
    """README.md, then every page of docs/ in name order."""
    return [README, *sorted(DOCS.rglob("*.md"))]


def page_blocks(path: Path) -> list[Block]:
    """Every fenced block of one page, in order."""
    blocks: list[Block] = []
    headings: list[str] = []
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if fence is None:
            heading = HEADING.match(lines[i])
            if heading:
                level = len(heading["level"])
                headings = headings[: level - 1] + [""] * (level - 1 - len(headings)) + [lines[i]]
            i += 1
            continue
        indent, start = fence["indent"], i + 1
        i = start
        while i < len(lines) and not (lines[i].startswith(indent + "```") and lines[i].strip() == "```"):
            i += 1
        text = textwrap.dedent("\n".join(lines[start:i]) + "\n") if i > start else ""
        blocks.append(Block(fence["lang"], text, path, start + 1, tuple(h for h in headings if h)))
        i += 1
    return blocks


def example_blocks(lang: str = "python", section: str | None = None) -> list[Block]:
    """Every ```lang block of README.md and docs/*.md, or of the first section (pages in that order) whose
    heading starts with ``section`` (e.g. ``"## Using gpunet with scikit-learn"``; a trailing newline asks
    for the whole heading)."""
    if section is None:
        return [b for path in pages() for b in page_blocks(path) if b.lang == lang]
    heading = section.rstrip("\n")
    whole = section.endswith("\n")
    for path in pages():
        lines = path.read_text().splitlines()
        if not any(HEADING.match(x) and (x == heading if whole else x.startswith(heading)) for x in lines):
            continue
        inside = [b for b in page_blocks(path)
                  if any(h == heading if whole else h.startswith(heading) for h in b.headings)]
        return [b for b in inside if b.lang == lang]
    raise ValueError(f"no page of README.md or docs/ has a heading starting with {heading!r}")


def readme_blocks(lang: str = "python", section: str | None = None) -> list[str]:
    """The text of every ```lang block of README.md and docs/*.md (README first, then the pages in name order),
    or of the first section whose heading starts with ``section``."""
    return [b.text for b in example_blocks(lang, section)]


def readme_example(index: int, section: str = "## Using gpunet with scikit-learn") -> str:
    """The ``index``-th ```python block of the first section whose heading starts with ``section``."""
    return readme_blocks("python", section)[index]
