"""Image and mask reading that verifies every file fully, with errors that name the file (never a silent None).

A file's format is told by its first bytes, not by its suffix. cv2 decodes a truncated JPEG with grey rows
in place of the missing ones and reports success, so a file is checked to end as its format ends (the PNG
IEND chunk, the JPEG EOI marker) before it is decoded, and its two ends are checked the same way when a
dataset is built (:func:`image_size`). Masks must be lossless: JPEG compression moves class values at edges.
"""
from __future__ import annotations

import io
import os
import struct

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from seg.errors import DataError

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the empty IEND chunk every complete PNG ends with
_JPEG_END = b"\xff\xd9"  # EOI; inside the entropy-coded data 0xFF is always followed by 0x00 or a restart marker
_SIGNATURES = ((_PNG_SIGNATURE, "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"BM", "BMP"), (b"II*\x00", "TIFF"),
               (b"MM\x00*", "TIFF"), (b"GIF8", "GIF"), (b"RIFF", "WebP"))
_SUFFIX_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF"}
LOSSLESS_MASK_FORMATS = ("PNG", "BMP", "TIFF")
LOSSLESS_MASK_SUFFIXES = tuple(s for s, f in _SUFFIX_FORMATS.items() if f in LOSSLESS_MASK_FORMATS)
JPEG_MASK_HARM = "JPEG compression changes the class of pixels near every edge"  # why a mask must be lossless
_HEAD = 32  # bytes: every signature, and the PNG IHDR (width, height at 16:24)
_TAIL = 64  # bytes: the end markers, and a few bytes of padding after a JPEG's EOI
_MODE_WORDS = {"F": "32-bit float", "I": "32-bit integer", "I;16": "16-bit", "I;16B": "16-bit", "1": "1-bit",
               "LA": "greyscale + alpha", "RGB": "RGB", "RGBA": "RGBA", "CMYK": "CMYK"}  # PIL's modes


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


def _open_error(path: str, err: OSError) -> DataError:
    reason = "no such file" if isinstance(err, FileNotFoundError) else f"cannot read ({err.strerror or err})"
    return DataError(f"{path}: {reason}")


def _format(path: str, head: bytes, mask: bool) -> str:
    """The format the first bytes of a file name. DataError when a file named as a known format (``.png``,
    ``.jpg``, ...) lacks every signature, or a mask is not lossless; an image of another suffix (``.ppm``,
    ``.jp2``) is left to the decoders and named by its suffix."""
    fmt = next((name for sig, name in _SIGNATURES if head.startswith(sig)), None)
    suffix = os.path.splitext(path)[1].lower()
    named = _SUFFIX_FORMATS.get(suffix)
    if fmt is None and named:
        raise DataError(f"{path}: not a {named} file (its first bytes are no image signature: a corrupt header, or "
                        f"no image at all)")
    if mask and fmt not in LOSSLESS_MASK_FORMATS:
        why = f": {JPEG_MASK_HARM}" if fmt == "JPEG" else ""
        raise DataError(f"{path}: mask is {f'a {fmt}' if fmt else 'no PNG, BMP or TIFF'} file; masks must be "
                        f"lossless ({', '.join(LOSSLESS_MASK_FORMATS)}){why}")
    return fmt or suffix[1:].upper() or "image"


def _corrupt(path: str, fmt: str, err: Exception) -> DataError:
    reason = "its header is unreadable" if isinstance(err, UnidentifiedImageError) else str(err)
    return DataError(f"{path}: cannot decode {fmt}: corrupt data ({reason})")


def _check_end(path: str, fmt: str, tail: bytes) -> None:
    """DataError unless a PNG ends with IEND or a JPEG with EOI. A JPEG with bytes after its EOI (padding,
    appended metadata) is decoded strictly by PIL instead, which fails on a truncated file."""
    if fmt == "PNG" and not tail.endswith(_PNG_END):
        raise DataError(f"{path}: truncated PNG (it does not end with the IEND chunk)")
    if fmt == "JPEG" and not tail.rstrip(b"\x00").endswith(_JPEG_END):
        try:
            with Image.open(path) as im:
                im.load()
        except (OSError, ValueError, SyntaxError) as e:
            raise DataError(f"{path}: truncated JPEG (it does not end with the EOI marker; {e})") from None


def _read_checked(path: str, mask: bool) -> tuple[bytes, str]:
    """(content, format) of a complete image file (a lossless one if ``mask``); DataError naming the file."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise _open_error(path, e) from e
    fmt = _format(path, data[:_HEAD], mask)
    _check_end(path, fmt, data[-_TAIL:])
    return data, fmt


def _pixels(mode: str) -> str:
    """"32-bit float pixels (mode F)" for PIL's mode "F"."""
    return f"{_MODE_WORDS[mode]} pixels (mode {mode})" if mode in _MODE_WORDS else f"pixels of mode {mode}"


def _undecodable(path: str, fmt: str, data: bytes, wanted: str) -> DataError:
    """Why cv2 could not decode a complete file: corrupt data, or pixels it does not read (PIL's account)."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            mode = im.mode
    except (OSError, ValueError, SyntaxError) as e:
        return _corrupt(path, fmt, e)
    return DataError(f"{path}: cannot decode {fmt}: its {_pixels(mode)} are not {wanted}")


def _probe(path: str, mask: bool) -> tuple[str, bytes]:
    """(format, first bytes) of a complete file, reading only its two ends."""
    try:
        with open(path, "rb") as f:
            head = f.read(_HEAD)
            f.seek(max(0, os.fstat(f.fileno()).st_size - _TAIL))
            tail = f.read()
    except OSError as e:
        raise _open_error(path, e) from e
    fmt = _format(path, head, mask)
    _check_end(path, fmt, tail)
    return fmt, head


def _size(path: str, fmt: str, head: bytes) -> tuple[int, int]:
    if fmt == "PNG":
        if head[12:16] != b"IHDR":
            raise DataError(f"{path}: corrupt PNG header (no IHDR chunk)")
        width, height = struct.unpack(">II", head[16:24])
        return int(height), int(width)
    try:
        with Image.open(path) as im:
            width, height = im.size
    except (OSError, ValueError, SyntaxError) as e:
        raise _corrupt(path, fmt, e) from None
    return int(height), int(width)


def image_size(path: str, *, mask: bool = False) -> tuple[int, int]:
    """(height, width) from the file header, without decoding the pixels; DataError naming the file when it
    is missing, no known image format, truncated (a PNG must end with IEND, a JPEG with EOI), or, with
    ``mask``, not lossless. A dataset checks every file with this when it is built."""
    return _size(path, *_probe(path, mask))


def png_size(path: str) -> tuple[int, int]:
    """(height, width) of a complete PNG (:func:`image_size`); DataError for any other format."""
    fmt, head = _probe(path, mask=False)
    if fmt != "PNG":
        raise DataError(f"{path}: a {fmt} file where a PNG is expected")
    return _size(path, fmt, head)


def read_image(path: str) -> np.ndarray:
    """RGB uint8 image of shape (H, W, 3) from a complete file; DataError naming the file and the cause."""
    data, fmt = _read_checked(path, mask=False)
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise _undecodable(path, fmt, data, "8-bit or 16-bit colour or greyscale")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def read_label(path: str) -> np.ndarray:
    """Single-channel uint8 label image of shape (H, W) from a complete lossless file (PNG / BMP / TIFF)."""
    data, fmt = _read_checked(path, mask=True)
    lbl = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if lbl is None:
        raise _undecodable(path, fmt, data, "8-bit single channel")
    if lbl.ndim != 2 or lbl.dtype != np.uint8:
        raise DataError(f"{path}: label image must be 8-bit single channel, got shape {lbl.shape} dtype {lbl.dtype}")
    return lbl


def read_index_label(path: str) -> np.ndarray:
    """Single-channel uint8 label image of shape (H, W) from a complete lossless greyscale or palette file:
    a palette image yields its indices (as Pascal VOC stores classes), not the colours cv2 would expand them to."""
    data, fmt = _read_checked(path, mask=True)
    try:
        with Image.open(io.BytesIO(data)) as im:
            mode = im.mode
            lbl = np.asarray(im) if mode in ("L", "P") else None
    except (OSError, ValueError, SyntaxError) as e:
        raise _corrupt(path, fmt, e) from None
    if lbl is None:
        raise DataError(f"{path}: label image must be 8-bit greyscale or palette (index), got {_pixels(mode)}")
    return lbl
