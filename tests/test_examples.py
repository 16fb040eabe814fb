"""Every example of README.md and docs/*.md runs as written and does what its comments say.

The convention (docs/development.md, "The examples are tests"):

- a ```python block runs on its own: a fresh interpreter, an empty temporary folder, the NumPy backend
  (CuPy for ``# needs: gpu``), twice in the same folder; each ``print(...)`` whose comment starts with a
  comparison (``# >= 0.9``, ``# > 0``, ``# <= 1e-5``, ``# < 1``, ``# 0.9..1.0``, ``# == 'text'``) must print
  at least once, and every time what the comparison allows;
- a ```sh block runs when a line calls ``gpunet`` (or ``python`` on a script of ``scripts/``): its lines in one
  ``bash -e`` in an empty folder holding ``my7.png`` and a link to ``scripts/``, ``DATA_DIR`` replaced by the
  tests' MNIST folder, downloads served from that folder; every run folder a ``gpunet train --out`` names then
  holds a checkpoint, and every file ``gpunet export`` names exists;
- ``# needs: NAME, ...`` on a block's first line skips it, naming what is missing, where a module does not
  import (or, for ``gpu``, where no CUDA device is usable); ``# not run by the tests: REASON`` on a sh block's
  first line skips it with the reason.
"""

from __future__ import annotations

import ast
import io
import json
import os
import re
import shlex
import subprocess
import sys
import tokenize
from pathlib import Path

import numpy as np
import pytest

from gpunet.backend import cupy_unavailable_reason

from conftest import MNIST_DIR
from readme_examples import ROOT, Block, example_blocks

NEEDS = re.compile(r"^# needs: (?P<names>[^(\n]*)")
NOT_RUN = re.compile(r"^# not run by the tests: (?P<reason>.+)")
NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
COMPARE = re.compile(rf"^\s*(?P<op>>=|<=|>|<)\s*(?P<bound>{NUMBER})(?:\s|$)")
RANGE = re.compile(rf"^\s*(?P<low>{NUMBER})\.\.(?P<high>{NUMBER})(?:\s|$)")
EQUALS = re.compile(r"^\s*==\s*(?P<literal>.+?)\s*$")
RUNS_GPUNET = re.compile(r"^(?:\w+=\S+ )*(?:gpunet |python3? (?:-m gpunet|scripts/))", re.M)
# Python blocks that train on MNIST, search a grid or start Dask workers take tens of seconds to minutes
# (every sh block is slow too).
SLOW = re.compile(r"DATA_DIR|--dataset mnist|GridSearchCV|run_sweep|--workers")

PYTHON = example_blocks("python")
SH = [b for b in example_blocks("sh") if RUNS_GPUNET.search(b.text) or NOT_RUN.match(b.text)]

# Runs one block in this interpreter's place: each print on a promise line also records what it wrote.
RUNNER = r"""
import ast, builtins, io, json, sys
block, lines, record = sys.argv[1], set(json.loads(sys.argv[2])), sys.argv[3]
source = open(block).read()
printed = {}

def promise(line):
    def print_(*args, **kwargs):
        out = io.StringIO()
        builtins.print(*args, **{**kwargs, "file": out})
        printed.setdefault(line, []).append(out.getvalue())
        builtins.print(*args, **kwargs)
    return print_

class Promises(ast.NodeTransformer):
    def visit_Call(self, node):
        self.generic_visit(node)
        if isinstance(node.func, ast.Name) and node.func.id == "print" and node.lineno in lines:
            node.func = ast.Call(ast.Name("__promise__", ast.Load()), [ast.Constant(node.lineno)], [])
        return node

tree = ast.fix_missing_locations(Promises().visit(ast.parse(source)))
scope = {"__name__": "__main__", "__promise__": promise}
try:
    exec(compile(tree, sys.argv[4], "exec"), scope)
finally:
    with open(record, "w") as f:
        json.dump(printed, f)
"""


def needs(block: Block) -> list[str]:
    match = NEEDS.match(block.text)
    return [n.strip() for n in match["names"].split(",") if n.strip()] if match else []


def skip_unless_available(block: Block) -> None:
    """Skip, naming the block and what it needs, where a module it needs does not import or no GPU is usable."""
    for name in needs(block):
        if name == "gpu":
            reason = cupy_unavailable_reason()
            if reason is not None:
                pytest.skip(f"{block.where} needs a GPU: {reason}")
        else:
            pytest.importorskip(name, reason=f"{block.where} needs {name}, which is not installed")


def param(block: Block) -> object:
    marks = [pytest.mark.gpu] if "gpu" in needs(block) else []
    if block.lang == "sh" or SLOW.search(block.text):  # a sh block starts a process for each of its commands
        marks.append(pytest.mark.slow)
    return pytest.param(block, id=block.where, marks=marks)


def promises(source: str) -> dict[int, str]:
    """{line: comment} for each line of ``source`` that has a print call and a promise comment."""
    comments = {tok.start[0]: tok.string[1:] for tok in tokenize.generate_tokens(io.StringIO(source).readline)
                if tok.type == tokenize.COMMENT}
    calls = [node for node in ast.walk(ast.parse(source))
             if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print"]
    out = {}
    for call in calls:
        for line in range(call.lineno, call.end_lineno + 1):
            comment = comments.get(line, "")
            if COMPARE.match(comment) or RANGE.match(comment) or EQUALS.match(comment):
                out[call.lineno] = comment.strip()
    return out


def kept(text: str, promise: str) -> bool:
    """Whether ``text``, what a print wrote, keeps ``promise``."""
    if match := EQUALS.match(promise):
        return text.strip() == str(ast.literal_eval(match["literal"]))
    numbers = re.findall(NUMBER, text)
    if not numbers:
        return False
    value = float(numbers[-1])
    if match := RANGE.match(promise):
        return float(match["low"]) <= value <= float(match["high"])
    match = COMPARE.match(promise)
    bound = float(match["bound"])
    return {">=": value >= bound, "<=": value <= bound, ">": value > bound, "<": value < bound}[match["op"]]


def environment(tmp_path: Path, backend: str) -> dict[str, str]:
    """This checkout's gpunet first on the path, one backend, downloads served from the tests' MNIST folder
    into a cache under tmp_path (never the internet), and plots drawn without a display."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
            "GPUNET_BACKEND": backend, "GPUNET_DATA": str(tmp_path / "cache"),
            "GPUNET_MNIST_MIRRORS": MNIST_DIR.resolve().as_uri() + "/", "MPLBACKEND": "Agg"}


def test_the_pages_have_examples():
    assert len(PYTHON) >= 10 and len(SH) >= 10  # a wrong fence pattern would find none
    assert {b.path.name for b in PYTHON} >= {"README.md", "python.md", "getting-started.md"}


def test_the_promises_are_read_and_checked():
    assert promises('print(x)  # >= 0.9 (about 0.95)\nprint(y)  # == "a b"\nprint(z)  # about 3\n') == {
        1: ">= 0.9 (about 0.95)", 2: '== "a b"'}
    assert kept("0.95\n", ">= 0.9") and not kept("0.85\n", ">= 0.9") and not kept("nan\n", ">= 0.9")
    assert kept("test accuracy 0.5\n", "0.4..0.6") and not kept("0.7", "0.4..0.6")
    assert kept("(359, 10) int64\n", "== '(359, 10) int64'") and not kept("(359, 10) int32\n", "== '(359, 10) int64'")
    assert kept("1e-07\n", "<= 1e-5") and not kept("0\n", "> 0")


@pytest.mark.parametrize("block", [param(b) for b in PYTHON])
def test_python_example(block: Block, tmp_path: Path):
    skip_unless_available(block)
    backend = "cupy" if "gpu" in needs(block) else "numpy"
    src, cwd = tmp_path / "source", tmp_path / "cwd"
    src.mkdir()
    cwd.mkdir()
    (src / "block.py").write_text(block.text)
    promised = promises(block.text)
    for attempt in ("first", "second"):
        record = src / f"printed-{attempt}.json"
        out = subprocess.run([sys.executable, "-c", RUNNER, str(src / "block.py"), json.dumps(list(promised)),
                              str(record), block.where], cwd=cwd, env=environment(tmp_path, backend),
                             capture_output=True, text=True, timeout=900)
        assert out.returncode == 0, f"{block.where}, {attempt} run:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
        printed = {int(k): v for k, v in json.loads(record.read_text()).items()}
        for line, promise in promised.items():
            where = f"{block.where}, block line {line} ({attempt} run): # {promise}"
            assert printed.get(line), f"{where}: the print never ran"
            for text in printed[line]:
                assert kept(text, promise), f"{where}: printed {text!r}"


def digit_png(path: Path) -> None:
    """A 7 from scikit-learn's digits, drawn 10x larger as dark ink on white paper, as a photo of one would be."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    image = digits.images[list(digits.target).index(7)]
    grey = (255 - image / 16 * 255).astype(np.uint8).repeat(10, axis=0).repeat(10, axis=1)
    Image.fromarray(grey).save(path)


def outputs(script: str) -> tuple[list[str], list[str]]:
    """The run folders ``gpunet train --out`` names, and the files ``gpunet export`` writes."""
    folders, files = [], []
    for line in script.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        if words[:2] == ["gpunet", "train"] and "--out" in words:
            folders.append(words[words.index("--out") + 1])
        if words[:2] == ["gpunet", "export"]:
            files.append(words[3])
    return folders, files


@pytest.mark.parametrize("block", [param(b) for b in SH])
def test_sh_example(block: Block, tmp_path: Path):
    if reason := NOT_RUN.match(block.text):
        pytest.skip(f"{block.where} is not run here: {reason['reason']}")
    skip_unless_available(block)
    if ("DATA_DIR" in block.text or "mnist" in block.text) and not (MNIST_DIR / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"{block.where} needs the MNIST files, not found in {MNIST_DIR} (set GPUNET_MNIST_DIR)")
    assert "../shared" not in block.text
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    digit_png(cwd / "my7.png")
    (cwd / "scripts").symlink_to(ROOT / "scripts")
    script = block.text.replace("DATA_DIR", shlex.quote(str(MNIST_DIR.resolve())))
    python = shlex.quote(sys.executable)
    prelude = f'set -e\ngpunet() {{ {python} -m gpunet "$@"; }}\npython() {{ {python} "$@"; }}\npython3() {{ {python} "$@"; }}\n'
    backend = "cupy" if "gpu" in needs(block) else "numpy"
    out = subprocess.run(["bash", "-c", prelude + script], cwd=cwd, env=environment(tmp_path, backend),
                         capture_output=True, text=True, timeout=1800)
    assert out.returncode == 0, f"{block.where}:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    assert "Traceback" not in out.stderr, f"{block.where}:\n{out.stderr[-3000:]}"
    folders, files = outputs(script)
    for folder in folders:
        assert (cwd / folder / "model.npz").is_file(), f"{block.where}: no checkpoint in {folder}"
    for name in files:
        assert (cwd / name).is_file(), f"{block.where}: {name} was not written"
