"""Label tables against cityscapesscripts' own table."""
import numpy as np
import pytest
from cityscapesscripts.helpers.labels import id2label, labels, trainId2label

from seg.data import labels as L


def test_id_to_trainid_matches_cityscapesscripts_for_every_id():
    for lab in labels:
        if lab.id < 0:  # license plate: never drawn into label images
            continue
        expected = lab.trainId if 0 <= lab.trainId < 255 else 255
        assert L.ID_TO_TRAINID[lab.id] == expected, lab.name
        assert L.ID_IS_VALID[lab.id]
    others = [v for v in range(256) if v not in id2label]
    assert others and not L.ID_IS_VALID[others].any()


def test_trainid_to_id_and_names_match_cityscapesscripts():
    assert L.NUM_CLASSES == 19
    for t in range(19):
        assert L.TRAINID_TO_ID[t] == trainId2label[t].id
        assert L.CLASS_NAMES[t] == trainId2label[t].name
        assert tuple(L.PALETTE[t]) == trainId2label[t].color
    ids = np.array([[7, 26], [33, 0]], np.uint8)
    assert (L.train_ids_to_ids(L.ids_to_train_ids(ids)) == np.array([[7, 26], [33, 0]])).all()


def test_ids_to_train_ids_rejects_values_that_are_no_cityscapes_id():
    bad = np.array([[7, 40]], np.uint8)
    with pytest.raises(ValueError, match=r"some_label\.png.*\[40\].*no Cityscapes id"):
        L.ids_to_train_ids(bad, "some_label.png")


@pytest.mark.parametrize("table,allowed", [
    (L.ID_IS_VALID, {lab.id for lab in labels if lab.id >= 0}),
    (L.TRAINID_IS_VALID, {lab.trainId for lab in labels if 0 <= lab.trainId < 255} | {255}),
])
def test_check_label_values_accepts_exactly_the_table(table, allowed):
    base = np.full((3, 4), min(allowed), np.uint8)
    for v in range(256):
        arr = base.copy()
        arr[1, 2] = v
        if v in allowed:
            L.check_label_values(arr, table, "x", "f.png")
        else:
            with pytest.raises(ValueError, match=rf"f\.png: label values \[{v}\]"):
                L.check_label_values(arr, table, "x", "f.png")
