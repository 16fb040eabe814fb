"""gpunet: a fully connected neural network written once, run on NumPy or CuPy."""

from .backend import Backend, BackendUnavailableError, get_backend
from .model_file import load, save
from .network import Network
from . import optim
from .optim import *  # noqa: F403  every optimiser optim.__all__ names
from .training import evaluate, train

__version__ = "0.1.0"
__all__ = [
    "Backend", "BackendUnavailableError", "Network", "evaluate", "get_backend", "load", "save", "train", "__version__",
    *optim.__all__,
]
