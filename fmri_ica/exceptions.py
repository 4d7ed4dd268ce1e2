"""The few precise errors fmri_ica raises.

Every message names the parameter or file, what was expected, what was received,
and what to do about it.
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


class InvalidParameterError(FmriIcaError, ValueError):
    """A parameter (function argument, CLI option or config key) has an invalid value."""


class InputDataError(FmriIcaError, ValueError):
    """An input file or array is missing, unreadable or has unusable content."""


class AtlasUnavailableError(FmriIcaError, RuntimeError):
    """An atlas cannot be obtained here (e.g. it needs a download and there is no network)."""


class OutputBusyError(FmriIcaError, RuntimeError):
    """Another process is writing the same output (a lock is held)."""
