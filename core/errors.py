"""User-facing error types.

A ``UserError`` means "the user gave us something wrong" (bad file, bad line, bad field): CLIs print
its message as ``error: <msg>`` and exit with status 2, without a traceback. The message must name the
file/line/field and say what was expected. Bugs stay ordinary exceptions (with tracebacks).
"""

from __future__ import annotations

__all__ = ["CheckpointError", "ConfigError", "DataError", "DecodingError", "UserError"]


class UserError(Exception):
    """A mistake the user can fix; the message is shown verbatim after ``error:``."""


class CheckpointError(UserError):
    """A checkpoint file/URL is missing, truncated, unsafe, not a checkpoint or for another task."""


class DataError(UserError):
    """An input data file is missing or malformed (message names file and line/field)."""


class ConfigError(UserError, ValueError):
    """A configuration value is invalid (message names the field and the expected values).

    Also a ``ValueError``, so library callers that catch the usual "bad argument" error still do.
    """


class DecodingError(UserError):
    """A model gave no usable output for an input (e.g. every score NaN); the message names the input."""
