"""The folder format (plain, ADE20K and VOC2012 layouts) and label_space: targets against the masks as
PIL reads them, unpaired files and bad values named, and the shared training pipeline on folder data."""
import os

import numpy as np
import pytest
import torch
from folder_trees import write_ade_tree, write_folder_tree, write_voc_tree
from PIL import Image

from seg.data import CITYSCAPES, DataError, build_train_dataset, build_val_dataset, default_palette, label_space
from seg.data.verify import check_pairs

NAMES3 = ["sky", "road", "car"]
ADE = {"format": "folder", "img_dir": "images/{split}", "ann_dir": "annotations/{split}", "img_suffix": ".jpg",
       "reduce_zero_label": True, "class_names": NAMES3, "train_sets": ["training"], "val_split": "validation"}
VOC = {"format": "folder", "img_dir": "JPEGImages", "ann_dir": "SegmentationClass", "img_suffix": ".jpg",
       "split_list": "ImageSets/Segmentation/{split}.txt", "class_names": NAMES3, "train_sets": ["train"]}
PLAIN = {"format": "folder", "img_suffix": ".png", "class_names": NAMES3, "train_sets": ["train"]}
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def cfg_of(base, root, **kw):
    return dict(base, root=str(root), **kw)


def test_plain_folder_val_targets_and_images_match_the_files(tmp_path):
    written = write_folder_tree(str(tmp_path))
    ds = build_val_dataset(cfg_of(PLAIN, tmp_path))
    assert len(ds) == 3 and all(p.startswith(str(tmp_path / "images" / "val")) for p in ds.image_paths)
    for i, path in enumerate(ds.image_paths):
        image, target = ds[i]
        rgb = np.asarray(Image.open(path).convert("RGB"))
        assert image.dtype == torch.uint8 and (image.permute(1, 2, 0).numpy() == rgb).all()
        np.testing.assert_allclose(ds.normalize(image[None])[0].permute(1, 2, 0).numpy(), (rgb / 255 - MEAN) / STD,
                                   atol=1e-5)
        assert target.dtype == torch.int64 and (target.numpy() == written[path]).all()
        assert (target.numpy() == np.asarray(Image.open(ds.label_paths[i]))).all()


def test_ade20k_layout_reduces_zero_label(tmp_path):
    written = write_ade_tree(str(tmp_path))
    ds = build_val_dataset(cfg_of(ADE, tmp_path))
    assert [os.path.basename(p) for p in ds.image_paths] == ["ADE_val_00000001.jpg", "ADE_val_00000002.jpg"]
    for i, path in enumerate(ds.image_paths):
        raw = np.asarray(Image.open(ds.label_paths[i])).astype(np.int64)
        assert (raw == written[path]).all()
        want = np.where(raw == 0, 255, raw - 1)  # 0 = "other" is ignored, k is class k-1
        assert (ds[i][1].numpy() == want).all()


def test_voc_layout_reads_palette_indices_and_follows_the_split_list(tmp_path):
    written = write_voc_tree(str(tmp_path))
    train = build_val_dataset(cfg_of(VOC, tmp_path), split="train")
    assert [os.path.basename(p) for p in train.image_paths] == ["2007_000032.jpg", "2007_000039.jpg"]
    val = build_val_dataset(cfg_of(VOC, tmp_path))
    assert [os.path.basename(p) for p in val.image_paths] == ["2007_000033.jpg"]
    for ds in (train, val):
        for i, path in enumerate(ds.image_paths):
            indices = np.asarray(Image.open(ds.label_paths[i]))  # palette indices, not colours
            assert Image.open(ds.label_paths[i]).mode == "P"
            assert (indices == written[path]).all() and (ds[i][1].numpy() == indices).all()


def test_label_map_and_a_custom_ignore_value(tmp_path):
    write_folder_tree(str(tmp_path), values=(0, 1, 7, 9))
    cfg = cfg_of(PLAIN, tmp_path, label_map={7: 2, 9: 200}, ignore_index=200)
    ds = build_val_dataset(cfg)
    raw = np.asarray(Image.open(ds.label_paths[0])).astype(np.int64)
    want = np.select([raw == 7, raw == 9], [2, 255], raw)
    assert (ds[0][1].numpy() == want).all()


def test_image_without_mask_and_mask_without_image_name_the_file(tmp_path):
    write_folder_tree(str(tmp_path))
    lonely = tmp_path / "images" / "val" / "seq0" / "extra.png"
    Image.new("RGB", (48, 32)).save(lonely)
    with pytest.raises(DataError, match=rf"{lonely}: image has no mask \(expected .*masks/val/seq0/extra\.png"):
        build_val_dataset(cfg_of(PLAIN, tmp_path))
    lonely.unlink()
    orphan = tmp_path / "masks" / "val" / "seq1" / "orphan.png"
    Image.new("L", (48, 32)).save(orphan)
    with pytest.raises(DataError, match=rf"{orphan}: mask has no image"):
        build_val_dataset(cfg_of(PLAIN, tmp_path))


def test_split_list_entry_without_files_and_missing_folders(tmp_path):
    write_voc_tree(str(tmp_path))
    with open(tmp_path / "ImageSets" / "Segmentation" / "val.txt", "a") as f:
        f.write("2009_999999\n")
    with pytest.raises(DataError, match=r"val\.txt: lists '2009_999999' but .*2009_999999\.jpg does not exist"):
        build_val_dataset(cfg_of(VOC, tmp_path))
    with pytest.raises(DataError, match=r"test\.txt: cannot read the split list of 'test'"):
        build_val_dataset(cfg_of(VOC, tmp_path), split="test")
    with pytest.raises(DataError, match=r"images/test: folder of split 'test' not found .*data\.img_dir"):
        build_val_dataset(cfg_of(PLAIN, tmp_path), split="test")


def test_values_outside_the_classes_name_the_file(tmp_path):
    write_folder_tree(str(tmp_path), values=(0, 1, 2, 5))
    ds = build_val_dataset(cfg_of(PLAIN, tmp_path))
    with pytest.raises(DataError, match=rf"{ds.label_paths[0]}: label values \[5\] are no class index \(0-2\)"):
        ds[0]
    with pytest.raises(DataError, match=r"label values \[5\]"):
        check_pairs(ds.pairs, decoder=ds.decoder)  # folder decoding: 5 is bad, trainIds 0-18 are not the rule
    with pytest.raises(DataError, match=r"label values \[5\]"):
        build_train_dataset(cfg_of(PLAIN, tmp_path, class_balance=0.5), seed=0)  # found computing centroids


def test_rgb_mask_is_refused(tmp_path):
    write_folder_tree(str(tmp_path), splits=("val",), n=1)
    mask = next((tmp_path / "masks" / "val").rglob("*.png"))
    Image.new("RGB", (48, 32)).save(mask)
    with pytest.raises(DataError, match=rf"{mask}: label image must be 8-bit greyscale or palette .*mode RGB"):
        build_val_dataset(cfg_of(PLAIN, tmp_path))[0]


def test_training_crops_and_class_balance_on_folder_data(tmp_path):
    written = write_ade_tree(str(tmp_path), n=(4, 1))
    cfg = cfg_of(ADE, tmp_path, crop_size=24, class_balance=1.0, centroids_per_class=4, scale_range=[1.0, 1.0],
                 hflip=0.0, blur_prob=0.0, color_jitter=0.0)
    ds = build_train_dataset(cfg, seed=0)
    assert len(ds) == 4 and ds.crop_sources() == (4, 0)
    targets = [np.where(written[p] == 0, 255, written[p].astype(np.int64) - 1) for p in ds.image_paths]
    c = ds.centroids
    assert len(c.item) and set(c.cls.tolist()) <= {0, 1, 2}
    for i, cls, (x, y) in zip(c.item, c.cls, c.xy):
        assert targets[i][y, x] == cls
    for epoch in range(3):
        ds.set_epoch(epoch)
        for k in range(len(ds)):
            image, target = ds[k]
            assert image.shape == (3, 24, 24) and image.dtype == torch.uint8
            cls, (x, y) = int(ds.plan.cls[k]), ds.plan.xy[k]
            assert cls >= 0 and targets[ds.plan.item[k]][y, x] == cls
            assert cls in target.unique().tolist()  # the crop holds its class (scale 1: no resampling)


def test_label_space_of_each_format():
    assert label_space({}) is CITYSCAPES and label_space({"format": "cityscapes"}).num_classes == 19
    space = label_space({"format": "folder", "class_names": NAMES3})
    assert space.class_names == tuple(NAMES3) and space.ignore_index == 255 and space.output_ids is None
    assert (space.palette == default_palette(3)).all() and space.palette.dtype == np.uint8
    assert len({tuple(c) for c in default_palette(150)}) == 150
    given = label_space({"format": "folder", "class_names": NAMES3, "palette": [[1, 2, 3], [4, 5, 6], [7, 8, 9]]})
    assert given.palette.tolist() == [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
    assert (space.to_output_ids(np.array([[0, 2]])) == [[0, 2]]).all()


@pytest.mark.parametrize("cfg, pattern", [
    ({"format": "folder"}, r"data\.class_names: data\.format=folder needs"),
    ({"format": "folder", "class_names": NAMES3, "palette": [[0, 0, 0]]}, r"data\.palette: expected 3 \[r, g, b\]"),
    ({"format": "folder", "class_names": NAMES3, "ignore_index": 1}, r"data\.ignore_index: must lie in 3\.\.255"),
    ({"format": "folder", "class_names": NAMES3, "label_map": {4: 3}}, r"data\.label_map: entry 4: 3"),
    ({"format": "voc"}, r"data\.format: unknown format 'voc'; expected one of \['cityscapes', 'folder'\]"),
    ({"class_names": NAMES3}, r"data\.class_names / data\.palette: data\.format=cityscapes"),
    ({"colour": 1}, r"data: unknown key\(s\) \['colour'\]"),
])
def test_label_space_errors_name_the_key(cfg, pattern):
    with pytest.raises(DataError, match=pattern):
        label_space(cfg)


def test_folder_has_no_city_level_splits(tmp_path):
    write_folder_tree(str(tmp_path))
    with pytest.raises(DataError, match=r"data\.cv_split: city-level splits exist for data\.format=cityscapes"):
        build_train_dataset(cfg_of(PLAIN, tmp_path, cv_split=1), seed=0)


def test_split_list_entry_without_its_mask(tmp_path):
    write_voc_tree(str(tmp_path))
    mask = tmp_path / "SegmentationClass" / "2007_000033.png"
    mask.unlink()
    with pytest.raises(DataError, match=rf"val\.txt: lists '2007_000033' but {mask} does not exist"):
        build_val_dataset(cfg_of(VOC, tmp_path))
