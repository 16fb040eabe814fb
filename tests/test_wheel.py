"""The package as users get it: the wheel built from this checkout, installed into a fresh virtual environment
(its own site-packages, not this one's; pip fetches the dependencies), trains from its own `gpunet` command,
and carries the CUDA sources the kernels compile at run time."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    out = subprocess.run(args, capture_output=True, text=True, **kwargs)
    assert out.returncode == 0, f"{' '.join(map(str, args))}:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


def test_the_wheel_installs_into_a_fresh_venv_and_trains(tmp_path):
    pytest.importorskip("build", reason="python -m build is not installed (the dev extra)")
    # Build from a copy, so that the build's own folders (build/, *.egg-info) land in tmp_path, not the checkout.
    source = tmp_path / "source"
    source.mkdir()
    shutil.copy(ROOT / "pyproject.toml", source)
    shutil.copy(ROOT / "README.md", source)
    shutil.copytree(ROOT / "gpunet", source / "gpunet", ignore=shutil.ignore_patterns("__pycache__"))
    run([sys.executable, "-m", "build", "--wheel", "--outdir", str(tmp_path / "dist"), str(source)], timeout=900)
    (wheel,) = (tmp_path / "dist").glob("gpunet-*.whl")
    assert wheel.name.startswith("gpunet-0.2.0-")

    cuda = sorted(p.name for p in (ROOT / "gpunet/engines").iterdir() if p.suffix in (".cu", ".cuh"))
    assert len(cuda) >= 6
    with zipfile.ZipFile(wheel) as z:
        packed = {Path(n).name for n in z.namelist() if n.startswith("gpunet/engines/")}
    assert set(cuda) <= packed, set(cuda) - packed

    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)], timeout=300)  # no --system-site-packages: nothing borrowed
    python, gpunet = venv / "bin/python", venv / "bin/gpunet"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["GPUNET_BACKEND"] = "numpy"
    run([str(python), "-m", "pip", "install", "--quiet", str(wheel)], env=env, timeout=1800)
    work = tmp_path / "work"
    work.mkdir()
    where = run([str(python), "-c", "import gpunet, sys; print(gpunet.__version__, gpunet.__file__, sys.prefix)"],
                cwd=work, env=env, timeout=300).stdout.split()
    assert where[0] == "0.2.0" and Path(where[1]).is_relative_to(venv) and Path(where[2]) == venv
    out = run([str(gpunet), "train", "--epochs", "2", "--out", "run", "--quiet"], cwd=work, env=env, timeout=600)
    accuracy = float(out.stdout.split("test accuracy")[1].split("%")[0].strip(" :"))
    assert accuracy > 80, out.stdout  # 2 epochs of the default network on the digits
    assert (work / "run/model.npz").is_file()
    engines = Path(where[1]).parent / "engines"
    assert sorted(p.name for p in engines.iterdir() if p.suffix in (".cu", ".cuh")) == cuda
