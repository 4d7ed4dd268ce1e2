"""The few precise errors fmri_ica raises.

Every message names the parameter or file, what was expected, what was received,
and what to do about it. Each class carries the exit status the ``fmri-ica`` command
line gives it (``exit_code``; the table is in ``fmri-ica --help``).
"""

__all__ = [
    "FmriIcaError",
    "InvalidParameterError",
    "InputDataError",
    "AtlasUnavailableError",
    "OutputBusyError",
]


class FmriIcaError(Exception):
    """Base class of every error raised on purpose by fmri_ica."""

    #: Exit status of ``fmri-ica`` when this error ends a command.
    exit_code = 1


class InvalidParameterError(FmriIcaError, ValueError):
    """A parameter (function argument, CLI option or config key) has an invalid value."""

    exit_code = 2


class InputDataError(FmriIcaError, ValueError):
    """An input file or array is missing, unreadable or has unusable content."""

    exit_code = 3


class AtlasUnavailableError(FmriIcaError, RuntimeError):
    """An atlas cannot be obtained here (e.g. it needs a download and there is no network)."""

    exit_code = 3


class OutputBusyError(FmriIcaError, RuntimeError):
    """Another process is writing the same output (a lock is held)."""

    exit_code = 5
