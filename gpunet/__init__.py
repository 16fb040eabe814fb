"""gpunet: a fully connected neural network written once, run on NumPy or CuPy."""

from .backend import Backend, BackendUnavailableError, get_backend
from .model_file import load, save
from .network import Network
from .optim import SGD, Adam, Momentum, Optimizer
from .training import evaluate, train

__version__ = "0.1.0"
__all__ = [
    "Adam", "Backend", "BackendUnavailableError", "Momentum", "Network", "Optimizer", "SGD",
    "evaluate", "get_backend", "load", "save", "train", "__version__",
]
