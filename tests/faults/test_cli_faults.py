"""Fault corpus, the error boundary: each kind of failure has its documented exit status and
one line on stderr; --debug or FMRI_ICA_DEBUG=1 add the traceback; bugs keep theirs."""

from __future__ import annotations

import errno
import gzip
import os
import subprocess
import sys

import pytest
from _faults import assert_one_line_error

from fmri_ica import exceptions
from fmri_ica.cli import EXIT_STATUS_HELP, exit_status


@pytest.mark.parametrize(("error", "status"), [
    (exceptions.FmriIcaError("x"), 1),
    (exceptions.InvalidParameterError("x"), 2),
    (exceptions.InputDataError("x"), 3),
    (exceptions.AtlasUnavailableError("x"), 3),
    (PermissionError(errno.EACCES, "Permission denied", "f"), 4),
    (OSError(errno.ENOSPC, "No space left on device"), 4),
    (exceptions.OutputBusyError("x"), 5),
    (KeyboardInterrupt(), 130),
])
def test_each_kind_of_error_has_its_exit_status(error, status):
    assert exit_status(error) == status
    assert f"\n  {status} " in EXIT_STATUS_HELP  # and the help documents it


@pytest.mark.parametrize("argv", [["--help"], ["run", "--help"], ["parcellate", "--help"]])
def test_help_lists_the_exit_statuses(cli, argv):
    result = cli(*argv)
    assert result.code == 0
    assert "exit status:" in result.out and "FMRI_ICA_DEBUG=1" in result.out


def _raise(error):
    def stage(*args, **kwargs):
        raise error
    return stage


@pytest.fixture
def failing_run(monkeypatch, write_config, tmp_path):
    """``failing_run(error)``: the path of a config whose run raises ``error``."""
    import fmri_ica.pipeline

    def make(error):
        monkeypatch.setattr(fmri_ica.pipeline, "run_pipeline", _raise(error))
        return write_config({"output": str(tmp_path / "out")})

    return make


def test_interrupted_is_130_and_one_line(cli, failing_run):
    result = cli("run", failing_run(KeyboardInterrupt()))
    assert_one_line_error(result, 130, "interrupted", command="run")


def test_busy_output_is_5(cli, failing_run, tmp_path):
    lock = tmp_path / "out" / "train.lock"
    result = cli("run", failing_run(exceptions.OutputBusyError(f"{lock} is held by process 12 on node7")))
    assert_one_line_error(result, 5, str(lock), "node7")


def test_missing_stage_output_names_the_file(cli, failing_run, tmp_path):
    """e.g. a deleted evaluation.json: the OS error names it (exit 4), no traceback."""
    path = tmp_path / "out" / "models" / "m" / "evaluation.json"
    error = FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(path))
    line = assert_one_line_error(cli("run", failing_run(error)), 4, str(path), "ENOENT")
    assert "moved or deleted" in line


def test_environment_variable_shows_the_traceback(cli, failing_run, monkeypatch):
    monkeypatch.setenv("FMRI_ICA_DEBUG", "1")
    result = cli("run", failing_run(exceptions.InputDataError("bad.nii.gz is truncated")))
    assert result.code == 3
    assert "Traceback (most recent call last)" in result.err and "InputDataError" in result.err
    assert result.err.strip().splitlines()[-1] == "fmri-ica run: error: bad.nii.gz is truncated"


@pytest.mark.parametrize("error", [RuntimeError("a bug"), gzip.BadGzipFile("not gzip")])
def test_unexpected_errors_keep_their_traceback(cli, failing_run, error):
    """A bug (or an OSError without errno, which is no OS refusal) is not hidden."""
    with pytest.raises(type(error)):
        cli("run", failing_run(error))


def _fmri_ica(*argv, env=None):
    return subprocess.run([sys.executable, "-m", "fmri_ica.cli", *map(str, argv)], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, check=False, timeout=120)


def test_real_process_exit_status_and_stderr(write_config, tmp_path):
    path = write_config("training: {lr: '-1e-3'}\n")
    plain = _fmri_ica("run", path)
    assert plain.returncode == 2 and plain.stdout == ""
    assert plain.stderr == ("fmri-ica run: error: Invalid value for 'training.lr': '-1e-3' (in "
                            f"{path}). Expected a number > 0, e.g. 0.001.\n")
    for debug in (_fmri_ica("--debug", "run", path), _fmri_ica("run", path, env={"FMRI_ICA_DEBUG": "1"})):
        assert debug.returncode == 2
        assert debug.stderr.startswith("Traceback (most recent call last)")
        assert debug.stderr.endswith(plain.stderr)


def test_real_process_output_path_below_a_file(write_config, tmp_path):
    (tmp_path / "some_file").write_text("x")
    result = _fmri_ica("run", write_config({"output": str(tmp_path / "some_file" / "sub")}))
    assert result.returncode == 4 and "Traceback" not in result.stderr
    assert len(result.stderr.splitlines()) == 1 and str(tmp_path / "some_file") in result.stderr
