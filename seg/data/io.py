"""PNG reading with errors that name the file (never a silent None)."""
from __future__ import annotations

import os
import struct

import cv2
import numpy as np
from PIL import Image

from seg.errors import SegError

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the empty IEND chunk every complete PNG ends with


class DataError(SegError, ValueError):
    """Bad dataset content: unpaired files, corrupt images, size mismatches, invalid label values."""


def pair_files(images: dict[str, str], labels: dict[str, str], image_at: tuple[str, str], label_at: tuple[str, str],
               label_word: str, counted: tuple[str, str], no_label_hint: str = "") -> list[tuple[str, str]]:
    """(image, label) paths matched by key (a path relative to its folder, minus the suffix), in key order.

    ``image_at`` / ``label_at`` are (folder, suffix) of the two sides, for the file a key expects. DataError
    names the first image without label ("image has no <label_word>"; ``no_label_hint`` appended), else the
    first label without image, with the expected file and the count (``counted``: the nouns counted then)."""
    for have, lack, (folder, suffix), what, noun, hint in (
            (images, labels, label_at, f"image has no {label_word}", counted[0], no_label_hint),
            (labels, images, image_at, f"{label_word} has no image", counted[1], "")):
        missing = sorted(set(have) - set(lack))
        if missing:
            raise DataError(f"{have[missing[0]]}: {what} (expected {os.path.join(folder, missing[0] + suffix)}; "
                            f"{len(missing)} {noun} lack one){hint}")
    return [(images[k], labels[k]) for k in sorted(images)]


def png_size(path: str) -> tuple[int, int]:
    """(height, width) from a PNG header without decoding the pixels; the file's last bytes must be the IEND
    chunk, so a truncated file is found here too (a dataset reads every header when it is built)."""
    try:
        with open(path, "rb") as f:
            head = f.read(24)
            f.seek(max(0, os.fstat(f.fileno()).st_size - len(_PNG_END)))
            tail = f.read()
    except OSError as e:
        raise DataError(f"{path}: cannot open ({e})") from e
    if len(head) < 24 or head[:8] != _PNG_SIGNATURE or head[12:16] != b"IHDR":
        raise DataError(f"{path}: not a PNG file (corrupt or truncated header)")
    if tail != _PNG_END:
        raise DataError(f"{path}: truncated PNG (it does not end with the IEND chunk)")
    width, height = struct.unpack(">II", head[16:24])
    return int(height), int(width)


def read_image(path: str) -> np.ndarray:
    """RGB uint8 image of shape (H, W, 3)."""
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise DataError(f"{path}: cannot decode image (corrupt or truncated PNG?)")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def read_label(path: str) -> np.ndarray:
    """Single-channel uint8 label image of shape (H, W)."""
    lbl = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if lbl is None:
        raise DataError(f"{path}: cannot decode label image (corrupt or truncated PNG?)")
    if lbl.ndim != 2 or lbl.dtype != np.uint8:
        raise DataError(f"{path}: label image must be 8-bit single channel, got shape {lbl.shape} dtype {lbl.dtype}")
    return lbl


def read_index_label(path: str) -> np.ndarray:
    """Single-channel uint8 label image of shape (H, W) from a greyscale or palette PNG: a palette
    image yields its indices (as Pascal VOC stores classes), not the colours cv2 would expand them to."""
    try:
        with Image.open(path) as im:
            mode = im.mode
            lbl = np.asarray(im) if mode in ("L", "P") else None
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot decode label image ({e})") from e
    if lbl is None:
        raise DataError(f"{path}: label image must be 8-bit greyscale or palette (index) PNG, got mode {mode}")
    return lbl


def image_size(path: str) -> tuple[int, int]:
    """(height, width) from the file header: PNG via :func:`png_size` (which also finds truncated files),
    other formats (JPEG) via PIL, which reads only the header too."""
    if path.lower().endswith(".png"):
        return png_size(path)
    try:
        with Image.open(path) as im:
            width, height = im.size
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read image header ({e})") from e
    return int(height), int(width)
