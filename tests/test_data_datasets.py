"""Datasets, augmentation alignment and class-balanced sampling."""
import glob
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from test_train_engine import CPU, TinyNet, tiny_cfg
from torch.utils.data import DataLoader, DistributedSampler

from seg.config import ConfigError, load_config
from seg.data import balance, build_train_dataset, build_val_dataset
from seg.data.balance import Centroids, class_pools, draw_plan
from seg.data.transforms import crop_window
from seg.engine import seed_everything
from seg.segmentation import train

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def test_val_dataset_is_full_size_uint8_normalised_on_the_device(demo_root):
    ds = build_val_dataset({"root": demo_root})
    assert len(ds) == 4 and all(p.endswith("_leftImg8bit.png") for p in ds.image_paths)
    for i, path in enumerate(ds.image_paths):
        image, target = ds[i]
        rgb = np.asarray(Image.open(path).convert("RGB"))
        assert image.dtype == torch.uint8 and image.shape == (3, 64, 128)  # no float32 through the workers
        np.testing.assert_array_equal(image.permute(1, 2, 0).numpy(), rgb)
        expected = (rgb / 255.0 - np.array(MEAN)) / np.array(STD)
        normalised = ds.normalize(image[None])
        assert normalised.dtype == torch.float32
        np.testing.assert_allclose(normalised[0].permute(1, 2, 0).numpy(), expected, atol=1e-5, rtol=0)
        lbl_path = path.replace("leftImg8bit", "gtFine", 1).replace("_leftImg8bit.png", "_gtFine_labelTrainIds.png")
        assert target.dtype == torch.int64
        assert (target.numpy() == np.asarray(Image.open(lbl_path))).all()


def test_train_dataset_fine_plus_coarse(demo_root):
    cfg = {"root": demo_root, "crop_size": 48, "train_sets": ["fine/train", "coarse/train_extra"]}
    ds = build_train_dataset(cfg, seed=0)
    assert len(ds) == 9
    assert sum("gtCoarse" in p for p in ds.label_paths) == 3
    image, target = ds[0]
    assert image.shape == (3, 48, 48) and image.dtype == torch.uint8  # normalised on the device, in batches
    assert target.shape == (48, 48) and target.dtype == torch.int64
    assert set(target.unique().tolist()) <= set(range(19)) | {255}


def test_batch_normalize_matches_float64_formula(demo_root):
    ds = build_train_dataset({"root": demo_root, "crop_size": 48, "mean": [0.3, 0.5, 0.7], "std": [0.2, 0.1, 0.4]}, 0)
    batch = torch.stack([ds[i][0] for i in range(3)])
    want = (batch.double() / 255 - torch.tensor([0.3, 0.5, 0.7]).view(1, 3, 1, 1)) / torch.tensor(
        [0.2, 0.1, 0.4]).view(1, 3, 1, 1)
    for images in (batch, batch.contiguous(memory_format=torch.channels_last)):
        got = ds.normalize(images)
        assert got.dtype == torch.float32 and got.shape == batch.shape
        torch.testing.assert_close(got.double(), want, rtol=1e-6, atol=1e-5)
    assert ds.normalize(want.float()) is not None and torch.equal(ds.normalize(want.float()), want.float())


# ---------------------------------------------------------------- augmentation alignment
# An image whose label can be read back from its pixels: flat blocks, one distinct colour per class.
COLOURS = np.array([[40 + 11 * c, 230 - 9 * c, (60 + 97 * c) % 220 + 20] for c in range(19)], np.float64)
IGNORE_COLOUR = np.array([128, 20, 200], np.float64)


def _write_block_dataset(root, size=64, block=8, seed=0):
    rng = np.random.default_rng(seed)
    grid = rng.integers(0, 20, (size // block, size // block))
    label = np.kron(grid, np.ones((block, block), np.int64))
    label[label == 19] = 255
    image = np.where((label == 255)[..., None], IGNORE_COLOUR, COLOURS[np.minimum(label, 18)])
    for sub, name, arr in (("leftImg8bit", "a_000000_000019_leftImg8bit.png", image.astype(np.uint8)),
                           ("gtFine", "a_000000_000019_gtFine_labelTrainIds.png", label.astype(np.uint8))):
        os.makedirs(os.path.join(root, sub, "train", "a"), exist_ok=True)
        Image.fromarray(arr).save(os.path.join(root, sub, "train", "a", name))
    return image, label


def _plain_cfg(root, **kw):
    cfg = {"root": root, "crop_size": 64, "blur_prob": 0.0, "color_jitter": 0.0, "mean": [0, 0, 0],
           "std": [1, 1, 1], "class_balance": 0.0}
    cfg.update(kw)
    return cfg


def _interior(target, r=2):
    """Pixels whose (2r+1)^2 neighbourhood has one label (bilinear image edges blend inside r)."""
    t = np.pad(target, r, constant_values=-1)
    same = np.ones(target.shape, bool)
    for dy in range(2 * r + 1):
        for dx in range(2 * r + 1):
            same &= t[dy:dy + target.shape[0], dx:dx + target.shape[1]] == target
    return same


def test_flip_moves_image_and_mask_together(tmp_path):
    image, label = _write_block_dataset(str(tmp_path))
    ds = build_train_dataset(_plain_cfg(str(tmp_path), scale_range=[1.0, 1.0], hflip=1.0), seed=0)
    img, target = ds[0]
    assert (img.permute(1, 2, 0).numpy() == image[:, ::-1]).all()
    assert (target.numpy() == label[:, ::-1]).all()


def test_scale_crop_flip_keep_image_and_mask_aligned(tmp_path):
    _write_block_dataset(str(tmp_path))
    ds = build_train_dataset(_plain_cfg(str(tmp_path), crop_size=48), seed=0)
    checked = 0
    for epoch in range(12):
        ds.set_epoch(epoch)
        img, target = ds[0]
        rgb, t = img.permute(1, 2, 0).numpy().astype(np.float64), target.numpy()
        inside = _interior(t) & (rgb.sum(-1) > 0)  # padding (image 0) checked elsewhere
        ref = np.where((t == 255)[..., None], IGNORE_COLOUR, COLOURS[np.minimum(t, 18)])
        err = np.abs(rgb - ref).max(-1)[inside]
        assert err.max() < 1.5, (epoch, err.max())
        checked += inside.sum()
    assert checked > 12 * 48 * 48 * 0.3


def test_padding_is_zero_in_image_and_255_in_mask(tmp_path):
    _write_block_dataset(str(tmp_path))
    ds = build_train_dataset(_plain_cfg(str(tmp_path), scale_range=[0.5, 0.5], hflip=0.0), seed=3)
    img, target = ds[0]
    padded = (img.sum(0) == 0).numpy()
    assert padded.sum() == 64 * 64 - 32 * 32
    assert (target.numpy()[padded] == 255).all()
    assert (target.numpy()[~padded] != 255).mean() > 0.5  # the scaled image itself keeps its labels


# ---------------------------------------------------------------- class-balanced sampling
def _balanced(demo_root, seed=0, **kw):
    cfg = {"root": demo_root, "crop_size": 24, "class_balance": 1.0}
    cfg.update(kw)
    return build_train_dataset(cfg, seed=seed)


def test_centroids_lie_on_their_class(demo_root):
    c = _balanced(demo_root).centroids
    labels = [np.asarray(Image.open(p)) for p in _balanced(demo_root).label_paths]
    assert len(c.item) > 0
    for i, cls, (x, y) in zip(c.item, c.cls, c.xy):
        assert labels[i][y, x] == cls
    for i, lbl in enumerate(labels):  # every class of every image has centroids
        assert set(np.unique(lbl).tolist()) - {255} == set(c.cls[c.item == i].tolist())


def test_centroid_cache_is_reused_and_invalidated_by_the_file_list(demo_root, tmp_path, monkeypatch):
    root = str(tmp_path / "data")
    shutil.copytree(demo_root, root, ignore=shutil.ignore_patterns(".cache"))
    first = _balanced(root).centroids
    caches = glob.glob(os.path.join(root, ".cache", "centroids_*.npz"))
    assert len(caches) == 1

    def fail(*a, **k):
        raise AssertionError("recomputed although cached")

    with monkeypatch.context() as m:
        m.setattr(balance, "compute_centroids", fail)
        again = _balanced(root).centroids
    assert all((getattr(first, k) == getattr(again, k)).all() for k in ("item", "cls", "xy"))
    img, lbl = _balanced(root).pairs[-1]
    os.remove(img), os.remove(lbl)
    assert len(_balanced(root)) == 5
    assert len(glob.glob(os.path.join(root, ".cache", "centroids_*.npz"))) == 2  # new list, new cache
    _, lbl = _balanced(root).pairs[0]
    Image.fromarray(np.full((64, 128), 13, np.uint8)).save(lbl)  # a rewritten label, same name
    rewritten = _balanced(root).centroids
    assert len(glob.glob(os.path.join(root, ".cache", "centroids_*.npz"))) == 3
    assert set(rewritten.cls[rewritten.item == 0].tolist()) == {13}


def test_balanced_crops_contain_the_chosen_class(demo_root):
    ds = _balanced(demo_root, train_sets=["fine/train", "coarse/train_extra"])
    seen = set()
    for epoch in range(4):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            cls = int(ds.plan.cls[i])
            assert cls >= 0
            _, target = ds[i]
            assert (target == cls).any(), (epoch, i, cls)
            seen.add(cls)
    assert len(seen) >= 8


def test_plan_draws_classes_then_images_uniformly():
    # class 0: image 0 with 30 centroids, image 1 with 1; classes 1..18: image 2 with 2 each
    item = np.array([0] * 30 + [1] + [2] * 36, np.int32)
    cls = np.array([0] * 31 + [c for c in range(1, 19) for _ in range(2)], np.uint8)
    cent = Centroids(item, cls, np.zeros((len(item), 2), np.int32))
    plan = draw_plan(19000, cent, class_pools(cent, np.ones(len(item), bool)), 0.5, np.random.default_rng(0))
    balanced = plan.cls >= 0
    assert balanced.sum() == 9500
    counts = np.bincount(plan.cls[balanced], minlength=19)
    assert np.abs(counts - 500).max() < 5 * np.sqrt(500 * (18 / 19))  # uniform over classes
    img_of_class0 = plan.item[plan.cls == 0]
    assert abs((img_of_class0 == 1).mean() - 0.5) < 0.1  # uniform over images, not over centroids
    assert sorted(plan.item[~balanced].tolist()) == sorted(set(plan.item[~balanced].tolist()))  # distinct images


def test_coarse_boost_limits_coarse_images_to_boost_classes(demo_root):
    ds = _balanced(demo_root, train_sets=["fine/train", "coarse/train_extra"], coarse_mode="boost",
                   coarse_boost_classes=[13])
    coarse_items = {i for i, p in enumerate(ds.label_paths) if "gtCoarse" in p}
    for c, pool in enumerate(ds.pools):
        from_coarse = set(pool.images.tolist()) & coarse_items
        assert not from_coarse or c == 13


def _coarse_labels(demo_root):
    """{coarse image index in the fine+coarse dataset: set of trainIds in its label}, read independently."""
    ds = _balanced(demo_root, train_sets=["fine/train", "coarse/train_extra"], class_balance=0.0)
    return ds, {i: set(np.unique(np.asarray(Image.open(p))).tolist()) - {255}
                for i, p in enumerate(ds.label_paths) if "gtCoarse" in p}


def test_boost_epoch_is_the_fine_images_and_coarse_only_serves_boost_classes(demo_root):
    _, coarse = _coarse_labels(demo_root)
    boost = sorted(set().union(*coarse.values()))[:2]  # two classes the coarse labels hold
    ds = _balanced(demo_root, train_sets=["fine/train", "coarse/train_extra"], class_balance=0.5,
                   coarse_mode="boost", coarse_boost_classes=boost)
    n_fine = sum("gtFine" in p for p in ds.label_paths)
    assert len(ds) == n_fine == 6
    from_coarse_seen = 0
    for epoch in range(30):
        ds.set_epoch(epoch)
        assert len(ds.plan.item) == n_fine and (ds.plan.cls >= 0).sum() == 3
        for item, cls in zip(ds.plan.item.tolist(), ds.plan.cls.tolist()):
            if item in coarse:
                assert cls in boost  # coarse images: class-centred crops of the boost classes only
                from_coarse_seen += 1
        randoms = ds.plan.item[ds.plan.cls < 0]
        assert all("gtFine" in ds.label_paths[i] for i in randoms) and len(set(randoms.tolist())) == 3
        fine, coarse_n = ds.crop_sources()
        assert (fine, coarse_n) == (n_fine - sum(i in coarse for i in ds.plan.item.tolist()),
                                    sum(i in coarse for i in ds.plan.item.tolist()))
    assert from_coarse_seen > 0


def test_union_epoch_is_every_image_and_random_crops_include_coarse(demo_root):
    ds, coarse = _coarse_labels(demo_root)
    assert len(ds) == 9 and ds.coarse_mode == "union"
    assert sorted(ds.plan.item.tolist()) == list(range(9))  # class_balance 0: one random crop per image
    assert ds.crop_sources() == (6, 3)


def test_coarse_mode_is_validated():
    with pytest.raises(ConfigError, match="coarse_mode"):
        load_config(None, ["data.coarse_mode=mix"])


def test_training_prints_crops_per_epoch_from_fine_and_coarse(demo_root, tmp_path, capsys):
    cfg = tiny_cfg(iterations=1)
    cfg["model"]["num_classes"] = 19
    cfg["data"].update(root=demo_root, train_sets=["fine/train", "coarse/train_extra"], crop_size=16,
                       class_balance=0.5, coarse_mode="boost", coarse_boost_classes=[0, 1, 2, 13])
    ds = build_train_dataset(cfg["data"], seed=0)
    coarse = sum("gtCoarse" in ds.label_paths[i] for i in ds.plan.item.tolist())
    seed_everything(0)
    train(cfg, TinyNet(19), ds, CPU, str(tmp_path / "run"))
    out = capsys.readouterr().out
    assert (f"training crops per epoch: 6 ({6 - coarse} from fine, {coarse} from coarse images, "
            "data.coarse_mode=boost)") in out


def test_epoch_plan_is_shared_by_ranks_and_split_by_distributed_sampler(demo_root):
    ranks = [_balanced(demo_root, seed=7, class_balance=0.5) for _ in range(2)]
    for ds in ranks:
        ds.set_epoch(2)
    assert all((getattr(ranks[0].plan, k) == getattr(ranks[1].plan, k)).all() for k in ("item", "cls", "xy"))
    shares = [list(DistributedSampler(ds, num_replicas=2, rank=r, shuffle=True, seed=7)) for r, ds in enumerate(ranks)]
    assert not set(shares[0]) & set(shares[1]) and set(shares[0]) | set(shares[1]) == set(range(len(ranks[0])))
    a0, t0 = ranks[0][3]
    a1, t1 = ranks[1][3]
    assert torch.equal(a0, a1) and torch.equal(t0, t1)
    before = ranks[0].plan.item.copy(), ranks[0].plan.cls.copy()
    ranks[0].set_epoch(3)
    assert not ((ranks[0].plan.item == before[0]).all() and (ranks[0].plan.cls == before[1]).all())


def test_samples_do_not_depend_on_worker_count(demo_root):
    ds = _balanced(demo_root, class_balance=0.5)
    batches = [[t for _, t in DataLoader(ds, batch_size=2, num_workers=w)] for w in (0, 2)]
    assert all(torch.equal(a, b) for a, b in zip(*batches))


# ---------------------------------------------------------------- crop placement of class-balanced crops
def _write_rare_block(root, y=31, x=63):
    """One 64x128 image: class 0 everywhere but a 3x3 block of class 5 centred on (y, x)."""
    label = np.zeros((64, 128), np.uint8)
    label[y - 1:y + 2, x - 1:x + 2] = 5
    image = COLOURS[label].astype(np.uint8)
    for sub, name, arr in (("leftImg8bit", "a_000000_000019_leftImg8bit.png", image),
                           ("gtFine", "a_000000_000019_gtFine_labelTrainIds.png", label)):
        os.makedirs(os.path.join(root, sub, "train", "a"), exist_ok=True)
        Image.fromarray(arr).save(os.path.join(root, sub, "train", "a", name))


def _rare_positions(root, placement, epochs):
    """(row, col) of the rare block's centre in every class-5 crop of ``epochs`` epochs."""
    ds = build_train_dataset(_plain_cfg(root, crop_size=24, scale_range=[1.0, 1.0], hflip=0.0, class_balance=1.0,
                                        crop_placement=placement), seed=0)
    found = []
    for epoch in range(epochs):
        ds.set_epoch(epoch)
        if int(ds.plan.cls[0]) != 5:
            continue
        ys, xs = np.nonzero(ds[0][1].numpy() == 5)
        assert len(ys) > 0  # the sampled class is inside the crop either way
        found.append((ys.mean(), xs.mean()))
    return np.array(found)


def test_centred_crops_hold_the_rare_class_at_the_centre(tmp_path):
    _write_rare_block(str(tmp_path))
    pos = _rare_positions(str(tmp_path), "centred", 30)
    assert len(pos) >= 5
    assert (np.abs(pos - 12) <= 1).all()  # centre pixel 12 of a 24 crop; never near a border


def test_anywhere_crops_bring_the_rare_class_to_crop_borders(tmp_path):
    _write_rare_block(str(tmp_path))
    pos = _rare_positions(str(tmp_path), "anywhere", 160)
    assert len(pos) >= 50
    border = np.minimum(pos, 23 - pos).min(axis=1)  # distance of the block centre to the nearest crop border
    assert (border <= 1).sum() >= 3  # the block touches a border in some crops
    # point uniform inside the crop: each coordinate of the centre spreads over the whole 0..23 range
    for axis in range(2):
        assert pos[:, axis].min() <= 2 and pos[:, axis].max() >= 21
        assert abs(pos[:, axis].mean() - 11.5) < 2.5


def test_anywhere_keeps_a_point_near_the_image_edge_inside_the_crop():
    rng = np.random.default_rng(0)
    for _ in range(200):
        cx, cy = int(rng.integers(0, 100)), int(rng.integers(0, 40))
        y0, x0 = crop_window(40, 100, 16, (cx, cy), rng, "anywhere")
        assert 0 <= y0 <= 40 - 16 and 0 <= x0 <= 100 - 16
        assert y0 <= cy < y0 + 16 and x0 <= cx < x0 + 16


def test_crop_placement_is_validated():
    with pytest.raises(ConfigError, match="crop_placement"):
        load_config(None, ["data.crop_placement=middle"])
