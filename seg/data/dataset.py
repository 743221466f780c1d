"""Datasets over a list of (image, label) files, whatever the format that listed them (seg.data.formats):
full-size evaluation samples, and augmented, class-balanced training crops."""
from __future__ import annotations

import albumentations as A
import numpy as np
import torch
from torch.utils.data import Dataset

from seg.seeding import item_seed

from . import balance
from .io import DataError, image_size, read_image
from .labels import CITYSCAPES_DECODER, LabelDecoder
from .transforms import BatchNormalize, build_geometric, build_photometric, crop_window, to_tensor_ops


def check_sizes(pairs: list[tuple[str, str]]) -> None:
    """Compare image and label sizes from the file headers (cheap: no decoding), which also finds a missing,
    truncated or unknown file and a lossy (JPEG) label."""
    for img, lbl in pairs:
        si, sl = image_size(img), image_size(lbl, mask=True)
        if si != sl:
            raise DataError(f"{lbl}: label size {sl[1]}x{sl[0]} differs from image {img} size {si[1]}x{si[0]} (WxH)")


def load_pair(img_path: str, lbl_path: str, decoder: LabelDecoder = CITYSCAPES_DECODER
              ) -> tuple[np.ndarray, np.ndarray]:
    """Decode and validate one pair: RGB uint8 (H, W, 3) and target uint8 (H, W), 255 = ignore."""
    img, lbl = read_image(img_path), decoder(lbl_path)
    if img.shape[:2] != lbl.shape:
        raise DataError(f"{lbl_path}: label size {lbl.shape[1]}x{lbl.shape[0]} differs from image {img_path} "
                        f"size {img.shape[1]}x{img.shape[0]} (WxH)")
    return img, lbl


class SegDataset(Dataset):
    """Full-size, unaugmented samples (validation / test).

    ``ds[i]`` -> (image uint8 (3, H, W) RGB as decoded, target int64 (H, W) class indices with 255 =
    ignore); ``ds.normalize`` (a :class:`BatchNormalize` with ``mean`` / ``std``) turns a (B, 3, H, W)
    batch of them into the network's float32 input on the device it is on.
    ``ds.image_paths`` lists the image files in sample order.
    """

    def __init__(self, pairs: list[tuple[str, str]], decoder: LabelDecoder, mean, std):
        self.pairs = list(pairs)
        self.decoder = decoder
        check_sizes(self.pairs)
        self.transform = A.Compose(to_tensor_ops())
        self.normalize = BatchNormalize(mean, std)

    @property
    def image_paths(self) -> list[str]:
        return [img for img, _ in self.pairs]

    @property
    def label_paths(self) -> list[str]:
        return [lbl for _, lbl in self.pairs]

    def __len__(self) -> int:
        return len(self.pairs)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return load_pair(*self.pairs[index], self.decoder)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        img, lbl = self.load(index)
        out = self.transform(image=img, mask=lbl)
        return out["image"], out["mask"].long()


class SegTrainDataset(SegDataset):
    """Augmented, class-balanced crops.

    ``is_coarse`` marks coarsely annotated images (Cityscapes gtCoarse; none elsewhere). ``coarse_mode``
    "union": one epoch = one crop per image, random crops drawn from all of them. "boost" (NVIDIA's): one
    epoch = one crop per fine image; random crops come from fine images only, and coarse images serve only
    class-centred crops of ``coarse_boost_classes``.

    ``ds[i]`` -> (image uint8 (3, crop, crop), target int64 (crop, crop)); ``ds.normalize`` (a
    :class:`BatchNormalize` with the dataset's mean / std) turns a batch of images into the network's
    float32 input on the training device.

    The crop plan of an epoch is drawn from (seed, epoch) and the augmentation of sample i from
    (seed, epoch, i) (seg.seeding.item_seed, the engine's per-item seeding), so every DDP rank holds the
    same plan and a DistributedSampler gives each rank a distinct share of it; results do not depend on the
    number of DataLoader workers.
    """

    def __init__(self, pairs: list[tuple[str, str]], root: str, decoder: LabelDecoder, is_coarse, *, seed: int,
                 crop_size: int, scale_range, hflip: float, blur_prob: float, color_jitter: float,
                 hue_jitter: float | None, mean, std, class_balance: float, centroids_per_class: int, coarse_mode: str,
                 coarse_boost_classes, crop_placement: str):
        super().__init__(pairs, decoder, mean, std)
        self.coarse_mode = coarse_mode
        self.is_coarse = np.zeros(len(pairs), bool) if is_coarse is None else np.asarray(is_coarse, bool)
        self.random_pool: np.ndarray | None = None
        if coarse_mode == "boost":
            self.random_pool = np.nonzero(~self.is_coarse)[0]
            if not len(self.random_pool):
                raise DataError("data.coarse_mode=boost needs fine images in data.train_sets "
                                "(an epoch is the fine images)")
        self.crop_placement = crop_placement
        self.seed, self.crop_size, self.class_balance = int(seed), int(crop_size), float(class_balance)
        self.geometric = build_geometric(self.crop_size, tuple(scale_range))
        self.photometric = build_photometric(hflip, blur_prob, color_jitter, hue_jitter)
        self.centroids = balance.Centroids(np.zeros(0, np.int32), np.zeros(0, np.uint8), np.zeros((0, 2), np.int32))
        if self.class_balance > 0:
            self.centroids = balance.load_or_compute_centroids(root, self.label_paths, centroids_per_class,
                                                               decoder=decoder)
        allowed = np.ones(len(self.centroids.item), bool)
        if coarse_mode == "boost":  # coarse images only serve class-centred crops of the boost classes
            allowed = ~self.is_coarse[self.centroids.item] | np.isin(self.centroids.cls, list(coarse_boost_classes))
        self.pools = balance.class_pools(self.centroids, allowed, decoder.num_classes)
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
        img, lbl = self.load(item)
        seed = item_seed(self.seed, self.epoch, index, bits=32)
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
