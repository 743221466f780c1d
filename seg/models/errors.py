"""The models' error type (kept apart so every model module can raise it without import cycles)."""
from __future__ import annotations

from seg.errors import SegError


class ModelError(SegError, ValueError):
    """A model that cannot be built or run as asked: unknown encoder or norm, unsupported output stride,
    wrong input shape. Also a ValueError, as these were before."""
