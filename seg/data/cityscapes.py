"""Cityscapes datasets over the official folder layout.

    ROOT/leftImg8bit/{train,val,test,train_extra}/{city}/{city}_{seq}_{frame}_leftImg8bit.png
    ROOT/gtFine/{train,val,test}/{city}/{city}_{seq}_{frame}_gtFine_labelTrainIds.png
    ROOT/gtCoarse/{train,train_extra,val}/{city}/{city}_{seq}_{frame}_gtCoarse_labelTrainIds.png

A training set is named "annotation/split": "fine/train", "coarse/train_extra", ... (the folder names
"gtFine/train" work too). Every image must have its label and every label its image.
"""
from __future__ import annotations

import glob
import os

import albumentations as A
import numpy as np
import torch
from torch.utils.data import Dataset

from . import balance
from .io import DataError, png_size, read_image, read_label
from .labels import TRAINID_IS_VALID, check_label_values
from .transforms import CROP_PLACEMENTS, BatchNormalize, build_geometric, build_photometric, crop_window, normalize_ops

ANNOTATIONS = {"fine": "gtFine", "coarse": "gtCoarse", "gtFine": "gtFine", "gtCoarse": "gtCoarse"}
IMAGE_SUFFIX = "_leftImg8bit.png"
HOW_TO_GET = (
    "Cityscapes: register at https://www.cityscapes-dataset.com, download leftImg8bit_trainvaltest.zip and "
    "gtFine_trainvaltest.zip (plus leftImg8bit_trainextra.zip / gtCoarse.zip for coarse data), unzip them into "
    "the root and run `python tools/prepare_cityscapes.py ROOT`; or generate the synthetic demo set with "
    "`python tools/make_demo_data.py --out ROOT`"
)


def parse_set(name: str) -> tuple[str, str]:
    """"fine/train" -> ("gtFine", "train")."""
    parts = name.strip("/").split("/")
    if len(parts) != 2 or parts[0] not in ANNOTATIONS:
        raise ValueError(f"data set {name!r}: expected 'annotation/split' with annotation in "
                         f"{sorted(set(ANNOTATIONS))}, e.g. 'fine/train' or 'coarse/train_extra'")
    return ANNOTATIONS[parts[0]], parts[1]


def _require_dir(path: str, what: str) -> None:
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{what} folder not found: expected {path}. {HOW_TO_GET}")


def list_pairs(root: str, annotation: str, split: str, label_type: str = "labelTrainIds") -> list[tuple[str, str]]:
    """Sorted (image, label) paths of one split; raises on a missing folder or an unpaired file."""
    _require_dir(root, "dataset root")
    img_dir = os.path.join(root, "leftImg8bit", split)
    lbl_dir = os.path.join(root, annotation, split)
    _require_dir(img_dir, f"image split '{split}'")
    _require_dir(lbl_dir, f"{annotation} split '{split}'")
    lbl_suffix = f"_{annotation}_{label_type}.png"
    images = {p[len(img_dir):-len(IMAGE_SUFFIX)]: p for p in glob.glob(os.path.join(img_dir, "*", "*" + IMAGE_SUFFIX))}
    labels = {p[len(lbl_dir):-len(lbl_suffix)]: p for p in glob.glob(os.path.join(lbl_dir, "*", "*" + lbl_suffix))}
    if not images:
        raise FileNotFoundError(f"no *{IMAGE_SUFFIX} under {img_dir}/<city>/. {HOW_TO_GET}")
    no_label = sorted(set(images) - set(labels))
    if no_label:
        example = images[no_label[0]]
        expected = lbl_dir + no_label[0] + lbl_suffix
        raise DataError(f"{example}: image has no label (expected {expected}; {len(no_label)} image(s) lack one). "
                        f"If the *_polygons.json files exist, run `python tools/prepare_cityscapes.py {root}`")
    no_image = sorted(set(labels) - set(images))
    if no_image:
        example = labels[no_image[0]]
        raise DataError(f"{example}: label has no image (expected {img_dir + no_image[0] + IMAGE_SUFFIX}; "
                        f"{len(no_image)} label(s) lack one)")
    return [(images[k], labels[k]) for k in sorted(images)]


CV_SPLITS = (0, 1, 2)
COARSE_MODES = ("union", "boost")
# NVIDIA's class-uniform coarse boost classes, as trainIds: truck, bus, train, wall, rider, motorcycle, fence
NVIDIA_BOOST_CLASSES = (14, 15, 16, 3, 12, 17, 4)
OFFICIAL_SPLITS = ("train", "val")


def _city_dirs(root: str, split: str) -> list[str]:
    folder = os.path.join(root, "leftImg8bit", split)
    _require_dir(folder, f"image split '{split}'")
    return sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)))


def cv_cities(root: str, cv_split: int) -> tuple[list[str], list[str]]:
    """(train cities, val cities) of city-level cross-validation split ``cv_split`` (NVIDIA's scheme).

    All cities = the official val cities (sorted) followed by the sorted official train cities (21 on
    Cityscapes); split k validates on the ``n_val`` cities starting at index ``k * n // 3`` and trains
    on the rest, so split 0 is the official train/val split and split 1 validates on darmstadt,
    dusseldorf and erfurt.
    """
    if cv_split not in CV_SPLITS:
        raise ValueError(f"data.cv_split must be one of {list(CV_SPLITS)}, got {cv_split!r}")
    val, train = _city_dirs(root, "val"), _city_dirs(root, "train")
    cities = val + train
    start = cv_split * len(cities) // 3
    held_out = cities[start:start + len(val)]
    return sorted(set(cities) - set(held_out)), sorted(held_out)


def city_of(path: str) -> str:
    return os.path.basename(os.path.dirname(path))


def check_sizes(pairs: list[tuple[str, str]]) -> None:
    """Compare image and label sizes from the PNG headers (cheap: no decoding)."""
    for img, lbl in pairs:
        si, sl = png_size(img), png_size(lbl)
        if si != sl:
            raise DataError(f"{lbl}: label size {sl[1]}x{sl[0]} differs from image {img} size {si[1]}x{si[0]} (WxH)")


def load_pair(img_path: str, lbl_path: str) -> tuple[np.ndarray, np.ndarray]:
    """Decode and validate one pair: RGB uint8 (H, W, 3) and trainIds uint8 (H, W)."""
    img, lbl = read_image(img_path), read_label(lbl_path)
    if img.shape[:2] != lbl.shape:
        raise DataError(f"{lbl_path}: label size {lbl.shape[1]}x{lbl.shape[0]} differs from image {img_path} "
                        f"size {img.shape[1]}x{img.shape[0]} (WxH)")
    check_label_values(lbl, TRAINID_IS_VALID, "Cityscapes trainId (0-18 or 255)", lbl_path)
    return img, lbl


class CityscapesDataset(Dataset):
    """Full-size, unaugmented, normalised samples of one or more splits (validation / test).

    ``ds[i]`` -> (image float32 (3, H, W), target int64 (H, W) trainIds with 255 = ignore).
    ``ds.image_paths`` lists the leftImg8bit files in sample order.
    """

    def __init__(self, root: str, sets: list[str], mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                 cities=None):
        self.root = root
        self.sets = list(sets)
        self.pairs: list[tuple[str, str]] = []
        self.set_of: list[str] = []
        seen: set[str] = set()
        for name in self.sets:
            annotation, split = parse_set(name)
            if cities is not None and split in OFFICIAL_SPLITS:
                # a city-level split: both official splits pooled, then the chosen cities kept
                found = [p for s in OFFICIAL_SPLITS if os.path.isdir(os.path.join(root, annotation, s))
                         for p in list_pairs(root, annotation, s) if city_of(p[0]) in cities]
                if not found:
                    raise DataError(f"data.cv_split: no {annotation} images of cities {sorted(cities)} under {root}")
                found = sorted(p for p in found if p[1] not in seen)  # fine/train and fine/val name the same pool
            else:
                found = list_pairs(root, annotation, split)
            seen.update(lbl for _, lbl in found)
            self.pairs += found
            self.set_of += [name] * len(found)
        check_sizes(self.pairs)
        self.transform = A.Compose(normalize_ops(mean, std))

    @property
    def image_paths(self) -> list[str]:
        return [img for img, _ in self.pairs]

    @property
    def label_paths(self) -> list[str]:
        return [lbl for _, lbl in self.pairs]

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        img, lbl = load_pair(*self.pairs[index])
        out = self.transform(image=img, mask=lbl)
        return out["image"], out["mask"].long()


class CityscapesTrainDataset(CityscapesDataset):
    """Augmented, class-balanced crops.

    ``coarse_mode`` "union": one epoch = one crop per image of the union of ``sets``, random crops drawn
    from all of them. "boost" (NVIDIA's): one epoch = one crop per fine image; random crops come from
    fine images only, and coarse images serve only class-centred crops of ``coarse_boost_classes``.

    ``ds[i]`` -> (image uint8 (3, crop, crop), target int64 (crop, crop)); ``ds.normalize`` (a
    :class:`BatchNormalize` with the dataset's mean / std) turns a batch of images into the network's
    float32 input on the training device.

    The crop plan of an epoch is drawn from (seed, epoch) and the augmentation of sample i from
    (seed, epoch, i), so every DDP rank holds the same plan and a DistributedSampler gives each rank a
    distinct share of it; results do not depend on the number of DataLoader workers.
    """

    def __init__(self, root: str, sets: list[str], seed: int = 0, crop_size: int = 896,
                 scale_range=(0.5, 2.0), hflip: float = 0.5, blur_prob: float = 0.5, color_jitter: float = 0.25,
                 mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), class_balance: float = 0.5,
                 centroids_per_class: int = 32, coarse_mode: str = "union",
                 coarse_boost_classes=NVIDIA_BOOST_CLASSES, crop_placement: str = "centred", cities=None):
        super().__init__(root, sets, mean, std, cities)
        if coarse_mode not in COARSE_MODES:
            raise ValueError(f"data.coarse_mode must be one of {list(COARSE_MODES)}, got {coarse_mode!r}")
        self.coarse_mode = coarse_mode
        self.is_coarse = np.array([parse_set(s)[0] == "gtCoarse" for s in self.set_of], bool)
        self.random_pool = np.nonzero(~self.is_coarse)[0] if coarse_mode == "boost" else None
        if coarse_mode == "boost" and not len(self.random_pool):
            raise DataError("data.coarse_mode=boost needs fine images in data.train_sets (an epoch is the fine images)")
        if crop_placement not in CROP_PLACEMENTS:
            raise ValueError(f"data.crop_placement must be one of {list(CROP_PLACEMENTS)}, got {crop_placement!r}")
        self.crop_placement = crop_placement
        if not 0.0 <= class_balance <= 1.0:
            raise ValueError(f"data.class_balance must be in [0, 1], got {class_balance}")
        if len(scale_range) != 2 or not 0 < scale_range[0] <= scale_range[1]:
            raise ValueError(f"data.scale_range must be [low, high] with 0 < low <= high, got {list(scale_range)}")
        if crop_size < 1:
            raise ValueError(f"data.crop_size must be positive, got {crop_size}")
        self.seed, self.crop_size, self.class_balance = int(seed), int(crop_size), float(class_balance)
        self.normalize = BatchNormalize(mean, std)
        self.geometric = build_geometric(self.crop_size, tuple(scale_range))
        self.photometric = build_photometric(hflip, blur_prob, color_jitter)
        self.centroids = balance.Centroids(np.zeros(0, np.int32), np.zeros(0, np.uint8), np.zeros((0, 2), np.int32))
        if self.class_balance > 0:
            self.centroids = balance.load_or_compute_centroids(root, self.label_paths, centroids_per_class)
        allowed = np.ones(len(self.centroids.item), bool)
        if coarse_mode == "boost":  # coarse images only serve class-centred crops of the boost classes
            allowed = ~self.is_coarse[self.centroids.item] | np.isin(self.centroids.cls, list(coarse_boost_classes))
        self.pools = balance.class_pools(self.centroids, allowed)
        self.set_epoch(0)

    def __len__(self) -> int:
        return len(self.plan.item)

    def crop_sources(self) -> tuple[int, int]:
        """(crops from fine images, crops from coarse images) in the current epoch's plan."""
        coarse = int(self.is_coarse[self.plan.item].sum())
        return len(self.plan.item) - coarse, coarse

    def set_epoch(self, epoch: int) -> None:
        """Re-draw the crop plan for ``epoch`` deterministically from (seed, epoch)."""
        self.epoch = int(epoch)
        rng = np.random.default_rng([self.seed, self.epoch])
        self.plan = balance.draw_plan(len(self.pairs), self.centroids, self.pools, self.class_balance, rng,
                                      self.random_pool)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        item, cls = int(self.plan.item[index]), int(self.plan.cls[index])
        img, lbl = load_pair(*self.pairs[item])
        seed = int(np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(1)[0])
        center = tuple(self.plan.xy[index].tolist()) if cls >= 0 else None
        img, lbl = self._scaled_crop(img, lbl, center, seed)
        self.photometric.set_random_seed(seed + 1)
        out = self.photometric(image=img, mask=lbl)
        return out["image"], out["mask"].long()

    def _scaled_crop(self, img: np.ndarray, lbl: np.ndarray, center: tuple[int, int] | None, seed: int):
        """Random scale + pad (the centre pixel travels along as a keypoint), then a crop_size window
        holding it as ``crop_placement`` says (class-balanced sample) or uniformly placed (random sample)."""
        self.geometric.set_random_seed(seed)
        out = self.geometric(image=img, mask=lbl, keypoints=np.array([center or (0, 0)], np.float32))
        img, lbl, c = out["image"], out["mask"], self.crop_size
        moved = tuple(out["keypoints"][0][:2]) if center is not None else None
        y0, x0 = crop_window(img.shape[0], img.shape[1], c, moved, np.random.default_rng(seed), self.crop_placement)
        return np.ascontiguousarray(img[y0:y0 + c, x0:x0 + c]), np.ascontiguousarray(lbl[y0:y0 + c, x0:x0 + c])
