"""Crash-safe file writes: a temporary file in the same folder, fsync, then an atomic rename.

A killed process or a full disk leaves either the old file or the new one under the final name, never a
half-written one; the temporary file is removed on error. Imports nothing from seg (any layer may use it).
"""
from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from typing import IO

__all__ = ["atomic_open", "atomic_write_text", "atomic_write_json", "TMP_MARK"]

TMP_MARK = ".tmp"  # temporary names are f"{path}{TMP_MARK}{pid}"; stale ones are recognised by it


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "w") -> Iterator[IO]:
    """Open a temporary file beside `path` for writing ("w" or "wb"); on a clean exit it replaces `path`."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = f"{path}{TMP_MARK}{os.getpid()}"
    try:
        with open(tmp, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write_text(path: str, text: str) -> None:
    with atomic_open(path) as f:
        f.write(text)


def atomic_write_json(obj, path: str, **dump_kwargs) -> None:
    """json.dump `obj` to `path` atomically (serialised first: an unserialisable object leaves `path` alone)."""
    atomic_write_text(path, json.dumps(obj, **dump_kwargs))
