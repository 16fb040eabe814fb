"""files.output_path, the one decision on whether an output path may be written."""

import os

import numpy as np
import pytest

import gpunet
from gpunet.files import output_path


def test_a_new_name_in_an_existing_folder_is_written(tmp_path):
    assert output_path(tmp_path / "a.npz") == (tmp_path / "a.npz").resolve()


def test_an_existing_file_is_refused_unless_overwrite(tmp_path):
    f = tmp_path / "a.npz"
    f.write_text("mine")
    with pytest.raises(FileExistsError, match=r"a\.npz already exists; pass overwrite=True"):
        output_path(f)
    assert output_path(f, overwrite=True) == f.resolve()
    assert f.read_text() == "mine"


@pytest.mark.parametrize("kind", ["dangling", "loop"])
def test_a_link_to_nothing_is_refused_even_with_overwrite(tmp_path, kind):
    link = tmp_path / "out.npz"
    link.symlink_to(link if kind == "loop" else tmp_path / "missing")
    with pytest.raises(FileExistsError, match="out.npz is a symbolic link to nothing"):
        output_path(link, overwrite=True)


def test_a_link_is_decided_on_its_target(tmp_path):
    f = tmp_path / "model.npz"
    f.write_text("mine")
    link = tmp_path / "latest.npz"
    link.symlink_to(f)
    with pytest.raises(FileExistsError, match="latest.npz already exists"):
        output_path(link)
    assert output_path(link, overwrite=True) == f.resolve()


@pytest.mark.parametrize("how", ["same", "symlink", "hardlink"])
def test_an_input_of_the_command_is_refused_even_with_overwrite(tmp_path, how):
    f = tmp_path / "model.npz"
    f.write_text("mine")
    out = f
    if how == "symlink":
        out = tmp_path / "link.npz"
        out.symlink_to(f)
    elif how == "hardlink":
        out = tmp_path / "hard.npz"
        os.link(f, out)
    with pytest.raises(ValueError, match=r"is also an input of this command \(.*model\.npz\)"):
        output_path(out, overwrite=True, inputs=[f])


def test_a_folder_and_a_missing_folder_are_refused(tmp_path):
    with pytest.raises(IsADirectoryError, match="is a folder; expected the name of a file"):
        output_path(tmp_path, overwrite=True)
    with pytest.raises(FileNotFoundError, match="no: no such folder"):
        output_path(tmp_path / "no" / "x.npz")


# --- every writer decides its path with output_path ---------------------------------------------

def _net():
    return gpunet.Network([4, 3, 2], backend="numpy")


def _plots(folder, **kwargs):
    pytest.importorskip("matplotlib")
    from gpunet.plots import plot_all

    records = [{"epoch": 1, "train_loss": 0.5, "test_loss": 0.6, "test_accuracy": 0.5}]
    return plot_all(records, np.eye(2, dtype=int), np.zeros((4, 3)), folder, **kwargs)


def _export(path, **kwargs):
    pytest.importorskip("onnx")
    from gpunet.onnx import export

    return export(_net(), path, **kwargs)


WRITERS = {  # a writer of one file: (write it to path, with keywords)
    "save": lambda path, **kw: gpunet.save(_net(), path, **kw),
    "export": _export,
    "plot": lambda path, **kw: _plots(path.parent, **kw),
}


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_every_writer_refuses_an_existing_file_unless_overwrite(tmp_path, writer):
    path = tmp_path / ("curves.png" if writer == "plot" else "out.bin")
    path.write_bytes(b"mine")
    with pytest.raises(FileExistsError, match=r"already exists; pass overwrite=True"):
        WRITERS[writer](path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name] and path.read_bytes() == b"mine"
    WRITERS[writer](path, overwrite=True)
    assert path.read_bytes() != b"mine"


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_every_writer_refuses_a_link_to_nothing(tmp_path, writer):
    path = tmp_path / ("curves.png" if writer == "plot" else "out.bin")
    path.symlink_to(tmp_path / "gone")
    with pytest.raises(FileExistsError, match="is a symbolic link to nothing"):
        WRITERS[writer](path, overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == [path.name] and not (tmp_path / "gone").exists()


def test_export_never_writes_over_the_checkpoint_it_reads(tmp_path):
    pytest.importorskip("onnx")
    from gpunet.onnx import export_checkpoint

    gpunet.save(_net(), tmp_path / "model.npz")
    (tmp_path / "link.onnx").symlink_to(tmp_path / "model.npz")
    before = (tmp_path / "model.npz").read_bytes()
    for out in ("model.npz", "link.onnx"):
        with pytest.raises(ValueError, match=r"is also an input of this command \(.*model.npz\)"):
            export_checkpoint(tmp_path, tmp_path / out, overwrite=True)
    assert (tmp_path / "model.npz").read_bytes() == before
    assert export_checkpoint(tmp_path / "model.npz", tmp_path / "m.onnx") == (tmp_path / "m.onnx").resolve()


def test_plots_never_write_over_their_inputs_and_write_nothing_when_one_is_refused(tmp_path):
    (tmp_path / "metrics.jsonl").write_text("{}\n")
    (tmp_path / "weights.png").symlink_to(tmp_path / "metrics.jsonl")
    with pytest.raises(ValueError, match=r"weights.png is also an input of this command \(.*metrics.jsonl\)"):
        _plots(tmp_path, overwrite=True, inputs=[tmp_path / "metrics.jsonl"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl", "weights.png"]  # not even curves.png
    assert (tmp_path / "metrics.jsonl").read_text() == "{}\n"


def test_a_plot_folder_made_for_refused_plots_is_removed(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    import gpunet.plots

    def refuse(path, **kwargs):
        raise FileExistsError(f"{path}: refused")

    monkeypatch.setattr(gpunet.plots, "output_path", refuse)
    with pytest.raises(FileExistsError, match="curves.png: refused"):
        _plots(tmp_path / "new")
    assert list(tmp_path.iterdir()) == []
