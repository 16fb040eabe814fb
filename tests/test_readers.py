"""Files gpunet wrote, then edited by hand: every reader checks every field it uses.

Property tests take a checkpoint of a real run, a model file from gpunet.save,
a run's metrics.jsonl and an exported ONNX file, remove a field, give it a value
of another type or cut it short, anywhere, and hand the result to the readers
(load, resume, evaluate, predict, plot's metrics, ONNX metadata). Each either
reads it or raises its documented error (a ValueError) naming the file and the
field; never a KeyError, AttributeError or TypeError from inside, and no file
changes.
"""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gpunet
from gpunet.checkpoint import META_FIELDS, META_INNER, CheckpointError, load_checkpoint, save_checkpoint
from gpunet.config import TrainConfig
from gpunet.evaluation import model_and_test_data, predict_images
from gpunet.files import field
from gpunet.run import Run, read_metrics
from gpunet.training import TrainingInterrupted

PROPERTY = settings(max_examples=60, deadline=timedelta(seconds=20),
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
JSON_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-3, 10**6), st.floats(allow_nan=False),
                        st.text(max_size=5), st.lists(st.integers(), max_size=2),
                        st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


def snapshot(folder):
    return {p: p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A run with early stopping interrupted in its second epoch (model.npz holds every metadata field, a
    position inside the epoch included; best.npz, metrics.jsonl), and a gpunet.save file."""
    root = tmp_path_factory.mktemp("readers")
    run = Run.new(TrainConfig(epochs=3, hidden=(8,), backend="numpy", validation=0.2, early_stopping=3),
                  root / "run")
    steps = iter(range(10**6))
    with pytest.raises(TrainingInterrupted):
        run.train(should_stop=lambda: next(steps) > 100)  # 72 steps an epoch: stopped in epoch 2
    run.close()
    assert load_checkpoint(root / "run" / "model.npz")[2]["position"]["row"] > 0
    gpunet.save(run.net, root / "saved.npz", optimizer=run.optimizer)
    return root


def header_of(path):
    with np.load(path) as z:
        return json.loads(str(z["header"]))


def with_header(path, out, header):
    """A copy of the checkpoint ``path`` at ``out`` whose header is ``header`` (the arrays as they were)."""
    with zipfile.ZipFile(path) as z:
        members = {i.filename: z.read(i) for i in z.infolist()}
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.array(json.dumps(header)))
    members["header.npy"] = buffer.getvalue()
    with zipfile.ZipFile(out, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)


def mutate(record, how, value, cut):
    """``record`` (a dict, changed in place) with one key removed, retyped to ``value`` or cut short."""
    key = sorted(record)[cut % len(record)]
    if how == "remove":
        del record[key]
    elif how == "retype":
        record[key] = value
    else:  # cut short: a string to its first half, a list to its first part, an object to half its keys
        old = record[key]
        if isinstance(old, (str, list)):
            record[key] = old[: len(old) // 2]
        elif isinstance(old, dict):
            record[key] = {k: old[k] for k in sorted(old)[: len(old) // 2]}
        else:
            del record[key]
    return key


def assert_clean(exc, path, names):
    """``exc`` is the reader's documented error, on one line, naming ``path`` and one of ``names``."""
    assert isinstance(exc, ValueError), f"{type(exc).__name__}: {exc}"
    text = str(exc)
    assert str(path) in text and "\n" not in text
    assert any(name in text for name in names), (names, text)


META_PARTS = st.sampled_from(  # every field a run's checkpoint holds (saved_by is gpunet.save's), and some settings
    [k for k in sorted(META_FIELDS) if k != "saved_by"]
    + [f"{k}.{inner}" for k, fields in META_INNER.items() for inner in fields]
    + [f"train_config.{k}" for k in ("lr", "hidden", "epochs", "dataset", "early_stopping", "validation", "seed")])


@PROPERTY
@given(part=META_PARTS, how=st.sampled_from(["remove", "retype", "cut"]), value=JSON_VALUES, cut=st.integers(0, 50))
def test_a_hand_edited_checkpoint_is_read_or_refused_by_field(made, tmp_path, part, how, value, cut):
    header = header_of(made / "run" / "model.npz")
    outer, _, inner = part.partition(".")
    target = header["meta"][outer] if inner else header["meta"]
    key = mutate(target, how, value, sorted(target).index(inner or outer))
    edited = tmp_path / "run"
    edited.mkdir(exist_ok=True)
    shutil.copy(made / "run" / "metrics.jsonl", edited / "metrics.jsonl")
    with_header(made / "run" / "model.npz", edited / "model.npz", header)
    before = snapshot(tmp_path)
    for read in (lambda: load_checkpoint(edited / "model.npz"),
                 lambda: Run.resume(edited, epochs=3),
                 lambda: model_and_test_data(edited),
                 lambda: predict_images(edited, [])):
        try:
            read()
        except Exception as exc:  # noqa: BLE001 - what it is, is the test
            assert_clean(exc, edited / "model.npz", [key, "train_config", "meta."])
    assert snapshot(tmp_path) == before


@PROPERTY
@given(part=st.sampled_from(["saved_by", "epoch", "record", "position", "train_config", "preprocessing",
                             "preprocessing.pixels", "train_config.hidden", "train_config.dataset"]),
       how=st.sampled_from(["remove", "retype", "cut"]), value=JSON_VALUES)
def test_a_hand_edited_model_file_is_read_or_refused_by_field(made, tmp_path, part, how, value):
    header = header_of(made / "saved.npz")
    outer, _, inner = part.partition(".")
    target = header["meta"][outer] if inner else header["meta"]
    key = mutate(target, how, value, sorted(target).index(inner or outer))
    path = tmp_path / "saved.npz"
    with_header(made / "saved.npz", path, header)
    before = snapshot(tmp_path)
    for read in (lambda: gpunet.load(path), lambda: model_and_test_data(path), lambda: predict_images(path, [])):
        try:
            read()
        except Exception as exc:  # noqa: BLE001
            assert_clean(exc, path, [key, "train_config", "meta."])
    assert snapshot(tmp_path) == before


@PROPERTY
@given(line=st.integers(0, 10), how=st.sampled_from(["remove", "retype", "cut", "tear", "replace"]),
       value=JSON_VALUES, cut=st.integers(0, 50))
def test_a_hand_edited_metrics_line_is_read_or_refused_by_line_and_field(made, tmp_path, line, how, value, cut):
    lines = (made / "run" / "metrics.jsonl").read_text().splitlines()
    n = line % len(lines)
    record = json.loads(lines[n])
    key = "record"
    if how == "tear":
        lines[n] = lines[n][: cut % len(lines[n])]
    elif how == "replace":
        lines[n] = json.dumps(value)
    else:
        key = mutate(record, how, value, cut)
        lines[n] = json.dumps(record)
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(text + "\n" for text in lines))
    before = snapshot(tmp_path)
    for torn_end in (True, False):
        try:
            records = read_metrics(path, torn_end=torn_end)
        except Exception as exc:  # noqa: BLE001
            assert_clean(exc, f"{path}, line {n + 1}", [key, "not JSON", "epoch", "the record"])
        else:
            assert all(isinstance(r["epoch"], int) and r["epoch"] >= 1 for r in records)
            for r in records:  # what plots draw: numbers or nothing
                for name in ("train_loss", "val_loss", "test_loss", "train_accuracy", "val_accuracy"):
                    assert r.get(name) is None or isinstance(r[name], (int, float))
            dropped = torn_end and how == "tear" and n == len(lines) - 1 and len(records) == len(lines) - 1
            assert len(records) == len(lines) or dropped
    assert snapshot(tmp_path) == before


@pytest.fixture(scope="module")
def exported(made):
    pytest.importorskip("onnx")
    from gpunet.onnx import export_checkpoint

    return export_checkpoint(made / "run", made / "model.onnx")


@PROPERTY
@given(key=st.sampled_from(["gpunet.preprocessing", "gpunet.network", "gpunet.version"]),
       how=st.sampled_from(["remove", "not json", "retype", "cut"]), value=JSON_VALUES)
def test_hand_edited_onnx_metadata_is_read_or_refused_by_field(exported, tmp_path, key, how, value):
    import onnx

    from gpunet.onnx import OnnxFileError, metadata

    model = onnx.load(str(exported))
    props = {p.key: p.value for p in model.metadata_props}
    if how == "remove":
        del props[key]
    elif how == "not json":
        props[key] = props[key][:-1]
    elif how == "retype":
        props[key] = json.dumps(value)
    else:
        props[key] = props[key][: len(props[key]) // 2]
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, props)
    path = tmp_path / "edited.onnx"
    path.write_bytes(model.SerializeToString())
    try:
        found = metadata(path)
    except OnnxFileError as exc:
        assert_clean(exc, path, [key])
    else:
        assert isinstance(found["network"], dict) and isinstance(found["version"], str)


def test_an_onnx_file_gpunet_did_not_write_is_refused_by_name(exported, tmp_path):
    import onnx

    from gpunet.onnx import OnnxFileError, metadata

    (tmp_path / "junk.onnx").write_bytes(b"\x08\x07junk that is no protobuf \xff\xff")
    with pytest.raises(OnnxFileError, match=r"junk.onnx: not a readable ONNX file"):
        metadata(tmp_path / "junk.onnx")
    model = onnx.load(str(exported))
    del model.metadata_props[:]
    onnx.save(model, str(tmp_path / "bare.onnx"))
    with pytest.raises(OnnxFileError, match=r"bare.onnx: the metadata has no field gpunet.preprocessing"):
        metadata(tmp_path / "bare.onnx")
    with pytest.raises(OnnxFileError, match=r"missing.onnx: no such file"):
        metadata(tmp_path / "missing.onnx")


# --- the one helper, and the messages it makes ------------------------------------------------------


def test_field_names_the_file_the_field_and_what_was_expected():
    where = "run/model.npz"
    assert field({"a": 3}, "a", int, where) == 3
    assert field({"a": 3}, "a", float, where) == 3  # a JSON number
    assert field({}, "a", int, where, default=None) is None
    cases = [
        (({"a": True}, "a", int), r"run/model.npz: the record's a must be an integer; got True"),
        (({"a": 1.5}, "a", (int, type(None))), r"the record's a must be an integer or null; got 1.5"),
        (({"a": "1"}, "a", float), r"a must be a number; got '1'"),
        (({}, "a", int), r"run/model.npz: the record has no field a"),
        (([1], "a", int), r"run/model.npz: the record must be a JSON object; got \[1\]"),
        (({"a": "x" * 200}, "a", int), r"got 'x{76}\.\.\.$"),
    ]
    for (record, key, kind), match in cases:
        with pytest.raises(ValueError, match=match):
            field(record, key, kind, where)
    with pytest.raises(CheckpointError, match=r"m.npz: the header's meta.position must be a JSON object; got 3"):
        field(3, "row", int, "m.npz", error=CheckpointError, owner="the header", label="meta.position.")


def test_checkpoint_metadata_is_checked_where_present(made, tmp_path):
    header = header_of(made / "run" / "model.npz")
    header["meta"]["early_stopping"]["stopped"] = "no"
    with_header(made / "run" / "model.npz", tmp_path / "m.npz", header)
    with pytest.raises(CheckpointError, match=r"m.npz: the header's meta.early_stopping.stopped must be true or "
                                              r"false; got 'no'"):
        load_checkpoint(tmp_path / "m.npz")
    net, opt, _ = load_checkpoint(made / "run" / "model.npz")
    save_checkpoint(tmp_path / "bare.npz", net, opt, {})  # fields it does not hold are the caller's to ask for
    assert load_checkpoint(tmp_path / "bare.npz")[2] == {}
    with pytest.raises(CheckpointError, match=r"bare.npz: the header has no field meta.train_config"):
        model_and_test_data(tmp_path / "bare.npz")


def test_predict_refuses_a_recorded_pixel_scaling_it_does_not_know(made, tmp_path):
    header = header_of(made / "saved.npz")
    header["meta"]["preprocessing"]["pixels"] = "gray"
    with_header(made / "saved.npz", tmp_path / "m.npz", header)
    with pytest.raises(CheckpointError, match=r"m.npz: the header's meta.preprocessing.pixels must be one of "
                                              r"original, unit; got 'gray'"):
        predict_images(tmp_path / "m.npz", [])
    del header["meta"]["preprocessing"]  # a checkpoint from before it was recorded: the article's scaling
    with_header(made / "saved.npz", tmp_path / "old.npz", header)
    assert predict_images(tmp_path / "old.npz", []) == []
