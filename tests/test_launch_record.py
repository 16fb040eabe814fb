"""Every kernel launch gpunet.train makes on CuPy, recorded on the CPU and held to a golden record.

The CUDA fast paths are about to be restructured (gpunet/cuda/* moved to a new package, activations.cuh
generated from a Python table, optim.cu perhaps generated); what they launch must not change. This test
trains the configurations of ``CONFIGURATIONS`` through the public ``gpunet.train`` on a fake CuPy (NumPy
underneath, nothing computed by a kernel) and records, in order:

- each launch of a kernel of gpunet's CUDA sources: its name expression and source file, grid, block,
  dynamic shared memory (and the opt-in limit where the code raised it), and its arguments: an array as
  dtype, shape and an aliasing id (``#k+o``: the k-th buffer to appear in the record, o elements into it),
  a scalar as its NumPy type and value, weight_grads' packed layer table with its pointers as aliasing ids;
- each cuBLAS product (``cublas.gemm`` with its transposes, alpha and beta; ``matmul``, both
  ``xp.matmul`` and the ``@`` operator), its operands described the same way;
- once per (source file, options, name expressions) compiled, a SHA-256 of the source's token stream after
  the C preprocessor (includes inlined, macros expanded, comments gone), so a change of comments or layout
  leaves the record alone and a change of a token or a ``#define`` does not.

Every launch carries the stream it ran on and, when a CUDA graph replayed it, the graph. CuPy's own
elementwise and reduction kernels (``take``, ``sum``, in-place arithmetic) are not recorded: they are
CuPy's, not gpunet's. The golden record is tests/data/launch_record.json, written from the code before the
restructuring by ``GPUNET_WRITE_LAUNCH_RECORD=1 pytest tests/test_launch_record.py``; otherwise the test
compares, naming the configuration and the first launch and field that differ.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import weakref
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import numpy as np
import pytest

import gpunet
import gpunet.engines.kernels

# =====================================================================================================
# PATCH POINTS AND FAKES: the only part of this file that knows how gpunet reaches CuPy. After the
# restructuring, update these names and the fake (nothing below this section): the golden record must
# still match.
#
# gpunet names this test depends on:
#   gpunet.Network, gpunet.train, gpunet.Adam  - the public API every configuration goes through
#   gpunet.Backend                              - built with the fake CuPy as its ``xp``; its public properties
#                                                 ``cublas`` (imports ``xp.__name__ + ".cublas"``) and
#                                                 ``out_of_memory_errors`` (overridden below)
#   gpunet.engines.kernels._load                           - every compile: _load(xp, device, name, name_expressions,
#                                                 options) builds xp.RawModule(code=..., options=...,
#                                                 name_expressions=...) and compiles it; patched to tell the
#                                                 fake which source file it compiles and to skip its cache
# =====================================================================================================

LOAD_MODULE, LOAD_NAME = gpunet.engines.kernels, "_load"  # the one private patch point
FAKE_NAME = "gpunet_launch_record_cupy"  # the fake CuPy's module name; its cuBLAS is FAKE_NAME + ".cublas"
FAKE_DEVICE_ID = 77  # a device id no real machine has, so no cache filled by a GPU test is shared with the fake
DEVICE_ATTRIBUTES = {"MaxSharedMemoryPerBlockOptin": 232448}  # an H100's 227 KiB
DEFAULT_DYNAMIC_SHARED = 48 * 1024  # a kernel's dynamic shared memory before it opts in to more
CUDA_ARCH = 900  # sm_90, the H100: what NVRTC defines __CUDA_ARCH__ to when CuPy compiles for it
MAX_BLOCK_THREADS, MAX_GRID = 1024, (2**31 - 1, 65535, 65535)


class FakeBackend(gpunet.Backend):
    """A "cupy" Backend on the fake: its out-of-memory errors are the fake's (Backend's own name the real
    CuPy's, which is not installed here)."""

    @property
    def out_of_memory_errors(self) -> tuple[type[BaseException], ...]:
        return (MemoryError, self.xp.cuda.memory.OutOfMemoryError)


def patch_load(monkeypatch: pytest.MonkeyPatch) -> None:
    """gpunet.engines.kernels._load compiling on the fake CuPy it is given, without its cache (each configuration records
    its own compiles), after telling the fake which source file it compiles."""
    original = getattr(LOAD_MODULE, LOAD_NAME)
    uncached = getattr(original, "__wrapped__", original)  # functools.lru_cache keeps the function here

    def recording_load(xp: Any, device: int, name: str, name_expressions: tuple[str, ...],
                       options: tuple[str, ...]) -> Any:
        xp.recorder.loading = name  # the fake RawModule's source file
        try:
            return uncached(xp, device, name, name_expressions, options)
        finally:
            xp.recorder.loading = None

    monkeypatch.setattr(LOAD_MODULE, LOAD_NAME, recording_load)


def fake_backend(monkeypatch: pytest.MonkeyPatch, recorder: Recorder) -> FakeBackend:
    """A "cupy" Backend on a fresh fake CuPy recording into ``recorder``, registered where Backend.cublas
    imports it."""
    fake = fake_cupy(recorder)
    monkeypatch.setitem(sys.modules, FAKE_NAME, fake)
    monkeypatch.setitem(sys.modules, f"{FAKE_NAME}.cublas", fake.cublas)
    return FakeBackend(name="cupy", xp=fake, device="fake")


def fake_cupy(recorder: Recorder) -> ModuleType:
    """A CuPy look-alike on NumPy: NumPy's functions, arrays of a "device" subclass whose allocations the
    recorder knows (zeros where CuPy leaves memory uninitialised, so every value stays finite), and
    RawModule, cuBLAS, matmul, streams and graphs that record instead of computing."""
    xp = ModuleType(FAKE_NAME)
    xp.__dict__.update({k: v for k, v in vars(np).items() if not k.startswith("_")})

    class ndarray(np.ndarray):  # CuPy's name: isinstance(a, xp.ndarray) tells device arrays apart
        def __matmul__(self, other: Any) -> Any:
            return recorder.matmul(self, other)

        def __rmatmul__(self, other: Any) -> Any:
            return recorder.matmul(other, self)

    def device(a: np.ndarray) -> Any:
        recorder.allocated.append(weakref.ref(a))
        return a.view(ndarray)

    def on_device(a: Any, dtype: Any) -> bool:
        return isinstance(a, ndarray) and (dtype is None or a.dtype == np.dtype(dtype))

    def asarray(a: Any, dtype: Any = None) -> Any:  # host data is copied to the device, device data kept
        return a if on_device(a, dtype) else device(np.array(a, dtype=dtype, copy=True))

    def ascontiguousarray(a: Any, dtype: Any = None) -> Any:
        if on_device(a, dtype) and a.flags.c_contiguous:
            return a
        return device(np.array(a, dtype=dtype, order="C", copy=True))

    def zeros_like(a: Any, dtype: Any = None) -> Any:
        return device(np.zeros(a.shape, dtype=a.dtype if dtype is None else dtype))

    def matmul(a: Any, b: Any, out: Any = None) -> Any:
        return recorder.matmul(a, b, out)

    def gemm(transa: str, transb: str, a: Any, b: Any, out: Any = None, alpha: float = 1.0,
             beta: float = 0.0) -> Any:
        recorder.launch("cublas.gemm", None, args=[transa, transb, a, b], out=out, alpha=alpha, beta=beta)
        return out

    class RawModule:
        def __init__(self, code: str, options: tuple[str, ...] = (), name_expressions: Any = None) -> None:
            if recorder.loading is None:
                raise AssertionError("a RawModule was made outside gpunet.engines.kernels._load: update the patch points")
            self.code, self.options, self.source = code, tuple(options), recorder.loading
            self.name_expressions = tuple(name_expressions or ())
            self.functions: dict[str, Kernel] = {}

        def compile(self) -> None:
            recorder.compiled(self.source, self.code, self.options, self.name_expressions)

        def get_function(self, expression: str) -> Kernel:
            if expression not in self.name_expressions:
                raise ValueError(f"{expression!r} is not among the name expressions of {self.source}")
            if expression not in self.functions:  # one function a module, as the driver has it (its opt-in kept)
                self.functions[expression] = Kernel(recorder, expression, self.source)
            return self.functions[expression]

    class Stream:
        def __init__(self, null: bool = False, non_blocking: bool = False) -> None:
            self.id = len(recorder.streams)
            recorder.streams.append(self)
            self.capture: list[Any] | None = None

        def __enter__(self) -> Any:
            recorder.current.append(self)
            return self

        def __exit__(self, *exc: object) -> None:
            recorder.current.pop()

        def begin_capture(self) -> None:
            assert self.capture is None, "a capture began on a stream already capturing"
            self.capture = []

        def end_capture(self) -> Graph:
            launches, self.capture = self.capture, None
            return Graph(launches)

        def record(self, event: Any = None) -> Any:
            return SimpleNamespace(stream=self.id)

        def wait_event(self, event: Any) -> None:
            pass

        def synchronize(self) -> None:
            assert self.capture is None, "a capturing stream was synchronised (cudaErrorStreamCaptureUnsupported)"

    class Graph:
        def __init__(self, launches: list[Any]) -> None:
            self.launches, self.id = launches, recorder.graphs
            recorder.graphs += 1

        def launch(self, stream: Stream) -> None:  # a replay launches every captured kernel again, on stream
            for launch in self.launches:
                recorder.record(launch, stream.id, self.id)

    class Device:
        def __init__(self, device: int | None = None) -> None:
            self.id = FAKE_DEVICE_ID
            self.attributes = dict(DEVICE_ATTRIBUTES)

    class OutOfMemoryError(MemoryError):
        pass

    null_stream = Stream(null=True)
    pool = SimpleNamespace(free_all_blocks=lambda: None)
    xp.ndarray = ndarray
    xp.empty = xp.zeros = lambda shape, dtype=float, order="C": device(np.zeros(shape, dtype=dtype, order=order))
    xp.ones = lambda shape, dtype=float: device(np.ones(shape, dtype=dtype))
    xp.full = lambda shape, fill_value, dtype=None: device(np.full(shape, fill_value, dtype=dtype))
    xp.empty_like = xp.zeros_like = zeros_like
    xp.array, xp.asarray, xp.ascontiguousarray, xp.matmul = asarray, asarray, ascontiguousarray, matmul
    xp.asnumpy = lambda a: np.array(a)
    xp.get_array_module = lambda *arrays: xp
    xp.get_default_memory_pool = xp.get_default_pinned_memory_pool = lambda: pool
    xp.RawModule = RawModule
    xp.cuda = SimpleNamespace(
        Device=Device, Stream=Stream, memory=SimpleNamespace(OutOfMemoryError=OutOfMemoryError),
        get_current_stream=lambda: recorder.current[-1] if recorder.current else null_stream,
    )
    xp.cublas = ModuleType(f"{FAKE_NAME}.cublas")
    xp.cublas.gemm = gemm
    xp.recorder = recorder
    return xp


# =====================================================================================================
# The recorder (no gpunet names in it)
# =====================================================================================================

class Kernel:
    """A compiled kernel of the fake: calling it records the launch (or adds it to a capture)."""

    def __init__(self, recorder: Recorder, expression: str, source: str) -> None:
        self.recorder, self.expression, self.source = recorder, expression, source
        self.max_dynamic_shared_size_bytes = DEFAULT_DYNAMIC_SHARED
        self.opted_in: int | None = None

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "max_dynamic_shared_size_bytes" and hasattr(self, name):  # set by the code: an opt-in
            if value > DEVICE_ATTRIBUTES["MaxSharedMemoryPerBlockOptin"]:
                raise ValueError(f"{self.expression}: opt-in to {value} bytes of shared memory, above the device's")
            object.__setattr__(self, "opted_in", int(value))
        object.__setattr__(self, name, value)

    def __call__(self, grid: tuple[int, ...], block: tuple[int, ...], args: tuple[Any, ...],
                 shared_mem: int = 0) -> None:
        grid, block = tuple(int(g) for g in grid), tuple(int(b) for b in block)
        threads = int(np.prod(block))
        if not 0 < threads <= MAX_BLOCK_THREADS or any(not 0 < g <= m for g, m in zip(grid, MAX_GRID)):
            raise ValueError(f"{self.expression}: grid {grid} block {block} cannot launch")
        if shared_mem > self.max_dynamic_shared_size_bytes:
            raise ValueError(f"{self.expression}: {shared_mem} bytes of dynamic shared memory without opting in")
        self.recorder.launch(self.expression, self.source, grid=list(grid), block=list(block),
                             shared_mem=int(shared_mem), opted_in=self.opted_in, args=list(args))


class Recorder:
    """One configuration's record: compiles and launches, in order, with arrays as aliasing ids."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.loading: str | None = None  # the source file gpunet.engines.kernels._load is compiling
        self.allocated: list[weakref.ref] = []  # every buffer the fake allocated: where a packed pointer may point
        self.buffers: dict[int, tuple[int, np.ndarray]] = {}  # id(buffer) -> (its index, the buffer kept alive)
        self.streams: list[Any] = []
        self.current: list[Any] = []  # the streams entered (with stream:), innermost last
        self.graphs = 0
        self.seen_compiles: set[tuple[Any, ...]] = set()

    @property
    def launches(self) -> int:
        return sum(e["event"] == "launch" for e in self.events)

    def compiled(self, source: str, code: str, options: tuple[str, ...], expressions: tuple[str, ...]) -> None:
        key = (source, code, options, expressions)
        if key in self.seen_compiles:
            return
        self.seen_compiles.add(key)
        shown = [re.sub(r"^-I.*", "-I<include dir>", o) for o in options]  # no machine's paths in the record
        self.events.append({"event": "compile", "source": source, "options": shown,
                            "name_expressions": list(expressions), "sha256": token_hash(code, options)})

    def launch(self, kernel: str, source: str | None, **fields: Any) -> None:
        """Record a launch on the current stream, or add it to the capture under way there."""
        stream = self.current[-1] if self.current else self.streams[0]
        launch = {"kernel": kernel, "source": source, **fields}
        if stream.capture is not None:
            stream.capture.append(launch)
        else:
            self.record(launch, stream.id, None)

    def record(self, launch: dict[str, Any], stream: int, graph: int | None) -> None:
        """The launch described (arrays as aliasing ids, numbered as they first appear) and appended."""
        event = {"event": "launch"}
        event.update({k: self.describe(v) if k in ("args", "out", "alpha", "beta") else v for k, v in launch.items()})
        event.update(stream=stream, graph=graph)
        self.events.append(event)

    def matmul(self, a: Any, b: Any, out: Any = None) -> Any:
        """A cuBLAS product: recorded, not computed; the output (zeros when allocated here) returned."""
        if a.shape[-1] != b.shape[0 if b.ndim == 1 else -2]:
            raise ValueError(f"matmul: shapes {a.shape} and {b.shape} do not match")
        shape = a.shape[:-1] + b.shape[1:] if b.ndim == 2 else a.shape[:-1]
        if out is None:
            out = sys.modules[FAKE_NAME].zeros(shape, dtype=np.result_type(a, b))
        elif out.shape != shape:
            raise ValueError(f"matmul: out has shape {out.shape}, the product {shape}")
        self.launch("matmul", None, args=[a, b], out=out)
        return out

    # --- describing arguments ------------------------------------------------------------------

    def describe(self, value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return [self.describe(v) for v in value]
        if isinstance(value, np.ndarray) and value.dtype.names is not None:
            return self.struct(value)
        if isinstance(value, np.ndarray):
            if not isinstance(value, sys.modules[FAKE_NAME].ndarray):
                raise TypeError(f"a host array ({value.dtype}{list(value.shape)}) was passed to the device")
            return self.array(value)
        if isinstance(value, np.generic):
            return f"{type(value).__name__}:{value.item()!r}"
        if value is None or isinstance(value, str):
            return value
        if isinstance(value, (bool, int, float)):
            return f"{type(value).__name__}:{value!r}"
        raise TypeError(f"cannot record an argument of type {type(value).__name__}")

    def alias(self, address: int) -> str:
        """``#k+o``: buffer k of this record (numbered by first appearance), o of its elements in."""
        candidates = [r for r in (*(b for _, b in self.buffers.values()), *(w() for w in self.allocated))
                      if r is not None]
        for buffer in candidates:
            start = buffer.ctypes.data
            if start <= address < start + max(buffer.nbytes, 1):
                break
        else:
            raise AssertionError(f"address {address:#x} lies in no buffer of the fake device")
        root = root_of(buffer)
        index, _ = self.buffers.setdefault(id(root), (len(self.buffers), root))
        return f"#{index}+{(address - root.ctypes.data) // root.itemsize}"

    def array(self, a: np.ndarray) -> str:
        root = root_of(a)
        index, _ = self.buffers.setdefault(id(root), (len(self.buffers), root))
        text = f"{a.dtype.name}{list(a.shape)} #{index}+{(a.ctypes.data - root.ctypes.data) // root.itemsize}"
        if not a.flags.c_contiguous:
            text += f" strides{[s // a.itemsize for s in a.strides]}"
        return text

    def struct(self, table: np.ndarray) -> dict[str, Any]:
        """A structured argument (passed by its bytes): its layout, and its value with every uint64 field
        (a device pointer) as an aliasing id, 0 as None."""
        value = table[0] if table.shape == (1,) else table

        def walk(v: Any) -> Any:
            if isinstance(v, np.void):
                return {name: walk(v[name]) for name in v.dtype.names}
            if isinstance(v, np.ndarray):
                return [walk(x) for x in v]
            if isinstance(v, np.uint64):
                return None if int(v) == 0 else self.alias(int(v))
            return v.item()

        return {"layout": layout(table.dtype), "value": walk(value)}


def root_of(a: np.ndarray) -> np.ndarray:
    """The buffer ``a`` is a view of (itself when it owns its memory)."""
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


def layout(dtype: np.dtype) -> Any:
    """A structured dtype as field names, offsets, shapes and element types; its size."""
    if dtype.names is None:
        return dtype.str
    fields = []
    for name in dtype.names:
        field, offset = dtype.fields[name][:2]
        base, shape = field.subdtype or (field, ())
        fields.append([name, offset, list(shape), layout(base)])
    return {"fields": fields, "itemsize": dtype.itemsize}


# --- the sources' token stream -----------------------------------------------------------------------

# C/C++ tokens after preprocessing: string and character literals, pp-numbers, identifiers, punctuators
# (longest first), then any other single character.
TOKEN = re.compile(r"""
    "(?:\\.|[^"\\\n])*" | '(?:\\.|[^'\\\n])*'
  | \.?\d(?:[eEpP][+-]|[\w.'])*
  | [A-Za-z_]\w*
  | \.\.\.|<<=|>>=|->\*|::|->|\+\+|--|<<|>>|<=|>=|==|!=|&&|\|\||[-+*/%&|^]=|\#\#|\.\*
  | \S
""", re.VERBOSE)


def preprocessor() -> str:
    path = shutil.which("cpp")
    if path is None:
        pytest.fail("the launch record hashes each CUDA source after the C preprocessor, and no `cpp` is on the "
                    "PATH: install one (Debian: apt-get install cpp)")
    return path


@functools.cache
def token_hash(code: str, options: tuple[str, ...]) -> str:
    """SHA-256 of ``code``'s tokens, one space apart, after the C preprocessor with NVRTC's -I, -D, -U and
    -std options and the macros NVRTC predefines for an sm_90 device (no host or compiler macros)."""
    passed = [o for o in options if o.startswith(("-I", "-D", "-U", "-std="))]
    command = [preprocessor(), "-P", "-x", "c++", "-undef", "-D__CUDACC__", "-D__CUDACC_RTC__", "-D__NVCC__",
               f"-D__CUDA_ARCH__={CUDA_ARCH}", *passed, "-"]
    run = subprocess.run(command, input=code, capture_output=True, text=True, timeout=60, check=False)
    if run.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed:\n{run.stderr}")
    tokens = TOKEN.findall(run.stdout)
    return hashlib.sha256(" ".join(tokens).encode()).hexdigest()


# =====================================================================================================
# The configurations, through gpunet's public API only
# =====================================================================================================

SMALL, WIDE_OUT = [30, 24, 10], [30, 24, 20]  # WIDE_OUT: more outputs than a tile (output_delta on its own)
DEEP = [30, 24, 16, 10]  # two hidden layers
BIG = [784, 1024, 10]  # batch 512 x 1024: products of BIG_PRODUCT elements, register-tiled (R = RTILE)
BIG_DEEP = [784, 1024, 1024, 10]  # two register-tiled layers: weight_grads at R = RTILE
TALL = [30, *[16] * 8, 10]  # nine layers: weight_grads in two parts (at most MAX_LAYERS a launch)


def config(kernels: str, dtype: str, sizes: list[int], activation: str, output: str, loss: str,
           optimizer: str = "sgd", batch: int = 32, rows: int = 150, **extra: Any) -> dict[str, Any]:
    """One training run: gpunet.train's arguments, and a name that says them."""
    spec = {"kernels": kernels, "dtype": dtype, "sizes": sizes, "activation": activation, "output": output,
            "loss": loss, "optimizer": optimizer, "batch_size": batch, "rows": rows, **extra}
    name = (f"{kernels}-{dtype}-{'x'.join(map(str, sizes))}-{activation}-{output}/{loss}-{optimizer}"
            f"-b{batch}-n{rows}" + "".join(f"-{k}={v}" for k, v in extra.items()))
    return {"name": name, **spec}


F, D = "float32", "float64"
CONFIGURATIONS = [
    # graph mode: every hidden activation, output/loss pair, optimiser and dtype; partial last batches
    config("graph", F, SMALL, "sigmoid", "sigmoid", "squared"),
    config("graph", D, SMALL, "sigmoid", "sigmoid", "squared"),
    config("graph", F, SMALL, "tanh", "softmax", "cross-entropy", "momentum"),
    config("graph", D, SMALL, "relu", "sigmoid", "cross-entropy", "adam", batch=50),  # no partial batch
    config("graph", F, SMALL, "leaky_relu", "identity", "absolute", "sgd+wd"),
    config("graph", D, SMALL, "leaky_relu", "tanh", "squared", "adam+wd"),
    config("graph", F, DEEP, "relu", "relu", "absolute"),
    config("graph", D, DEEP, "sigmoid", "softmax", "squared", "momentum+wd"),
    config("graph", F, DEEP, "tanh", "leaky_relu", "squared", "adam(0.8,0.99,1e-6)"),
    config("graph", D, DEEP, "tanh", "softmax", "absolute", "sgd+wd"),
    config("graph", F, [30, 10], "sigmoid", "identity", "squared", "sgd+wd"),  # no hidden layer: one weight_grad
    config("graph", D, [30, 10], "relu", "softmax", "cross-entropy", "adam"),
    config("graph", F, WIDE_OUT, "relu", "sigmoid", "absolute"),
    config("graph", D, [30, 24, 16, 20], "sigmoid", "softmax", "cross-entropy", "sgd+wd"),
    config("graph", F, BIG, "sigmoid", "softmax", "cross-entropy", batch=512, rows=600),
    config("graph", D, BIG, "tanh", "sigmoid", "squared", "momentum", batch=512, rows=600),
    config("graph", D, BIG_DEEP, "relu", "sigmoid", "squared", "adam", batch=512, rows=600),
    config("graph", F, BIG_DEEP, "tanh", "identity", "absolute", batch=512, rows=600),
    config("graph", F, BIG_DEEP, "leaky_relu", "softmax", "cross-entropy", "sgd+wd", batch=512, rows=600),
    config("graph", F, TALL, "relu", "sigmoid", "squared", "momentum"),
    config("graph", D, TALL, "tanh", "identity", "squared"),
    config("graph", F, SMALL, "sigmoid", "sigmoid", "squared", "momentum", start_row=70),  # resumed mid-epoch
    config("graph", D, DEEP, "relu", "softmax", "cross-entropy", "adam", start_epoch=2, start_row=96),
    # graph mode's per-sample plain SGD: PerSampleEpochs (chunks of 64 rows, the last partial)
    config("graph", F, SMALL, "sigmoid", "sigmoid", "squared", batch=1),
    config("graph", D, [784, 100, 10], "tanh", "softmax", "cross-entropy", batch=1),
    config("graph", D, [30, 1024, 10], "leaky_relu", "sigmoid", "cross-entropy", batch=1),  # opts in to shared
    config("graph", F, SMALL, "relu", "identity", "absolute", batch=1, start_row=100),
    config("graph", D, [20, 3000, 10], "sigmoid", "sigmoid", "squared", batch=1, rows=40),  # too wide: plain
    # fused: the same coverage through fused.cu, optim.cu and cuBLAS
    config("fused", F, SMALL, "sigmoid", "sigmoid", "squared", lr_decay=0.5),
    config("fused", D, SMALL, "sigmoid", "sigmoid", "squared"),
    config("fused", F, SMALL, "tanh", "softmax", "cross-entropy", "momentum"),
    config("fused", D, SMALL, "relu", "sigmoid", "cross-entropy", "adam", batch=50),
    config("fused", F, SMALL, "leaky_relu", "identity", "absolute", "sgd+wd"),
    config("fused", D, SMALL, "leaky_relu", "tanh", "absolute", "adam+wd"),
    config("fused", F, DEEP, "relu", "relu", "squared"),
    config("fused", D, DEEP, "sigmoid", "softmax", "squared", "momentum+wd", lr_decay=0.9),
    config("fused", F, DEEP, "tanh", "leaky_relu", "absolute", "adam(0.8,0.99,1e-6)"),
    config("fused", D, DEEP, "leaky_relu", "softmax", "absolute", "sgd+wd"),
    config("fused", D, [30, 10], "relu", "identity", "squared"),
    config("fused", F, WIDE_OUT, "tanh", "softmax", "cross-entropy", "adam"),
    config("fused", F, BIG, "relu", "softmax", "cross-entropy", batch=512, rows=600),
    config("fused", D, [784, 64, 10], "sigmoid", "sigmoid", "cross-entropy", "momentum", batch=64),
    # fused's per-sample plain SGD: per_sample.cu a chunk at a time
    config("fused", F, SMALL, "sigmoid", "sigmoid", "squared", batch=1),
    config("fused", D, [784, 100, 10], "tanh", "softmax", "cross-entropy", batch=1, lr_decay=0.5),
    config("fused", D, [30, 1024, 10], "relu", "identity", "absolute", batch=1),  # opts in to shared memory
    config("fused", F, SMALL, "leaky_relu", "sigmoid", "cross-entropy", batch=1, start_row=100),
    config("fused", F, [30, 24, 10], "sigmoid", "relu", "squared", batch=1, rows=64),  # one full chunk
    # auto: its choice of path
    config("auto", F, SMALL, "sigmoid", "softmax", "cross-entropy"),  # graph
    config("auto", D, SMALL, "tanh", "sigmoid", "squared", batch=1),  # per-sample epochs
    config("auto", F, SMALL, "relu", "sigmoid", "squared", on_batch=True),  # a call after every step: fused
    config("auto", F, BIG, "sigmoid", "softmax", "cross-entropy", batch=2048, rows=600),  # too big for graph
    # silu, whose derivative reads the layer's input Z: each path keeps Z where asked for by name
    config("graph", F, SMALL, "silu", "softmax", "cross-entropy", "adam"),  # forward_keep, backward at Z
    config("graph", D, DEEP, "silu", "silu", "squared"),  # the output's Z_L kept in delta for f'
    config("graph", F, WIDE_OUT, "tanh", "silu", "absolute", "sgd+wd"),  # output_delta on its own
    config("graph", F, BIG, "silu", "identity", "squared", batch=512, rows=600),  # forward_keep at R = RTILE
    config("graph", D, SMALL, "silu", "silu", "squared", batch=1),  # per-sample epochs: z1 in D, z2 in Z2o
    config("fused", F, DEEP, "silu", "silu", "absolute", "momentum"),  # bias_act_keep
    config("fused", D, SMALL, "silu", "softmax", "cross-entropy", batch=1),  # the per-sample kernel
    config("fused", F, SMALL, "relu", "silu", "squared", batch=1),
    config("auto", F, SMALL, "silu", "softmax", "cross-entropy"),  # plain: no device run has verified silu
]
EPOCHS = 2  # the second epoch replays the first's graph


def optimizer_of(spec: str) -> tuple[Any, float]:
    """(gpunet.train's optimizer=, weight_decay=) for "sgd", "momentum+wd", "adam(b1,b2,eps)", ..."""
    if spec.startswith("adam("):
        beta1, beta2, eps = (float(v) for v in spec[5:-1].split(","))
        return gpunet.Adam(beta1=beta1, beta2=beta2, eps=eps), 0.0
    name, _, decay = spec.partition("+")
    return name, 1e-3 if decay else 0.0


def run(monkeypatch: pytest.MonkeyPatch, spec: dict[str, Any]) -> Recorder:
    """Train one configuration on a fresh fake device; its record."""
    recorder = Recorder()
    backend = fake_backend(monkeypatch, recorder)
    sizes = spec["sizes"]
    rng = np.random.default_rng(0)
    X = rng.normal(scale=0.5, size=(spec["rows"], sizes[0]))
    y = rng.integers(0, sizes[-1], spec["rows"])
    net = gpunet.Network.article(sizes, spec["activation"], spec["output"], spec["loss"], seed=1, backend=backend,
                         dtype=spec["dtype"])
    optimizer, weight_decay = optimizer_of(spec["optimizer"])
    # the rates the record was written with: a constant 0.05 unless the configuration decays it
    extra = {"lr_decay": 1.0, **{k: spec[k] for k in ("lr_decay", "start_epoch", "start_row") if k in spec}}
    if "start_row" in spec:
        extra["start_loss"] = 3.5
    if spec.get("on_batch"):
        extra["on_batch"] = lambda rows, loss: None
    gpunet.train(net, X, y, kernels=spec["kernels"], optimizer=optimizer, weight_decay=weight_decay,
                 batch_size=spec["batch_size"], epochs=EPOCHS, lr=0.05, seed=2, **extra)
    for p in net.params.values():
        assert np.isfinite(p).all()
    return recorder


# =====================================================================================================
# The golden record
# =====================================================================================================

GOLDEN = Path(__file__).parent / "data" / "launch_record.json"
WRITE = "GPUNET_WRITE_LAUNCH_RECORD"
MIN_LAUNCHES = 2000  # an empty or truncated record cannot pass


def write_golden(records: list[dict[str, Any]], path: Path = GOLDEN) -> None:
    """The record as JSON, one event a line (so a diff shows the launches that changed)."""
    total = sum(r["launches"] for r in records)
    lines = ["{", f'"about": {json.dumps(__doc__.splitlines()[0])},', f'"launches": {total},',
             '"configurations": [']
    for i, r in enumerate(records):
        head = {k: v for k, v in r.items() if k != "events"}
        lines.append(json.dumps(head, sort_keys=True)[:-1] + ', "events": [')
        lines += [json.dumps(e, sort_keys=True) + ("," if j < len(r["events"]) - 1 else "")
                  for j, e in enumerate(r["events"])]
        lines.append("]}" + ("," if i < len(records) - 1 else ""))
    lines += ["]", "}"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def first_difference(got: Any, want: Any, where: str) -> str | None:
    """Where ``got`` first differs from ``want`` (fields in a fixed order, list entries by index), or None."""
    if isinstance(got, dict) and isinstance(want, dict):
        for k in sorted(set(got) | set(want)):
            if k not in got or k not in want:
                return f"{where}.{k}: now {got.get(k, '<missing>')!r}, golden {want.get(k, '<missing>')!r}"
            found = first_difference(got[k], want[k], f"{where}.{k}")
            if found:
                return found
        return None
    if isinstance(got, list) and isinstance(want, list):
        for i, (g, w) in enumerate(zip(got, want)):
            found = first_difference(g, w, f"{where}[{i}]")
            if found:
                return found
        if len(got) != len(want):
            return f"{where}: now {len(got)} entries, golden {len(want)}"
        return None
    return None if got == want else f"{where}: now {got!r}, golden {want!r}"


def compare(records: list[dict[str, Any]], golden: dict[str, Any]) -> None:
    want = {c["name"]: c for c in golden["configurations"]}
    got_names, want_names = [r["name"] for r in records], list(want)
    assert got_names == want_names, (
        f"the configurations differ from the golden record's: new {sorted(set(got_names) - set(want_names))}, "
        f"gone {sorted(set(want_names) - set(got_names))} (or their order changed)")
    for r in records:
        w = want[r["name"]]
        for i, (event, golden_event) in enumerate(zip(r["events"], w["events"])):
            found = first_difference(event, golden_event, "")
            if found:
                what = event.get("kernel") or f"compile of {event.get('source')}"
                hint = ("\n(the source's tokens after the preprocessor changed: code or a macro's value, not a comment)"
                        if found.startswith(".sha256") else "")
                pytest.fail(f"configuration {r['name']}: event {i} ({what}) differs at {found.lstrip('.')}{hint}\n"
                            f"now:    {json.dumps(event, sort_keys=True)}\n"
                            f"golden: {json.dumps(golden_event, sort_keys=True)}")
        assert len(r["events"]) == len(w["events"]), (
            f"configuration {r['name']}: {len(r['events'])} events now, {len(w['events'])} in the golden record "
            f"(first extra or missing: event {min(len(r['events']), len(w['events']))})")
        assert r["launches"] == w["launches"], r["name"]


def test_every_launch_matches_the_golden_record(monkeypatch: pytest.MonkeyPatch) -> None:
    preprocessor()  # fail now, saying so, where there is none
    patch_load(monkeypatch)
    names = [c["name"] for c in CONFIGURATIONS]
    assert len(set(names)) == len(names), "two configurations share a name"
    records = []
    for spec in CONFIGURATIONS:
        recorder = run(monkeypatch, spec)
        records.append({"name": spec["name"], "config": {k: v for k, v in spec.items() if k != "name"},
                        "launches": recorder.launches, "events": recorder.events})
    total = sum(r["launches"] for r in records)
    assert total >= MIN_LAUNCHES, f"only {total} launches recorded"
    if os.environ.get(WRITE):
        write_golden(records)
        pytest.skip(f"{WRITE} is set: wrote {GOLDEN} ({total} launches), nothing compared")
    assert GOLDEN.is_file(), f"no golden record at {GOLDEN}: write it with {WRITE}=1 from the code to hold to"
    golden = json.loads(GOLDEN.read_text())
    # the records as JSON would read them back (tuples as lists), then field by field
    compare(json.loads(json.dumps(records)), golden)
    assert total == golden["launches"], f"{total} launches recorded, {golden['launches']} in the golden record"
