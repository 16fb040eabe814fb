"""What is trained: ``TrainConfig``, checked entirely by one table of settings that also feeds the command line.

Each row of ``SETTINGS`` names a setting, its default, what a valid value is
(the choices are the library's own tuples, the ones ``Network`` checks against),
which datasets use it, and its help text. ``TrainConfig`` checks every field
against its row; ``gpunet.cli`` builds ``gpunet train``'s options from the same
rows. Errors name settings as Python spells them (``batch_size``);
``SettingError.text`` lets the command line say ``--batch-size`` instead.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Callable

from . import defaults
from .activations import FUSED, HIDDEN_ACTIVATIONS, LOSS_NAMES, OUTPUT_ACTIVATIONS
from .backend import BACKEND_NAMES
from .checks import KERNELS
from .datasets import DATASETS, PIXELS
from .initializers import INITS, init_name
from .network import DTYPES, target_levels
from .optim import OPTIMIZERS
from .schedules import SCHEDULES, schedule_named

EARLY_STOPPING_VALIDATION = defaults.EARLY_STOPPING_VALIDATION  # the share held out when early stopping is asked for without a validation split


class SettingError(ValueError):
    """A setting (or a combination of settings) is invalid; the message names them."""

    def __init__(self, template: str, **values: Any) -> None:
        self.template, self.values = template, values  # "{lr} must be ...": the names go in the braces
        super().__init__(self.text(lambda name: name))

    def text(self, spell: Callable[[str], str]) -> str:
        """The message with every setting's name spelled by ``spell`` (the CLI passes its option names)."""
        names = {name: spell(name) for name in (f.name for f in fields(TrainConfig))}
        return self.template.format(**names, **self.values)


def _integer(minimum: int) -> Callable[[Any], bool]:
    return lambda v: not isinstance(v, bool) and isinstance(v, int) and v >= minimum


def _number(low: float, high: float, low_open: bool, high_open: bool) -> Callable[[Any], bool]:
    def ok(v: Any) -> bool:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return False
        return (v > low if low_open else v >= low) and (v < high if high_open else v <= high)

    return ok


def _sizes(v: Any) -> bool:
    return isinstance(v, tuple) and len(v) > 0 and all(_integer(1)(s) for s in v)


def sizes(text: str) -> tuple[int, ...]:
    """"256,128" -> (256, 128); ValueError, showing the expected form, unless every size is an integer >= 1."""
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        values = ()
    if not _sizes(values):
        error = ValueError(f"expected layer sizes separated by commas, each an integer >= 1, like 100 or "
                           f"256,128; got {text!r}")
        words = text.replace(",", " ").split()  # "100 50" or "100, 50": the sizes meant, if they are sizes
        if len(words) > 1 and all(w.isdigit() and int(w) >= 1 for w in words):
            error.meant = ",".join(words)  # type: ignore[attr-defined]  # the CLI suggests "--hidden 100,50"
        raise error
    return values


def _text(v: Any) -> bool:
    return isinstance(v, str) and v != ""


@dataclass(frozen=True)
class Setting:
    """One row of the table: a setting of ``TrainConfig`` and, through the CLI, an option of ``gpunet train``."""

    name: str
    expected: str  # what a valid value is, in words: "an integer >= 1"
    valid: Callable[[Any], bool]
    help: str
    choices: tuple[str, ...] | None = None  # argparse's choices too
    optional: bool = False  # None is valid: the setting is off, or has a default decided elsewhere
    datasets: tuple[str, ...] = DATASETS  # the datasets that use the setting; others refuse it
    parse: Callable[[str], Any] = str  # the command line's text -> a value
    metavar: str | None = None


def _choice(name: str, choices: tuple[str, ...], help: str) -> Setting:
    return Setting(name, f"one of {', '.join(choices)}", lambda v: v in choices, help, choices)


SETTINGS: tuple[Setting, ...] = (
    Setting("hidden", "layer sizes, each an integer >= 1", _sizes, "hidden layer sizes, comma-separated",
            parse=sizes, metavar="SIZES"),
    _choice("activation", HIDDEN_ACTIVATIONS, "hidden activation"),
    _choice("output", OUTPUT_ACTIVATIONS, "output activation"),
    _choice("loss", LOSS_NAMES, "loss"),
    _choice("init", tuple(INITS), "initialisation of the weights"),
    _choice("optimizer", tuple(OPTIMIZERS), "optimiser"),
    Setting("lr", "a finite number > 0", _number(0, math.inf, True, True), "learning rate", parse=float),
    Setting("lr_decay", "a number in (0, 1]", _number(0, 1, True, False),
            "exponential: multiply the learning rate by this after every epoch (1, its default: constant; giving "
            "it picks --lr-schedule exponential)", optional=True, parse=float, metavar="FACTOR"),
    _choice("lr_schedule", SCHEDULES, "the learning rate of each epoch: exponential: --lr times --lr-decay ** (epoch - 1); "
            "step: multiplied by --lr-gamma every --lr-step epochs; cosine: --warmup-epochs of linear warm-up, then "
            "half a cosine down towards --lr-min; one-cycle: as cosine, the warm-up from lr / --lr-div"),
    Setting("lr_step", "an integer >= 1", _integer(1), "step: the epochs between two drops", optional=True,
            parse=int, metavar="N"),
    Setting("lr_gamma", "a number in (0, 1)", _number(0, 1, True, True), "step: the factor of each drop "
            "(default: 0.1)", optional=True, parse=float, metavar="FACTOR"),
    Setting("warmup_epochs", "an integer >= 0", _integer(0), "cosine and one-cycle: epochs of linear warm-up "
            "(default: cosine 0, one-cycle 0.3 x epochs, rounded)", optional=True, parse=int, metavar="N"),
    Setting("lr_min", "a finite number >= 0", _number(0, math.inf, False, True), "cosine and one-cycle: the "
            "learning rate they anneal towards (default: 0)", optional=True, parse=float, metavar="LR"),
    Setting("lr_div", "a finite number >= 1", _number(1, math.inf, False, True), "one-cycle: its first epoch "
            "trains at lr / this (default: 25)", optional=True, parse=float, metavar="FACTOR"),
    Setting("augment_shift", "an integer >= 0", _integer(0), "shift each training image by up to this many "
            "pixels each way, drawn afresh every epoch (0: none)", parse=int, metavar="PIXELS"),
    Setting("augment_rotate", "a number in [0, 180]", _number(0, 180, False, False), "rotate each training image "
            "by up to this many degrees, drawn afresh every epoch (0: none)", parse=float, metavar="DEGREES"),
    Setting("epochs", "an integer >= 1", _integer(1), "passes over the data in all", parse=int),
    Setting("batch_size", "an integer >= 1", _integer(1), "samples per step; 1 is the original per-sample SGD",
            parse=int),
    Setting("weight_decay", "a finite number >= 0", _number(0, math.inf, False, True), "L2 weight decay", parse=float),
    Setting("dropout", "a number in [0, 1)", _number(0, 1, False, True),
            "drop each hidden unit with this probability in training steps, kept ones scaled by 1 / (1 - rate) "
            "(0: none)", parse=float, metavar="RATE"),
    Setting("seed", "an integer >= 0", _integer(0), "seed of the weights, the data order and the validation rows",
            parse=int),
    _choice("dtype", DTYPES, "floating point type"),
    Setting("backend", f"one of {', '.join(BACKEND_NAMES)}", lambda v: v in BACKEND_NAMES,
            "array backend (default: $GPUNET_BACKEND, else auto: CuPy when a GPU is usable)",
            BACKEND_NAMES, optional=True),
    _choice("kernels", KERNELS, "how a GPU trains: plain: array operations (the one path on NumPy); fused: "
            "CUDA kernels; graph: whole epochs captured as CUDA graphs; auto: graph for per-sample SGD and for "
            "batches whose widest product is at most a 1024-row batch on a 784-1024 layer, else fused, falling "
            "back to plain where a fast path cannot run the network"),
    _choice("dataset", DATASETS, "digits: scikit-learn's 8x8 digits (no download); mnist: the four IDX files of "
            "--data-dir, else downloaded to $GPUNET_DATA or ~/.cache/gpunet; csv: --train-csv and --test-csv"),
    Setting("data_dir", "a folder name", _text, "folder holding the four standard MNIST IDX files",
            optional=True, datasets=("mnist",), metavar="DIR"),
    Setting("train_csv", "a file name", _text, "training images: a label, then the pixels 0-255, per row",
            optional=True, datasets=("csv",), metavar="FILE"),
    Setting("test_csv", "a file name", _text, "test images, as --train-csv", optional=True, datasets=("csv",),
            metavar="FILE"),
    _choice("pixels", tuple(PIXELS), "original: pixels scaled to [0.01, 1.0] as the article; unit: to [0, 1]"),
    Setting("validation", "a number in [0, 1)", _number(0, 1, False, True),
            "hold out this seeded share of the training images, and report it each epoch (0: none)",
            parse=float, metavar="FRACTION"),
    Setting("early_stopping", "an integer >= 1", _integer(1),
            "stop when the validation loss has not improved for N epochs; best.npz keeps the best epoch",
            optional=True, parse=int, metavar="N"),
)


@dataclass(frozen=True)
class TrainConfig:
    """What is trained, on what data, how and for how long; the defaults reach >= 97% on the 8x8 digits."""

    hidden: tuple[int, ...] = defaults.HIDDEN
    activation: str = defaults.ACTIVATION
    output: str = defaults.OUTPUT
    loss: str = defaults.LOSS
    init: str = defaults.INIT
    optimizer: str = defaults.OPTIMIZER
    lr: float = defaults.LR
    lr_decay: float | None = None  # exponential: lr * lr_decay ** (e - 1); defaults.LR_DECAY when not given
    lr_schedule: str | None = None  # gpunet/schedules.py (None: schedule_named's pick); the next five are its settings
    lr_step: int | None = None
    lr_gamma: float | None = None
    warmup_epochs: int | None = None
    lr_min: float | None = None
    lr_div: float | None = None
    augment_shift: int = 0  # gpunet/augment.py: pixels each way
    augment_rotate: float = 0.0  # degrees each way
    epochs: int = defaults.EPOCHS
    batch_size: int = defaults.BATCH_SIZE
    weight_decay: float = defaults.WEIGHT_DECAY
    dropout: float = 0.0  # each hidden layer's output (Network(dropout=...) takes per-layer rates too)
    seed: int = defaults.SEED
    dtype: str = defaults.DTYPE
    backend: str | None = None  # None: GPUNET_BACKEND, else "auto"
    kernels: str = "auto"  # the training path on CuPy (gpunet/engines/select.py); like backend, the machine's choice
    dataset: str = "digits"
    data_dir: str | None = None  # mnist: a folder with the four IDX files (default: download to the cache)
    train_csv: str | None = None
    test_csv: str | None = None
    pixels: str = "original"  # datasets.PIXELS
    validation: float = 0.0  # share of the training rows held out for validation
    early_stopping: int | None = None  # stop after this many epochs without a better validation loss

    def __post_init__(self) -> None:  # fail before anything is loaded or written
        object.__setattr__(self, "init", init_name(self.init))  # old checkpoints and sweep files say "seed"
        # the schedule and its factor as trained, recorded (a later default changes no saved run; a config saved
        # before schedules existed has lr_decay, so it reads as the exponential schedule it trained with)
        object.__setattr__(self, "lr_schedule", schedule_named(self.lr_schedule, lr_decay=self.lr_decay,
                                                               lr_step=self.lr_step, lr_gamma=self.lr_gamma,
                                                               lr_div=self.lr_div))
        if self.lr_decay is None and self.lr_schedule == "exponential":
            object.__setattr__(self, "lr_decay", defaults.LR_DECAY)
        for s in SETTINGS:
            value = getattr(self, s.name)
            if value is None and s.optional:
                continue
            if not s.valid(value):
                raise SettingError(f"{{{s.name}}} must be {s.expected}; got {{value!r}}", value=value)
            if self.dataset not in s.datasets:
                raise SettingError(f"{{{s.name}}} is only used with {{dataset}} {' or '.join(s.datasets)}; "
                                   "got {dataset} {value!r}", value=self.dataset)
        if self.dataset == "csv" and (self.train_csv is None or self.test_csv is None):
            raise SettingError("{dataset} csv needs {train_csv} and {test_csv}")
        fused_outputs = tuple(output for output, loss in FUSED if loss == self.loss)
        if self.loss == "cross-entropy" and self.output not in fused_outputs:
            raise SettingError("{loss} cross-entropy needs {output} " + " or ".join(fused_outputs)
                               + "; got {output} {value!r}", value=self.output)

    @property
    def validation_share(self) -> float:
        """The share of training rows held out: ``validation``, or 10% when early stopping needs a split."""
        if self.validation == 0 and self.early_stopping is not None:
            return EARLY_STOPPING_VALIDATION
        return self.validation

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: tuples become lists."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """A config from JSON (a checkpoint's, a sweep file's): unknown keys are an error, lists become tuples;
        a ``preset`` key names a row of PRESETS whose settings come first, the other keys overriding them."""
        values = with_preset({k: v for k, v in values.items() if k not in LEGACY_KEYS})
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"unknown setting {unknown[0]!r}; expected one of {', '.join(sorted([*known, 'preset']))}")
        if isinstance(values.get("hidden"), int):
            values["hidden"] = (values["hidden"],)
        if isinstance(values.get("hidden"), list):
            values["hidden"] = tuple(values["hidden"])
        if values.get("epochs", 0) is None:  # written by earlier versions: None meant the default
            del values["epochs"]
        return cls(**values)

    def command(self) -> str:
        """The ``gpunet train`` command line for this config (settings left at their defaults omitted)."""
        default, words = TrainConfig(), ["gpunet", "train"]
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("backend", "kernels") or value is None or value == getattr(default, f.name):
                continue
            text = ",".join(map(str, value)) if f.name == "hidden" else str(value)
            words += [f"--{f.name.replace('_', '-')}", text]
        return " ".join(words)


# Named starting points for a config: a preset's settings replace the defaults, and any setting given with it
# replaces the preset's (``gpunet train --preset NAME``, a sweep file's ``preset = "NAME"``).
PRESETS: dict[str, dict[str, Any]] = {
    # The original article's experiment: 100 sigmoid hidden units, a sigmoid output on the squared loss
    # (targets 0.01/0.99), weights 0.01 * N(0, 1), plain SGD one sample at a time at lr 0.1 for 5 epochs, on
    # MNIST with pixels in [0.01, 1.0] (as scripts/sweeps/article.toml). Its lr and epochs are made for MNIST's
    # 300,000 updates: on the 8x8 digits' 7,190 they reach about half the test images.
    "article": {"hidden": (100,), "activation": "sigmoid", "output": "sigmoid", "loss": "squared",
                "init": "article", "optimizer": "sgd", "lr": 0.1, "lr_decay": 1.0, "batch_size": 1, "epochs": 5,
                "dataset": "mnist", "pixels": "original"},
}


def with_preset(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` without its ``preset`` key, over that preset's settings; ``values`` itself if it names none."""
    if "preset" not in values:
        return values
    rest = {k: v for k, v in values.items() if k != "preset"}
    name = values["preset"]
    if name is None:
        return rest
    if not isinstance(name, str) or name not in PRESETS:
        raise ValueError(f"preset must be one of {', '.join(PRESETS)}; got {name!r}")
    return {**PRESETS[name], **rest}


# Keys that checkpoints of earlier versions hold in their train_config: how a run talked, not what it trained.
LEGACY_KEYS = ("quiet", "out", "resume")


def preprocessing(pixels: str, output: str, loss: str) -> dict[str, Any]:
    """How a network's pixels and targets were made, as config.json and checkpoints record it (``gpunet
    train`` and ``gpunet.save`` alike), so evaluate, predict and export treat new images the same way."""
    low, high = target_levels(output, loss)
    targets = "one-hot" if (low, high) == (0.0, 1.0) else f"{low:g}/{high:g}"
    return {"pixels": pixels, "pixel_scaling": PIXELS[pixels], "targets": targets}
