"""Every kernel instantiation compiles to the PTX it compiled to before: the kernels' code is held unchanged
while their sources move (a shared header, a table that generates device functions).

The golden file, tests/data/kernel_ptx.json, holds a SHA-256 of each instantiation's ``.entry`` as NVRTC
lowers it for compute_90, by source and name expression. An instantiation that is new since (a new
activation, a new optimiser rule) is not in it and is not held; one that is in it must be there, unchanged.
PTX depends on the NVRTC release, so the file names the release it was made with and the test extra pins it.
Write it again with ``GPUNET_WRITE_KERNEL_PTX=1`` only from a commit whose kernels are the reference.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
from pathlib import Path

import pytest

from gpunet.engines import build

GOLDEN = Path(__file__).parent / "data" / "kernel_ptx.json"


def _nvrtc_version() -> str:
    lib = build.nvrtc_library()
    if lib is None:
        pytest.fail("libnvrtc not found: the test extra installs nvidia-cuda-nvrtc-cu12")
    major, minor = ctypes.c_int(), ctypes.c_int()
    lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor))
    return f"{major.value}.{minor.value}"


def _hashes() -> dict[str, dict[str, str]]:
    return {name: {e: hashlib.sha256(ptx.encode()).hexdigest() for e, ptx in sorted(build.kernel_ptx(name).items())}
            for name in sorted(build.name_expressions())}


def test_every_instantiation_compiles_to_its_recorded_ptx():
    version, now = _nvrtc_version(), _hashes()
    if os.environ.get("GPUNET_WRITE_KERNEL_PTX") == "1":
        GOLDEN.write_text(json.dumps({"nvrtc": version, "arch": "compute_90", "ptx": now}, indent=1) + "\n")
        pytest.skip(f"wrote {GOLDEN.name}: nothing compared")
    golden = json.loads(GOLDEN.read_text())
    assert version == golden["nvrtc"], (
        f"NVRTC {version} here, {golden['nvrtc']} made the record: PTX is only comparable within one release")
    recorded = sum(len(v) for v in golden["ptx"].values())
    assert recorded >= 190  # every source's instantiations: an empty record cannot pass
    for name, entries in golden["ptx"].items():
        assert name in now, f"{name} is gone"
        for expression, digest in entries.items():
            assert expression in now[name], f"{name}: {expression} is no longer instantiated"
            assert now[name][expression] == digest, f"{name}: {expression} compiles to other PTX than recorded"
