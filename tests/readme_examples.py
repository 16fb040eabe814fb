"""The README's examples of one section, for the tests that run them (one reader, not one per test file)."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_example(index: int, section: str = "## Using gpunet with scikit-learn") -> str:
    """The ``index``-th ```python block of the README section whose heading starts with ``section``."""
    text = README.read_text()
    part = text[text.index(section):]
    part = part[: part.index("\n## ", 3)]
    return re.findall(r"```python\n(.*?)```", part, re.S)[index]
