"""Fault corpus, outputs: the operating system's refusals (a file in the way, read-only, no
permission, disk full) are one line naming the file or folder and what to do (exit 4)."""

from __future__ import annotations

import errno
import json
import os
import pathlib

import numpy as np
import pytest
from _faults import assert_one_line_error


def test_output_below_a_regular_file(cli, write_config, tmp_path):
    """A read-only output folder as root sees it: a path that cannot be created."""
    (tmp_path / "some_file").write_text("x")
    path = write_config({"output": str(tmp_path / "some_file" / "sub")})
    line = assert_one_line_error(cli("run", path), 4, str(tmp_path / "some_file"), "ENOTDIR")
    assert "is a file, not a folder" in line and "choose another output folder" in line


def test_output_that_is_a_file(cli, write_config, tmp_path):
    (tmp_path / "result").write_text("x")
    path = write_config({"output": str(tmp_path / "result")})
    line = assert_one_line_error(cli("run", path), 4, str(tmp_path / "result"))
    assert "is a file where a folder is needed" in line
    assert (tmp_path / "result").read_text() == "x"


def test_output_on_a_read_only_file_system(cli, write_config, tmp_path, monkeypatch):
    out = tmp_path / "out"

    def mkdir(self, *args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))

    monkeypatch.setattr(pathlib.Path, "mkdir", mkdir)
    line = assert_one_line_error(cli("run", write_config({"output": str(out)})), 4, str(out), "EROFS")
    assert "read-only file system" in line


def test_output_without_write_permission(cli, write_config, tmp_path, monkeypatch):
    import fmri_ica.pipeline

    def refuse(path, data):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

    monkeypatch.setattr(fmri_ica.pipeline, "write_json", refuse)
    result = cli("run", write_config({"output": str(tmp_path / "out")}))
    line = assert_one_line_error(result, 4, str(tmp_path / "out" / "config.json"), "EACCES")
    assert "permission denied" in line


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as write() raises it: no file name


def test_disk_full_while_writing_samples(cli, pipeline_copy, monkeypatch):
    config, out = pipeline_copy
    (out / ".stages" / "samples.json").unlink()
    monkeypatch.setattr(np, "savez_compressed", _disk_full)
    result = cli("run", config, "--output", out, "--stage", "samples")
    line = assert_one_line_error(result, 4, str(out / "samples" / "samples.npz"), "ENOSPC")
    assert "no space left" in line
    assert not (out / ".stages" / "samples.json").exists()  # not marked done
    assert not list((out / "samples").glob(".samples*"))  # no temporary file left


def test_disk_full_then_fixed_gives_the_clean_outputs(cli, pipeline_copy, monkeypatch, tiny_pipeline):
    config, out = pipeline_copy
    (out / ".stages" / "samples.json").unlink()
    with monkeypatch.context() as patch:
        patch.setattr(np, "savez_compressed", _disk_full)
        assert cli("run", config, "--output", out, "--stage", "samples").code == 4
    assert cli("run", config, "--output", out, "--stage", "samples").code == 0
    clean = tiny_pipeline.parent / "out" / "samples"
    for name in ("folds.json", "samples.json"):
        assert json.loads((out / "samples" / name).read_text()) == json.loads((clean / name).read_text())
    with np.load(out / "samples" / "samples.npz") as fixed, np.load(clean / "samples.npz") as reference:
        for key in reference.files:
            np.testing.assert_array_equal(fixed[key], reference[key])


def test_parcellate_out_that_is_a_file(cli, tmp_path):
    """parcellate checks its --out before any run: a bad option value (exit 2)."""
    from _fixtures_layouts import make_hcp_tree

    root = make_hcp_tree(tmp_path, dirs=("LR",))
    (tmp_path / "ts").write_text("x")
    assert_one_line_error(cli("parcellate", root, "--out", tmp_path / "ts"), 2, str(tmp_path / "ts"))


@pytest.mark.parametrize("argv", [["--debug", "run", "CONFIG"], ["run", "CONFIG", "--debug"]])
def test_debug_shows_the_traceback_and_the_line(cli, write_config, tmp_path, argv):
    (tmp_path / "some_file").write_text("x")
    path = write_config({"output": str(tmp_path / "some_file" / "sub")})
    result = cli(*[path if a == "CONFIG" else a for a in argv])
    assert result.code == 4
    assert "Traceback (most recent call last)" in result.err and "NotADirectoryError" in result.err
    assert result.err.strip().splitlines()[-1].startswith("fmri-ica run: error: ")
