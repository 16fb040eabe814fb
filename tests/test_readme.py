"""What the README promises about itself and the docs: its length, the two set-up commands word for word,
links that lead somewhere, examples that never point at the tests' own data folder, the blocks other test
files run by section, and one version."""

from __future__ import annotations

import re
import sys
from importlib import metadata

import pytest

import gpunet

from readme_examples import DOCS, README, ROOT, example_blocks, pages, readme_blocks, readme_example

SET_UP = [
    "python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/gpunet train",
    'python3 -m venv .venv && .venv/bin/pip install -e ".[test]" && .venv/bin/python -m pytest',
]


def test_readme_is_short():
    lines = README.read_text().splitlines()
    assert 20 < len(lines) <= 200, len(lines)


def test_readme_keeps_the_two_set_up_commands_word_for_word():
    commands = [line for block in readme_blocks("sh") for line in block.splitlines()]
    for command in SET_UP:
        assert command in commands, command


def test_readme_links_lead_to_files():
    links = re.findall(r"\]\(((?!https?:)[^)#]+)(?:#[^)]*)?\)", README.read_text())
    assert len(links) >= 10
    for link in links:
        assert (ROOT / link).exists(), link


def test_no_example_points_at_the_tests_data_folder():
    for lang in ("python", "sh"):
        for block in example_blocks(lang):
            assert "../shared" not in block.text and "shared/data" not in block.text, block.where


def test_every_page_is_in_the_site_navigation():
    nav = (ROOT / "mkdocs.yml").read_text()
    for page in pages()[1:]:
        assert str(page.relative_to(DOCS)) in nav, page


def test_the_blocks_other_tests_run_are_where_they_look():
    # tests/test_sklearn.py, test_onnx.py and test_dlpack.py: readme_example(0..3); tests/test_dask.py: by content
    assert "GPUNetClassifier" in readme_example(0) and "gpunet.onnx.export" in readme_example(1)
    assert "import jax" in readme_example(2) and "import torch" in readme_example(3)
    assert len([b for b in readme_blocks() if "run_sweep" in b]) == 1
    assert len([b for b in readme_blocks("sh") if "tcp://HOST:8786" in b]) == 1
    with pytest.raises(ValueError, match="no page"):
        readme_blocks(section="## No such heading")


def test_one_version():
    if sys.version_info >= (3, 11):
        import tomllib
    else:
        import tomli as tomllib
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert version == "0.2.0"
    assert f"\n## {version} (" in (DOCS / "changelog.md").read_text()  # the changelog names the release
    assert gpunet.__version__ == metadata.version("gpunet")  # read from the installed package, not written twice
