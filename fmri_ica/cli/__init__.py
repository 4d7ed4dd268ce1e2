"""The ``fmri-ica`` command line.

Every module in this package that defines ``add_arguments(parser)`` and ``run(args)``
is a subcommand; its docstring is its help. The CLI only parses arguments and calls
the library.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from .. import __version__
from .._utils import configure_logging
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


def main(argv: list[str] | None = None) -> int:
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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
