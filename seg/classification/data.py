"""ImageFolder data with the standard ImageNet geometry (torchvision.transforms.v2) and loud input checks.

Items are uint8 (3, H, W) images, as segmentation's: the dataset's ``normalize`` (seg.data.BatchNormalize, the
one preprocessor of every path) turns a batch into the network input on the device.

Layout: ``<root>/<split>/<class name>/<image>``; class indices follow the sorted folder names, as in
torchvision's ImageFolder, and the val split must hold the same class folders as the train split.
"""
from __future__ import annotations

import os

from PIL import Image
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS
from torchvision.transforms import v2

from seg.data import BatchNormalize
from seg.errors import SegError

__all__ = ["ImageFolderError", "ClassificationFolder", "build_transforms", "build_imagefolder", "build_split",
           "build_classification_datasets", "load_rgb", "check_class_folders"]


class ImageFolderError(SegError, ValueError):
    """An ImageFolder split is missing, has an empty class folder, or holds an unreadable image."""


def load_rgb(path: str) -> Image.Image:
    """Decode `path` as RGB; a corrupt or truncated file raises ImageFolderError naming it."""
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (OSError, SyntaxError, ValueError) as err:  # PIL's UnidentifiedImageError is an OSError
        raise ImageFolderError(f"cannot read image {path}: {type(err).__name__}: {err}") from err


def _has_images(folder: str) -> bool:
    for _, _, files in os.walk(folder, followlinks=True):
        if any(f.lower().endswith(IMG_EXTENSIONS) for f in files):
            return True
    return False


def check_class_folders(split_dir: str) -> list[str]:
    """Sorted class folder names of `split_dir`; raises ImageFolderError naming the folder if the split is
    missing, has no class folders, or a class folder holds no image (torchvision would otherwise fail
    with only the class name, or silently skip it with allow_empty)."""
    if not os.path.isdir(split_dir):
        raise ImageFolderError(f"ImageFolder split not found: {split_dir}")
    classes = sorted(e.name for e in os.scandir(split_dir) if e.is_dir())
    if not classes:
        raise ImageFolderError(f"{split_dir} holds no class folders (expected <split>/<class>/<image>)")
    for name in classes:
        folder = os.path.join(split_dir, name)
        if not _has_images(folder):
            raise ImageFolderError(f"class folder {folder} holds no image (extensions {', '.join(IMG_EXTENSIONS)})")
    return classes


def build_transforms(train: bool, crop_size: int, resize_size: int, scale_range, hflip: float) -> v2.Compose:
    """PIL image -> uint8 (3, crop_size, crop_size) tensor (normalised later, on the device, by the dataset's
    ``normalize``).

    train: RandomResizedCrop(crop_size, scale_range) + horizontal flip; val: shorter side to resize_size,
    centre crop (the single centre-crop protocol of the paper). Randomness comes from torch's global RNG,
    which the engine's EpochSeededDataset seeds per (seed, epoch, index).
    """
    if train:
        geometry = [v2.RandomResizedCrop(crop_size, scale=tuple(scale_range), antialias=True),
                    v2.RandomHorizontalFlip(hflip)]
    else:
        geometry = [v2.Resize(resize_size, antialias=True), v2.CenterCrop(crop_size)]
    return v2.Compose([v2.ToImage(), *geometry, v2.ToPureTensor()])


class ClassificationFolder(ImageFolder):
    """torchvision's ImageFolder with the ``normalize`` (uint8 batch -> network input) its images need."""

    def __init__(self, root: str, transform, mean, std):
        super().__init__(root, transform=transform, loader=load_rgb)
        self.normalize = BatchNormalize(mean, std)


def build_imagefolder(split_dir: str, transform, mean, std) -> ClassificationFolder:
    """ImageFolder over `split_dir` with checked class folders, a loader that names bad files and the
    normalisation of `mean` / `std` (RGB, 0-1 scale).

    Items: (transform(image), class index int).
    """
    check_class_folders(split_dir)
    return ClassificationFolder(split_dir, transform, mean, std)


def build_split(split_dir: str, data_cfg: dict, train: bool) -> ClassificationFolder:
    """One split of a classifier config's data section, with that section's geometry and normalisation."""
    geometry = {k: data_cfg[k] for k in ("crop_size", "resize_size", "scale_range", "hflip")}
    return build_imagefolder(split_dir, build_transforms(train, **geometry), data_cfg["mean"], data_cfg["std"])


def build_classification_datasets(data_cfg: dict) -> tuple[ClassificationFolder, ClassificationFolder]:
    """(train set, val set) from a classifier config's data section; their class lists must agree."""
    train_dir = os.path.join(data_cfg["root"], data_cfg["train_split"])
    val_dir = os.path.join(data_cfg["root"], data_cfg["val_split"])
    train_set = build_split(train_dir, data_cfg, train=True)
    val_set = build_split(val_dir, data_cfg, train=False)
    if train_set.classes != val_set.classes:
        only_train = sorted(set(train_set.classes) - set(val_set.classes))
        only_val = sorted(set(val_set.classes) - set(train_set.classes))
        raise ImageFolderError(f"class folders differ between {train_dir} and {val_dir}: only in train "
                               f"{only_train[:5]}, only in val {only_val[:5]}")
    return train_set, val_set
