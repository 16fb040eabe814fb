"""The ``gpunet`` command line: argparse fills a frozen config, the library computes, this prints."""

from __future__ import annotations

import argparse
import sys
import json
import math
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Sequence

from . import __version__
from .backend import BACKEND_NAMES, BackendUnavailableError, get_backend
from .checkpoint import load_checkpoint, save_checkpoint
from .checks import check_int, check_labels, check_number
from .datasets import DATASETS, Split, load_digits, load_mnist, read_csv
from .download import DownloadError, download_mnist
from .files import atomic_write
from .functions import HIDDEN_ACTIVATIONS, LOSS_NAMES, OUTPUT_ACTIVATIONS
from .init import INITS
from .network import DTYPES, Network
from .optim import OPTIMIZERS, make_optimizer
from .training import train

EXAMPLES = """examples:
  gpunet train                                  # the default network on the 8x8 digits
  gpunet train --hidden 256,128 --epochs 50     # two hidden layers
  gpunet train --dataset mnist --epochs 5       # MNIST, downloaded and verified on first use
  gpunet train --dataset mnist --data-dir DIR   # any folder with the four MNIST-format IDX files
  gpunet train --dataset csv --train-csv mnist_train.csv --test-csv mnist_test.csv
  gpunet train --activation sigmoid --output sigmoid --loss squared --init seed \\
               --optimizer sgd --lr 0.1 --batch-size 1   # the original article's network
  GPUNET_BACKEND=numpy gpunet train --quiet     # force the CPU, print only the result
"""


DEFAULT_EPOCHS = 30
PREPROCESSING = {"pixels": "scaled from 0..max to [0.01, 1.0]", "targets": "Network.targets"}


@dataclass(frozen=True)
class TrainConfig:
    """Everything ``gpunet train`` needs; the defaults reach >= 97% on the 8x8 digits."""

    hidden: tuple[int, ...] = (100,)
    activation: str = "relu"
    output: str = "softmax"
    loss: str = "cross-entropy"
    init: str = "he"
    optimizer: str = "adam"
    lr: float = 0.001
    epochs: int | None = None  # None: DEFAULT_EPOCHS, or the checkpoint's when resuming
    batch_size: int = 16
    weight_decay: float = 0.0
    seed: int = 0
    dtype: str = "float32"
    backend: str | None = None  # None: GPUNET_BACKEND, else "auto"
    quiet: bool = False
    dataset: str = "digits"
    data_dir: str | None = None  # mnist: a folder with the four IDX files (default: download to the cache)
    train_csv: str | None = None
    test_csv: str | None = None
    early_stopping: int | None = None  # stop after this many epochs without a better test loss
    out: str | None = None  # None: runs/<timestamp>, or the checkpoint's folder when resuming
    resume: str | None = None

    def __post_init__(self) -> None:  # fail before anything is printed or loaded
        check_number("lr", self.lr, positive=True)
        check_number("weight_decay", self.weight_decay, positive=False)
        if self.early_stopping is not None:
            check_int("early_stopping", self.early_stopping, 1)
        if self.epochs is not None:
            check_int("epochs", self.epochs, 1)
        check_int("batch_size", self.batch_size, 1)
        check_int("seed", self.seed, 0)
        if self.dataset == "csv" and (self.train_csv is None or self.test_csv is None):
            raise ValueError("--dataset csv needs --train-csv FILE and --test-csv FILE")


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
    p.add_argument("--early-stopping", type=int, metavar="N",
                   help="stop when the test loss has not improved for N epochs (model.npz keeps the last epoch)")
    p.add_argument("--out", metavar="DIR", help="where config.json, metrics.jsonl and model.npz go "
                   "(default: runs/<timestamp>, or the checkpoint's folder with --resume)")
    p.add_argument("--resume", metavar="CHECKPOINT", help="continue from a model.npz, optimiser state included; "
                   "every setting but --epochs, --out, --backend and --quiet comes from the checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bar, print only the final result line")
    return parser


def run_train(config: TrainConfig) -> int:
    backend = get_backend(config.backend)
    if config.resume is not None:
        net, optimizer, meta = load_checkpoint(config.resume, backend)
        saved = TrainConfig(**{**meta["train_config"], "hidden": tuple(meta["train_config"]["hidden"])})
        # Everything comes from the checkpoint but the run's length, where it goes and how it talks.
        config = replace(saved, epochs=config.epochs or saved.epochs, out=config.out or str(Path(config.resume).parent),
                         resume=config.resume, backend=config.backend, quiet=config.quiet)
        start_epoch, last_record = meta["epoch"] + 1, meta["record"]
    epochs = config.epochs or DEFAULT_EPOCHS
    data = _load(config)
    if config.resume is None:
        net = Network(
            [data.X_train.shape[1], *config.hidden, 10],
            activation=config.activation, output=config.output, loss=config.loss,
            init=config.init, seed=config.seed, backend=backend, dtype=config.dtype,
        )
        optimizer = make_optimizer(config.optimizer, config.weight_decay)
        start_epoch, last_record = 1, None
    for part, labels in (("train", data.y_train), ("test", data.y_test)):
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
        print(f"data: {config.dataset}, {len(data.y_train)} train / {len(data.y_test)} test images")
        print(f"output: {out}" + (f" (resuming after epoch {start_epoch - 1})" if config.resume else ""))
    _write_json(out / "config.json", {**asdict(config), "network": net.config(), "preprocessing": PREPROCESSING})
    _rewrite_metrics(out / "metrics.jsonl", last_record)
    if start_epoch > epochs:
        print(f"nothing to do: the checkpoint already holds {start_epoch - 1} epochs (ask for more with --epochs)")
        return 0

    bar = _progress(config.quiet)

    def on_batch(rows: int, batch_loss: Any) -> None:
        bar.update(rows - bar.n)
        if (rows // config.batch_size) % 50 == 1:  # read the loss every 50th batch only
            bar.set_postfix(loss=f"{float(batch_loss) / min(config.batch_size, rows):.4f}")  # CPU-GPU sync point

    best = {"loss": math.inf, "epoch": start_epoch - 1}

    def end_epoch(record: dict[str, Any]) -> bool:
        record["backend"] = backend.name
        save_checkpoint(out / "model.npz", net, optimizer,
                        {"epoch": record["epoch"], "record": record, "train_config": asdict(config),
                         "preprocessing": PREPROCESSING})
        with open(out / "metrics.jsonl", "a") as f:  # one whole line per write
            f.write(json.dumps(record) + "\n")
        bar.reset(total=len(data.y_train))
        if not config.quiet:
            bar.clear()
            print(_epoch_line(record, epochs), flush=True)
        if record["test_loss"] < best["loss"]:
            best.update(loss=record["test_loss"], epoch=record["epoch"])
        stop = config.early_stopping is not None and record["epoch"] - best["epoch"] >= config.early_stopping
        if stop and not config.quiet:
            print(f"early stopping: no better test loss than epoch {best['epoch']}'s for {config.early_stopping} epochs")
        return stop

    bar.reset(total=len(data.y_train))
    history = train(
        net, data.X_train, data.y_train, epochs=epochs, batch_size=config.batch_size,
        lr=config.lr, optimizer=optimizer, seed=config.seed, X_test=data.X_test, y_test=data.y_test,
        callback=end_epoch, on_batch=on_batch, start_epoch=start_epoch,
    )
    bar.close()
    last = history[-1]
    seconds = sum(r["seconds"] for r in history)
    plural = "s" if last["epoch"] > 1 else ""
    print(f"test accuracy {last['test_accuracy']:.2%} after {last['epoch']} epoch{plural} ({seconds:.2f} s training)")
    return 0


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
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"--out {out}: cannot create the folder ({exc.strerror})") from None
    if not os.access(out, os.W_OK):
        raise ValueError(f"--out {out}: the folder is not writable")


def _write_json(path: Path, value: Any) -> None:
    atomic_write(path, lambda f: f.write((json.dumps(value, indent=2) + "\n").encode()))


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


def _load(config: TrainConfig) -> Split:
    if config.dataset == "digits":
        return load_digits()
    if config.dataset == "csv":
        return Split(*read_csv(config.train_csv), *read_csv(config.test_csv))
    if config.data_dir is not None:
        return load_mnist(config.data_dir)

    def say(name: str, url: str) -> None:
        if not config.quiet:
            print(f"downloading {name} from {url}", file=sys.stderr, flush=True)

    return load_mnist(download_mnist(on_file=say))


def _epoch_line(r: dict[str, Any], epochs: int) -> str:
    width = len(str(epochs))
    return (
        f"epoch {r['epoch']:>{width}}/{epochs}  train loss {r['train_loss']:.4f}  "
        f"test loss {r['test_loss']:.4f}  test acc {r['test_accuracy']:.2%}  "
        f"{r['seconds']:.2f} s  {r['samples_per_s']:,.0f} samples/s"
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    options = {k: v for k, v in vars(args).items() if k != "command"}
    try:
        return run_train(TrainConfig(**options))
    except (ValueError, TypeError, BackendUnavailableError, DownloadError, OSError) as exc:
        print(f"gpunet {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"gpunet {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
