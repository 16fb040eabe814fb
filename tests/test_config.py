"""TrainConfig and its settings table: every field checked, the command line built from the same rows."""

from __future__ import annotations

import pytest

from gpunet.activations import HIDDEN_ACTIVATIONS, LOSS_NAMES, OUTPUT_ACTIVATIONS
from gpunet.cli import build_parser, flag
from gpunet.config import PRESETS, SETTINGS, SettingError, TrainConfig, sizes, with_preset
from gpunet.network import DTYPES
from gpunet.optim import OPTIMIZERS


def test_the_table_has_one_row_per_field_and_the_parser_one_option_per_row():
    fields = list(TrainConfig.__dataclass_fields__)
    assert [s.name for s in SETTINGS] == fields
    train = build_parser()._subparsers._group_actions[0].choices["train"]
    options = {a.option_strings[0]: a for a in train._actions if a.option_strings}
    for s in SETTINGS:
        assert options[flag(s.name)].choices == s.choices
    # the choices are the library's own tuples, the ones Network checks against
    by_name = {s.name: s for s in SETTINGS}
    assert by_name["activation"].choices is HIDDEN_ACTIVATIONS and by_name["output"].choices is OUTPUT_ACTIVATIONS
    assert by_name["loss"].choices is LOSS_NAMES and by_name["dtype"].choices is DTYPES
    assert by_name["optimizer"].choices == tuple(OPTIMIZERS)


@pytest.mark.parametrize(
    "values, message",
    [
        ({"activation": "foo"}, "activation must be one of sigmoid, tanh, relu, leaky_relu, silu; got 'foo'"),
        ({"dtype": "int8"}, "dtype must be one of float32, float64; got 'int8'"),
        ({"optimizer": "nope"}, "optimizer must be one of sgd, momentum, adam, adamw; got 'nope'"),
        ({"init": "zeros"}, "init must be one of article, xavier, he, fan-in; got 'zeros'"),
        ({"lr": float("inf")}, "lr must be a finite number > 0; got inf"),
        ({"lr": True}, "lr must be a finite number > 0; got True"),
        ({"epochs": 2.0}, "epochs must be an integer >= 1; got 2.0"),
        ({"hidden": (10, 0)}, "hidden must be layer sizes, each an integer >= 1; got (10, 0)"),
        ({"backend": "tpu"}, "backend must be one of auto, numpy, cupy; got 'tpu'"),
        ({"validation": 1.0}, "validation must be a number in [0, 1); got 1.0"),
        ({"lr_decay": 0}, "lr_decay must be a number in (0, 1]; got 0"),
        ({"early_stopping": 0}, "early_stopping must be an integer >= 1; got 0"),
        ({"data_dir": "m"}, "data_dir is only used with dataset mnist; got dataset 'digits'"),
        ({"dataset": "mnist", "test_csv": "t.csv"}, "test_csv is only used with dataset csv; got dataset 'mnist'"),
        ({"dataset": "csv", "train_csv": "a.csv"}, "dataset csv needs train_csv and test_csv"),
        ({"output": "identity"}, "loss cross-entropy needs output softmax or sigmoid; got output 'identity'"),
    ],
)
def test_every_setting_is_checked_and_named_as_python_spells_it(values, message):
    with pytest.raises(SettingError) as info:
        TrainConfig(**values)
    assert str(info.value) == message
    assert "--" not in str(info.value)  # the library does not speak in command-line flags
    assert info.value.text(flag).startswith(("--", "dataset csv needs", "loss cross"))


def test_the_command_line_spells_settings_as_options(capsys):
    from gpunet.cli import main

    assert main(["train", "--data-dir", "m"]) == 2
    assert capsys.readouterr().err == ("gpunet train: error: --data-dir is only used with --dataset mnist; "
                                       "got --dataset 'digits'\n")


def test_old_names_and_keys_still_load():
    assert TrainConfig(init="seed").init == "article"
    old = {"hidden": [30], "epochs": None, "quiet": True, "out": "runs/x", "resume": None, "lr": 0.5}
    assert TrainConfig.from_dict(old) == TrainConfig(hidden=(30,), lr=0.5)
    with pytest.raises(ValueError, match="unknown setting 'learning_rate'"):
        TrainConfig.from_dict({"learning_rate": 0.1})


def test_early_stopping_without_a_split_holds_out_ten_percent():
    assert TrainConfig().validation_share == 0.0
    assert TrainConfig(early_stopping=3).validation_share == 0.1
    assert TrainConfig(early_stopping=3, validation=0.25).validation_share == 0.25


def test_every_option_of_train_is_typed_from_the_table(capsys):
    parser = build_parser()
    args = parser.parse_args(["train", "--hidden", "5,6", "--lr", "0.5", "--epochs", "3", "--early-stopping", "2"])
    given = {k: v for k, v in vars(args).items() if k in TrainConfig.__dataclass_fields__}
    assert given == {"hidden": (5, 6), "lr": 0.5, "epochs": 3, "early_stopping": 2}  # only what was typed
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--hidden", "5,x"])
    assert capsys.readouterr().err == ("gpunet train: error: argument --hidden: expected layer sizes separated by "
                                       "commas, each an integer >= 1, like 100 or 256,128; got '5,x'\n")


@pytest.mark.parametrize("text, meant", [("100 50", "100,50"), ("256 128 64", "256,128,64"), ("100 0", None),
                                         ("100 x", None), ("", None), ("100,,50", "100,50")])
def test_hidden_sizes_show_the_expected_form_and_what_was_meant(text, meant, capsys):
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["train", "--hidden", text])
    assert info.value.code == 2
    want = (f"gpunet train: error: argument --hidden: expected layer sizes separated by commas, each an integer "
            f">= 1, like 100 or 256,128; got {text!r}" + (f"; did you mean --hidden {meant}?" if meant else "") + "\n")
    assert capsys.readouterr().err == want
    with pytest.raises(ValueError) as raised:  # the library's own message names no option
        sizes(text)
    assert "--" not in str(raised.value) and getattr(raised.value, "meant", None) == meant


ARTICLE = {"hidden": (100,), "activation": "sigmoid", "output": "sigmoid", "loss": "squared", "init": "article",
           "optimizer": "sgd", "lr": 0.1, "lr_decay": 1.0, "batch_size": 1, "epochs": 5, "dataset": "mnist",
           "pixels": "original"}


def test_the_article_preset_is_the_articles_network_and_training():
    # scripts/sweeps/article.toml and README's Experiments table: the article's values, written out here
    assert PRESETS["article"] == ARTICLE
    config = TrainConfig.from_dict({"preset": "article"})
    assert config == TrainConfig(**ARTICLE)
    assert (config.weight_decay, config.lr_decay, config.dtype, config.validation) == (0.0, 1.0, "float32", 0.0)


def test_settings_given_with_a_preset_override_it():
    config = TrainConfig.from_dict({"hidden": [200], "preset": "article", "lr": 0.2, "dataset": "digits"})
    assert config == TrainConfig(**{**ARTICLE, "hidden": (200,), "lr": 0.2, "dataset": "digits"})
    assert with_preset({"lr": 0.2}) == {"lr": 0.2} and with_preset({"preset": None, "lr": 0.2}) == {"lr": 0.2}
    for bad in ("textbook", 3):
        with pytest.raises(ValueError) as info:
            TrainConfig.from_dict({"preset": bad})
        assert str(info.value) == f"preset must be one of article; got {bad!r}"


def test_a_sweep_file_may_start_from_a_preset(tmp_path):
    from gpunet.sweep import load_grid

    (tmp_path / "a.toml").write_text('[base]\npreset = "article"\nepochs = 1\n[grid]\nhidden = [30, 200]\n')
    name, configs = load_grid(tmp_path / "a.toml")
    assert name == "a"
    assert configs == [TrainConfig(**{**ARTICLE, "epochs": 1, "hidden": (h,)}) for h in (30, 200)]
