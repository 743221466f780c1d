"""Cityscapes label tables, derived from cityscapesscripts (never re-typed here).

Pixel values in Cityscapes label images:
  * ``*_labelIds.png``      - Cityscapes ids 0..33 (``cityscapesscripts.helpers.labels``)
  * ``*_labelTrainIds.png`` - train ids 0..18, 255 = ignore
"""
from __future__ import annotations

import numpy as np

from .io import DataError
from cityscapesscripts.helpers.labels import labels as _CS_LABELS

IGNORE_INDEX = 255

_EVAL_LABELS = sorted((l for l in _CS_LABELS if 0 <= l.trainId < IGNORE_INDEX), key=lambda l: l.trainId)
NUM_CLASSES = len(_EVAL_LABELS)  # 19 for Cityscapes
CLASS_NAMES: tuple[str, ...] = tuple(l.name for l in _EVAL_LABELS)
PALETTE = np.array([l.color for l in _EVAL_LABELS], dtype=np.uint8)  # (NUM_CLASSES, 3) RGB

# Ids that may appear as pixel values in a labelIds image (license plate has id -1 and is never drawn).
VALID_IDS = frozenset(l.id for l in _CS_LABELS if l.id >= 0)

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
