"""Backend selection: NumPy-only, CuPy installed without a device, explicit requests, GPUNET_BACKEND."""

from __future__ import annotations

import importlib.util
import pickle
import re
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import gpunet
import gpunet.backend as backend_module
from gpunet.backend import cupy_unavailable_reason

PACKAGE = Path(gpunet.__file__).parent


def _run_without_cupy(code: str) -> subprocess.CompletedProcess:
    # A None entry in sys.modules makes "import cupy" fail exactly as if it were not installed.
    prelude = "import sys; sys.modules['cupy'] = None\n"
    return subprocess.run([sys.executable, "-c", prelude + code], capture_output=True, text=True, timeout=120)


def test_numpy_only_environment_picks_numpy_and_says_why():
    out = _run_without_cupy(
        "import gpunet\n"
        "b = gpunet.get_backend('auto')\n"
        "print(b.name, '|', b.reason)\n"
        "try:\n"
        "    gpunet.get_backend('cupy')\n"
        "except gpunet.BackendUnavailableError as e:\n"
        "    print('ERROR', e)\n"
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "numpy | cupy not installed"
    assert lines[1].startswith("ERROR backend 'cupy' is unavailable: cupy not installed")
    assert 'pip install "gpunet[cuda12]"' in lines[1]


def test_numpy_only_environment_trains():
    out = _run_without_cupy(
        "import numpy as np, gpunet\n"
        "net = gpunet.Network([4, 3, 2], backend='auto', dtype='float64')\n"
        "net.train_step(np.ones((2, 4)), np.full((2, 2), 0.5), lr=0.1)\n"
        "print(net.backend.name, net.get_params()['b2'].shape)\n"
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "numpy (2,)"


@pytest.fixture
def cupy_without_device():
    if importlib.util.find_spec("cupy") is None:
        pytest.skip("CuPy is not installed here (.ci/run installs it so this case runs for real)")
    if cupy_unavailable_reason() is None:
        pytest.skip("a CUDA device is usable here, so the no-device path cannot be observed")


def test_cupy_installed_without_device_falls_back_to_numpy(cupy_without_device):
    b = gpunet.get_backend("auto")
    assert b.name == "numpy" and b.xp is np
    assert b.reason.startswith(("no NVIDIA driver (", "NVIDIA driver too old", "no CUDA device: ",
                                "CUDA device unusable: ")), b.reason
    assert len(b.reason) > len("no CUDA device: ")  # carries the driver's message
    if not backend_module._libcuda_loads():  # this machine (CuPy installed, no driver): say so plainly
        assert b.reason.startswith("no NVIDIA driver (libcuda.so.1 cannot be loaded"), b.reason


def test_explicit_cupy_without_device_raises_one_clear_error(cupy_without_device):
    with pytest.raises(gpunet.BackendUnavailableError) as info:
        gpunet.get_backend("cupy")
    message = str(info.value)
    assert "\n" not in message
    assert cupy_unavailable_reason() in message
    assert 'pip install "gpunet[cuda12]"' in message
    with pytest.raises(gpunet.BackendUnavailableError):
        gpunet.Network.article([3, 2], backend="cupy")


def test_environment_variable_sets_the_default(monkeypatch):
    monkeypatch.setenv("GPUNET_BACKEND", "numpy")
    assert gpunet.get_backend().name == "numpy"
    assert gpunet.Network.article([3, 2]).backend.name == "numpy"
    monkeypatch.setenv("GPUNET_BACKEND", " NumPy ")
    assert gpunet.get_backend().name == "numpy"
    monkeypatch.setenv("GPUNET_BACKEND", "tpu")
    with pytest.raises(ValueError, match=r"GPUNET_BACKEND must be one of auto, numpy, cupy; got 'tpu'"):
        gpunet.get_backend()
    assert gpunet.get_backend("numpy").name == "numpy"  # an explicit name wins over the variable


def test_unknown_backend_name():
    with pytest.raises(ValueError, match=r"backend must be one of auto, numpy, cupy; got 'gpu'"):
        gpunet.get_backend("gpu")


def test_host_device_round_trip(backend):
    a = np.arange(6, dtype=np.float64).reshape(2, 3)
    d = backend.to_device(a, np.float32)
    assert d.dtype == np.float32 and d.shape == (2, 3)
    back = backend.to_host(d)
    assert isinstance(back, np.ndarray)
    np.testing.assert_array_equal(back, a.astype(np.float32))
    backend.synchronize()


def test_cublas_is_the_submodule_of_the_backends_array_module(monkeypatch):
    # the fast paths (fused.py, per_sample.py) reach cupy.cublas through Backend.cublas, not an import of their own
    xp, cublas = types.ModuleType("fake_xp"), types.ModuleType("fake_xp.cublas")
    xp.cublas = cublas  # as `import cupy.cublas` in backend.py's guarded import leaves it
    assert backend_module.Backend("cupy", xp, "a device").cublas is cublas
    with pytest.raises(ValueError, match="cuBLAS needs the cupy backend; got backend 'numpy'"):
        gpunet.get_backend("numpy").cublas


def test_only_backend_module_imports_cupy():
    imports_cupy = re.compile(r"^\s*(import cupy|from cupy[ .])", re.M)
    offenders = [p.name for p in PACKAGE.glob("*.py") if p.name != "backend.py" and imports_cupy.search(p.read_text())]
    assert offenders == []
    assert "import cupy" in (PACKAGE / "backend.py").read_text()


def test_no_numpy_api_removed_in_numpy_2():
    # ruff's NPY201 rule lists every name NumPy 2 removed or moved.
    ruff = pytest.importorskip("ruff", reason="ruff is part of the test extra")
    del ruff
    root = PACKAGE.parent
    targets = [str(p) for p in (PACKAGE, root / "tests", root / "scripts") if p.exists()]
    out = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--select", "NPY201",
                          "--output-format", "concise", *targets], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


class _FakeCudaRuntimeError(RuntimeError):
    """Stands in for cupy_backends' CUDARuntimeError: same message form, no driver needed."""


INSUFFICIENT = "cudaErrorInsufficientDriver: CUDA driver version is insufficient for CUDA runtime version"


@pytest.fixture
def fake_cupy(monkeypatch):
    """Make backend.py see a CuPy whose getDeviceCount raises what the test sets; the cache is reset around it."""

    class Runtime:
        error: BaseException = _FakeCudaRuntimeError(INSUFFICIENT)

        def getDeviceCount(self):  # noqa: N802 - CuPy's name
            raise self.error

    runtime = Runtime()
    fake = types.SimpleNamespace(cuda=types.SimpleNamespace(runtime=runtime))
    monkeypatch.setattr(backend_module, "_cupy", fake)
    cupy_unavailable_reason.cache_clear()
    yield runtime
    cupy_unavailable_reason.cache_clear()


def test_no_driver_is_named_as_such(fake_cupy, monkeypatch):
    monkeypatch.setattr(backend_module, "_libcuda_loads", lambda: False)
    reason = cupy_unavailable_reason()
    assert reason == f"no NVIDIA driver (libcuda.so.1 cannot be loaded; the CUDA runtime says: {INSUFFICIENT})"
    b = gpunet.get_backend("auto")
    assert b.name == "numpy" and b.reason == reason
    with pytest.raises(gpunet.BackendUnavailableError, match=r"backend 'cupy' is unavailable: no NVIDIA driver \("):
        gpunet.get_backend("cupy")


def test_old_driver_and_no_device_are_told_apart(fake_cupy, monkeypatch):
    monkeypatch.setattr(backend_module, "_libcuda_loads", lambda: True)  # a driver is there ...
    assert cupy_unavailable_reason() == f"NVIDIA driver too old for this CuPy's CUDA runtime: {INSUFFICIENT}"
    cupy_unavailable_reason.cache_clear()
    fake_cupy.error = _FakeCudaRuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected")
    assert cupy_unavailable_reason() == "no CUDA device: cudaErrorNoDevice: no CUDA-capable device is detected"
    cupy_unavailable_reason.cache_clear()
    fake_cupy.error = _FakeCudaRuntimeError("")  # an error with no message still says what it was
    assert cupy_unavailable_reason() == "no CUDA device: _FakeCudaRuntimeError: "


def test_cupy_failing_to_import_for_want_of_libcuda(tmp_path):
    # A CuPy build that links the driver fails at import when libcuda is missing; that too is "no NVIDIA driver".
    (tmp_path / "cupy").mkdir()
    (tmp_path / "cupy/__init__.py").write_text(
        "raise ImportError('libcuda.so.1: cannot open shared object file: No such file or directory')\n")
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import gpunet\n"
            "print(gpunet.get_backend('auto').reason)\n")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ("no NVIDIA driver (cupy failed to import: libcuda.so.1: cannot open shared "
                                  "object file: No such file or directory)")


def test_backend_pickles_by_name():
    b = gpunet.get_backend("numpy")
    again = pickle.loads(pickle.dumps(b))
    assert again == b and again.xp is np
    net = gpunet.Network.article([3, 2], backend="numpy")
    copy = pickle.loads(pickle.dumps(net))
    X = np.arange(6.0).reshape(2, 3)
    np.testing.assert_array_equal(copy.forward(X), net.forward(X))


def test_small_products_run_on_one_blas_thread_and_the_limit_is_lifted_after():
    from threadpoolctl import threadpool_info

    def blas_threads():
        return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]

    b, before = gpunet.get_backend("numpy"), blas_threads()
    assert before  # NumPy's BLAS is found
    for _ in range(2):  # the second time through the cached controller
        with b.products_of_size(backend_module.SMALL_PRODUCT - 1):
            assert blas_threads() == [1] * len(before)
        assert blas_threads() == before
    with b.products_of_size(backend_module.SMALL_PRODUCT):
        assert blas_threads() == before
