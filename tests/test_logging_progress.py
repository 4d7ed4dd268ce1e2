"""Tests of logging and progress bars: log lines above the bars, per-item lines at DEBUG
while a bar shows them, the package logger, a closed stdout pipe, and the SIGTERM advice."""

from __future__ import annotations

import io
import logging
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import fmri_ica
from fmri_ica._utils import (
    TqdmHandler,
    command_line,
    configure_logging,
    enable_logging,
    item_log_level,
    progress,
)
from fmri_ica.cli import EXIT_BROKEN_PIPE
from fmri_ica.exceptions import InvalidParameterError
from fmri_ica.saliency import sanity
from fmri_ica.training import TrainingInterrupted, fit


class Terminal(io.StringIO):
    """A stderr that says it is a terminal, so tqdm draws its bars into it."""

    def isatty(self) -> bool:
        return True


@pytest.fixture
def package_logger():
    """The ``fmri_ica`` logger, its handlers and level restored after the test."""
    logger = logging.getLogger("fmri_ica")
    handlers, level = logger.handlers[:], logger.level
    yield logger
    logger.handlers[:] = handlers
    logger.setLevel(level)


def _terminal(monkeypatch) -> Terminal:
    # in the test itself: pytest's capture sets sys.stderr again after the fixtures ran
    stream = Terminal()
    monkeypatch.setattr(sys, "stderr", stream)
    return stream


# --------------------------------------------------------------------------- package logger


def test_package_logger_has_a_null_handler_and_nothing_else_by_default():
    handlers = logging.getLogger("fmri_ica").handlers
    assert any(isinstance(h, logging.NullHandler) for h in handlers)
    assert fmri_ica.enable_logging is enable_logging and "enable_logging" in fmri_ica.__all__


def test_enable_logging_shows_info_once_and_replaces_its_handler(package_logger):
    stream = io.StringIO()
    enable_logging(stream=io.StringIO())
    enable_logging("info", stream=stream)  # a second call replaces the first handler
    assert sum(isinstance(h, TqdmHandler) for h in package_logger.handlers) == 1
    assert any(isinstance(h, logging.NullHandler) for h in package_logger.handlers)
    logging.getLogger("fmri_ica.training.loop").info("epoch 1/3")
    logging.getLogger("fmri_ica.training.loop").debug("a detail")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].endswith("INFO fmri_ica.training.loop: epoch 1/3")


def test_enable_logging_names_a_bad_level(package_logger):
    with pytest.raises(InvalidParameterError, match="'level'.*'LOUD'.*'DEBUG'"):
        enable_logging("loud")


@pytest.mark.parametrize(("verbosity", "level"), [(0, logging.WARNING), (1, logging.INFO),
                                                  (2, logging.DEBUG)])
def test_cli_logging_writes_through_tqdm(package_logger, verbosity, level):
    configure_logging(verbosity)
    assert package_logger.level == level
    assert [type(h) for h in package_logger.handlers if not isinstance(h, logging.NullHandler)] == [
        TqdmHandler
    ]


# --------------------------------------------------------------------------- bars and log lines


def test_log_lines_print_above_an_open_bar(package_logger, monkeypatch):
    terminal = _terminal(monkeypatch)
    configure_logging(1)
    log = logging.getLogger("fmri_ica.test")
    with progress(range(3), desc="demo-bar", enabled=True) as bar:
        for i in bar:
            if i == 1:
                log.info("line while the bar shows")
    text = terminal.getvalue()
    at = re.search(r"\d\d:\d\d:\d\d INFO fmri_ica.test: line while the bar shows\n", text).start()
    before, after = text[:at], text[at:]
    assert "demo-bar" in before  # the bar was drawn first ...
    start_of_line = before.rfind("\n") + 1
    # ... and cleared: the line starts on an empty row, not after the bar's text
    assert before[start_of_line:].rsplit("\r", 1)[-1].strip() == ""
    assert "demo-bar" in after.split("\n", 1)[1]  # the bar is drawn again below the line


@pytest.mark.parametrize(("enabled", "tty", "shown"), [(True, True, True), (True, False, False),
                                                       (False, True, False)])
def test_bar_only_in_a_terminal_and_item_lines_at_debug_beside_it(monkeypatch, enabled, tty,
                                                                  shown):
    stream = Terminal() if tty else io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    with progress(range(2), desc="items", enabled=enabled) as bar:
        assert item_log_level(bar) == (logging.DEBUG if shown else logging.INFO)
        list(bar)
    assert ("items" in stream.getvalue()) is shown


class _MeanModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.head = nn.Linear(3, 2)

    def forward(self, x, lengths=None):
        return self.head(x.mean(1))


def _toy(n=12):
    generator = torch.Generator().manual_seed(0)
    return torch.randn(n, 5, 3, generator=generator), torch.arange(n) % 2


@pytest.mark.parametrize(("show", "tty", "level"), [(True, True, logging.DEBUG),
                                                    (True, False, logging.INFO),
                                                    (False, True, logging.INFO)])
def test_epoch_lines_are_debug_while_the_bar_shows_them(monkeypatch, caplog, show, tty, level):
    monkeypatch.setattr(sys, "stderr", Terminal() if tty else io.StringIO())
    caplog.set_level(logging.DEBUG, logger="fmri_ica")
    x, y = _toy()
    fit(_MeanModel(), (x, y), (x, y), epochs=2, batch_size=4, progress=show, device="cpu")
    epochs = [r for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert [r.levelno for r in epochs] == [level, level]
    assert ("fit" in sys.stderr.getvalue()) is (show and tty)  # the bar itself
    summary = [r for r in caplog.records if r.getMessage().startswith("Trained 2 epochs")]
    assert [r.levelno for r in summary] == [logging.INFO]  # the end shows either way


# --------------------------------------------------------------------------- explain bar


def test_explain_bar_counts_every_fold_and_model(monkeypatch):
    terminal = _terminal(monkeypatch)
    variants = [["trained", "untrained-0", "permuted"], ["trained", "untrained-0"]]
    calls = []
    monkeypatch.setattr(sanity, "_variants",
                        lambda fold_dir, *a, **k: dict.fromkeys(variants[int(fold_dir.name)]))
    monkeypatch.setattr(sanity, "_saliency", lambda model, windows, *a: calls.append(1))
    monkeypatch.setattr(sanity, "_curves", lambda saliency, windows: {})
    monkeypatch.setattr(sanity, "_add_subject_maps", lambda *a: None)
    monkeypatch.setattr(sanity, "_removal", lambda *a: [])
    config = {"saliency": {"method": "saliency"}, "sanity": {}, "seed": 0,
              "training": {"selection": "best", "device": "cpu"}}
    folds = [(Path("0"), [0] * 4), (Path("1"), [0] * 3)]
    per_subject, _, kept, _ = sanity._explain_folds(folds, "toy", config, True)
    assert len(calls) == 5 and len(kept) == 2 and set(per_subject) == set(variants[0])
    text = terminal.getvalue()
    assert "explain[toy]" in text and "5/5" in text.rsplit("explain[toy]", 1)[1]

    terminal.seek(0)
    terminal.truncate()
    sanity._explain_folds(folds, "toy", config, False)
    assert "explain" not in terminal.getvalue()


# --------------------------------------------------------------------------- closed pipe


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX pipes")
@pytest.mark.parametrize("unbuffered", ["1", ""])
def test_a_reader_that_leaves_early_gives_no_traceback(unbuffered):
    # `fmri-ica atlases | head -0`: the reader is gone before the table is printed
    # (unbuffered: print raises; buffered: the flush at exit would)
    env = {**os.environ, "PYTHONUNBUFFERED": unbuffered}
    proc = subprocess.Popen([sys.executable, "-m", "fmri_ica.cli", "atlases"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()
    stderr = proc.stderr.read()
    proc.stderr.close()
    assert proc.wait(timeout=120) == EXIT_BROKEN_PIPE == 128 + signal.SIGPIPE, stderr
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr


# --------------------------------------------------------------------------- SIGTERM advice


class _SignallingData(torch.utils.data.Dataset):
    """Sends SIGUSR1 to this process at the ``at``-th item fetched, as SLURM would."""

    def __init__(self, x, y, at):
        self.x, self.y, self.at, self.calls = x, y, at, 0

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        self.calls += 1
        if self.calls == self.at:
            os.kill(os.getpid(), signal.SIGUSR1)
        return self.x[i], self.y[i]


@pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="needs POSIX signals")
@pytest.mark.parametrize(
    ("command", "resume", "expected", "absent"),
    [
        ("fmri-ica train demo.yaml --fold 0", True,
         "Run the same command again to continue from there: fmri-ica train demo.yaml --fold 0",
         "resume=True"),
        (None, True, "Run the same script again", "out_dir="),
        (None, False, "call fit(..., resume=True) with out_dir=", "same command"),
    ],
    ids=["cli", "api-resuming-caller", "api-fit"],
)
def test_sigterm_advice_fits_the_caller(tmp_path, caplog, command, resume, expected, absent):
    x, y = _toy()
    token = command_line.set(command)
    try:
        with pytest.raises(TrainingInterrupted) as info, caplog.at_level(logging.WARNING):
            fit(_MeanModel(), _SignallingData(x, y, at=6), (x, y), epochs=3, batch_size=4,
                progress=False, device="cpu", out_dir=tmp_path, resume=resume)
    finally:
        command_line.reset(token)
    warning = next(r.getMessage() for r in caplog.records if "Received SIGUSR1" in r.getMessage())
    for message in (warning, str(info.value)):
        assert expected in message and absent not in message, message
    assert info.value.code == 128 + signal.SIGUSR1
