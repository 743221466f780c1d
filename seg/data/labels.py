"""Cityscapes label tables, derived from cityscapesscripts (never re-typed here).

Pixel values in Cityscapes label images:
  * ``*_labelIds.png``      - Cityscapes ids 0..33 (``cityscapesscripts.helpers.labels``)
  * ``*_labelTrainIds.png`` - train ids 0..18, 255 = ignore
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from cityscapesscripts.helpers.labels import labels as _CS_LABELS

from .io import DataError, read_index_label, read_label

IGNORE_INDEX = 255

_EVAL_LABELS = sorted((label for label in _CS_LABELS if 0 <= label.trainId < IGNORE_INDEX),
                      key=lambda label: label.trainId)
NUM_CLASSES = len(_EVAL_LABELS)  # 19 for Cityscapes
CLASS_NAMES: tuple[str, ...] = tuple(label.name for label in _EVAL_LABELS)
PALETTE = np.array([label.color for label in _EVAL_LABELS], dtype=np.uint8)  # (NUM_CLASSES, 3) RGB

# Ids that may appear as pixel values in a labelIds image (license plate has id -1 and is never drawn).
VALID_IDS = frozenset(label.id for label in _CS_LABELS if label.id >= 0)

# id -> trainId lookup over every uint8 value; values that are no Cityscapes id map to 255 too,
# ``ID_IS_VALID`` tells them apart.
ID_TO_TRAINID = np.full(256, IGNORE_INDEX, dtype=np.uint8)
ID_IS_VALID = np.zeros(256, dtype=bool)
for _l in _CS_LABELS:
    if _l.id >= 0:
        ID_IS_VALID[_l.id] = True
        ID_TO_TRAINID[_l.id] = _l.trainId if 0 <= _l.trainId < IGNORE_INDEX else IGNORE_INDEX

# trainId -> id (for cityscapesscripts' evaluator, which wants labelIds); 255 -> 0 ("unlabeled").
TRAINID_TO_ID = np.zeros(256, dtype=np.uint8)
for _l in _EVAL_LABELS:
    TRAINID_TO_ID[_l.trainId] = _l.id

TRAINID_IS_VALID = np.zeros(256, dtype=bool)
TRAINID_IS_VALID[:NUM_CLASSES] = True
TRAINID_IS_VALID[IGNORE_INDEX] = True


def ids_to_train_ids(label_ids: np.ndarray, source: str = "<array>") -> np.ndarray:
    """Map a labelIds array (any shape, uint8) to trainIds; raises DataError naming ``source``
    if a value is no Cityscapes id."""
    check_label_values(label_ids, ID_IS_VALID, "Cityscapes id (0-33)", source)
    return ID_TO_TRAINID[label_ids]


def train_ids_to_ids(train_ids: np.ndarray) -> np.ndarray:
    """Map trainIds (any shape, integer 0..18 or 255) back to Cityscapes ids; ignore -> 0 (unlabeled)."""
    return TRAINID_TO_ID[np.asarray(train_ids, dtype=np.int64) & 255]


def check_label_values(label: np.ndarray, valid: np.ndarray, what: str, source: str) -> None:
    """Raise DataError naming ``source`` if ``label`` (uint8) holds a value with ``valid[value] == False``."""
    if label.dtype != np.uint8:
        raise DataError(f"{source}: label image has dtype {label.dtype}, expected 8-bit single channel")
    # Fast path (a full-image table lookup costs ~5x more): valid tables are a run 0..limit-1 plus a few
    # isolated values (255 for trainIds).
    limit = int(np.argmin(valid)) if not valid.all() else 256
    suspicious = label >= limit
    for v in np.flatnonzero(valid[limit:]) + limit:
        suspicious &= label != v
    if suspicious.any():
        bad = np.unique(label[suspicious])
        raise DataError(f"{source}: label values {bad[:10].tolist()} are no {what}")


def default_palette(num_classes: int) -> np.ndarray:
    """(num_classes, 3) uint8 RGB colours, distinct and stable for a class count (golden-ratio hues,
    alternating brightness), for datasets that name no palette of their own."""
    hues = (np.arange(num_classes) * 0.618033988749895) % 1.0
    value = np.where(np.arange(num_classes) % 2 == 0, 0.95, 0.7)
    sector = (hues * 6).astype(int) % 6
    frac = hues * 6 - np.floor(hues * 6)
    p, q, t = value * 0.35, value * (1 - 0.65 * frac), value * (1 - 0.65 * (1 - frac))
    rgb = np.select([sector[:, None] == s for s in range(6)],
                    [np.stack(c, 1) for c in ((value, t, p), (q, value, p), (p, value, t),
                                              (p, q, value), (t, p, value), (value, p, q))])
    return np.round(rgb * 255).astype(np.uint8)


@dataclass(frozen=True)
class LabelSpace:
    """What the class indices a model predicts mean: names, colours, the ignored target value, and the
    ids written to prediction files (Cityscapes labelIds for Cityscapes, the class index otherwise)."""
    class_names: tuple[str, ...]
    palette: np.ndarray  # (num_classes, 3) uint8 RGB
    ignore_index: int = IGNORE_INDEX
    output_ids: np.ndarray | None = None  # (256,) uint8 lookup class index -> file id; None = identity

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to_output_ids(self, pred: np.ndarray) -> np.ndarray:
        """Class indices (any shape, 0..num_classes-1) -> the uint8 ids a prediction PNG holds."""
        pred = np.asarray(pred, dtype=np.int64)
        return (self.output_ids[pred & 255] if self.output_ids is not None else pred).astype(np.uint8)


CITYSCAPES = LabelSpace(CLASS_NAMES, PALETTE, IGNORE_INDEX, TRAINID_TO_ID)


_IDENTITY_LUT = np.arange(256, dtype=np.uint8)


@dataclass(frozen=True, eq=False)  # compare decoders by .key (numpy fields make == ambiguous)
class LabelDecoder:
    """How a dataset's mask files become training targets: ``lut[raw value]`` is the class index (255 =
    ignore; ``lut=None``: the raw value itself, no lookup and no copy of the array ``read`` returned) and
    ``valid[raw value]`` says whether the value may occur at all (others raise DataError naming the file).
    Picklable, so centroid workers and DataLoader workers decode the same way."""
    lut: np.ndarray | None  # (256,) uint8, or None = identity
    valid: np.ndarray  # (256,) bool
    what: str  # the valid values in words, for error messages
    num_classes: int
    read: Callable[[str], np.ndarray] = read_label

    def __call__(self, path: str) -> np.ndarray:
        raw = self.read(path)
        check_label_values(raw, self.valid, self.what, path)
        return raw if self.lut is None else self.lut[raw]

    @property
    def key(self) -> str:
        """Short hash of the mapping (for caches of decoded labels: another mapping gives other targets).
        ``lut=None`` hashes as the identity table it stands for, so existing cache keys stay valid."""
        lut = _IDENTITY_LUT if self.lut is None else self.lut
        return hashlib.sha1(lut.tobytes() + self.valid.tobytes() + self.read.__name__.encode()).hexdigest()[:8]


def folder_decoder(num_classes: int, ignore_index: int = IGNORE_INDEX, reduce_zero_label: bool = False,
                   label_map: dict[int, int] | None = None) -> LabelDecoder:
    """Decoder of a mask whose values are class indices (greyscale or palette-index PNGs).

    As in mmsegmentation, ``reduce_zero_label`` makes 0 "ignore" and k class k-1 (255 stays ignore);
    ``label_map`` then sends raw file values to classes (or to ``ignore_index``). Values equal to
    ``ignore_index`` become 255, the toolkit's one ignore value in targets; any other value outside
    0..num_classes-1 is invalid."""
    v = np.arange(256)
    if reduce_zero_label:
        v = np.where(v == 0, IGNORE_INDEX, v - 1)
        v[IGNORE_INDEX] = IGNORE_INDEX
    for raw, cls in (label_map or {}).items():
        v[raw] = cls
    valid = (v < num_classes) | (v == ignore_index)
    lut = np.where(v == ignore_index, IGNORE_INDEX, np.where(valid, v, IGNORE_INDEX)).astype(np.uint8)
    what = f"class index (0-{num_classes - 1}) or ignore value {ignore_index}"
    if reduce_zero_label or label_map:
        what = f"value that maps to a {what}" + (" after reduce_zero_label" if reduce_zero_label else "")
    return LabelDecoder(lut, valid, what, num_classes, read_index_label)


# labelTrainIds files already hold the targets: identity mapping (no per-sample full-image lookup copy).
CITYSCAPES_DECODER = LabelDecoder(None, TRAINID_IS_VALID, "Cityscapes trainId (0-18 or 255)", NUM_CLASSES)
