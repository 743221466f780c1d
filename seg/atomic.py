"""Crash-safe file writes: a temporary file in the same folder, fsync, then an atomic rename.

A killed process or a full disk leaves either the old file or the new one under the final name, never a
half-written one; the temporary file is removed on error. A failed write raises OSError naming the target
path, never the temporary name, with its reason ("no space left on device" for a full disk, also when torch
reports it as "unexpected pos"). Imports nothing from seg (any layer may use it).
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
from collections.abc import Iterator
from typing import IO

__all__ = ["atomic_open", "atomic_write_text", "atomic_write_json", "naming_write_errors", "write_error", "TMP_MARK",
           "NO_SPACE"]

TMP_MARK = ".tmp"  # temporary names are f"{path}{TMP_MARK}{pid}"; stale ones are recognised by it
NO_SPACE = "no space left on device"
# torch's zip writer when a write fails or comes up short (a full disk): RuntimeError("... file write failed ...
# unexpected pos 64 vs 0"), the OSError of the failed write (if any) as its context
_TORCH_WRITE_FAILED = ("unexpected pos", "file write failed")


def write_error(err: BaseException, path: str) -> OSError | None:
    """The OSError to raise for ``err``, a failure while writing ``path`` (directly or through a temporary
    file ``path + TMP_MARK...``): errno and reason kept, the file named ``path``. None when ``err`` is not a
    write failure of that file (an OSError about another file, a RuntimeError other than torch's writer's)."""
    if isinstance(err, RuntimeError):
        if not any(mark in str(err) for mark in _TORCH_WRITE_FAILED):
            return None
        cause = err.__cause__ or err.__context__  # torch.save swallows the OSError of its write
        return write_error(cause, path) if isinstance(cause, OSError) else OSError(errno.ENOSPC, NO_SPACE, path)
    if not isinstance(err, OSError) or (err.filename is not None and not str(err.filename).startswith(str(path))):
        return None
    if err.errno == errno.ENOSPC:
        return OSError(errno.ENOSPC, NO_SPACE, path)
    return OSError(err.errno, err.strerror or str(err), path)


@contextlib.contextmanager
def naming_write_errors(path: str) -> Iterator[None]:
    """Within this block, a failed write of ``path`` raises OSError naming ``path`` (see :func:`write_error`);
    other errors pass unchanged."""
    try:
        yield
    except (OSError, RuntimeError) as err:
        named = write_error(err, path)
        if named is None:
            raise
        raise named from err


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "w") -> Iterator[IO]:
    """Open a temporary file beside `path` for writing ("w" or "wb"); on a clean exit it replaces `path`.
    A failed write raises OSError naming `path` (see :func:`write_error`)."""
    folder = os.path.dirname(os.path.abspath(path))
    tmp = f"{path}{TMP_MARK}{os.getpid()}"
    try:
        with naming_write_errors(path):
            os.makedirs(folder, exist_ok=True)
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
