"""The ``gpunet`` command line: argparse fills a frozen config, the library computes, this prints."""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import threading
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from . import __version__
from .backend import BACKEND_NAMES, BackendUnavailableError, get_backend
from .checkpoint import load_checkpoint, save_checkpoint
from .checks import check_labels
from .datasets import DATASETS, PIXELS, Split
from .download import DownloadError
from .files import atomic_write, require_file, write_json
from .activations import HIDDEN_ACTIVATIONS, LOSS_NAMES, OUTPUT_ACTIVATIONS
from .initializers import INITS
from .network import DTYPES, target_levels
from .optim import OPTIMIZERS
from .runs import DEFAULT_EPOCHS, TrainConfig, build, load_data
from .training import DeviceMemoryError, DivergenceError, TrainingInterrupted, train

EXAMPLES = """examples:
  gpunet train                                  # the default network on the 8x8 digits
  gpunet train --hidden 256,128 --epochs 50     # two hidden layers
  gpunet train --dataset mnist --epochs 5       # MNIST, downloaded and verified on first use
  gpunet train --dataset mnist --data-dir DIR   # any folder with the four MNIST-format IDX files
  gpunet train --dataset csv --train-csv mnist_train.csv --test-csv mnist_test.csv
  gpunet train --activation sigmoid --output sigmoid --loss squared --init article \\
               --optimizer sgd --lr 0.1 --batch-size 1   # the original article's network
  GPUNET_BACKEND=numpy gpunet train --quiet     # force the CPU, print only the result
  gpunet evaluate runs/RUN/model.npz --json     # accuracy, precision, recall, confusion matrix
  gpunet predict runs/RUN/model.npz my7.png     # your own handwriting, any size or colour
  gpunet plot runs/RUN                          # curves, confusion matrix and weights as PNG
  gpunet export runs/RUN/model.npz model.onnx   # for onnxruntime (pip install "gpunet[onnx]")
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit status 2, no usage dump
        self.exit(2, f"{self.prog}: error: {message}\n")


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected sizes like 100 or 256,128; got {text!r}") from None
    if any(s < 1 for s in sizes):
        raise argparse.ArgumentTypeError(f"every hidden size must be >= 1; got {text!r}")
    return sizes


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="gpunet",
        description="A fully connected neural network on NumPy or CuPy.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"gpunet {__version__}")
    parser.add_argument("--debug", action="store_true", help="on an error, show the Python traceback")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    d = TrainConfig()
    p = commands.add_parser(
        "train",
        help="train a network on handwritten digits",
        description="Train a network on handwritten digits (by default scikit-learn's 8x8 digits: "
        "1,797 images, a fixed 80/20 split) and print the loss and test accuracy of every epoch.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--dataset", choices=DATASETS, default=d.dataset,
                   help="digits: scikit-learn's 8x8 digits (default, no download); mnist: the four IDX "
                   "files from --data-dir, else downloaded to $GPUNET_DATA or ~/.cache/gpunet; "
                   "csv: --train-csv/--test-csv, a label then the pixels 0-255 per row")
    p.add_argument("--data-dir", metavar="DIR", help="folder holding the four standard MNIST IDX files")
    p.add_argument("--train-csv", metavar="FILE", help="training images for --dataset csv")
    p.add_argument("--test-csv", metavar="FILE", help="test images for --dataset csv")
    p.add_argument("--hidden", type=_sizes, default=d.hidden, metavar="SIZES",
                   help="hidden layer sizes, comma-separated (default: 100)")
    p.add_argument("--activation", choices=HIDDEN_ACTIVATIONS, default=d.activation,
                   help=f"hidden activation (default: {d.activation})")
    p.add_argument("--output", choices=OUTPUT_ACTIVATIONS, default=d.output,
                   help=f"output activation (default: {d.output})")
    p.add_argument("--loss", choices=LOSS_NAMES, default=d.loss, help=f"loss (default: {d.loss})")
    p.add_argument("--init", choices=tuple(INITS), default=d.init, help=f"initialisation (default: {d.init})")
    p.add_argument("--optimizer", choices=tuple(OPTIMIZERS), default=d.optimizer,
                   help=f"optimiser (default: {d.optimizer})")
    p.add_argument("--lr", type=float, default=d.lr, help=f"learning rate (default: {d.lr})")
    p.add_argument("--lr-decay", type=float, default=d.lr_decay, metavar="FACTOR",
                   help="multiply the learning rate by this after every epoch, in (0, 1] (default: 1, constant)")
    p.add_argument("--epochs", type=int, default=None,
                   help=f"passes over the data in all (default: {DEFAULT_EPOCHS}, or the checkpoint's)")
    p.add_argument("--batch-size", type=int, default=d.batch_size,
                   help=f"samples per step; 1 is the original per-sample SGD (default: {d.batch_size})")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay,
                   help=f"L2 weight decay on the weights (default: {d.weight_decay})")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the weights and the data order (default: 0)")
    p.add_argument("--dtype", choices=DTYPES, default=d.dtype, help=f"floating point type (default: {d.dtype})")
    p.add_argument("--backend", choices=BACKEND_NAMES, default=d.backend,
                   help="array backend (default: $GPUNET_BACKEND, else auto: CuPy when a GPU is usable)")
    p.add_argument("--pixels", choices=tuple(PIXELS), default=d.pixels,
                   help="original: pixels scaled to [0.01, 1.0] as the article (default); unit: to [0, 1]")
    p.add_argument("--validation", type=float, default=d.validation, metavar="FRACTION",
                   help="hold out this fraction of the training images (seeded) and report validation "
                   "loss and accuracy each epoch (default: 0, none)")
    p.add_argument("--early-stopping", type=int, metavar="N",
                   help="stop when the validation loss (the test loss without --validation) has not improved "
                   "for N epochs (model.npz keeps the last epoch)")
    p.add_argument("--out", metavar="DIR", help="where config.json, metrics.jsonl and model.npz go "
                   "(default: runs/<timestamp>, or the checkpoint's folder with --resume)")
    p.add_argument("--resume", metavar="CHECKPOINT", help="continue from a model.npz, optimiser state included; "
                   "every setting but --epochs, --out, --backend and --quiet comes from the checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bar, print only the final result line")
    p.set_defaults(run=lambda a: run_train(TrainConfig(**_options(a))))

    p = commands.add_parser(
        "evaluate", help="accuracy, per-class precision and recall, and the confusion matrix of a model",
        description="Evaluate a model.npz on a dataset's test images (by default the dataset it was trained on, "
        "preprocessed as it was).",
    )
    p.add_argument("model", metavar="MODEL.npz")
    _data_options(p)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    _backend_option(p)
    p.set_defaults(run=run_evaluate)

    p = commands.add_parser(
        "predict", help="read handwritten digits from image files",
        description="Predict the digit in each image (PNG, JPEG, ...; any size, colour or grey, dark on light or "
        "light on dark). Each is made to look like an MNIST image first: grey, the digit's bounding box fitted "
        "into 20x20, centred by its centre of mass in 28x28 (8x8 for networks trained on the 8x8 digits).",
    )
    p.add_argument("model", metavar="MODEL.npz")
    p.add_argument("images", metavar="IMAGE", nargs="+")
    p.add_argument("--json", action="store_true", help="print one JSON object per image, one per line")
    _backend_option(p)
    p.set_defaults(run=run_predict)

    p = commands.add_parser(
        "plot", help="draw a run's curves, confusion matrix and first-layer weights as PNG files",
        description="Write curves.png (loss and accuracy per epoch), confusion.png (on the test images) and "
        "weights.png (the first layer's weights as images) for a run folder. Needs matplotlib: "
        'pip install "gpunet[plot]".',
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a folder written by gpunet train")
    p.add_argument("--out", metavar="DIR", help="where the PNG files go (default: RUN_DIR)")
    _data_options(p)
    _backend_option(p)
    p.set_defaults(run=run_plot)

    p = commands.add_parser(  # gpunet export: self-contained, with run_export below
        "export", help="write a model as ONNX (Gemm and activation nodes), for onnxruntime",
        description="Write MODEL.npz as an ONNX file: input X (float32, N x inputs), output Y; the model's metadata "
        'records the input preprocessing. Needs the onnx package: pip install "gpunet[onnx]".',
    )
    p.add_argument("model", metavar="MODEL.npz")
    p.add_argument("onnx_path", metavar="OUT.onnx", help="the file to write (an existing one is kept)")
    p.set_defaults(run=run_export)

    p = commands.add_parser(
        "bench", help="time gpunet against PyTorch, scikit-learn and the article's plain code",
        description="Train the same network (sigmoid, squared loss, SGD, float32) with the same data, initial "
        "parameters and steps on every installed contender; print samples/s (median of several runs), "
        "ratios, GFLOP/s and the share of a matrix-product ceiling measured in the same run; write JSON.",
    )
    p.add_argument("--quick", action="store_true", help="small sizes: seconds, for a smoke test")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per contender, after a warm-up (default: 5)")
    p.add_argument("--only", metavar="NAMES", help="comma-separated contenders to run (default: all)")
    p.add_argument("--json", metavar="FILE", dest="json_out",
                   help="where the results go (default: bench-<timestamp>.json)")
    p.set_defaults(run=run_bench)
    return parser


def _backend_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", choices=BACKEND_NAMES, help="array backend (default: $GPUNET_BACKEND, else auto)")


def _data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", choices=DATASETS, help="the dataset (default: the one the model was trained on)")
    p.add_argument("--data-dir", metavar="DIR", help="folder holding the four MNIST IDX files (default: the model's)")
    p.add_argument("--test-csv", metavar="FILE", help="test images for --dataset csv (default: the model's)")


def _options(args: argparse.Namespace) -> dict[str, Any]:
    return {k: v for k, v in vars(args).items() if k not in ("command", "run", "debug")}


def run_train(config: TrainConfig) -> int:
    backend = get_backend(config.backend)
    if config.resume is not None:
        net, optimizer, meta = load_checkpoint(config.resume, backend)
        saved = _saved_config(meta, config.resume)
        # Everything comes from the checkpoint but the run's length, where it goes and how it talks.
        config = replace(saved, epochs=config.epochs or saved.epochs, out=config.out or str(Path(config.resume).parent),
                         resume=config.resume, backend=config.backend, quiet=config.quiet)
        start_epoch, last_record = meta["epoch"] + 1, meta["record"]
        position = meta.get("position") or {"row": 0, "loss_sum": 0.0}  # set by an interrupted run
    epochs = config.epochs or DEFAULT_EPOCHS
    data = load_data(config, _say_download(config.quiet))
    if config.resume is None:
        net, optimizer = build(config, data.X_train.shape[1], backend)
        start_epoch, last_record, position = 1, None, {"row": 0, "loss_sum": 0.0}
    else:
        _check_width(net, data.X_train, config.resume, config.dataset)
    if data.X_test.shape[1] != data.X_train.shape[1]:  # bad data must fail before anything is written
        raise ValueError(f"{config.dataset} test images have {data.X_test.shape[1]} pixels; "
                         f"the training images have {data.X_train.shape[1]}")
    for part, labels in (("train", data.y_train), ("validation", data.y_val), ("test", data.y_test)):
        if labels is None:
            continue
        try:  # bad data must fail before anything is written
            check_labels(labels, net.sizes[-1])
        except ValueError as exc:
            raise ValueError(f"{config.dataset} {part} data: {exc}") from None
    out = Path(config.out) if config.out else _new_run_dir()
    _prepare_out(out, config, resuming=config.resume is not None)
    if not config.quiet:
        why = f" ({backend.reason})" if backend.reason else ""
        print(f"backend: {backend.name} on {backend.device}{why}")
        print(f"network: {net}")
        val = f" / {len(data.y_val)} validation" if data.y_val is not None else ""
        print(f"data: {config.dataset}, {len(data.y_train)} train{val} / {len(data.y_test)} test images")
        where = f"epoch {start_epoch - 1}" + (f" and {position['row']} rows of epoch {start_epoch}"
                                               if position["row"] else "")
        print(f"output: {out}" + (f" (resuming after {where})" if config.resume else ""))
    write_json(out / "config.json",
                {**asdict(config), "network": net.config(), "preprocessing": _preprocessing(config)})
    _rewrite_metrics(out / "metrics.jsonl", last_record)
    if start_epoch > epochs:
        print(f"nothing to do: the checkpoint already holds {start_epoch - 1} epochs (ask for more with --epochs)")
        return 0

    bar = _progress(config.quiet)

    calls = iter(range(1 << 62))

    def on_batch(rows: int, batch_loss: Any) -> None:
        new = rows - bar.n
        bar.update(new)
        if next(calls) % 50 == 0:  # read the loss every 50th call only
            bar.set_postfix(loss=f"{float(batch_loss) / new:.4f}")  # CPU-GPU sync point

    best = {"loss": math.inf, "epoch": start_epoch - 1}
    finished = {"record": last_record}

    def checkpoint(record: dict[str, Any] | None, position: dict[str, Any] | None = None) -> None:
        save_checkpoint(out / "model.npz", net, optimizer,
                        {"epoch": record["epoch"] if record else 0, "record": record, "position": position,
                         "train_config": asdict(config), "preprocessing": _preprocessing(config)})

    def end_epoch(record: dict[str, Any]) -> bool:
        record["backend"] = backend.name
        checkpoint(record)
        finished["record"] = record
        with open(out / "metrics.jsonl", "a") as f:  # one whole line per write
            f.write(json.dumps(record) + "\n")
        bar.reset(total=len(data.y_train))
        if not config.quiet:
            bar.clear()
            print(_epoch_line(record, epochs), flush=True)
        watched = "val_loss" if "val_loss" in record else "test_loss"
        if record[watched] < best["loss"]:
            best.update(loss=record[watched], epoch=record["epoch"])
        stop = config.early_stopping is not None and record["epoch"] - best["epoch"] >= config.early_stopping
        if stop and not config.quiet:
            what = "validation" if watched == "val_loss" else "test"
            print(f"early stopping: no better {what} loss than epoch {best['epoch']}'s "
                  f"for {config.early_stopping} epochs")
        return stop

    bar.reset(total=len(data.y_train))
    bar.update(position["row"])  # a run interrupted mid-epoch goes on from there
    stop = _CtrlC(config.quiet)
    try:
        with stop:
            history = train(
                net, data.X_train, data.y_train, epochs=epochs, batch_size=config.batch_size,
                lr=config.lr, lr_decay=config.lr_decay, optimizer=optimizer, seed=config.seed,
                X_test=data.X_test, y_test=data.y_test, X_val=data.X_val, y_val=data.y_val,
                callback=end_epoch, on_batch=on_batch, should_stop=stop.pressed, start_epoch=start_epoch,
                start_row=position["row"], start_loss=position["loss_sum"],
            )
    except TrainingInterrupted as exc:
        bar.close()
        checkpoint(finished["record"], {"epoch": exc.epoch, "row": exc.rows, "loss_sum": exc.loss_sum})
        print(f"gpunet train: interrupted in epoch {exc.epoch} after {exc.rows} of {len(data.y_train)} rows; "
              f"saved {out / 'model.npz'}; resume with: gpunet train --resume {out / 'model.npz'}",
              file=sys.stderr)
        return 130
    except DivergenceError as exc:
        bar.close()
        kept = (f"{out / 'model.npz'} still holds epoch {finished['record']['epoch']}" if finished["record"]
                else "no checkpoint was written")
        raise DivergenceError(f"{exc}; {kept}", exc.epoch) from None
    bar.close()
    last = history[-1]
    seconds = sum(r["seconds"] for r in history)
    plural = "s" if last["epoch"] > 1 else ""
    print(f"test accuracy {last['test_accuracy']:.2%} after {last['epoch']} epoch{plural} ({seconds:.2f} s training)")
    return 0


class _CtrlC:
    """While active, the first Ctrl-C asks training to stop after the current step; a second stops at once."""

    def __init__(self, quiet: bool) -> None:
        self.quiet, self.count, self.previous = quiet, 0, None

    def pressed(self) -> bool:
        return self.count > 0

    def _handle(self, signum: int, frame: Any) -> None:
        self.count += 1
        if self.count > 1:
            raise KeyboardInterrupt
        if not self.quiet:
            print("\nstopping after this step and saving a checkpoint (Ctrl-C again to stop at once)",
                  file=sys.stderr, flush=True)

    def __enter__(self) -> _CtrlC:
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


def _new_run_dir() -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out, n = Path("runs") / stamp, 1
    while out.exists():
        n += 1
        out = Path("runs") / f"{stamp}-{n}"
    return out


def _progress(quiet: bool) -> Any:
    from tqdm import tqdm

    # disable=None: no bar where stderr is not a terminal (logs, CI), none at all with --quiet
    return tqdm(total=0, unit="samples", unit_scale=True, leave=False,
                disable=True if quiet else None, file=sys.stderr)


def _prepare_out(out: Path, config: TrainConfig, resuming: bool) -> None:
    if not resuming and (out / "model.npz").exists():
        raise ValueError(f"--out {out} already holds a run; pass --resume {out / 'model.npz'} or another --out")
    _prepare_folder(out, "--out")
    for name in ("model.npz", "config.json", "metrics.jsonl"):  # left by a process killed mid-write
        for stale in out.glob(f".{name}.*.tmp"):
            stale.unlink(missing_ok=True)


def _prepare_folder(out: Path, option: str) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"{option} {out}: cannot create the folder ({exc.strerror})") from None
    if not os.access(out, os.W_OK):
        raise ValueError(f"{option} {out}: the folder is not writable")


def _rewrite_metrics(path: Path, last_record: dict[str, Any] | None) -> None:
    """Keep the lines of the epochs the checkpoint holds: a kill between the checkpoint and
    the metrics line, or after the metrics line of an epoch never checkpointed, is mended here."""
    kept = []
    if last_record is not None and path.exists():
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a torn last line
            if record.get("epoch", 0) < last_record["epoch"]:
                kept.append(line)
        kept.append(json.dumps(last_record))
    atomic_write(path, lambda f: f.write("".join(line + "\n" for line in kept).encode()))


def run_bench(args: argparse.Namespace) -> int:
    from .bench import CONTENDERS, format_results, run_benchmark

    if args.repeats < 1:
        raise ValueError(f"--repeats must be >= 1; got {args.repeats}")
    only = args.only.split(",") if args.only else None
    unknown = [n for n in only or [] if n not in CONTENDERS]
    if unknown:
        raise ValueError(f"unknown contender {unknown[0]!r}; expected some of {', '.join(CONTENDERS)}")
    path = Path(args.json_out or f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json")
    _prepare_folder(path.parent, "--json")
    results = run_benchmark(quick=args.quick, repeats=args.repeats, only=only,
                            on_result=lambda entry: print(f"done: {entry['case']}", file=sys.stderr, flush=True))
    print(format_results(results))
    write_json(path, results)
    print(f"wrote {path}")
    return 0


def _say_download(quiet: bool) -> Callable[[str, str], None]:
    def say(name: str, url: str) -> None:
        if not quiet:
            print(f"downloading {name} from {url}", file=sys.stderr, flush=True)

    return say


def _preprocessing(config: TrainConfig) -> dict[str, Any]:
    low, high = target_levels(config.output, config.loss)
    targets = "one-hot" if (low, high) == (0.0, 1.0) else f"{low:g}/{high:g}"
    return {"pixels": config.pixels, "pixel_scaling": PIXELS[config.pixels], "targets": targets}


def _saved_config(meta: dict[str, Any], path: str) -> TrainConfig:
    try:
        return TrainConfig.from_dict(meta["train_config"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: not a checkpoint written by gpunet train ({exc})") from None


def _model_and_data(args: argparse.Namespace) -> tuple[Any, TrainConfig, Split]:
    """The checkpoint's network and the test data it should see, preprocessed as it was trained."""
    backend = get_backend(args.backend)
    net, _, meta = load_checkpoint(args.model, backend)
    saved = _saved_config(meta, args.model)
    dataset = args.dataset or saved.dataset
    overrides = {"dataset": dataset, "validation": 0.0}
    if args.data_dir is not None or dataset != saved.dataset:
        overrides["data_dir"] = args.data_dir
    if args.test_csv is not None or dataset != saved.dataset:
        overrides.update(train_csv=args.test_csv, test_csv=args.test_csv)  # the training rows are not used
    config = replace(saved, **overrides)
    data = load_data(config, _say_download(False))
    _check_width(net, data.X_test, args.model, dataset)
    return net, config, data


def _check_width(net: Any, X: Any, model: str, dataset: str) -> None:
    if X.shape[1] != net.sizes[0]:
        raise ValueError(f"{model}: the network takes {net.sizes[0]} inputs; the {dataset} images have {X.shape[1]}")


def run_evaluate(args: argparse.Namespace) -> int:
    from .metrics import classification_report, format_report

    net, config, data = _model_and_data(args)
    labels = check_labels(data.y_test, net.sizes[-1])
    report = classification_report(labels, net.predict(data.X_test), net.sizes[-1])
    if args.json:
        print(json.dumps({"model": args.model, "dataset": config.dataset, **report}))
    else:
        print(f"{args.model} on the {config.dataset} test images")
        print(format_report(report))
    return 0


def run_predict(args: argparse.Namespace) -> int:
    from .images import image_inputs

    net, _, meta = load_checkpoint(args.model, get_backend(args.backend))
    pixels = meta.get("preprocessing", {}).get("pixels", "original")
    X = image_inputs(args.images, net.sizes[0], pixels)  # every image is checked before anything is printed
    Y = net.backend.to_host(net.forward(X)).astype(np.float64)
    if net.output != "softmax":  # sigmoid outputs are independent scores: normalised to sum to 1 for display
        Y = Y / np.maximum(Y.sum(axis=1, keepdims=True), 1e-300)
    for path, p in zip(args.images, Y):
        digit = int(p.argmax())
        if args.json:
            print(json.dumps({"image": path, "digit": digit, "probabilities": [round(float(v), 6) for v in p]}))
        else:
            others = "  ".join(f"{k}:{v:.2f}" for k, v in enumerate(p))
            print(f"{path}: {digit} ({p[digit]:.1%})   {others}")
    return 0


def run_plot(args: argparse.Namespace) -> int:
    from .metrics import confusion_matrix
    from .plots import plot_confusion, plot_curves, plot_weights

    run_dir = Path(args.run_dir)
    metrics = require_file(run_dir / "metrics.jsonl", ValueError)
    records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    if not records:
        raise ValueError(f"{metrics}: no epochs recorded yet")
    args.model = str(run_dir / "model.npz")
    net, _, data = _model_and_data(args)
    out = Path(args.out) if args.out else run_dir
    _prepare_folder(out, "--out")
    written = [out / "curves.png", out / "confusion.png", out / "weights.png"]
    plot_curves(records, written[0])
    C = confusion_matrix(check_labels(data.y_test, net.sizes[-1]), net.predict(data.X_test), net.sizes[-1])
    plot_confusion(C, written[1])
    plot_weights(net.get_params()["W1"], written[2])
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def run_export(args: argparse.Namespace) -> int:
    from .onnx import export

    net, _, meta = load_checkpoint(args.model, get_backend("numpy"))
    export(net, args.onnx_path, preprocessing=meta.get("preprocessing"))
    print(f"wrote {args.onnx_path}")
    return 0


def _epoch_line(r: dict[str, Any], epochs: int) -> str:
    width = len(str(epochs))
    return (
        f"epoch {r['epoch']:>{width}}/{epochs}  train loss {r['train_loss']:.4f}  "
        + (f"val loss {r['val_loss']:.4f}  val acc {r['val_accuracy']:.2%}  " if "val_loss" in r else "")
        + f"test loss {r['test_loss']:.4f}  test acc {r['test_accuracy']:.2%}  "
        f"{r['seconds']:.2f} s  {r['samples_per_s']:,.0f} samples/s"
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, TypeError, BackendUnavailableError, DownloadError, OSError, ImportError,
            DivergenceError, DeviceMemoryError) as exc:
        if args.debug:
            raise
        print(f"gpunet {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        failed_run = isinstance(exc, (DivergenceError, DeviceMemoryError))  # the input was fine; the run failed
        return 1 if failed_run else 2
    except KeyboardInterrupt:
        print(f"gpunet {args.command}: interrupted", file=sys.stderr)
        return 130


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
