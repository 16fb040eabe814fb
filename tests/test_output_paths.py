"""files.output_path, the one decision on whether an output path may be written."""

import os

import pytest

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
