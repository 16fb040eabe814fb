"""The ``gpunet`` command line: parses, prints, shows progress, handles Ctrl-C and exit codes; the library runs."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any, Callable, NoReturn, Sequence

from . import __version__
from .backend import BACKEND_NAMES, BackendUnavailableError
from .config import PRESETS, SETTINGS, Setting, SettingError, TrainConfig
from .datasets import DATASETS
from .distributed import ClusterStartError
from .download import DEADLINE, DownloadError
from .files import output_path
from .run import RESUME_HONOURS, Run, new_run_folder
from .training import DeviceMemoryError, DivergenceError, TrainingInterrupted

OVERVIEW = """a first session:
  gpunet train                      # train on the 8x8 digits (no download); prints the run folder, runs/RUN
  gpunet evaluate runs/RUN          # its accuracy, per-class precision and recall, confusion matrix
  gpunet predict runs/RUN my7.png   # read your own handwriting
  gpunet COMMAND --help             # a command's options, with examples
"""
# Each command's examples, shown under its --help; a command without an entry shows none.
EXAMPLES: dict[str, str] = {
    "train": """examples:
  gpunet train                                    # ReLU, softmax, Adam on the 8x8 digits: about 98%
  gpunet train --hidden 256,128 --epochs 50       # two hidden layers
  gpunet train --preset article                   # the article's network and training, on MNIST (downloaded)
  gpunet train --preset article --hidden 200      # the same with 200 hidden units
  gpunet train --dataset mnist --validation 0.1 --early-stopping 5   # MNIST, downloaded on first use
  gpunet train --resume runs/RUN --epochs 50      # go on to 50 epochs in all
""",
    "sweep": """examples:
  gpunet sweep --example > my.toml                # a starter sweep file: 12 runs on the 8x8 digits
  gpunet sweep my.toml                            # every run, one after another; a table and my.json
  gpunet sweep my.toml --workers 2 --out local.json   # on two local Dask workers
  gpunet sweep my.toml --skip-failed              # leave the runs that failed last time failed
  gpunet sweep my.toml --force                    # replace a results JSON that holds another sweep
  gpunet sweep my.toml --no-batch                 # one run at a time instead of seeds and lrs together
""",
    "evaluate": """examples:
  gpunet evaluate runs/RUN                        # accuracy, precision, recall, confusion matrix
  gpunet evaluate runs/RUN/best.npz --json        # the best epoch's weights (--early-stopping), as JSON
  gpunet evaluate runs/RUN --dataset mnist --data-dir DIR   # on other test images
""",
    "predict": """examples:
  gpunet predict runs/RUN my7.png                 # your own handwriting, any size or colour
  gpunet predict runs/RUN one.png two.jpg --json  # one JSON object per image
""",
    "plot": """examples:
  gpunet plot runs/RUN                            # curves.png, confusion.png, weights.png in the run folder
  gpunet plot runs/RUN --out figures --force      # into figures/, replacing the ones written before
""",
    "bench": """examples:
  gpunet bench --quick                            # a smoke test in seconds; nothing written
  gpunet bench --json bench.json                  # the full benchmark, its results kept as JSON
  gpunet bench --only gpunet-numpy,torch-cpu --repeats 9   # two contenders, a steadier median
""",
    "export": """examples:
  gpunet export runs/RUN model.onnx               # for onnxruntime (pip install "gpunet[onnx]")
  gpunet export runs/RUN/best.npz model.onnx --force   # replace an earlier export
""",
}


def _positive_seconds(text: str) -> float:
    """--download-deadline's value: a finite number of seconds > 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0; got {text!r}")
    return value


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


class OneLineParser(argparse.ArgumentParser):
    """argparse with errors in one line, exit status 2, no usage dump (the scripts use it too)."""

    def error(self, message: str) -> NoReturn:  # one line, exit status 2, no usage dump
        self.exit(2, f"{self.prog}: error: {message}\n")


def _train_options(p: argparse.ArgumentParser) -> None:
    d = TrainConfig()
    p.add_argument("--preset", choices=tuple(PRESETS), help="start from a named set of settings, which replace "
                   "the defaults shown here; an option given with it overrides the preset's. " + "; ".join(
                       f"{name}: {_preset_text(values)}" for name, values in PRESETS.items()))
    for s in SETTINGS:  # one option per setting; SUPPRESS: only what was typed reaches the namespace
        default = getattr(d, s.name)
        p.add_argument(flag(s.name), type=_option_type(s), choices=s.choices, default=argparse.SUPPRESS,
                       metavar=s.metavar, help=s.help + (f" (default: {_shown(default)})" if default is not None
                                                         else ""))
    for args, kwargs in TRAIN_RUN_OPTIONS:
        p.add_argument(*args, **kwargs)


def _shown(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def _preset_text(values: dict[str, Any]) -> str:  # a preset as the options it stands for
    return " ".join(f"{flag(name)} {_shown(value)}" for name, value in values.items())


def _option_type(s: Setting) -> Callable[[str], Any]:
    """``s.parse`` for argparse: the table's own parsers' messages (they say what is expected, and may carry
    the value ``meant``) reach the error line; argparse words the errors of int and float itself ("invalid
    float value: 'fast'")."""
    if s.parse in (str, int, float):
        return s.parse

    def parse(text: str) -> Any:
        try:
            return s.parse(text)
        except ValueError as exc:
            meant = getattr(exc, "meant", None)
            hint = f"; did you mean {flag(s.name)} {meant}?" if meant is not None else ""
            raise argparse.ArgumentTypeError(f"{exc}{hint}") from None
    parse.__name__ = s.parse.__name__
    return parse


Options = list[tuple[tuple[str, ...], dict[str, Any]]]  # add_argument's arguments, one pair per option
QUICK_REPEATS = 3  # gpunet bench --quick: the fewest timed runs whose median is not one of their extremes
REPEATS = 10  # gpunet bench: enough timed runs for a 95% interval around each median (gpunet/bench/harness.py)
TRAIN_RUN_OPTIONS: Options = [
    (("--out",), dict(metavar="DIR", help="the run folder (default: runs/<timestamp>; with --resume, the "
                      "checkpoint's folder, or another folder holding no other run)")),
    (("--resume",), dict(metavar="CHECKPOINT", help="go on from a model.npz (or its run folder): every setting but "
                         "--epochs, --backend and --kernels comes from it")),
    (("--quiet",), dict(action="store_true", help="no progress; print only where the run went and its result")),
    (("--force",), dict(action="store_true", help="replace the files of a run already in --out")),
    (("--download-deadline",), dict(metavar="SECONDS", type=_positive_seconds, default=DEADLINE,
                                    help=f"give up a download of MNIST after this long in all (default: {DEADLINE:g})")),
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
    (("--no-batch",), dict(action="store_true", help="train the runs one at a time (by default, runs that differ "
                           "only in seed, lr, lr_decay and weight_decay train together in one pass, each as it "
                           "would alone: gpunet.many.train_many)")),
]
BENCH: Options = [
    (("--quick",), dict(action="store_true", help=f"an eighth of the rows and {QUICK_REPEATS} repeats: seconds, "
                        "for a smoke test (its ratios are rough: read their spread)")),
    (("--repeats",), dict(type=int, help=f"timed runs per contender, after a warm-up (default: {REPEATS}; --quick: "
                          f"{QUICK_REPEATS})")),
    (("--only",), dict(metavar="NAMES", help="comma-separated contenders to run (default: all)")),
    (("--json",), dict(metavar="FILE", dest="json_out", help="also write the results as JSON to FILE (checked "
                       "before the benchmark starts; without it nothing is written)")),
    (("--force",), dict(action="store_true", help="replace FILE of --json if it exists")),
]


def run_train(args: argparse.Namespace) -> int:
    given = {s.name: getattr(args, s.name) for s in SETTINGS if hasattr(args, s.name)}
    say = _say(args.quiet)
    if args.resume is not None:
        refused = [flag(name) for name in given if name not in RESUME_HONOURS]
        refused += ["--preset"] if args.preset is not None else []
        if refused:
            raise SettingError(f"--resume takes every setting from the checkpoint; it cannot honour "
                               f"{', '.join(refused)}")
        run = Run.resume(args.resume, folder=args.out, epochs=given.get("epochs"), backend=given.get("backend"),
                         kernels=given.get("kernels"), on_download=say, overwrite=args.force,
                         download_deadline=args.download_deadline)
        if run.nothing_to_do:
            more = "" if run.stopping is not None and run.stopping.stopped else " (ask for more with --epochs)"
            print(f"nothing to do: {run.nothing_to_do}{more}")
            return 0
    else:
        config = TrainConfig.from_dict({"preset": args.preset, **given})
        run = Run.new(config, args.out or new_run_folder(), on_download=say, fresh_name=not args.out,
                      overwrite=args.force, download_deadline=args.download_deadline)
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
        assert run.folder is not None  # the command line's runs are always written to a folder
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
        if rows < n:  # a whole-epoch engine calls once, with every row
            ctrl_c.whole_epochs = False
        state["loss"] = state["loss"] + batch_loss  # stays on the device
        bar.update(rows - bar.n)
        state["calls"] += 1
        if state["calls"] % 50 == 0:  # read the running loss every 50th step only
            bar.set_postfix(mean_loss=f"{float(state['loss']) / rows:.4f}")  # CPU-GPU sync point

    def on_epoch(record: dict[str, Any]) -> None:
        if ctrl_c.whole_epochs is None and state["calls"] > 0:  # the epoch ended, called once: a whole epoch
            ctrl_c.whole_epochs = True
        state["loss"] = 0.0
        bar.clear()
        if not quiet:
            print(_epoch_line(record, epochs), flush=True)
        bar.reset(total=n)
        bar.set_description(f"epoch {record['epoch'] + 1}/{epochs}")

    # Whole epochs (a CUDA graph) stop only at the epoch's end; they are possible on CuPy unless plain is asked for
    ctrl_c = _CtrlC(quiet, run.net.backend.name == "cupy" and run.config.kernels != "plain")
    try:
        with ctrl_c:
            # the bar and Ctrl-C will do with once an epoch: auto may train whole epochs as CUDA graphs
            return run.train(on_epoch=on_epoch, on_batch=on_batch, should_stop=ctrl_c.pressed, every_step=False)
    except TrainingInterrupted as exc:
        assert run.folder is not None  # the command line's runs are always written to a folder
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
    """While active, the first Ctrl-C asks training to stop after the current step; a second stops at once.

    ``whole_epochs``: whether training runs whole epochs as CUDA graphs, which stop only at an epoch's end
    (False: it runs step by step; None: not known yet, on CuPy before the first step reports)."""

    def __init__(self, quiet: bool, whole_epochs_possible: bool) -> None:
        self.quiet, self.count = quiet, 0
        self.previous: Callable[[int, FrameType | None], Any] | int | None = None  # the SIGINT handler replaced
        self.whole_epochs: bool | None = None if whole_epochs_possible else False

    def pressed(self) -> bool:
        return self.count > 0

    def message(self) -> str:
        when = {False: "after this step", True: "after this epoch (it runs as one CUDA graph)",
                None: "after this step, or after this epoch if it runs as one CUDA graph,"}[self.whole_epochs]
        return f"stopping {when} and saving a checkpoint (Ctrl-C again to stop at once)"

    def _handle(self, signum: int, frame: Any) -> None:
        self.count += 1
        if self.count > 1:
            raise KeyboardInterrupt
        if not self.quiet:
            print("\n" + self.message(), file=sys.stderr, flush=True)

    def __enter__(self) -> _CtrlC:
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


def _say(quiet: bool) -> Callable[..., object]:  # downloads (name, url) and notes, on stderr
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


FORCE_HINT = "use --force to replace it"


def run_export(args: argparse.Namespace) -> int:
    from .checkpoint import load_checkpoint
    from .onnx import export
    from .run import model_path

    model = model_path(args.model)
    output_path(args.onnx_path, overwrite=args.force, inputs=[model], hint=FORCE_HINT)  # before the model loads
    net, _, meta = load_checkpoint(model, "numpy")
    export(net, args.onnx_path, preprocessing=meta.get("preprocessing"), overwrite=args.force, inputs=[model])
    print(f"wrote {args.onnx_path}")
    return 0


def run_plot(args: argparse.Namespace) -> int:
    from .evaluation import plot_run

    _require_run(args.model)
    written = plot_run(args.model, out=args.out, overwrite=args.force, **_test_data(args), on_download=_say(False))
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def _require_run(model: str) -> None:
    """ValueError unless ``model`` is a run folder, or a checkpoint in one: plot draws the run's metrics.jsonl."""
    path = Path(model)
    needs = "plot needs a run folder written by gpunet train --out DIR, which holds metrics.jsonl"
    if not path.exists():
        raise ValueError(f"{model}: no such folder or file; {needs}")
    if not (path if path.is_dir() else path.parent).joinpath("metrics.jsonl").is_file():
        what = "a folder without metrics.jsonl" if path.is_dir() else "a model file with no metrics.jsonl beside it"
        raise ValueError(f"{model} is {what}; {needs}")


def run_bench(args: argparse.Namespace) -> int:
    from .bench import CONTENDERS, format_results, run_benchmark
    from .files import write_json

    repeats = args.repeats if args.repeats is not None else QUICK_REPEATS if args.quick else REPEATS
    if repeats < 1:
        raise ValueError(f"--repeats must be >= 1; got {repeats}")
    only = args.only.split(",") if args.only else None
    unknown = [n for n in only or [] if n not in CONTENDERS]
    if unknown:
        raise ValueError(f"--only: unknown contender {unknown[0]!r}; expected some of {', '.join(CONTENDERS)}")
    if args.json_out is not None:  # checked before the long part
        _writable_json(args.json_out, args.force)
    results = run_benchmark(quick=args.quick, repeats=repeats, only=only,
                            on_result=lambda entry: print(f"done: {entry['case']}", file=sys.stderr, flush=True))
    print(format_results(results))
    if args.json_out is not None:
        write_json(_writable_json(args.json_out, args.force), results)  # again: a file may have appeared since
        print(f"wrote {args.json_out}")
    return 0


def _writable_json(name: str, force: bool) -> Path:
    """Where ``--json name`` writes: output_path's decision, and a folder this process may write in."""
    path = output_path(name, overwrite=force, hint=FORCE_HINT)
    if not os.access(path.parent, os.W_OK):
        raise ValueError(f"--json {name}: {path.parent} is not a writable folder")
    return path


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
                            on_download=_say(False), on_progress=on_progress, batch=not args.no_batch,
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
IMAGES: Options = [(("images",), dict(metavar="IMAGE", nargs="+", help="image files of one handwritten digit "
                                        "each: PNG, JPEG, BMP, ...; any size, colour or grey"))]
ONNX_PATH: Options = [
    (("onnx_path",), dict(metavar="OUT.onnx", help="the file to write (an existing one is kept unless --force)")),
    (("--force",), dict(action="store_true", help="replace OUT.onnx if it exists (atomically: the old file stays "
                        "whole until the new one is complete)")),
]
PLOT_OUT: Options = [
    (("--out",), dict(metavar="DIR", help="where the PNG files go (default: the run folder)")),
    (("--force",), dict(action="store_true", help="replace PNG files of the same names already there")),
]
# name -> (help, options, action)
COMMANDS: dict[str, tuple[str, Options | Callable[[argparse.ArgumentParser], None], Callable[..., int]]] = {
    "train": ("train a network on handwritten digits and write a run folder", _train_options, run_train),
    "evaluate": ("accuracy, per-class precision and recall, and the confusion matrix of a model on test images",
                 [*MODEL, *JSON, *TEST_DATA, *BACKEND], run_evaluate),
    "predict": ("read handwritten digits from image files (PNG, JPEG, ...; any size or colour); exit status 2 "
                "when an image could not be read, after printing the others", [*MODEL, *IMAGES, *JSON, *BACKEND],
                run_predict),
    "plot": ("write curves.png, confusion.png and weights.png of a run (needs matplotlib: pip install "
             '"gpunet[plot]")', [*MODEL, *PLOT_OUT, *TEST_DATA, *BACKEND], run_plot),
    "bench": ("time gpunet against PyTorch, scikit-learn and the article's plain code", BENCH, run_bench),
    "sweep": ("train every config of a sweep file (a grid of gpunet train's settings), in-process or on Dask "
              "workers, and write one results table; exit status 1 when a run failed", [*SWEEP, *BACKEND], run_sweep),
    "export": ("write a model as ONNX (Gemm and activation nodes, float32) for onnxruntime, its input preprocessing "
               'in the metadata; needs the onnx package: pip install "gpunet[onnx]"', [*MODEL, *ONNX_PATH], run_export),
}


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="gpunet", description="A fully connected neural network on NumPy or CuPy.",
                           epilog=OVERVIEW, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"gpunet {__version__}")
    parser.add_argument("--debug", action="store_true", help="on an error, show the Python traceback")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    for name, (help, options, action) in COMMANDS.items():
        p = commands.add_parser(name, help=help, description=help[0].upper() + help[1:] + ".",
                                epilog=EXAMPLES.get(name), formatter_class=argparse.RawDescriptionHelpFormatter)
        if callable(options):
            options(p)
        else:
            for args, kwargs in options:
                p.add_argument(*args, **kwargs)
        p.set_defaults(run=action)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:  # a bare gpunet: what it can do
        parser.print_help()
        return 0
    try:
        return args.run(args)
    except (ValueError, TypeError, BackendUnavailableError, DownloadError, ClusterStartError, OSError, ImportError,
            DivergenceError, MemoryError) as exc:
        if args.debug:
            raise
        print(f"gpunet {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return exit_status(exc)
    except KeyboardInterrupt:
        print(f"gpunet {args.command}: interrupted", file=sys.stderr)
        return 130


def exit_status(exc: BaseException) -> int:
    """2 for what the user asked (a ValueError or TypeError from the library is always that: a request no
    machine could hold, too); 1 for a run that failed on a valid request (it diverged, or ran out of memory)."""
    if isinstance(exc, (ValueError, TypeError)):
        return 2
    return 1 if isinstance(exc, (DivergenceError, MemoryError)) else 2


def _one_line(exc: BaseException) -> str:
    """The library's message with command-line spellings: option names for settings, --backend numpy."""
    text = exc.text(flag) if isinstance(exc, SettingError) else SETTING_IN_TEXT.sub(_as_option, str(exc))
    if isinstance(exc, MemoryError) and not isinstance(exc, DeviceMemoryError):  # NumPy's own, or a bare one
        text = f"out of memory: {text}" if text else "out of memory"
    return " ".join(text.split()) or type(exc).__name__


# The library names a setting as Python does, "batch_size=" or "dtype='float32'"; the command line says
# "--batch-size" and "--dtype float32".
SETTING_IN_TEXT = re.compile(r"\b(" + "|".join(f.name for f in dataclasses.fields(TrainConfig)) + r")=(?:'([^']*)')?")


def _as_option(match: re.Match[str]) -> str:
    return flag(match[1]) + (f" {match[2]}" if match[2] is not None else "")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
