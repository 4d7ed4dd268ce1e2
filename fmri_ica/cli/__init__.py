"""The ``fmri-ica`` command line.

Every module in this package that defines ``add_arguments(parser)`` and ``run(args)``
is a subcommand; its docstring is its help. The CLI only parses arguments and calls
the library.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import select
import shlex
import sys

from .. import __version__
from .._utils import command_line, configure_logging
from ..exceptions import FmriIcaError


def _subcommands() -> dict[str, object]:
    modules = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(module, "add_arguments") and hasattr(module, "run"):
            modules[info.name.replace("_", "-")] = module
    return modules


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fmri-ica",
        description="fMRI + input-cell attention: train recurrent classifiers on task fMRI "
        "and map where and when in a scan the evidence for each task lies.",
    )
    parser.add_argument("--version", action="version", version=f"fmri_ica {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=1, help="more log output")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings only")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in _subcommands().items():
        doc = (module.__doc__ or "").strip()
        summary = doc.splitlines()[0] if doc else ""
        command = sub.add_parser(
            name, help=summary, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
        )
        module.add_arguments(command)
        command.set_defaults(_run=module.run)
    return parser


#: Exit status after the reader of stdout went away (``fmri-ica atlases | head``): 128 +
#: SIGPIPE, what the shell reports for ``cat``, ``ls`` or ``yes`` in that place, so
#: ``set -o pipefail`` scripts see the same thing as with other tools.
EXIT_BROKEN_PIPE = 141


def main(argv: list[str] | None = None) -> int:
    """Run ``fmri-ica`` with ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    token = command_line.set(shlex.join(["fmri-ica", *argv]))
    try:
        try:
            status = _main(argv)
        except SystemExit:  # --help, --version, usage errors, TrainingInterrupted
            sys.stdout.flush()
            raise
        sys.stdout.flush()  # a reader that left shows here, not in the flush at exit
        return status
    except BrokenPipeError:
        if not _stdout_closed():
            raise
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    finally:
        command_line.reset(token)


def _main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    configure_logging(0 if args.quiet else args.verbose)
    try:
        return int(args._run(args) or 0)
    except FmriIcaError as error:
        print(f"fmri-ica {args.command}: error: {error}", file=sys.stderr)
        return 1


def _stdout_closed() -> bool:
    """True if stdout is a pipe or socket whose reader has gone (not some other pipe's
    BrokenPipeError, e.g. from a worker process, which must keep its traceback)."""
    try:
        fd = sys.stdout.fileno()
        poller = select.poll()
    except (AttributeError, OSError, ValueError):  # no real file, or no poll (Windows)
        return True
    poller.register(fd, select.POLLOUT)
    return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))


def _silence_stdout() -> None:
    """Point stdout at devnull: Python flushes it again at exit, which would raise anew
    (the recipe of the Python docs, "Note on SIGPIPE")."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (AttributeError, OSError, ValueError):  # not a real file: nothing is flushed at exit
        pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
