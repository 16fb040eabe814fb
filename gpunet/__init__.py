"""gpunet: a fully connected neural network written once, run on NumPy or CuPy."""

from importlib import metadata as _metadata

from .augment import Augment
from .backend import Backend, BackendUnavailableError, get_backend
from .model_file import load, save
from .network import Network
from . import optim
from .optim import *  # noqa: F403  every optimiser optim.__all__ names
from .training import evaluate, train

try:  # the one version: pyproject.toml's, as the installed package's metadata records it
    __version__ = _metadata.version("gpunet")
except _metadata.PackageNotFoundError:  # a source tree on sys.path that was never installed
    __version__ = "0+unknown"  # no version to read: the source tree's pyproject.toml is not the installed one
__all__ = [
    "Augment", "Backend", "BackendUnavailableError", "Network", "evaluate", "get_backend", "load", "save", "train", "__version__",
    *optim.__all__,
]
