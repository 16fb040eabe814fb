"""The README's API example runs as written and does what its comments say."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_api_example(monkeypatch, capsys):
    monkeypatch.setenv("GPUNET_BACKEND", "numpy")
    block = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)[0]
    scope: dict = {}
    exec(compile(block, str(README), "exec"), scope)
    assert scope["Y"].shape == (32, 10)
    assert isinstance(scope["L"], float) and scope["L"] > 0
    assert set(scope["g"]) == set(scope["p"]) == {"W1", "b1", "W2", "b2"}
    assert scope["labels"].dtype == np.int64 and scope["labels"].shape == (32,)
    assert [r["epoch"] for r in scope["history"]] == [1, 2, 3, 4, 5]
    assert "'epoch': 5" in capsys.readouterr().out
