"""Arrays from other libraries (anything with __dlpack__: PyTorch, JAX, CuPy) in Network.forward, train and predict."""

from __future__ import annotations

import numpy as np
import pytest

import gpunet
from gpunet.backend import as_array, cupy_unavailable_reason, to_numpy
from gpunet.datasets import load_digits

from conftest import backend_param, rel_diff, require

from readme_examples import readme_example


class DLPackOnly:
    """An array that offers nothing but the DLPack protocol (no __array__, no shape): the library-neutral case."""

    def __init__(self, a: np.ndarray) -> None:
        self._a = a

    def __dlpack__(self, **kwargs):
        return self._a.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._a.__dlpack_device__()


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    return d.X_train[:300].astype(np.float32), d.y_train[:300], d.X_test.astype(np.float32), d.y_test


def _net(backend="numpy", dtype="float32"):
    return gpunet.Network([64, 20, 10], activation="relu", output="softmax", loss="cross-entropy", init="xavier",
                          seed=0, backend=backend, dtype=dtype)


def _trained(X, y, backend="numpy", dtype="float32", optimizer="adam"):
    net = _net(backend, dtype)
    gpunet.train(net, X, y, epochs=2, batch_size=32, lr=0.01, optimizer=optimizer)
    return net


def _same_as_numpy(to_array, digits):
    """forward, predict and train on ``to_array(...)`` inputs give exactly what they give on NumPy."""
    X, y, X_test, _ = digits
    reference = _trained(X, y)
    net = _trained(to_array(X), to_array(y))
    for k, p in reference.get_params().items():
        np.testing.assert_array_equal(net.get_params()[k], p, err_msg=k)
    np.testing.assert_array_equal(net.forward(to_array(X_test)), reference.forward(X_test))
    np.testing.assert_array_equal(net.predict(to_array(X_test)), reference.predict(X_test))
    T = net.targets_from_labels(y[:8])
    assert net.loss(to_array(X[:8]), to_array(T)) == reference.loss(X[:8], T)


def test_dlpack_only_object_is_read_in_place(digits):
    X = digits[0]
    a = as_array(DLPackOnly(X))
    assert isinstance(a, np.ndarray) and np.shares_memory(a, X)
    assert np.shares_memory(gpunet.get_backend("numpy").to_device(DLPackOnly(X), np.float32), X)  # no copy
    _same_as_numpy(DLPackOnly, digits)


class ElsewhereArray:
    """Claims to live on another DLPack device; reading it must fail before its memory is touched."""

    def __init__(self, device_type: int) -> None:
        self.device_type = device_type

    def __dlpack__(self, **kwargs):
        raise AssertionError("read although its device is unusable")

    def __dlpack_device__(self):
        return (self.device_type, 0)


def test_arrays_on_devices_gpunet_cannot_read_are_refused_by_name():
    with pytest.raises(TypeError, match=r"cannot read a ElsewhereArray on DLPack device type 14: gpunet reads host"):
        _net().forward(ElsewhereArray(14))  # 14: kDLOneAPI
    reason = cupy_unavailable_reason()
    if reason is None:
        pytest.skip("CuPy is usable here, so a CUDA array is readable; the GPU test covers it")
    with pytest.raises(gpunet.BackendUnavailableError) as info:
        _net().forward(ElsewhereArray(2))  # 2: kDLCUDA
    assert str(info.value).startswith(f"a ElsewhereArray on a CUDA device needs a usable CuPy to be read ({reason})")


def test_lists_still_work_and_ragged_ones_are_named():
    net = _net()
    X = np.linspace(0, 1, 128).reshape(2, 64)
    np.testing.assert_array_equal(net.forward(X.tolist()), net.forward(X))
    with pytest.raises(TypeError, match=r"X must be a 2-D array of numbers; got list"):
        net.forward([[0.5] * 64, [0.5] * 63])


def test_torch_cpu_tensors(digits):
    torch = pytest.importorskip("torch", reason="PyTorch is not installed (pip install torch)")
    X = torch.from_numpy(digits[0].copy())
    on_device = gpunet.get_backend("numpy").to_device(X, np.float32)
    assert np.shares_memory(on_device, X.numpy())  # zero-copy: the tensor's own memory
    _same_as_numpy(lambda a: torch.from_numpy(np.array(a)), digits)
    # A transposed (non-contiguous) tensor and an integer tensor are read by value.
    net = _net()
    np.testing.assert_array_equal(net.forward(X.T.contiguous().T), net.forward(digits[0]))
    counts = np.rint(digits[0] * 16).astype(np.int64)
    np.testing.assert_array_equal(net.forward(torch.from_numpy(counts)), net.forward(counts))


def test_torch_tensor_errors_name_the_problem():
    torch = pytest.importorskip("torch", reason="PyTorch is not installed (pip install torch)")
    net = _net()
    with pytest.raises(TypeError, match=r"cannot read a Tensor through DLPack: .*require gradient"):
        net.forward(torch.ones(2, 64, requires_grad=True))
    with pytest.raises(TypeError, match=r"X must hold numbers; got dtype bool"):
        net.forward(torch.ones(2, 64, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"X must have 64 columns; got shape \(2, 3\)"):
        net.forward(torch.ones(2, 3))


def test_jax_cpu_arrays(digits):
    jnp = pytest.importorskip("jax.numpy", reason="JAX is not installed (pip install jax)")
    X = jnp.asarray(digits[0])
    assert as_array(X).ctypes.data == X.unsafe_buffer_pointer()  # zero-copy: the JAX buffer itself
    np.testing.assert_array_equal(to_numpy(X), digits[0])
    _same_as_numpy(jnp.asarray, digits)


@pytest.mark.parametrize("name", [backend_param("cupy")])
def test_torch_cuda_tensors_stay_on_the_device(name, digits):
    backend = require(name)
    torch = pytest.importorskip("torch", reason="PyTorch is not installed (pip install torch)")
    if not torch.cuda.is_available():
        pytest.skip("this PyTorch build has no CUDA (a CPU-only wheel)")
    X_host, y, X_test, _ = digits
    X = torch.from_numpy(X_host).cuda()
    on_device = backend.to_device(X, np.float32)
    assert on_device.data.ptr == X.data_ptr()  # the tensor's memory, no copy and no host round trip
    assert isinstance(as_array(X), backend.xp.ndarray)
    # float64 and plain SGD, so that the two devices' rounding cannot grow into different trajectories.
    reference = _trained(X_host, y, "numpy", "float64", "sgd")
    net = _trained(X, torch.from_numpy(y).cuda(), name, "float64", "sgd")
    for k, p in reference.get_params().items():
        assert rel_diff(net.get_params()[k], p) <= 1e-9, k  # max-norm relative, as tests/test_parity.py
    Y = net.forward(torch.from_numpy(X_test).cuda())
    assert isinstance(Y, backend.xp.ndarray)
    assert rel_diff(backend.to_host(Y), reference.forward(X_test)) <= 1e-9
    # A NumPy network reads a CUDA tensor too (through CuPy, one copy to the host).
    np.testing.assert_array_equal(reference.forward(X), reference.forward(X_host))


@pytest.mark.parametrize("index, library", [(2, "jax"), (3, "torch")])
def test_readme_examples(monkeypatch, index, library):
    pytest.importorskip(library, reason=f"{library} is not installed (not a gpunet dependency)")
    monkeypatch.setenv("GPUNET_BACKEND", "numpy")
    scope: dict = {}
    block = readme_example(index)
    assert f"import {library}" in block  # the block this test means: JAX's, then PyTorch's
    exec(compile(block, "README.md", "exec"), scope)
    assert scope["accuracy"] > 0.93  # "about 0.95"
    assert scope["labels"].dtype == np.int64 and scope["labels"].shape == scope["data"].y_test.shape
