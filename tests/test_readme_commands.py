"""Every command that README.md and docs/*.md show runs as written (issue 11).

The commands are read from the shell code (fenced ``bash``/``sh``/``console``/unlabelled
blocks, indented blocks, inline code spans). Each ``fmri-ica ...`` command is parsed in
full by the real argument parser (a missing ``--out`` or a renamed option fails), its
subcommand's ``--help`` exits 0, and the cheap ones run in full. ``python
benchmarks/*.py ...`` commands are parsed by their script's own parser, without running.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

from fmri_ica.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_SHELL = {"", "bash", "sh", "shell", "console"}
_FENCE = re.compile(r"^\s*```\s*([\w+-]*)")
_INLINE = re.compile(r"`([^`\n]+)`")
_SEPARATORS = {"&&", "||", "|", ";", ">", ">>", "2>", "&"}
# Documented commands that take seconds: run in full, not only parsed.
_CHEAP = {("atlases",)}


@dataclass(frozen=True)
class Command:
    where: str  # file:line
    argv: tuple[str, ...]  # after the program name
    program: str  # "fmri-ica" or a benchmarks/ script path
    inline: bool  # from a code span in prose


def _code_lines(text: str):
    """``(line number, line, inline)`` of the shell code in a Markdown text."""
    fence = None  # the open fence's language, or None outside fences
    in_indented = False
    previous_blank = True
    for number, line in enumerate(text.splitlines(), 1):
        opened = _FENCE.match(line)
        if opened and fence is None:
            fence = opened.group(1).lower()
            continue
        if fence is not None:
            if line.strip().startswith("```"):
                fence = None
            elif fence in _SHELL:
                yield number, line, False
            continue
        indented = line.startswith("    ") or line.startswith("\t")
        in_indented = indented and (in_indented or previous_blank)
        if in_indented:
            yield number, line, False
        else:
            for span in _INLINE.findall(line):
                yield number, span, True
        previous_blank = not line.strip()


def _logical_lines(document: Path):
    """Code lines with backslash continuations joined: ``(line number, text, inline)``."""
    pending, start = "", None
    for number, line, inline in _code_lines(document.read_text()):
        text = line.strip()
        if text.startswith("$ "):
            text = text[2:]
        if text.endswith("\\") and not inline:
            pending, start = pending + text[:-1] + " ", start or number
            continue
        yield start or number, pending + text, inline
        pending, start = "", None


def _commands_in(tokens: list[str], where: str, inline: bool):
    for i, token in enumerate(tokens):
        if token.startswith("fmri-ica "):  # quoted, e.g. sbatch --wrap "fmri-ica ..."
            yield from _commands_in(shlex.split(token), where, inline)
        elif token == "fmri-ica" or (
            token == "python" and i + 1 < len(tokens) and tokens[i + 1].startswith("benchmarks/")
        ):
            first = i + 1 if token == "fmri-ica" else i + 2
            rest = []
            for arg in tokens[first:]:
                if arg in _SEPARATORS:
                    break
                rest.append(arg)
            program = token if token == "fmri-ica" else tokens[i + 1]
            yield Command(where, tuple(rest), program, inline)


def _documented_commands() -> list[Command]:
    commands = []
    for document in DOCUMENTS:
        for number, text, inline in _logical_lines(document):
            if "fmri-ica" not in text and "benchmarks/" not in text:
                continue
            try:
                tokens = shlex.split(text, comments=True)
            except ValueError:  # an unbalanced quote in prose: take what follows fmri-ica
                tokens = shlex.split(text[text.index("fmri-ica") :].replace('"', ""), comments=True)
            where = f"{document.relative_to(ROOT)}:{number}"
            commands.extend(_commands_in(tokens, where, inline))
    return commands


COMMANDS = _documented_commands()
FMRI_ICA = [c for c in COMMANDS if c.program == "fmri-ica"]
SCRIPTS = [c for c in COMMANDS if c.program != "fmri-ica"]


def _subcommand_path(argv: tuple[str, ...]) -> tuple[str, ...]:
    """The (nested) subcommand names at the start of ``argv``, global options skipped."""
    parser, path = build_parser(), []
    for token in argv:
        if token.startswith("-") and not path:
            continue
        choices = next(
            (a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction)),
            None,
        )
        if not choices or token not in choices:
            break
        parser = choices[token]
        path.append(token)
    return tuple(path)


def _name_only(command: Command) -> bool:
    """A code span in prose that only names a command (``fmri-ica benchmark fmri``)."""
    return command.inline and len(_subcommand_path(command.argv)) == len(command.argv)


def test_the_documents_are_read():
    """The extractor finds the kinds of command we know are there, so it cannot pass by
    finding none: the first screen's demo, inline spans, a quoted ``--wrap`` command,
    backslash-continued lines and the benchmarks/ scripts."""
    readme = [c.argv for c in FMRI_ICA if c.where.startswith("README.md:")]
    assert ("demo",) in readme
    assert any(argv[:2] == ("benchmark", "synthetic") for argv in readme)
    assert any(argv[:1] == ("run",) and "--shard" in argv for argv in readme)
    assert any(c.where.startswith("docs/") and len(c.argv) > 12 for c in FMRI_ICA)
    assert any(c.program.startswith("benchmarks/") for c in SCRIPTS)
    assert _CHEAP <= {c.argv for c in FMRI_ICA}


@pytest.mark.parametrize(
    "command", [c for c in FMRI_ICA if not _name_only(c)], ids=lambda c: c.where
)
def test_documented_command_parses(command, capsys):
    """As written, with the real parser: required options present, options and choices exist."""
    try:
        args = build_parser().parse_args(list(command.argv))
    except SystemExit as stop:
        error = capsys.readouterr().err.strip().splitlines()[-1:]
        shown = " ".join(command.argv)
        pytest.fail(f"{command.where}: `fmri-ica {shown}` exits {stop.code}: {error}")
    if getattr(args, "benchmark", None) == "synthetic":
        _check_synthetic_names(args)


def _check_synthetic_names(args):
    """Names the parser takes as free text but the benchmark checks when it runs."""
    from fmri_ica.benchmark.synthetic import MODELS, PROFILES
    from fmri_ica.data.synthetic import DATASETS
    from fmri_ica.saliency.methods import METHODS

    assert args.profile in PROFILES
    assert set(args.datasets or ()) <= set(DATASETS)
    assert set(args.models or ()) <= set(MODELS)
    assert set(args.methods or ()) <= set(METHODS)


@pytest.mark.parametrize("path", sorted({_subcommand_path(c.argv) for c in FMRI_ICA}), ids=" ".join)
def test_documented_subcommand_help(path, capsys):
    with pytest.raises(SystemExit) as stop:
        main([*path, "--help"])
    assert stop.value.code == 0
    assert f"usage: fmri-ica {' '.join(path)}".strip() in capsys.readouterr().out


@pytest.mark.parametrize("argv", sorted({c.argv for c in FMRI_ICA if c.argv in _CHEAP}))
def test_cheap_commands_run_in_full(argv, capsys):
    assert main(list(argv)) == 0
    assert capsys.readouterr().out.strip()


@pytest.mark.parametrize("command", SCRIPTS, ids=lambda c: c.where)
def test_documented_script_parses(command, monkeypatch, capsys):
    """``python benchmarks/X.py ARGS``: the script exists and its parser accepts ARGS."""
    script = ROOT / command.program
    assert script.is_file(), f"{command.where}: {command.program} does not exist"

    class Parsed(Exception):
        pass

    def parse_and_stop(self, args=None, namespace=None):
        raise Parsed(parse(self, args, namespace))

    parse = argparse.ArgumentParser.parse_args
    spec = importlib.util.spec_from_file_location(f"_doc_{script.stem}", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr("sys.argv", [str(script), *command.argv])
    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_and_stop)
    try:
        module.main()
    except Parsed:
        return
    except SystemExit as stop:
        error = capsys.readouterr().err.strip().splitlines()[-1:]
        pytest.fail(f"{command.where}: {command.program} exits {stop.code}: {error}")
    pytest.fail(f"{command.where}: {command.program} never parsed its arguments")


def _help_examples() -> list[tuple[str, tuple[str, ...]]]:
    """``fmri-ica ...`` lines under "Examples:" in each subcommand's help (its docstring)."""
    from fmri_ica.cli import _subcommands

    examples = []
    for name, module in _subcommands().items():
        doc = module.__doc__ or ""
        if "Examples:" not in doc:
            continue
        for line in doc.split("Examples:", 1)[1].replace("\\\n", " ").splitlines():
            if line.strip().startswith("fmri-ica "):
                examples.append((name, tuple(shlex.split(line, comments=True)[1:])))
    return examples


def test_help_examples_parse(capsys):
    examples = _help_examples()
    assert len({name for name, _ in examples}) >= 5
    for name, argv in examples:
        try:
            build_parser().parse_args(list(argv))
        except SystemExit:
            error = capsys.readouterr().err.strip().splitlines()[-1:]
            pytest.fail(f"`fmri-ica {name}` help example `{' '.join(argv)}` fails: {error}")
