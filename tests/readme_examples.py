"""The README's code blocks, for the tests that run them (one reader, not one per test file)."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_blocks(lang: str = "python", section: str | None = None) -> list[str]:
    """Every ```lang block of the README, or of the section whose heading starts with ``section``
    (up to the next ``## `` heading)."""
    text = README.read_text()
    if section is not None:
        text = text[text.index(section):]
        text = text[: text.index("\n## ", 3)]
    return re.findall(rf"^```{lang}\n(.*?)^```", text, re.S | re.M)


def readme_example(index: int, section: str = "## Using gpunet with scikit-learn") -> str:
    """The ``index``-th ```python block of the README section whose heading starts with ``section``."""
    return readme_blocks("python", section)[index]
