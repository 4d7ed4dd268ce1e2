"""The ``fmri-ica`` command line.

Every module in this package that defines ``add_arguments(parser)`` and ``run(args)``
is a subcommand; its docstring is its help. The CLI only parses arguments and calls
the library.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import pkgutil
import select
import shlex
import sys
import traceback
from pathlib import Path

from .. import __version__
from .._utils import command_line, configure_logging
from ..exceptions import FmriIcaError

# Exit statuses (the table below is printed by ``fmri-ica --help``). fmri_ica's own errors
# carry theirs (``FmriIcaError.exit_code``: 2 parameter or config, 3 input data, 5 busy).
EXIT_FAILED = 1  # some runs failed (parcellate), or an unexpected error (with its traceback)
EXIT_OS = 4  # the operating system refused a read or write (OSError)
EXIT_INTERRUPTED = 130  # Ctrl-C: 128 + SIGINT, as the shell reports it

#: Environment variable that turns on ``--debug`` (tracebacks) for every command.
DEBUG_VARIABLE = "FMRI_ICA_DEBUG"

EXIT_STATUS_HELP = f"""\
exit status:
  0      success
  1      some runs failed (see the summary and *_failures.tsv), or an unexpected
         error, shown with its traceback: please report it
  2      invalid command line or configuration value (the message names the key)
  3      input data missing, unreadable or unusable (the message names the file)
  4      the operating system refused to read or write a file: permission denied,
         disk full, read-only file system, a file where a folder is needed
  5      another process is writing this output (it holds the lock): wait for it,
         or choose another output folder
  130    interrupted (Ctrl-C)
  141    the reader of the output went away (e.g. '| head')
  128+N  stopped by signal N, e.g. 143 for SIGTERM (training saves its state:
         run the same command again to continue)

Errors are reported in one line on stderr; --debug (or {DEBUG_VARIABLE}=1) adds the
traceback."""


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
        epilog=EXIT_STATUS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"fmri_ica {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=1, help="more log output")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings only")
    parser.add_argument("--debug", action="store_true",
                        help=f"show the traceback of an error (also: {DEBUG_VARIABLE}=1)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in _subcommands().items():
        doc = (module.__doc__ or "").strip()
        summary = doc.splitlines()[0] if doc else ""
        command = sub.add_parser(
            name, help=summary, description=doc, epilog=EXIT_STATUS_HELP,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(command)
        # also after the command (fmri-ica run c.yaml --debug); SUPPRESS keeps a --debug
        # given before it
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                             help="show the traceback of an error")
        command.set_defaults(_run=module.run)
    return parser


#: Exit status after the reader of stdout went away (``fmri-ica atlases | head``): 128 +
#: SIGPIPE, what the shell reports for ``cat``, ``ls`` or ``yes`` in that place, so
#: ``set -o pipefail`` scripts see the same thing as with other tools.
EXIT_BROKEN_PIPE = 141


def main(argv: list[str] | None = None) -> int:
    """Run ``fmri-ica`` with ``argv`` (default: ``sys.argv[1:]``); return the exit status.

    The one error boundary: fmri_ica's errors (:mod:`fmri_ica.exceptions`), the operating
    system's refusals (``OSError``: permission, disk full, read-only...) and Ctrl-C end the
    command with one line on stderr and the exit status of :data:`EXIT_STATUS_HELP`
    (``--debug`` or ``FMRI_ICA_DEBUG=1`` add the traceback). Any other exception is a bug
    and keeps its traceback.
    """
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
    debug = args.debug or os.environ.get(DEBUG_VARIABLE, "").strip().lower() in ("1", "true", "yes")
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt as error:
        return _report(args.command, error, "interrupted", EXIT_INTERRUPTED, debug)
    except (FmriIcaError, OSError) as error:
        if isinstance(error, BrokenPipeError) or (isinstance(error, OSError) and error.errno is None):
            raise  # stdout's reader left (main handles it); no errno: not the OS's refusal
        message = str(error) if isinstance(error, FmriIcaError) else describe_os_error(error)
        return _report(args.command, error, f"error: {message}", exit_status(error), debug)


def exit_status(error: BaseException) -> int:
    """The documented exit status of an error that ends a command (see ``fmri-ica --help``)."""
    if isinstance(error, FmriIcaError):
        return error.exit_code
    if isinstance(error, OSError):
        return EXIT_OS
    if isinstance(error, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    return EXIT_FAILED


def _report(command: str, error: BaseException, text: str, status: int, debug: bool) -> int:
    """One line on stderr (after the traceback with ``--debug``); returns ``status``."""
    sys.stdout.flush()
    if debug:
        traceback.print_exception(error)
    print(f"fmri-ica {command}: {text}", file=sys.stderr)
    return status


#: What to do about the operating system's refusals, by errno.
_OS_ADVICE = {
    errno.EACCES: "permission denied: check its owner and permissions, or choose another folder",
    errno.EPERM: "operation not permitted: check its owner and permissions, or choose another folder",
    errno.ENOSPC: "no space left on the device: free some space, or write the output elsewhere",
    errno.EDQUOT: "disk quota exceeded: free some space, or write the output elsewhere",
    errno.EROFS: "read-only file system: choose an output folder you can write to",
    errno.EISDIR: "is a folder where a file is expected: remove or rename it, or choose another path",
    errno.ENOTDIR: "a part of this path is not a folder: choose another path",
    errno.EEXIST: "already exists",
    errno.ENOENT: "no such file or folder (was it moved or deleted?)",
    errno.ENAMETOOLONG: "file name too long: choose a shorter path",
    errno.EMFILE: "too many open files: raise the limit (ulimit -n) or use fewer jobs",
    errno.EIO: "input/output error: the disk or network file system failed; check it and retry",
}


def describe_os_error(error: OSError) -> str:
    """One line naming the file (or the folder being written) and what to do."""
    name = errno.errorcode.get(error.errno, str(error.errno))
    reason = f"[{name}: {error.strerror or error}]"
    path = error.filename if error.filename is not None else _path_in_traceback(error)
    if path is None:
        return f"{_OS_ADVICE.get(error.errno, error.strerror or str(error))} {reason}"
    path = Path(os.fsdecode(path))
    making_folder = error.errno == errno.EEXIST and _innermost_function(error) in ("mkdir", "makedirs")
    blocking = _file_in_the_way(path) if error.errno == errno.ENOTDIR or making_folder else None
    if blocking == path:
        return (f"{str(path)!r} is a file where a folder is needed: remove or rename it, or "
                f"choose another output folder {reason}")
    if blocking is not None:
        return (f"{str(blocking)!r} is a file, not a folder, so {str(path)!r} cannot be created: "
                f"remove or rename that file, or choose another output folder {reason}")
    if path.name.startswith(".") and path.suffixes and error.filename is None:
        path = path.parent  # an atomic write's temporary file: its folder is what matters
        return f"writing in {str(path)!r}: {_OS_ADVICE.get(error.errno, error.strerror)} {reason}"
    return f"{str(path)!r}: {_OS_ADVICE.get(error.errno, error.strerror)} {reason}"


def _file_in_the_way(path: Path) -> Path | None:
    """``path`` or the nearest of its parents that exists as a non-folder, if any."""
    for candidate in (path, *path.parents):
        if os.path.lexists(candidate):
            return None if candidate.is_dir() else candidate
    return None


def _innermost_function(error: BaseException) -> str | None:
    tb = error.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return None if tb is None else tb.tb_frame.f_code.co_name


def _path_in_traceback(error: BaseException):
    """The file an OSError without a file name (e.g. ENOSPC while writing) was about: the
    innermost ``path``-like local variable of the frames it came through, or None."""
    found = None
    tb = error.__traceback__
    while tb is not None:
        local = tb.tb_frame.f_locals
        for name in ("path", "tmp", "tmp_path", "file", "filename"):
            if isinstance(local.get(name), (str, os.PathLike)):
                found = local[name]
                break
        tb = tb.tb_next
    return found


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
