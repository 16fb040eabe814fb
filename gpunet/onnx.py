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
from .files import atomic_write, new_file
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


def export(
    net: Network, path: str | os.PathLike[str], *, preprocessing: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``net`` as an ONNX model to ``path`` (atomically) and return the path.

    ``preprocessing`` (JSON-ready, e.g. a checkpoint's ``meta["preprocessing"]``)
    goes into the model's metadata under ``gpunet.preprocessing``. An existing
    file is kept, and FileExistsError raised, unless ``overwrite`` is true.
    Parameters are written in float32 (a float64 network is rounded).
    """
    model = to_model(net, preprocessing)
    path = new_file(path, overwrite, "choose another name or delete it first")
    atomic_write(path, lambda f: f.write(model.SerializeToString()))
    return path


def metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The gpunet metadata of an exported file: {"preprocessing", "network", "version"}, JSON decoded."""
    onnx = _onnx()
    props = {p.key: p.value for p in onnx.load(os.fspath(path)).metadata_props}
    return {
        "preprocessing": json.loads(props["gpunet.preprocessing"]),
        "network": json.loads(props["gpunet.network"]),
        "version": props["gpunet.version"],
    }
