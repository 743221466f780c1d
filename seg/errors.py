"""One error hierarchy for the toolkit: every expected failure derives from :class:`SegError`.

Each subclass also keeps its builtin base (ValueError, RuntimeError, ...), so code that caught the
builtin type before still does; the command-line tools (seg.cli) print any SegError as one line.
This module imports nothing from seg, so every layer (nn, models, data, engine, ...) can use it.
"""
from __future__ import annotations

__all__ = ["SegError", "WorkDirError", "ResultFileError"]


class SegError(Exception):
    """Base of every expected error; its message names the file or key and what is wrong."""


class WorkDirError(SegError, RuntimeError):
    """A work dir is in use by another job, holds another run, or cannot be used."""


class ResultFileError(SegError, ValueError):
    """A results file (`seg eval` JSON) is missing, not JSON, or lacks an entry; the message names it."""
