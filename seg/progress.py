"""Progress bars on a terminal only: output redirected to a file (a batch job's log) gets plain lines, never
a bar's carriage returns and escape codes. Imports nothing from seg, so every layer can use it."""
from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

from tqdm import tqdm

__all__ = ["on_terminal", "progress_bar"]


def on_terminal() -> bool:
    """Whether both stdout and stderr (where bars go) are terminals."""
    return all(stream is not None and stream.isatty() for stream in (sys.stdout, sys.stderr))


def progress_bar(iterable: Iterable | None = None, **kwargs: Any) -> tqdm:
    """``tqdm(iterable, **kwargs)``, disabled (iterating the items unchanged) unless :func:`on_terminal`."""
    disable = bool(kwargs.pop("disable", False)) or not on_terminal()
    return tqdm(iterable, disable=disable, **kwargs)
