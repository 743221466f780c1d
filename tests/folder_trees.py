"""Small generated datasets in the folder layouts the folder format reads (plain images/ + masks/, the
ADE20K archive, the VOC2012 devkit), written with PIL so that tests can read the masks back naively."""
import os

import numpy as np
from PIL import Image

H, W = 32, 48


def blocky_mask(rng, values, block=8):
    """(H, W) uint8 mask of 8x8 blocks, each one of ``values``."""
    grid = rng.choice(np.asarray(values), (H // block, W // block))
    return np.kron(grid, np.ones((block, block), np.int64)).astype(np.uint8)


def image_for(mask, rng):
    """RGB image whose colour follows the mask value (so a tiny model has something to learn), plus noise."""
    colours = np.stack([(np.arange(256) * 67) % 256, (np.arange(256) * 151 + 40) % 256,
                        (np.arange(256) * 29 + 90) % 256], 1)
    noise = rng.integers(-10, 11, mask.shape + (3,))
    return np.clip(colours[mask] + noise, 0, 255).astype(np.uint8)


def _save(path, array, palette=None):
    """uint8 (H, W) -> greyscale PNG, or palette PNG holding the values as indices; (H, W, 3) -> RGB."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if palette is None:
        im = Image.fromarray(array)
    else:
        im = Image.frombytes("P", (array.shape[1], array.shape[0]), array.tobytes())
        im.putpalette(palette)
    im.save(path)


def write_folder_tree(root, splits=("train", "val"), n=3, values=(0, 1, 2, 255), img_suffix=".png", seed=0):
    """ROOT/images/<split>/<sub>/<name><img_suffix> + ROOT/masks/<split>/<sub>/<name>.png; returns
    {image path: mask as written}."""
    rng = np.random.default_rng(seed)
    out = {}
    for split in splits:
        for i in range(n):
            rel = os.path.join(f"seq{i % 2}", f"frame_{i:03d}")
            mask = blocky_mask(rng, values)
            img = os.path.join(root, "images", split, rel + img_suffix)
            _save(img, image_for(mask, rng))
            _save(os.path.join(root, "masks", split, rel + ".png"), mask)
            out[img] = mask
    return out


def write_ade_tree(root, n=(3, 2), values=(0, 1, 2, 3), seed=0):
    """ADEChallengeData2016 layout: images/{training,validation}/ADE_*.jpg and annotations/.../ADE_*.png
    (greyscale, 0 = other); returns {image path: mask as written}."""
    rng = np.random.default_rng(seed)
    out = {}
    for split, tag, count in (("training", "train", n[0]), ("validation", "val", n[1])):
        for i in range(count):
            name = f"ADE_{tag}_{i + 1:08d}"
            mask = blocky_mask(rng, values)
            img = os.path.join(root, "images", split, name + ".jpg")
            _save(img, image_for(mask, rng))
            _save(os.path.join(root, "annotations", split, name + ".png"), mask)
            out[img] = mask
    return out


def voc_palette():
    """The VOC colour map (bit-interleaved index), 256 RGB triples flattened, as the devkit's PNGs carry."""
    out = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= (c & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        out += [r, g, b]
    return out


def write_voc_tree(root, train=("2007_000032", "2007_000039"), val=("2007_000033",), extra=("2008_000001",),
                   values=(0, 1, 2, 255), seed=0):
    """VOC2012 layout: JPEGImages/ (also images no split lists), SegmentationClass/ palette PNGs,
    ImageSets/Segmentation/{train,val}.txt; returns {image path: mask indices as written}."""
    rng = np.random.default_rng(seed)
    out = {}
    for name in (*train, *val, *extra):
        mask = blocky_mask(rng, values)
        img = os.path.join(root, "JPEGImages", name + ".jpg")
        _save(img, image_for(mask, rng))
        if name not in extra:
            _save(os.path.join(root, "SegmentationClass", name + ".png"), mask, voc_palette())
            out[img] = mask
    os.makedirs(os.path.join(root, "ImageSets", "Segmentation"), exist_ok=True)
    for split, names in (("train", train), ("val", val)):
        with open(os.path.join(root, "ImageSets", "Segmentation", split + ".txt"), "w") as f:
            f.write("".join(n + "\n" for n in names))
    return out
