"""Writing PNG files crash-safely, with the reason when that fails.

cv2.imwrite only returns False on failure (full disk, missing folder, no permission: no word why), and a
half-written file may remain under the final name; here the PNG is encoded in memory and written through
seg.atomic, whose OSError names the file and the reason ("no space left on device").
"""
from __future__ import annotations

import cv2
import numpy as np

from seg.atomic import atomic_open
from seg.errors import InputError

__all__ = ["write_png"]


def write_png(path: str, array: np.ndarray) -> None:
    """Write ``array`` as it is (a uint8 (H, W) id map, or (H, W, 3) BGR) as PNG at ``path``, atomically;
    OSError naming ``path`` and the reason when that fails."""
    encoded, data = cv2.imencode(".png", np.ascontiguousarray(array))
    if not encoded:
        raise InputError(f"{path}: cannot encode a {array.dtype} array of shape {array.shape} as PNG")
    with atomic_open(path, "wb") as f:
        f.write(data.tobytes())
