"""Create missing ``*_labelTrainIds.png`` files of a Cityscapes root, and check what is there.

Each ``*_{gtFine,gtCoarse}_polygons.json`` is rasterised as cityscapesscripts' json2labelImg does ("trainIds"
encoding); where only a ``*_labelIds.png`` exists it is mapped through the id -> trainId table. Existing
files are kept, so re-running only does what is missing. Afterwards every image must have its label and
vice versa, with equal sizes; ``verify=True`` also decodes every image and label PNG and checks the label
values (labelIds: Cityscapes ids, labelTrainIds: 0-18 or 255).
"""
from __future__ import annotations

import glob
import json
import os
from multiprocessing import get_context

import numpy as np
from cityscapesscripts.helpers.annotation import Annotation
from cityscapesscripts.helpers.labels import name2label
from cityscapesscripts.preparation.json2labelImg import createLabelImage

from seg.errors import MissingFileError
from seg.progress import progress_bar

from .cityscapes import HOW_TO_GET, list_pairs
from .dataset import check_sizes
from .io import DataError, png_size, read_image, read_label
from .labels import ID_IS_VALID, TRAINID_IS_VALID, check_label_values, ids_to_train_ids
from .png import write_png

ANNOTATION_DIRS = ("gtFine", "gtCoarse")


def _image_of(label_file: str, root: str, annotation: str) -> str:
    """leftImg8bit path belonging to a gt file ``.../{annotation}/{split}/{city}/{stem}_{annotation}_*``."""
    rel = os.path.relpath(label_file, os.path.join(root, annotation))
    split_city, name = os.path.split(rel)
    stem = name[: name.index(f"_{annotation}_")]
    return os.path.join(root, "leftImg8bit", split_city, f"{stem}_leftImg8bit.png")


def _read_polygons(path: str) -> dict:
    """Parse a polygon JSON and check it names only Cityscapes labels (json2labelImg would exit instead)."""
    try:
        with open(path) as f:
            ann = json.load(f)
        size = int(ann["imgHeight"]), int(ann["imgWidth"])
        labels = [str(o["label"]) for o in ann["objects"]]
        for o in ann["objects"]:  # json2labelImg draws each as a list of [x, y] points
            if not all(len(point) == 2 for point in o["polygon"]):
                raise DataError(f"object {o['label']!r}: polygon points must be [x, y] pairs")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DataError(f"{path}: not a valid Cityscapes polygon JSON ({type(e).__name__}: {e})") from e
    for label in labels:
        if label not in name2label and not (label.endswith("group") and label[: -len("group")] in name2label):
            raise DataError(f"{path}: label {label!r} is no Cityscapes label")
    return {"size": size}


def convert_one(src: str, root: str, annotation: str) -> str:
    """Write the labelTrainIds PNG for one ``*_polygons.json`` or ``*_labelIds.png``; returns its path."""
    kind = "polygons.json" if src.endswith("_polygons.json") else "labelIds.png"
    dst = src[: -len(kind)] + "labelTrainIds.png"
    image = _image_of(src, root, annotation)
    if not os.path.isfile(image):
        raise DataError(f"{src}: label has no image (expected {image})")
    img_size = png_size(image)
    if kind == "polygons.json":
        size = _read_polygons(src)["size"]
        if size != img_size:
            raise DataError(f"{src}: annotated size {size[1]}x{size[0]} differs from image {image} "
                            f"size {img_size[1]}x{img_size[0]} (WxH)")
        polygons = Annotation()  # what json2labelImg does, but the PNG is written by write_png
        polygons.fromJsonFile(src)
        train_ids = np.asarray(createLabelImage(polygons, "trainIds"))
    else:
        ids = read_label(src)
        if ids.shape != img_size:
            raise DataError(f"{src}: label size {ids.shape[1]}x{ids.shape[0]} differs from image {image} "
                            f"size {img_size[1]}x{img_size[0]} (WxH)")
        train_ids = ids_to_train_ids(ids, src)
    write_png(dst, train_ids)  # atomic: an interrupted run never leaves a half-written label behind
    return dst


def _convert_job(args):
    return convert_one(*args)


def _verify_job(path: str) -> str:
    if path.endswith("_leftImg8bit.png"):
        read_image(path)
        return path
    valid, what = ((ID_IS_VALID, "Cityscapes id (0-33)") if path.endswith("_labelIds.png")
                   else (TRAINID_IS_VALID, "Cityscapes trainId (0-18 or 255)"))
    check_label_values(read_label(path), valid, what, path)
    return path


def _run(fn, jobs, workers: int, desc: str) -> list:
    bar = dict(total=len(jobs), desc=desc, unit="file", disable=not jobs)
    if workers > 1 and len(jobs) >= 64:  # below that, starting the processes costs more than it saves
        with get_context("spawn").Pool(workers) as pool:
            return list(progress_bar(pool.imap_unordered(fn, jobs, chunksize=4), **bar))
    return [fn(j) for j in progress_bar(jobs, **bar)]


def find_splits(root: str) -> list[tuple[str, str]]:
    """(annotation, split) folders present under ``root``; raises if there are none."""
    if not os.path.isdir(root):
        raise MissingFileError(f"dataset root not found: expected {root}. {HOW_TO_GET}")
    found = [(a, s) for a in ANNOTATION_DIRS if os.path.isdir(os.path.join(root, a))
             for s in sorted(os.listdir(os.path.join(root, a))) if os.path.isdir(os.path.join(root, a, s))]
    if not found:
        raise MissingFileError(f"no annotation folders under {root}: expected {root}/gtFine/<split> or "
                               f"{root}/gtCoarse/<split>. {HOW_TO_GET}")
    return found


def prepare_cityscapes(root: str, workers: int = 1, verify: bool = False) -> dict:
    """Create missing labelTrainIds PNGs under ``root`` and check pairing and sizes of every split.
    Returns {"created": n, "existing": n, "pairs": {"gtFine/train": n, ...}, "verified": n}."""
    splits = find_splits(root)
    jobs, existing = [], 0
    for annotation, split in splits:
        pattern = os.path.join(root, annotation, split, "*", f"*_{annotation}_")
        sources = {}
        for kind in ("labelIds.png", "polygons.json"):  # the JSON wins where both exist
            sources.update({p[: -len(kind)]: p for p in glob.glob(pattern + kind)})
        for prefix, src in sorted(sources.items()):
            if os.path.isfile(prefix + "labelTrainIds.png"):
                existing += 1
            else:
                jobs.append((src, root, annotation))
    created = _run(_convert_job, jobs, workers, "labelTrainIds")
    pairs = {}
    for annotation, split in splits:
        found = list_pairs(root, annotation, split)
        check_sizes(found)
        pairs[f"{annotation}/{split}"] = len(found)
    checked = []
    if verify:
        files = sorted(glob.glob(os.path.join(root, "gt*", "*", "*", "*_label*Ids.png")))
        files += [img for annotation, split in splits for img, _ in list_pairs(root, annotation, split)]
        checked = _run(_verify_job, files, workers, "verify labels")
    return {"created": len(created), "existing": existing, "pairs": pairs, "verified": len(checked)}


# Official Cityscapes counts per (annotation, split) and the archive that holds each part.
OFFICIAL_COUNTS = {("gtFine", "train"): 2975, ("gtFine", "val"): 500, ("gtFine", "test"): 1525,
                   ("gtCoarse", "train_extra"): 19998}
ARCHIVES: dict[str, dict[str | None, str]] = {
    "leftImg8bit": {"train_extra": "leftImg8bit_trainextra.zip", None: "leftImg8bit_trainvaltest.zip"},
    "gtFine": {None: "gtFine_trainvaltest.zip"}, "gtCoarse": {None: "gtCoarse.zip"}}


def _archive(folder: str, split: str) -> str:
    return ARCHIVES[folder].get(split, ARCHIVES[folder][None])


def _stems(folder: str, suffix: str) -> set[str]:
    """{"city/stem"} of the files ``folder/<city>/<stem><suffix>``."""
    return {os.path.join(os.path.basename(os.path.dirname(p)), os.path.basename(p)[: -len(suffix)])
            for p in glob.glob(os.path.join(folder, "*", "*" + suffix))}


def check_readiness(root: str, expected: dict | None = None) -> list[dict]:
    """Per official (annotation, split): images, labels (polygon JSON or labelIds PNG) and labelTrainIds files
    found under ``root`` against the official counts (``expected``, default OFFICIAL_COUNTS), and what is missing.

    Each row: {"set", "expected", "images", "labels", "train_ids", "missing": [one line per problem]}.
    """
    if not os.path.isdir(root):
        raise MissingFileError(f"dataset root not found: expected {root}. {HOW_TO_GET}")
    rows = []
    for (annotation, split), want in (expected or OFFICIAL_COUNTS).items():
        img_dir = os.path.join(root, "leftImg8bit", split)
        gt_dir = os.path.join(root, annotation, split)
        images = _stems(img_dir, "_leftImg8bit.png")
        labels = _stems(gt_dir, f"_{annotation}_polygons.json") | _stems(gt_dir, f"_{annotation}_labelIds.png")
        train_ids = _stems(gt_dir, f"_{annotation}_labelTrainIds.png")
        missing = []
        if not os.path.isdir(img_dir):
            missing.append(f"no folder {img_dir} (from {_archive('leftImg8bit', split)})")
        elif len(images) < want:
            missing.append(f"{want - len(images)} of {want} images missing under {img_dir}")
        if not os.path.isdir(gt_dir):
            missing.append(f"no folder {gt_dir} (from {_archive(annotation, split)})")
        else:
            no_label = sorted(images - labels - train_ids)
            if no_label:
                missing.append(f"{len(no_label)} image(s) without a {annotation} label, e.g. {no_label[0]}")
            no_ids = sorted((images & labels) - train_ids)
            if no_ids:
                missing.append(f"{len(no_ids)} image(s) without *_{annotation}_labelTrainIds.png, e.g. {no_ids[0]} "
                               f"(run `seg prepare-cityscapes {root}`)")
        rows.append({"set": f"{annotation}/{split}", "expected": want, "images": len(images), "labels": len(labels),
                     "train_ids": len(train_ids), "missing": missing})
    return rows
