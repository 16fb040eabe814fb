"""Every ```python block of the README runs as written and prints what its comments promise.

The blocks run verbatim, in order, in one namespace (a later block may use an
earlier one's names), in a temporary folder, on the NumPy backend. Each top-level
statement runs on its own, so that one may raise an exception only if its own
comment names it (``gpunet.get_backend("cupy")  # raises ...BackendUnavailableError``
where no GPU is usable). A line ``print(EXPR)  # >= NUMBER`` must print at least NUMBER.
A block that opens with ``# needs: torch, jax`` uses libraries gpunet does not depend on: the
in-order run leaves it out, and test_blocks_that_need_optional_libraries runs it, alone, where
they import (skipped, naming them, where they don't).
"""

from __future__ import annotations

import ast
import re

import pytest

from gpunet.backend import cupy_unavailable_reason

from readme_examples import readme_blocks

BLOCKS = readme_blocks()
API_BLOCKS = readme_blocks(section="## The Python API\n")
NEEDS = re.compile(r"^# needs: ([\w, ]+)")
AT_LEAST = re.compile(r"^print\((?P<expr>.*)\)\s*#\s*>=\s*(?P<bound>[0-9.]+)")


def _statements(block: str) -> list[tuple[str, str]]:
    """(source, its comments) for each top-level statement of ``block``."""
    lines = block.splitlines()
    out = []
    for node in ast.parse(block).body:
        text = "\n".join(lines[node.lineno - 1 : node.end_lineno])
        comments = " ".join(line.partition("#")[2] for line in lines[node.lineno - 1 : node.end_lineno])
        out.append((text, comments))
    return out


def test_readme_has_python_blocks():
    assert len(BLOCKS) >= 2  # the Python API's examples at least; a wrong pattern would find none


def test_every_python_block_runs(monkeypatch, tmp_path):
    monkeypatch.setenv("GPUNET_BACKEND", "numpy")
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    bounds_checked = 0
    for number, block in enumerate(BLOCKS, start=1):
        if NEEDS.match(block):
            continue  # test_blocks_that_need_optional_libraries
        for source, comments in _statements(block):
            where = f"README python block {number}: {source.splitlines()[0]}"
            try:
                exec(compile(source, f"README.md block {number}", "exec"), scope)
            except Exception as exc:  # noqa: BLE001
                if type(exc).__name__ not in comments:
                    pytest.fail(f"{where} raised {type(exc).__name__}: {exc}")
            match = AT_LEAST.match(source)
            if match:
                value = eval(match["expr"], scope)
                assert value >= float(match["bound"]), f"{where}: {value} < {match['bound']}"
                bounds_checked += 1
    assert bounds_checked >= 2  # the two accuracies the Python API states


def test_python_api_example_does_what_its_comments_say(monkeypatch, tmp_path):
    monkeypatch.setenv("GPUNET_BACKEND", "numpy")
    monkeypatch.chdir(tmp_path)
    import numpy as np

    import gpunet

    scope: dict = {}
    assert len(API_BLOCKS) == 2
    for block in API_BLOCKS:
        exec(compile(block, "README.md", "exec"), scope)
    assert scope["P"].shape == (359, 10) and scope["P"].dtype == np.float64
    np.testing.assert_allclose(scope["P"].sum(axis=1), 1.0, rtol=1e-12)
    assert scope["labels"].dtype == np.int64 and (scope["labels"] == scope["P"].argmax(axis=1)).all()
    same = scope["same"]
    for k, v in scope["net"].get_params().items():
        np.testing.assert_array_equal(same.get_params()[k], v)
    assert scope["T"].shape == (32, 10) and sorted(set(scope["T"].astype(np.float64).ravel().round(2))) == [0.01, 0.99]
    assert scope["Y"].shape == (32, 10)
    assert isinstance(scope["L"], float) and scope["L"] > 0
    assert set(scope["g"]) == set(scope["p"]) == {"W1", "b1", "W2", "b2"}
    assert [r["epoch"] for r in scope["history"]] == [1, 2, 3, 4, 5]
    assert isinstance(same, gpunet.Network) and same.config() == scope["net"].config()


@pytest.mark.parametrize("number", [
    pytest.param(n, marks=[pytest.mark.gpu] if "gpu" in NEEDS.match(b)[1] else [])  # gpu_check runs those
    for n, b in enumerate(BLOCKS, start=1) if NEEDS.match(b)])
def test_blocks_that_need_optional_libraries(number, monkeypatch, tmp_path):
    block = BLOCKS[number - 1]
    needs = NEEDS.match(block)[1].replace(" ", "").split(",")
    for name in needs:
        if name == "gpu":  # a CUDA device through CuPy: gpu_check runs these on the GPU machine
            reason = cupy_unavailable_reason()
            if reason is not None:
                pytest.skip(f"README python block {number} needs a GPU: {reason}")
            continue
        pytest.importorskip(name, reason=f"README python block {number} needs {name}, which is not installed")
    monkeypatch.setenv("GPUNET_BACKEND", "cupy" if "gpu" in needs else "numpy")
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(block, f"README.md block {number}", "exec"), scope)
    if "gpu" in needs:  # graph mode's block: an epoch's summed loss, finite and positive
        assert 0 < float(scope["loss_sum"]) < float("inf")
    else:
        assert scope["accuracy"] >= 0.9  # the block says about 0.95
