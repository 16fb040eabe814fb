"""Shared fixtures: the backend fixture that runs a test body on every usable backend, the parity
candidates (each backend and dtype with its reference), MNIST, and the closeness check; and how the suite
runs: which tests are slow (run by CI, not by default), Hypothesis's fixed examples, and a temporary folder
of the session's own that must be left empty."""

from __future__ import annotations

import importlib.util
import io
import os
import re
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

import gpunet
from gpunet.backend import cupy_unavailable_reason

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
MNIST_DIR = Path(os.environ.get("GPUNET_MNIST_DIR", Path(__file__).resolve().parents[2] / "shared/data/mnist"))


def backend_param(name: str, *rest: object) -> object:
    """A pytest param for ``name``: CuPy ones carry the gpu marker."""
    marks = [pytest.mark.gpu] if name == "cupy" else []
    return pytest.param((name, *rest) if rest else name, marks=marks, id="-".join(map(str, (name, *rest))))


def require(name: str) -> gpunet.Backend:
    """The backend called ``name``, or skip the test saying why it cannot run here."""
    if name == "cupy":
        reason = cupy_unavailable_reason()
        if reason is not None:
            pytest.skip(f"CuPy backend unusable here: {reason}")
    return gpunet.get_backend(name)


@pytest.fixture(params=[backend_param("numpy"), backend_param("cupy")])
def backend(request: pytest.FixtureRequest) -> gpunet.Backend:
    return require(request.param)


# Parity: CuPy runs against NumPy in the same dtype; the NumPy float32 run against NumPy float64.
TOLERANCE = {"float32": 1e-4, "float64": 1e-9}  # max-norm relative
CANDIDATES = [backend_param("numpy", "float32"), backend_param("cupy", "float32"), backend_param("cupy", "float64")]


@pytest.fixture(params=CANDIDATES)
def candidate(request: pytest.FixtureRequest) -> tuple[gpunet.Backend, str, gpunet.Backend, str]:
    """(backend, dtype, reference backend, reference dtype): CuPy against NumPy, NumPy float32 against float64."""
    name, dtype = request.param
    reference = ("numpy", dtype) if name == "cupy" else ("numpy", "float64")
    return require(name), dtype, require(reference[0]), reference[1]


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    if not (MNIST_DIR / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"MNIST files not found in {MNIST_DIR} (set GPUNET_MNIST_DIR)")
    return MNIST_DIR


def rel_diff(a: np.ndarray, b: np.ndarray) -> float:
    """Max-norm relative difference |a - b| / |b|, robust to entries near zero."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def assert_close(got: object, want: object, tol: float, where: str = "") -> None:
    """``got`` within ``tol`` (rel_diff) of ``want``, of the same shape; dicts key by key, naming the key."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and set(got) == set(want), where
        for k in want:
            assert_close(got[k], want[k], tol, f"{where}/{k}")
        return
    assert np.shape(got) == np.shape(want), where
    d = rel_diff(got, want)
    assert d <= tol, f"{where}: relative difference {d:.2e} > {tol:.0e}"


def load_script(name: str) -> ModuleType:
    """``scripts/<name>.py`` imported as the module ``name`` (registered in sys.modules, where dataclasses
    look their module up). scripts/ goes on sys.path, as it is for a script run as a program: the
    profiles import their shared scripts/profiling.py."""
    if str(SCRIPTS) not in sys.path:
        sys.path.append(str(SCRIPTS))
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


class Terminal(io.StringIO):
    """A stream that says it is a terminal: progress bars draw on it."""

    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _environment_as_found():
    """Each test leaves os.environ as it found it. Dask's nanny writes OMP_NUM_THREADS, OPENBLAS_NUM_THREADS and
    MKL_NUM_THREADS = 1 into the environment of the process that starts a cluster; left there, every later
    subprocess of the session ran its BLAS on one thread, and a float32 product of one thread rounds apart
    from one of two (test_reliability compares a killed subprocess's records with an in-process run's)."""
    saved = dict(os.environ)
    yield
    if os.environ != saved:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture
def refused_url() -> Iterator[str]:
    """An http:// URL on 127.0.0.1 that refuses connections: its port stays bound, never listening, for the
    whole test, so no other process can start listening there meanwhile (as it could on a fixed port, or on
    one bound and closed again)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{s.getsockname()[1]}/"


# --- Hypothesis: the same examples on every run, and no deadline ------------------------------------------
# A deadline fails an example that a loaded machine merely ran slowly, and examples drawn anew each run make
# a bug show on some runs only. The default profile draws each test's examples from its name, the same on
# every run, and keeps no example database (no .hypothesis folder in the checkout). GPUNET_HYPOTHESIS=explore
# draws new examples each run, to hunt for bugs by hand.
settings.register_profile("gpunet", derandomize=True, deadline=None, database=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("explore", deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("GPUNET_HYPOTHESIS", "gpunet"))


# --- The temporary folder: the session's own, left empty --------------------------------------------------
# Every temporary file or folder the tests, gpunet and their subprocesses make (tempfile, $TMPDIR) goes into a
# folder of this session's own, so what is left there at the end is this session's, whatever else runs on the
# machine (other sessions, pytest-xdist's workers). pytest's tmp_path stays in the system's temporary folder.
_SAVED_TEMP = pytest.StashKey[tuple]()
_OWN_TEMP = pytest.StashKey[Path]()


def pytest_configure(config: pytest.Config) -> None:
    root = tempfile.gettempdir()
    config.stash[_SAVED_TEMP] = (tempfile.tempdir, {k: os.environ.get(k) for k in ("TMPDIR", "PYTEST_DEBUG_TEMPROOT")})
    os.environ.setdefault("PYTEST_DEBUG_TEMPROOT", root)  # pytest's documented override: tmp_path as before
    own = tempfile.mkdtemp(prefix="pytest-gpunet-tmp-", dir=root)
    tempfile.tempdir = os.environ["TMPDIR"] = own
    config.stash[_OWN_TEMP] = Path(own)


def pytest_unconfigure(config: pytest.Config) -> None:
    if _SAVED_TEMP not in config.stash:
        return
    saved_tempdir, saved_env = config.stash[_SAVED_TEMP]
    tempfile.tempdir = saved_tempdir
    for key, value in saved_env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    shutil.rmtree(config.stash[_OWN_TEMP], ignore_errors=True)


def leftovers(folder: Path) -> list[str]:
    """What gpunet's and its tests' temporary files and folders (named gpunet-*) left in ``folder``."""
    return sorted(p.name for p in folder.glob("gpunet-*"))


@pytest.fixture(scope="session", autouse=True)
def _temporary_folder_left_empty(request: pytest.FixtureRequest):
    """At the session's end (reported at the last test's teardown), nothing named gpunet-* is left in the
    temporary folder: a test that makes one removes it (tmp_path, tmp_path_factory, TemporaryDirectory)."""
    yield
    own = request.config.stash[_OWN_TEMP]
    left = leftovers(own)
    assert not left, f"the tests left these in the temporary folder {own}: {', '.join(left)}"


# --- Slow tests: CI runs them, the default run leaves them out ---------------------------------------------
# pyproject.toml's addopts holds -m "not slow"; a -m on the command line replaces it, so CI runs everything with
# `python -m pytest -m "slow or not slow"`, and `pytest -m gpu` (the GPU check) runs every gpu test, slow or not.
# A test named on the command line by its id (path::name, with or without [parameters]) runs even if slow.
#
# Each entry of SLOW: a node id prefix; which of the tests it names are slow (ALL of them; those whose parameters'
# id matches a pattern; all but every n-th case; or all but a covering subset of a parametrized family, in which
# every value of every parameter still appears, so the default run keeps one case per activation, loss,
# optimiser, dtype and edge size); and why. Seconds: on two idle cores, from `pytest --durations=0` run beside
# other work on a 2-core machine and divided by that load's slow-down (3.5, from a file timed both ways).
ALL = None


class matching:  # noqa: N801
    """The cases whose parameter id (the part in brackets) matches ``pattern`` are slow."""

    def __init__(self, pattern: str) -> None:
        self.pattern = re.compile(pattern)

    def keep(self, items: list[pytest.Item]) -> set[str]:
        return {item.nodeid for item in items if not self.pattern.search(item.nodeid.partition("[")[2])}


class every:  # noqa: N801
    """All but every ``n``-th case (the first, the n+1-th, ...) are slow."""

    def __init__(self, n: int) -> None:
        self.n = n

    def keep(self, items: list[pytest.Item]) -> set[str]:
        return {item.nodeid for item in items[:: self.n]}


class cover:  # noqa: N801  (reads as a rule in the table)
    """Keep the fewest parametrizations (greedily) that show every parameter value at least once; ``together``
    names parameters whose combinations count as one value (an output with its loss)."""

    def __init__(self, *together: str) -> None:
        self.together = together

    def features(self, item: pytest.Item) -> set[tuple]:
        params = getattr(getattr(item, "callspec", None), "params", {})
        found = {(name, repr(value)) for name, value in params.items()}
        if self.together and all(name in params for name in self.together):
            found.add((self.together, tuple(repr(params[name]) for name in self.together)))
        return found

    def keep(self, items: list[pytest.Item]) -> set[str]:
        features = {item.nodeid: self.features(item) for item in items}
        missing, kept = set().union(*features.values()), set()
        while missing:  # the item showing the most values not yet shown; the first of equals, so runs agree
            best = max(items, key=lambda item: len(features[item.nodeid] & missing))
            kept.add(best.nodeid)
            missing -= features[best.nodeid]
        return kept


SLOW: list[tuple[str, cover | matching | every | None, str]] = [
    # Compiling the CUDA sources: fused.cu and optim.cu stay, with NVRTC and nvcc, for both architectures (7 s).
    ("tests/test_cuda_compile.py::test_ptxas_report", ALL, "ptxas on every instantiation, both architectures: 70 s"),
    ("tests/test_cuda_compile.py::test_nvrtc_compiles", matching(r"gemm|per_sample"),
     "the graph and per-sample sources, the largest: 34 s"),
    ("tests/test_cuda_compile.py::test_nvcc_compiles", matching(r"gemm|per_sample"), "the same with nvcc: 17 s"),
    ("tests/test_kernel_ptx.py", ALL, "the PTX of every instantiation through NVRTC: 19 s"),
    # Whole runs of the program: processes started, killed and resumed; Dask clusters; the GPU check's stages.
    ("tests/test_reliability.py::test_sigkill_at_random_moments", ALL, "20-odd training processes killed: 45 s"),
    ("tests/test_reliability.py::test_resume_into_another_folder_after_kills", ALL, "three runs, two killed: 19 s"),
    ("tests/test_reliability.py::test_concurrent_runs_into_one_folder", ALL, "four processes, two runs: 15 s"),
    ("tests/test_reliability.py::test_divergence_keeps_the_last_good_checkpoint", ALL, "a run, damaged, resumed: "
     "3 s; test_divergence_stops_with_the_epoch_and_a_remedy keeps divergence from the command line"),
    ("tests/test_reliability.py::test_bad_arrays_from_the_command_line", every(3), "a process start a case: the "
     "readers' and settings' messages are also held in-process (test_hostile_input, test_datasets, test_config)"),
    ("tests/test_reliability.py::test_bad_files", every(3), "the same: 9 s for all 13"),
    ("tests/test_reliability.py::test_bad_configuration", every(3), "the same: 12 s for all 14"),
    ("tests/test_cli.py::test_bad_options_fail_in_one_line", every(3), "the same: 13 s for all 29"),
    ("tests/test_dask.py::test_readme_sweep_commands", ALL, "a cluster and four sweeps through the CLI: 36 s"),
    ("tests/test_dask.py::test_a_worker_killed_mid_sweep", ALL, "a scheduler and workers of its own: 18 s"),
    ("tests/test_dask.py::test_sweep_bench", ALL, "the sweep benchmark, serial and on Dask: 13 s"),
    ("tests/test_dask.py::test_a_run_that_kills_every_worker", ALL, "a cluster of its own, its workers killed: 10 s"),
    ("tests/test_dask.py::test_readme_dask_example", ALL, "the README's example, twice, on a local cluster: 10 s"),
    ("tests/test_dask.py::test_sweep_against_a_scheduler_address", ALL, "the module's scheduler and workers: 8 s; "
     "test_local_cluster_sweep_equals_the_serial_sweep keeps a Dask sweep in the default run"),
    ("tests/test_dask.py::test_a_client_killed_mid_sweep", ALL, "the same cluster, a client killed: 7 s"),
    ("tests/test_gpu_check.py::test_the_gpu_stages_run_here", ALL, "every stage of the GPU check, pytest -m gpu "
     "over the whole suite and ptxas among them: 62 s"),
    ("tests/test_gpu_check.py::test_out_defaults_to_the_out_variable", ALL, "two more dry runs: 7 s"),
    ("tests/test_bench.py::test_quick_benchmark_json_shape", ALL, "gpunet bench --quick, every contender: 25 s"),
    ("tests/test_sweep.py::test_sweep_script_writes_a_table", ALL, "scripts/sweep.py's grid, twice: 5 s"),
    ("tests/test_workflow.py::test_plot_without_matplotlib", ALL, "a process of its own: 2 s; "
     "test_plot_writes_three_pngs keeps the plots"),
    # That the GPU tests' cases are well conditioned in float32: NumPy trainings only a change of those cases needs.
    ("tests/test_fused.py::test_the_gpu_pairs_are_well_conditioned", ALL, "every pair and optimiser, twice: 8 s"),
    ("tests/test_graph.py::test_the_gpu_cases_are_well_conditioned", ALL, "every case trained twice: 3 s"),
    # Parametrized families: a covering subset stays. (Families under 3 s in all, e.g. test_gradients' 120
    # finite-difference checks, run whole.)
    ("tests/test_examples.py::test_python_example", matching(r"^docs/"), "each example twice in a fresh "
     "interpreter: 6-15 s each; the README's stay, the docs pages' run in CI"),
    ("tests/test_sklearn.py::test_scikit_learn_estimator_checks", matching(r"GPUNetRegressor|readonly_memmap"),
     "scikit-learn's checks of the regressors (float32 and float64) and on read-only memory maps: 16 s; the "
     "classifier's stay, and the regressor's own tests"),
    ("tests/test_fused.py::test_fused_step_equals_plain_over_100_steps", cover(), "50 cases of 100 steps: 4 s"),
    ("tests/test_per_sample_kernel.py::test_per_sample_epochs_transcribed_are", cover("output", "loss"),
     "112 cases: 4 s"),
    ("tests/test_graph.py::test_register_tiled_product_indexes", cover(), "8 cases: 3 s"),
]


def _named_on_command_line(config: pytest.Config) -> list[str]:
    """Node ids (relative to the root) named on the command line with ``::``."""
    named = []
    for arg in config.args:
        path, sep, rest = arg.partition("::")
        if sep:
            try:
                named.append(f"{Path(path).resolve().relative_to(config.rootpath).as_posix()}::{rest}")
            except ValueError:  # outside the root: pytest will say so
                pass
    return named


_SLOW_COUNT = pytest.StashKey[int]()


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    named = _named_on_command_line(config)
    config.stash[_SLOW_COUNT] = 0
    files = {item.nodeid.partition("::")[0] for item in items}
    for prefix, rule, _why in SLOW:
        families: dict[str, list[pytest.Item]] = {}  # one per test function: its parametrizations
        for item in items:
            if item.nodeid.startswith(prefix):
                families.setdefault(item.nodeid.partition("[")[0], []).append(item)
        if not families and prefix.partition("::")[0] in files:  # a renamed test would run in the default run
            raise pytest.UsageError(f"tests/conftest.py: SLOW names {prefix!r}, which matches no test of its file")
        for family in families.values():
            kept = rule.keep(family) if rule is not None else set()
            for item in family:
                asked = any(item.nodeid == n or item.nodeid.startswith((n + "[", n + "::")) for n in named)
                if item.nodeid not in kept and not asked:
                    item.add_marker(pytest.mark.slow)
                    config.stash[_SLOW_COUNT] += 1


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    """Under the default -m "not slow", say how many slow tests were left out and how to run them."""
    left_out = config.stash.get(_SLOW_COUNT, 0)
    if left_out and config.getoption("markexpr") == "not slow":
        terminalreporter.write_line(f"{left_out} slow tests left out (tests/conftest.py's SLOW); everything: "
                                    "python -m pytest -m 'slow or not slow'")
