"""One error hierarchy for the toolkit: every expected failure derives from :class:`SegError`.

Each subclass also keeps its builtin base (ValueError, RuntimeError, ...), so code that caught the
builtin type before still does; the command-line tools (seg.cli) print any SegError as one line.
This module imports nothing from seg, so every layer (nn, models, data, engine, ...) can use it.
``tests/test_one_of_each.py`` lists every ``raise`` of a builtin exception in seg/ and allows only a few
documented programmer-error cases.
"""
from __future__ import annotations

__all__ = ["SegError", "ConfigError", "DataError", "InputError", "UnsupportedError", "MissingFileError",
           "WorkDirError", "ResultFileError"]


class SegError(Exception):
    """Base of every expected error; its message names the file or key and what is wrong."""


class ConfigError(SegError, ValueError):
    """A config file, key, override or option is invalid; the message names which and why."""


class DataError(SegError, ValueError):
    """Bad dataset content: unpaired files, corrupt images, size mismatches, invalid label values."""


class InputError(SegError, ValueError):
    """A value passed to a library function is unusable (a shape, a range, an unknown name); the message
    names the argument and the value."""


class UnsupportedError(SegError, TypeError):
    """An object of a kind seg cannot work with (an optimizer without a device skip flag, a dataset without
    a length); the message names its type."""


class MissingFileError(SegError, FileNotFoundError):
    """A file or folder seg needs is not there; the message names the path and how to get it."""


class WorkDirError(SegError, RuntimeError):
    """A work dir is in use by another job, holds another run, or cannot be used."""


class ResultFileError(SegError, ValueError):
    """A results file (`seg eval` JSON) is missing, not JSON, or lacks an entry; the message names it."""
