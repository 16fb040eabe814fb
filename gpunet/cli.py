"""The ``gpunet`` command line: parses, prints, shows progress, handles Ctrl-C and exit codes; the library runs."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from . import __version__
from .backend import BACKEND_NAMES, BackendUnavailableError
from .config import SETTINGS, SettingError, TrainConfig
from .datasets import DATASETS
from .distributed import ClusterStartError
from .download import DownloadError
from .run import RESUME_HONOURS, Run, new_run_folder
from .training import DeviceMemoryError, DivergenceError, TrainingInterrupted

EXAMPLES = """examples:
  gpunet train --hidden 256,128 --epochs 50     # two hidden layers on the 8x8 digits
  gpunet train --dataset mnist --validation 0.1 --early-stopping 5   # MNIST, downloaded on first use
  gpunet train --resume runs/RUN --epochs 50    # go on to 50 epochs in all
  gpunet evaluate runs/RUN --json               # accuracy, precision, recall, confusion matrix
  gpunet predict runs/RUN my7.png               # your own handwriting, any size or colour
  gpunet plot runs/RUN                          # curves, confusion matrix and weights as PNG
  gpunet sweep grid.toml                        # every config of a grid file, one results table
  gpunet export runs/RUN model.onnx             # for onnxruntime (pip install "gpunet[onnx]")
"""


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


class OneLineParser(argparse.ArgumentParser):
    """argparse with errors in one line, exit status 2, no usage dump (the scripts use it too)."""

    def error(self, message: str) -> None:  # one line, exit status 2, no usage dump
        self.exit(2, f"{self.prog}: error: {message}\n")


def _train_options(p: argparse.ArgumentParser) -> None:
    d = TrainConfig()
    for s in SETTINGS:  # one option per setting; SUPPRESS: only what was typed reaches the namespace
        default = getattr(d, s.name)
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        p.add_argument(flag(s.name), type=s.parse, choices=s.choices, default=argparse.SUPPRESS, metavar=s.metavar,
                       help=s.help + (f" (default: {shown})" if default is not None else ""))
    for args, kwargs in TRAIN_RUN_OPTIONS:
        p.add_argument(*args, **kwargs)


Options = list[tuple[tuple[str, ...], dict[str, Any]]]  # add_argument's arguments, one pair per option
TRAIN_RUN_OPTIONS: Options = [
    (("--out",), dict(metavar="DIR", help="the run folder (default: runs/<timestamp>; with --resume, the "
                      "checkpoint's folder, or another folder holding no other run)")),
    (("--resume",), dict(metavar="CHECKPOINT", help="go on from a model.npz (or its run folder): every setting but "
                         "--epochs, --backend and --kernels comes from it")),
    (("--quiet",), dict(action="store_true", help="no progress; print only where the run went and its result")),
]
MODEL: Options = [(("model",), dict(metavar="MODEL", help="a run folder, or a model.npz (or best.npz)"))]
BACKEND: Options = [(("--backend",), dict(choices=BACKEND_NAMES, help="array backend (default: $GPUNET_BACKEND, "
                                          "else auto)"))]
TEST_DATA: Options = [
    (("--dataset",), dict(choices=DATASETS, help="the dataset (default: the one the model was trained on)")),
    (("--data-dir",), dict(metavar="DIR", help="folder holding the MNIST IDX files (default: the model's)")),
    (("--test-csv",), dict(metavar="FILE", help="test images for --dataset csv (default: the model's)")),
]
SWEEP: Options = [
    (("sweep",), dict(metavar="FILE", nargs="?", help=(
        "the sweep file, TOML (.toml) or JSON (.json), with up to five keys: name (names the results; default: "
        "the file's name), description, base (the settings every run shares), grid (settings, each with a list of "
        "values: every combination runs) and runs (a list of tables of further settings, one run each, each with "
        "every combination of the grid; a setting given in several places: grid over runs over base). Settings "
        "are gpunet train's options spelled with _ for -, with their values: hidden = [256, 128], batch_size = 64, "
        'dataset = "mnist", validation = 0.1. Every run is checked, its backend probed and its data loaded, '
        "before the first one starts; --example prints a starter file"))),
    (("--example",), dict(action="store_true", help="print a starter sweep file and exit (gpunet sweep --example "
                          "> my.toml)")),
    (("--data-dir",), dict(metavar="DIR", default=os.environ.get("GPUNET_MNIST_DIR"),
                           help="MNIST IDX folder for the runs on mnist (default: $GPUNET_MNIST_DIR, else download)")),
    (("--epochs",), dict(type=int, help="override every run's epochs (a quick look)")),
    (("--out",), dict(metavar="FILE", help="results JSON (default: <name>.json); finished runs are kept in FILE with "
                      ".jsonl, and a rerun skips them. The JSON is rewritten by each run of the sweep: an existing "
                      "one is replaced only where it holds the results of a sweep of the same name, else see "
                      "--force")),
    (("--force",), dict(action="store_true", help="replace the results JSON even where it holds something else "
                        "(the .jsonl of finished runs is kept: delete it to run everything again)")),
    (("--skip-failed",), dict(action="store_true", help="leave the runs that failed before as they are (by default a "
                              "rerun tries them again, their earlier errors kept in the .jsonl)")),
    (("--workers",), dict(type=int, metavar="N", help="run on a Dask LocalCluster of N worker processes (needs "
                          'pip install "gpunet[dask]")')),
    (("--scheduler",), dict(metavar="tcp://HOST:PORT", help="run on the Dask cluster of this scheduler (its "
                            "machines' backends and data are theirs to check: here only the settings are)")),
    (("--gpus",), dict(action="store_true", help="one Dask worker per visible GPU (dask-cuda's LocalCUDACluster; "
                       'pip install "gpunet[dask-cuda]"; unverified on a GPU)')),
]
BENCH: Options = [
    (("--quick",), dict(action="store_true", help="small sizes and 2 repeats: seconds, for a smoke test")),
    (("--repeats",), dict(type=int, help="timed runs per contender, after a warm-up (default: 5; --quick: 2)")),
    (("--only",), dict(metavar="NAMES", help="comma-separated contenders to run (default: all)")),
    (("--json",), dict(metavar="FILE", dest="json_out", help="where the results go (default: "
                       "bench-<timestamp>.json); checked before the benchmark starts")),
]


def run_train(args: argparse.Namespace) -> int:
    given = {s.name: getattr(args, s.name) for s in SETTINGS if hasattr(args, s.name)}
    say = _say(args.quiet)
    if args.resume is not None:
        refused = [flag(name) for name in given if name not in RESUME_HONOURS]
        if refused:
            raise SettingError(f"--resume takes every setting from the checkpoint; it cannot honour "
                               f"{', '.join(refused)}")
        run = Run.resume(args.resume, folder=args.out, epochs=given.get("epochs"), backend=given.get("backend"),
                         kernels=given.get("kernels"),
                         on_download=say)
        if run.nothing_to_do:
            more = "" if run.stopping is not None and run.stopping.stopped else " (ask for more with --epochs)"
            print(f"nothing to do: {run.nothing_to_do}{more}")
            return 0
    else:
        run = Run.new(TrainConfig(**given), args.out or new_run_folder(), on_download=say, fresh_name=not args.out)
    with run:  # the folder is ours from here; nothing was written before
        for note in run.notes:
            say(note)
        backend, data, row = run.net.backend, run.data, run.position["row"]
        if not args.quiet:
            print(f"backend: {backend.name} on {backend.device}" + (f" ({backend.reason})" if backend.reason else ""))
            print(f"network: {run.net}")
            val = f" / {len(data.y_val)} validation" if data.y_val is not None else ""
            print(f"data: {run.config.dataset}, {len(data.y_train)} train{val} / {len(data.y_test)} test images")
        where = f"epoch {run.start_epoch - 1}" + (f" and {row} rows of epoch {run.start_epoch}" if row else "")
        print(f"output: {run.folder}" + (f" (resuming after {where})" if args.resume and not args.quiet else ""))
        history = _train_with_progress(run, args.quiet)
    if history is None:
        return 130
    if run.stopping is not None and run.stopping.stopped:
        print(f"early stopping: no better validation loss than epoch {run.stopping.best_epoch}'s for "
              f"{run.config.early_stopping} epochs; {run.folder / 'best.npz'} holds that epoch")
    last = history[-1]
    seconds = sum(r["seconds"] for r in history)
    print(f"test accuracy {last['test_accuracy']:.2%} after {last['epoch']} epoch{'s' if last['epoch'] > 1 else ''}"
          f" ({seconds:.2f} s training)")
    return 0


def _train_with_progress(run: Run, quiet: bool) -> list[dict[str, Any]] | None:
    from tqdm import tqdm

    n, epochs = len(run.data.y_train), run.config.epochs
    # disable=None: no bar where stderr is not a terminal (logs, CI), none at all with --quiet
    bar = tqdm(total=n, unit="samples", unit_scale=True, leave=False, disable=True if quiet else None,
               file=sys.stderr, desc=f"epoch {run.start_epoch}/{epochs}", initial=run.position["row"])
    state = {"loss": run.position["loss_sum"], "calls": 0}

    def on_batch(rows: int, batch_loss: Any) -> None:
        state["loss"] = state["loss"] + batch_loss  # stays on the device
        bar.update(rows - bar.n)
        state["calls"] += 1
        if state["calls"] % 50 == 0:  # read the running loss every 50th step only
            bar.set_postfix(mean_loss=f"{float(state['loss']) / rows:.4f}")  # CPU-GPU sync point

    def on_epoch(record: dict[str, Any]) -> None:
        state["loss"] = 0.0
        bar.clear()
        if not quiet:
            print(_epoch_line(record, epochs), flush=True)
        bar.reset(total=n)
        bar.set_description(f"epoch {record['epoch'] + 1}/{epochs}")

    ctrl_c = _CtrlC(quiet)
    try:
        with ctrl_c:
            # the bar and Ctrl-C will do with once an epoch: auto may train whole epochs as CUDA graphs
            return run.train(on_epoch=on_epoch, on_batch=on_batch, should_stop=ctrl_c.pressed, every_step=False)
    except TrainingInterrupted as exc:
        model = run.folder / "model.npz"
        print(f"gpunet train: interrupted in epoch {exc.epoch} after {exc.rows} of {n} rows; saved {model}; "
              f"resume with: gpunet train --resume {model}", file=sys.stderr)
        return None
    finally:
        bar.close()


def _epoch_line(r: dict[str, Any], epochs: int) -> str:
    return (f"epoch {r['epoch']:>{len(str(epochs))}}/{epochs}  train loss {r['train_loss']:.4f}  "
            f"train acc {r['train_accuracy']:.2%}  "
            + (f"val loss {r['val_loss']:.4f}  val acc {r['val_accuracy']:.2%}  " if "val_loss" in r else "")
            + f"test loss {r['test_loss']:.4f}  test acc {r['test_accuracy']:.2%}  "
            f"{r['seconds']:.2f} s  {r['samples_per_s']:,.0f} samples/s")


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
            print("\nstopping after this step (in graph mode, this epoch) and saving a checkpoint "
                  "(Ctrl-C again to stop at once)", file=sys.stderr, flush=True)

    def __enter__(self) -> _CtrlC:
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


def _say(quiet: bool) -> Callable[..., None]:  # downloads (name, url) and notes, on stderr
    return lambda *w: quiet or print(f"downloading {w[0]} from {w[1]}" if len(w) == 2 else w[0], file=sys.stderr)


def _test_data(args: argparse.Namespace) -> dict[str, Any]:
    return {k: getattr(args, k) for k in ("dataset", "data_dir", "test_csv", "backend")}


def run_evaluate(args: argparse.Namespace) -> int:
    from .evaluation import evaluate_model
    from .metrics import format_report

    report = evaluate_model(args.model, **_test_data(args), on_download=_say(False))
    if args.json:
        print(json.dumps(report))
    else:
        print(f"{report['model']} on the {report['dataset']} test images")
        print(format_report(report))
    return 0


def run_predict(args: argparse.Namespace) -> int:
    from .evaluation import predict_images

    results = predict_images(args.model, args.images, backend=args.backend)
    for path, result in zip(args.images, results):
        if isinstance(result, Exception):
            print(f"gpunet predict: error: {_one_line(result)}", file=sys.stderr)
        elif args.json:
            print(json.dumps({"image": path, **result}))
        else:
            p = result["probabilities"]
            others = "  ".join(f"{k}:{v:.2f}" for k, v in enumerate(p))
            print(f"{path}: {result['digit']} ({p[result['digit']]:.1%})   {others}")
    return 2 if any(isinstance(r, Exception) for r in results) else 0


def run_export(args: argparse.Namespace) -> int:
    from .checkpoint import load_checkpoint
    from .onnx import export
    from .run import model_path

    net, _, meta = load_checkpoint(model_path(args.model), "numpy")
    export(net, args.onnx_path, preprocessing=meta.get("preprocessing"))
    print(f"wrote {args.onnx_path}")
    return 0


def run_plot(args: argparse.Namespace) -> int:
    from .evaluation import plot_run

    written = plot_run(args.model, out=args.out, **_test_data(args), on_download=_say(False))
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def run_bench(args: argparse.Namespace) -> int:
    from .bench import CONTENDERS, format_results, run_benchmark
    from .files import write_json

    repeats = args.repeats if args.repeats is not None else 2 if args.quick else 5
    if repeats < 1:
        raise ValueError(f"--repeats must be >= 1; got {repeats}")
    only = args.only.split(",") if args.only else None
    unknown = [n for n in only or [] if n not in CONTENDERS]
    if unknown:
        raise ValueError(f"--only: unknown contender {unknown[0]!r}; expected some of {', '.join(CONTENDERS)}")
    path = Path(args.json_out or f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json")  # checked before the long part
    if path.exists():
        raise ValueError(f"--json {path}: the file exists; gpunet writes new files only")
    if not path.parent.is_dir() or not os.access(path.parent, os.W_OK):
        raise ValueError(f"--json {path}: {path.parent} is not a writable folder")
    results = run_benchmark(quick=args.quick, repeats=repeats, only=only,
                            on_result=lambda entry: print(f"done: {entry['case']}", file=sys.stderr, flush=True))
    print(format_results(results))
    write_json(path, results)
    print(f"wrote {path}")
    return 0


def run_sweep(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .sweep import (EXAMPLE, LEGEND, best_run, failures, format_table, override, read_sweep, results_paths,
                        run_sweep, write_results)

    if args.example:
        if args.sweep is not None:
            raise ValueError(f"--example prints a starter sweep file; got a FILE too ({args.sweep})")
        print(EXAMPLE, end="")
        return 0
    if args.sweep is None:
        raise ValueError("expected a sweep file (FILE); gpunet sweep --example prints a starter file")
    sweep = read_sweep(args.sweep)  # every run's settings checked, each named by its place in the file
    configs = override(sweep.configs, backend=args.backend, epochs=args.epochs, data_dir=args.data_dir)
    out = Path(args.out or f"{sweep.name}.json")
    if out.suffix == ".jsonl":
        raise ValueError(f"--out {out}: expected a name not ending in .jsonl (the runs go to FILE with .jsonl)")
    out, jsonl = results_paths(out, sweep.name, sweep.path, overwrite=args.force)  # before any run
    # disable=None: no bar where stderr is not a terminal (logs, CI)
    bar = tqdm(total=len(configs), unit="run", desc=sweep.name, file=sys.stderr, disable=None)

    def on_progress(finished: int, running: int, failed: int, total: int) -> None:
        bar.total, bar.n = total, finished
        bar.set_postfix({"running": running, "failed": failed})  # redraws the bar

    try:  # the backends and the data are checked before the first run, and before anything is written
        records = run_sweep(configs, jsonl, workers=args.workers, scheduler=args.scheduler, gpus=args.gpus,
                            skip_failed=args.skip_failed, labels=sweep.labels, source=sweep.path,
                            on_download=_say(False), on_progress=on_progress,
                            on_dashboard=lambda address: tqdm.write(f"dashboard: {address}", file=sys.stdout))
    finally:
        bar.close()
    write_results(out, sweep.name, records)
    failed = failures(records)
    if failed and args.skip_failed:
        retry = f"\n{len(failed)} failed before and skipped (--skip-failed); run again without it to retry them"
    elif failed:
        retry = (f"\n{len(failed)} failed; the same command runs {'them' if len(failed) > 1 else 'it'} again "
                 f"(the errors stay in {args.out and Path(args.out).with_suffix('.jsonl') or jsonl.name})")
    else:
        retry = ""
    print(f"\n{format_table(records)}\n{LEGEND}\n{best_run(records)[1]}\n"
          + "".join(f"\nfailed: {line}" for line in failed) + retry + f"\nwrote {args.out or out.name}")
    return 1 if failed else 0


JSON: Options = [(("--json",), dict(action="store_true", help="print JSON instead of text"))]
IMAGES: Options = [(("images",), dict(metavar="IMAGE", nargs="+"))]
ONNX_PATH: Options = [(("onnx_path",), dict(metavar="OUT.onnx", help="the file to write (an existing one is kept)"))]
# name -> (help, options, action)
COMMANDS: dict[str, tuple[str, Options | Callable[[argparse.ArgumentParser], None], Callable[..., int]]] = {
    "train": ("train a network on handwritten digits and write a run folder", _train_options, run_train),
    "evaluate": ("accuracy, per-class precision and recall, and the confusion matrix of a model on test images",
                 [*MODEL, *JSON, *TEST_DATA, *BACKEND], run_evaluate),
    "predict": ("read handwritten digits from image files (PNG, JPEG, ...; any size or colour); exit status 2 "
                "when an image could not be read, after printing the others", [*MODEL, *IMAGES, *JSON, *BACKEND],
                run_predict),
    "plot": ("write curves.png, confusion.png and weights.png of a run (needs matplotlib: pip install "
             '"gpunet[plot]")', [*MODEL, (("--out",), dict(metavar="DIR", help="where the PNG files go (default: "
                                 "the run folder)")), *TEST_DATA, *BACKEND], run_plot),
    "bench": ("time gpunet against PyTorch, scikit-learn and the article's plain code", BENCH, run_bench),
    "sweep": ("train every config of a sweep file (a grid of gpunet train's settings), in-process or on Dask "
              "workers, and write one results table; exit status 1 when a run failed", [*SWEEP, *BACKEND], run_sweep),
    "export": ("write a model as ONNX (Gemm and activation nodes, float32) for onnxruntime, its input preprocessing "
               'in the metadata; needs the onnx package: pip install "gpunet[onnx]"', [*MODEL, *ONNX_PATH], run_export),
}


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="gpunet", description="A fully connected neural network on NumPy or CuPy.",
                           epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"gpunet {__version__}")
    parser.add_argument("--debug", action="store_true", help="on an error, show the Python traceback")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    for name, (help, options, action) in COMMANDS.items():
        p = commands.add_parser(name, help=help, description=help[0].upper() + help[1:] + ".", epilog=EXAMPLES,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
        if callable(options):
            options(p)
        else:
            for args, kwargs in options:
                p.add_argument(*args, **kwargs)
        p.set_defaults(run=action)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, TypeError, BackendUnavailableError, DownloadError, ClusterStartError, OSError, ImportError,
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
    """The library's message with command-line spellings: option names for settings, --backend numpy."""
    text = exc.text(flag) if isinstance(exc, SettingError) else SETTING_IN_TEXT.sub(_as_option, str(exc))
    return " ".join(text.split()) or type(exc).__name__


# The library names a setting as Python does, "batch_size=" or "dtype='float32'"; the command line says
# "--batch-size" and "--dtype float32".
SETTING_IN_TEXT = re.compile(r"\b(" + "|".join(f.name for f in dataclasses.fields(TrainConfig)) + r")=(?:'([^']*)')?")


def _as_option(match: re.Match[str]) -> str:
    return flag(match[1]) + (f" {match[2]}" if match[2] is not None else "")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
