"""scripts/defaults_check.py: today's defaults against gpunet 0.2.0's, as gpunet train makes them."""

from __future__ import annotations

import json

import pytest
from conftest import load_script


def test_the_digits_train_better_with_todays_defaults_than_with_the_old_ones(tmp_path, capsys):
    check = load_script("defaults_check")
    assert check.main(["--no-mnist", "--out", str(tmp_path / "d.json")]) == 0
    rows = {r["defaults"]: r for r in json.loads((tmp_path / "d.json").read_text())["rows"]}
    before, now = rows["before"], rows["now"]
    assert (before["hidden"], before["batch_size"], before["lr_schedule"]) == ([100], 16, "exponential")
    assert (now["hidden"], now["batch_size"], now["lr_schedule"]) == ([1024], 32, "cosine")
    assert before["epochs"] == now["epochs"] == 30 and len(now["accuracy_by_epoch"]) == 30
    # issue 45: the digits' default result must not get worse (0.9805 before, 0.9861 now with seed 0)
    assert now["test_accuracy"] >= before["test_accuracy"] >= 0.97
    assert "digits   now" in capsys.readouterr().out
    kept = (tmp_path / "d.json").read_bytes()
    with pytest.raises(SystemExit) as exit_:  # an existing results file is kept, in one line
        check.main(["--no-mnist", "--out", str(tmp_path / "d.json")])
    assert exit_.value.code == 2 and "d.json already exists" in capsys.readouterr().err
    assert (tmp_path / "d.json").read_bytes() == kept


def test_a_data_folder_must_be_named(capsys):
    check = load_script("defaults_check")
    with pytest.raises(SystemExit) as exit_:
        check.main(["--data", "nowhere"])
    assert exit_.value.code == 2 and "--data must be NAME=DIR; got 'nowhere'" in capsys.readouterr().err
