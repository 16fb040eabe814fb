"""ONNX export: a network as a graph of Gemm and activation nodes, for onnxruntime and other ONNX runtimes.

Layer ``i`` becomes ``Z_i = Gemm(A_{i-1}, W_i, b_i)`` (``A @ W + b``, the same
batch-first convention as :mod:`gpunet.network`) followed by its activation
node; the identity output adds none. The graph reads ``X`` (float32,
``(N, n_in)``, any N) and writes ``Y`` (float32, ``(N, n_out)``). The model's
metadata records what ``X`` must look like (the input preprocessing), the
network's configuration and the gpunet version. Needs the ``onnx`` package:
``pip install "gpunet[onnx]"``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .activations import ACTIVATIONS
from .files import atomic_write, field, output_path
from .network import Network

OPSET = 17  # Gemm, Softmax(axis), LeakyRelu: all stable since long before 17; onnxruntime >= 1.11 runs it
IR_VERSION = 8  # the IR version that goes with opset 17, so older runtimes load the file too
INPUT, OUTPUT = "X", "Y"
NO_PREPROCESSING = "none recorded: X is fed as it was to Network.forward"



def _onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise ImportError('ONNX export needs the onnx package: pip install "gpunet[onnx]"') from None
    return onnx


def to_model(net: Network, preprocessing: dict[str, Any] | None = None) -> Any:
    """The ``onnx.ModelProto`` of ``net`` (float32), checked by ``onnx.checker``."""
    onnx = _onnx()
    from onnx import TensorProto, helper, numpy_helper

    if not isinstance(net, Network):
        raise TypeError(f"net must be a gpunet.Network; got {type(net).__name__}")
    if preprocessing is not None and not isinstance(preprocessing, dict):
        raise TypeError(f"preprocessing must be a dict (JSON-ready) or None; got {type(preprocessing).__name__}")
    try:
        preprocessing_json = json.dumps(preprocessing) if preprocessing is not None else json.dumps(NO_PREPROCESSING)
    except TypeError as exc:
        raise TypeError(f"preprocessing must be JSON-ready: {exc}") from None
    params = net.get_params()  # host copies
    check_float32(params)
    initializers, nodes, A = [], [], INPUT
    for i in range(1, net.n_layers + 1):
        last = i == net.n_layers
        name = net.output if last else net.activation
        Z = OUTPUT if last and name == "identity" else f"Z{i}"
        for key in (f"W{i}", f"b{i}"):  # W_i: (n_{i-1}, n_i), b_i: (n_i,)
            initializers.append(numpy_helper.from_array(params[key].astype(np.float32), key))
        nodes.append(helper.make_node("Gemm", [A, f"W{i}", f"b{i}"], [Z], name=f"layer{i}"))  # A @ W + b
        ops = ACTIVATIONS[name].onnx  # the table's operators from Z to A; none for the identity
        for k, (op, attrs) in enumerate(ops):
            result = (OUTPUT if last else f"A{i}") if k == len(ops) - 1 else f"{name}{i}_{k}"
            inputs = [Z, A] if op == "Mul" else [Z if k == 0 else A]  # "Mul": Z times the result so far
            nodes.append(helper.make_node(op, inputs, [result], name=f"{name}{i}" + (f"_{k}" if k else ""), **attrs))
            A = result
    graph = helper.make_graph(
        nodes, "gpunet",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["N", net.sizes[0]])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["N", net.sizes[-1]])],
        initializers,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION,
        producer_name="gpunet", producer_version=__version__,
        doc_string=f"gpunet network {net.sizes}: {net.activation} hidden layers, {net.output} output",
    )
    helper.set_model_props(model, {
        "gpunet.preprocessing": preprocessing_json,
        "gpunet.network": json.dumps(net.config()),
        "gpunet.version": __version__,
    })
    onnx.checker.check_model(model, full_check=True)
    return model


def check_float32(params: dict[str, np.ndarray]) -> None:
    """ValueError naming the first parameter that is NaN or infinite, or too large for float32 (where rounding
    it would make an infinity), with its largest magnitude: the file would compute nonsense."""
    limit = float(np.finfo(np.float32).max)
    for key, value in params.items():
        if not np.isfinite(value).all():
            raise ValueError(f"parameter {key} holds NaN or infinity; a diverged network cannot be exported")
        largest = float(np.abs(value).max()) if value.size else 0.0
        if largest > limit:
            raise ValueError(f"parameter {key} has a value of magnitude {largest:g}, beyond float32's largest "
                             f"({limit:g}); expected parameters that fit the ONNX file's float32")


def export(
    net: Network, path: str | os.PathLike[str], *, preprocessing: dict[str, Any] | None = None,
    overwrite: bool = False, inputs: tuple[str | os.PathLike[str], ...] | list[Any] = (),
) -> Path:
    """Write ``net`` as an ONNX model to ``path`` (atomically) and return the path.

    ``preprocessing`` (JSON-ready, e.g. a checkpoint's ``meta["preprocessing"]``)
    goes into the model's metadata under ``gpunet.preprocessing``. Whether ``path``
    may be written is gpunet.files.output_path's decision: an existing file is kept,
    and FileExistsError raised, unless ``overwrite`` is true; ``inputs`` (the
    checkpoint the network came from) are never written over, even with ``overwrite``.
    Parameters are written in float32 (a float64 network is rounded); one that does
    not fit float32, or is NaN or infinite, is refused by name (ValueError).
    """
    path = output_path(path, overwrite=overwrite, inputs=inputs,
                       hint="pass overwrite=True (--force on the command line) to replace it")
    model = to_model(net, preprocessing)
    atomic_write(path, lambda f: f.write(model.SerializeToString()))
    return path


def export_checkpoint(checkpoint: str | os.PathLike[str], path: str | os.PathLike[str], *,
                      overwrite: bool = False) -> Path:
    """``gpunet export``: the network of ``checkpoint`` (a file or a run folder) written to ``path`` with the
    checkpoint's preprocessing; the checkpoint itself is never written over."""
    from .checkpoint import load_checkpoint, meta_field
    from .run import model_path

    source = model_path(checkpoint)
    output_path(path, overwrite=overwrite, inputs=[source])  # refused before the checkpoint is read
    net, _, meta = load_checkpoint(source, "numpy")
    preprocessing = meta_field(source, meta, "preprocessing", (dict, type(None)), default=None)
    return export(net, path, preprocessing=preprocessing, overwrite=overwrite, inputs=[source])


class OnnxFileError(ValueError):
    """An ONNX file that is unreadable or lacks gpunet's metadata; the message names the file and the field."""


def metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The gpunet metadata of an exported file: {"preprocessing", "network", "version"}, JSON decoded.

    A file gpunet did not write (or whose metadata was edited) raises OnnxFileError
    naming the file and the missing or malformed field.
    """
    onnx = _onnx()
    from .files import require_file

    path = require_file(path, OnnxFileError)
    try:
        model = onnx.load(os.fspath(path))
    except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError and others: to the caller, one thing
        raise OnnxFileError(f"{path}: not a readable ONNX file ({type(exc).__name__}: {exc})") from None
    props = {p.key: p.value for p in model.metadata_props}
    where = str(path)
    found: dict[str, Any] = {}
    for key, kind in (("gpunet.preprocessing", (dict, str)), ("gpunet.network", dict)):
        text = field(props, key, str, where, error=OnnxFileError, owner="the metadata")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            raise OnnxFileError(f"{where}: the metadata's {key} must be JSON; got {text[:80]!r}") from None
        found[key] = field({key: value}, key, kind, where, error=OnnxFileError, owner="the metadata")
    return {
        "preprocessing": found["gpunet.preprocessing"],
        "network": found["gpunet.network"],
        "version": field(props, "gpunet.version", str, where, error=OnnxFileError, owner="the metadata"),
    }
