"""One default per setting in every entry point, and CLI tables that fit 100 columns."""

from __future__ import annotations

import pytest

from fmri_ica.cli import build_parser, main
from fmri_ica.cli.atlases import format_table
from fmri_ica.cli.parcellate import cleaning_options
from fmri_ica.config import DEFAULTS


def _parcellate_args(*extra):
    return build_parser().parse_args(["parcellate", "root", "--out", "o", *extra])


def test_parcellate_cleans_like_the_pipeline_by_default():
    """`fmri-ica parcellate` and `fmri-ica run` give the same time series unless told otherwise."""
    args = _parcellate_args()
    assert cleaning_options(args) == DEFAULTS["parcellation"]
    assert args.atlas == DEFAULTS["atlas"]["name"]


def test_parcellate_options_turn_each_step_off():
    args = _parcellate_args(
        "--confounds-strategy",
        "none",
        "--high-pass",
        "none",
        "--no-detrend",
        "--standardize",
        "none",
        "--low-pass",
        "0.1",
    )
    options = cleaning_options(args)
    assert options["confounds_strategy"] is None
    assert options["high_pass"] is None
    assert options["detrend"] is False
    assert options["standardize"] is None
    assert options["low_pass"] == 0.1


def test_parcellate_rejects_a_bad_frequency(capsys):
    with pytest.raises(SystemExit) as stop:
        _parcellate_args("--high-pass", "fast")
    assert stop.value.code == 2
    assert "--high-pass" in capsys.readouterr().err


def test_atlases_table_fits_100_columns(capsys):
    assert main(["atlases"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert max(map(len, lines)) <= 100
    # wrapped, not cut: the longest licence is all there
    text = " ".join(" ".join(lines).split())
    assert "see the ICBM 2009 copyright notice" in text


def test_format_table_wraps_the_widest_column_and_keeps_every_word():
    long = "word " * 60
    rows = [{"name": "a", "n": 7, "note": long.strip()}, {"name": "bb", "n": 300, "note": "short"}]
    lines = format_table(rows, width=40).splitlines()
    assert max(map(len, lines)) <= 40
    assert lines[0].split() == ["name", "n", "note"]
    assert " ".join(lines).split().count("word") == 60
    # numbers right-aligned under their header
    assert lines[1].index("7") == lines[-1].index("300") + 2
