"""Issue 25, cases 5, 6, 9 and 12: no damaged or lossy file trains silently, and each fault reads as one line
naming the file and its own cause: truncated JPEG / PNG images, JPEG masks (by suffix and by content),
missing, corrupt and float files, and errors raised inside data-loader workers."""
import os
import re

import cv2
import numpy as np
import pytest
import torch
from folder_trees import write_ade_tree, write_folder_tree
from PIL import Image

from seg.cli import run_tool
from seg.data import DataError, build_train_dataset, build_val_dataset, label_space
from seg.data.io import image_size, read_image, read_index_label, read_label
from seg.evaluation import build_eval_loader

NAMES3 = ["sky", "road", "car"]
ADE = {"format": "folder", "img_dir": "images/{split}", "ann_dir": "annotations/{split}", "img_suffix": ".jpg",
       "reduce_zero_label": True, "class_names": NAMES3, "train_sets": ["training"], "val_split": "validation"}
PLAIN = {"format": "folder", "img_suffix": ".png", "class_names": NAMES3, "train_sets": ["train"]}
NO_BALANCE = {"class_balance": 0.0, "crop_size": 16}


def _tree(tmp_path, kind: str) -> dict:
    """A folder dataset whose images are JPEGs (ADE20K layout) or PNGs; returns its data section."""
    if kind == "jpeg":
        write_ade_tree(str(tmp_path))
        return dict(ADE, root=str(tmp_path), **NO_BALANCE)
    write_folder_tree(str(tmp_path))
    return dict(PLAIN, root=str(tmp_path), **NO_BALANCE)


def _truncate(path: str) -> None:
    """Cut the file halfway through its pixel data (a JPEG's scan after SOS, a PNG's IDAT), as an interrupted
    copy leaves it."""
    data = open(path, "rb").read()
    start = max(data.find(b"\xff\xda"), data.find(b"IDAT"))
    assert start > 0
    open(path, "wb").write(data[:(start + len(data)) // 2])


def _as_jpeg(path: str) -> None:
    """Rewrite the image at ``path`` (name unchanged) as JPEG content."""
    arr = np.asarray(Image.open(path))
    Image.fromarray(arr).save(path, format="JPEG", quality=95)


# ---------------------------------------------------------------- case 5: truncated images
@pytest.mark.parametrize("kind", ["jpeg", "png"])
def test_truncated_image_is_refused_when_the_set_is_built(tmp_path, kind):
    cfg = _tree(tmp_path, kind)
    val_path, train_path = build_val_dataset(cfg).image_paths[0], build_train_dataset(cfg, seed=0).image_paths[-1]
    for path in (val_path, train_path):
        _truncate(path)
    if kind == "jpeg":  # why a check is needed: the decoder fills the missing rows and reports success
        assert cv2.imread(val_path) is not None
    ends = "EOI marker" if kind == "jpeg" else "IEND chunk"
    with pytest.raises(DataError, match=rf"^{re.escape(val_path)}: truncated {kind.upper()} \(it does not end with "
                                        rf"the {ends}"):
        build_val_dataset(cfg)
    with pytest.raises(DataError, match=rf"^{re.escape(train_path)}: truncated {kind.upper()}"):
        build_train_dataset(cfg, seed=0)


@pytest.mark.parametrize("kind", ["jpeg", "png"])
def test_image_truncated_after_start_up_is_refused_when_decoded(tmp_path, kind):
    cfg = _tree(tmp_path, kind)
    val, train = build_val_dataset(cfg), build_train_dataset(cfg, seed=0)
    for path in val.image_paths + train.image_paths:  # as if the files were damaged while the run goes on
        _truncate(path)
    with pytest.raises(DataError, match=rf"^{re.escape(val.image_paths[0])}: truncated {kind.upper()}"):
        val[0]
    item = int(train.plan.item[0])
    with pytest.raises(DataError, match=rf"^{re.escape(train.image_paths[item])}: truncated {kind.upper()}"):
        train[0]


def test_jpeg_with_bytes_after_its_end_marker_is_complete(tmp_path):
    """Padding or metadata after EOI is no truncation: the image reads as the decoder reads the clean file."""
    cfg = _tree(tmp_path, "jpeg")
    path = build_val_dataset(cfg).image_paths[0]
    want = cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB)
    for extra in (b"\x00" * 100, b"appended metadata" * 8):
        with open(path, "ab") as f:
            f.write(extra)
        assert (read_image(path) == want).all()
        assert image_size(path) == want.shape[:2]


def test_image_of_a_format_without_a_signature_check_is_left_to_the_decoder(tmp_path):
    """PPM (which cv2 reads) is no format the end check knows: it still reads, pixel for pixel."""
    rgb = np.random.default_rng(0).integers(0, 256, (12, 16, 3), dtype=np.uint8)
    path = str(tmp_path / "frame.ppm")
    Image.fromarray(rgb).save(path)
    assert (read_image(path) == rgb).all() and image_size(path) == (12, 16)
    with pytest.raises(DataError, match=rf"^{re.escape(path)}: mask is no PNG, BMP or TIFF file; masks must be"):
        read_label(path)


# ---------------------------------------------------------------- case 6: masks must be lossless
@pytest.mark.parametrize("suffix", [".jpg", ".JPEG"])
def test_lossy_mask_suffix_is_refused_when_the_config_loads_and_when_listing(tmp_path, suffix):
    cfg = dict(_tree(tmp_path, "jpeg"), mask_suffix=suffix)
    pattern = rf"^data\.mask_suffix: '{suffix}' is no lossless image format; masks must end in one of"
    with pytest.raises(DataError, match=pattern):
        label_space(cfg)
    with pytest.raises(DataError, match=pattern):
        build_val_dataset(cfg)


@pytest.mark.parametrize("layout", ["folder", "cityscapes"])
def test_jpeg_content_under_a_png_mask_name_is_refused(tmp_path, demo_root, layout):
    """The mask is checked by its bytes: a JPEG saved as .png is refused when the set is built, and by the
    decoder when the file changes after start-up."""
    cfg = _tree(tmp_path, "jpeg") if layout == "folder" else {"root": demo_root}
    ds = build_val_dataset(cfg)
    mask = ds.label_paths[0]
    original = open(mask, "rb").read()
    try:
        _as_jpeg(mask)
        pattern = rf"^{re.escape(mask)}: mask is a JPEG file; masks must be lossless \(PNG, BMP, TIFF\): JPEG"
        with pytest.raises(DataError, match=pattern):
            build_val_dataset(cfg)
        with pytest.raises(DataError, match=pattern):
            ds[0]
    finally:
        open(mask, "wb").write(original)  # demo_root is shared by the session


@pytest.mark.parametrize("suffix", [".bmp", ".tif"])
def test_lossless_bmp_and_tiff_masks_read_exactly(tmp_path, suffix):
    written = write_folder_tree(str(tmp_path), splits=("val",))
    for mask in (tmp_path / "masks").rglob("*.png"):
        Image.open(mask).save(str(mask)[:-4] + suffix)
        mask.unlink()
    ds = build_val_dataset(dict(PLAIN, root=str(tmp_path), mask_suffix=suffix))
    for i, path in enumerate(ds.image_paths):
        assert (ds[i][1].numpy() == written[path]).all()


# ---------------------------------------------------------------- case 12: each fault its own message
def test_file_missing_after_start_up_says_so(tmp_path):
    ds = build_val_dataset(_tree(tmp_path, "jpeg"))
    os.remove(ds.image_paths[0])
    with pytest.raises(DataError, match=rf"^{re.escape(ds.image_paths[0])}: no such file$"):
        ds[0]
    os.remove(ds.label_paths[1])
    with pytest.raises(DataError, match=rf"^{re.escape(ds.label_paths[1])}: no such file$"):
        ds[1]


def test_corrupt_jpeg_is_named_a_corrupt_jpeg(tmp_path):
    ds = build_val_dataset(_tree(tmp_path, "jpeg"))
    path = ds.image_paths[0]
    data = bytearray(open(path, "rb").read())
    data[20:200] = bytes(180)  # tables zeroed; start and end markers intact
    open(path, "wb").write(bytes(data))
    with pytest.raises(DataError, match=rf"^{re.escape(path)}: cannot decode JPEG: corrupt data") as caught:
        ds[0]
    assert "PNG" not in str(caught.value)


def test_float_tiff_says_what_its_pixels_are(tmp_path):
    path = str(tmp_path / "depth.tif")
    Image.fromarray(np.linspace(0, 1, 12 * 16, dtype=np.float32).reshape(12, 16)).save(path)
    with pytest.raises(DataError, match=rf"^{re.escape(path)}: cannot decode TIFF: its 32-bit float pixels \(mode F\)"):
        read_image(path)
    with pytest.raises(DataError, match=rf"^{re.escape(path)}: label image must be 8-bit single channel, .*float32"):
        read_label(path)
    with pytest.raises(DataError, match=rf"^{re.escape(path)}: label image must be 8-bit greyscale or palette .*F"):
        read_index_label(path)


# ---------------------------------------------------------------- case 9: errors from data-loader workers
class _OpensMissingFile(torch.utils.data.Dataset):
    def __init__(self, path):
        self.path = path

    def __len__(self):
        return 1

    def __getitem__(self, index):
        return open(self.path).read()


@pytest.mark.parametrize("source", ["dataset", "builtin"])
def test_worker_error_is_one_line_with_the_original_type_and_message(tmp_path, capsys, source):
    if source == "dataset":
        ds = build_val_dataset(_tree(tmp_path, "jpeg"))
        os.remove(ds.image_paths[0])
        want = f"error: {ds.image_paths[0]}: no such file (DataError in DataLoader worker process 0)"
    else:
        ds = _OpensMissingFile(str(tmp_path / "gone.txt"))
        want = (f"error: [Errno 2] No such file or directory: '{tmp_path / 'gone.txt'}' (FileNotFoundError in "
                f"DataLoader worker process 0)")

    def main(argv):
        for _ in build_eval_loader(ds, num_workers=1):
            pass

    assert run_tool(main, []) == 1
    assert capsys.readouterr().err == want + "\n"
    with pytest.raises((DataError, FileNotFoundError), match="Original Traceback"):
        run_tool(main, ["--debug"])  # --debug: the worker's traceback in full
