"""What each validation of a segmentation run shows in TensorBoard beside its mIoU: per-class IoU
(``val/IoU/<class>``), the mIoU of each border-distance band (``val/band_mIoU/<band>``, bands from
``train.val_distance_bands``), the counts (``val/count/*``) and a few prediction panels (``val/panel/<i>``:
image | truth | prediction, ``train.val_panels`` images); and, with ``train.trackers``, the same to MLflow
or W&B (:class:`ExternalTracker`)."""
from __future__ import annotations

import importlib
import math
import os
from types import ModuleType

import numpy as np
import torch
from torch.utils.data import Dataset

from seg.config import ConfigError
from seg.data import LabelSpace
from seg.engine.hooks import AfterValidation, Validation
from seg.engine.loop import TrainLoop
from seg.evaluation.inference import forward_logits
from seg.evaluation.visualize import colorize, overlay

__all__ = ["COUNT_KEYS", "SegValidation", "RunTrackers", "REPORT_FILES", "load_tracker", "ExternalTracker",
           "flat_params"]

#: the validation's counts (SegmentationEvaluator's entries), shown under val/count/<name>, not beside the
#: scores
COUNT_KEYS = {"pixels": "pixels", "num_images": "images", "num_classes": "classes"}


class SegValidation(Validation):
    """The validation of a segmentation run: its metrics.jsonl record and ``val/*`` scalars leave the counts
    to :class:`RunTrackers` (``val/count/*``)."""

    def record(self, loop: TrainLoop, metrics: dict) -> dict:
        return {k: v for k, v in metrics.items() if k not in COUNT_KEYS}


class RunTrackers(AfterValidation):
    """After each validation under `tag` (a :class:`SegValidation` before this hook), the TensorBoard
    scalars and panels of the module docstring (rank 0 draws the panels: the model on the first `panels`
    images of `val_set`, no collective)."""

    def __init__(self, val_set: Dataset, labels: LabelSpace, panels: int, tag: str = "val"):
        self.val_set, self.labels, self.panels, self.tag = val_set, labels, panels, tag

    def on_validation(self, loop: TrainLoop, iteration: int, result: dict) -> None:
        loop.storage.put_board(iteration, class_scalars(result), self.tag)
        if loop.info.is_main:
            for i, panel in enumerate(self.draw(loop)):
                loop.storage.put_image(iteration, panel, f"{self.tag}/panel/{i}")

    def draw(self, loop: TrainLoop) -> list[np.ndarray]:
        """image | truth | prediction for the first `panels` validation images, from the model as it is."""
        normalize = getattr(self.val_set, "normalize", None) or (lambda images: images)
        model, panels = loop.model, []
        was_training = model.training
        model.eval()
        with torch.no_grad():
            for index in range(min(self.panels, len(self.val_set))):  # type: ignore[arg-type]
                image, target = self.val_set[index]
                logits = forward_logits(model, normalize(image[None].to(loop.info.device)))
                pred = logits.argmax(1)[0].cpu().numpy()
                rgb = image.permute(1, 2, 0).numpy()
                panels.append(np.concatenate([rgb, colorize(target.numpy(), self.labels),
                                              overlay(rgb, pred, self.labels)], 1))
        model.train(was_training)
        return panels


def class_scalars(result: dict) -> dict[str, float]:
    """A validation's `result` (SegmentationEvaluator's entries) -> {"IoU/<class>": IoU (classes where
    defined), "band_mIoU/<band>": mIoU, "count/<name>": count}."""
    ious = result.get("IoU", [])
    names = result.get("class_names") or [str(c) for c in range(len(ious))]
    scalars = {f"IoU/{name}": float(iou) for name, iou in zip(names, ious) if math.isfinite(iou)}
    scalars.update({f"band_mIoU/{row['label']}": row["mIoU"]
                    for row in result.get("distance_bands", {}).get("results", []) if math.isfinite(row["mIoU"])})
    scalars.update({f"count/{name}": result[key] for key, name in COUNT_KEYS.items() if key in result})
    return scalars


#: the run's files a tracker keeps, as they stand when training ends (model files stay in the work dir)
REPORT_FILES = ("config.yaml", "run.json", "metrics.jsonl")


def load_tracker(name: str) -> ModuleType:
    """The module of tracker `name` (seg.config.TRACKERS); ConfigError naming the key and the extra when it
    is not installed."""
    try:
        return importlib.import_module(name)
    except ImportError:
        raise ConfigError(f"train.trackers: {name} is not installed; pip install 'partialpad-seg[{name}]' or "
                          f"drop it from train.trackers") from None


class ExternalTracker(AfterValidation):
    """Logs the run to MLflow (a file store in <work_dir>/mlruns) or W&B (offline, in <work_dir>/wandb), rank
    0: the config's params at the start, each validation's scalars under `tag` (as TensorBoard gets them:
    mIoU, per-class IoU, bands, counts) and :data:`REPORT_FILES` at the end."""

    def __init__(self, name: str, tag: str = "val"):
        self.name, self.tag, self.module = name, tag, load_tracker(name)
        self.active = False

    def before_train(self, loop: TrainLoop) -> None:
        if not loop.info.is_main:
            return
        params = flat_params(loop.shown_cfg)
        if self.name == "mlflow":
            self.module.set_tracking_uri("file:" + os.path.abspath(os.path.join(loop.work_dir, "mlruns")))
            self.module.start_run(run_name=os.path.basename(os.path.abspath(loop.work_dir)))
            self.module.log_params(params)
        else:
            self.run = self.module.init(mode="offline", dir=loop.work_dir, config=params,
                                        name=os.path.basename(os.path.abspath(loop.work_dir)))
        self.active = True

    def on_validation(self, loop: TrainLoop, iteration: int, result: dict) -> None:
        if not self.active:
            return
        scores = {k: float(v) for k, v in result.items() if isinstance(v, (int, float)) and k not in COUNT_KEYS
                  and math.isfinite(v)}
        metrics = {f"{self.tag}/{k}": v for k, v in {**scores, **class_scalars(result)}.items()}
        if self.name == "mlflow":
            self.module.log_metrics(metrics, step=iteration)
        else:
            self.run.log(metrics, step=iteration)

    def after_train(self, loop: TrainLoop) -> None:
        if not self.active:
            return
        for name in REPORT_FILES:
            path = os.path.join(loop.work_dir, name)
            if not os.path.exists(path):
                continue
            if self.name == "mlflow":
                self.module.log_artifact(path)
            else:
                self.run.save(path, policy="now")
        self.finish("FINISHED", 0)

    def after_failure(self, loop: TrainLoop) -> None:
        if self.active:
            self.finish("FAILED", 1)

    def finish(self, status: str, exit_code: int) -> None:
        self.active = False
        if self.name == "mlflow":
            self.module.end_run(status=status)
        else:
            self.run.finish(exit_code=exit_code)


def flat_params(cfg: dict, prefix: str = "") -> dict[str, str]:
    """{"train.lr": "0.01", ...}: the config's leaves as dotted keys and text (what both trackers show)."""
    out: dict[str, str] = {}
    for key, value in cfg.items():
        if isinstance(value, dict):
            out.update(flat_params(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = str(value)
    return out
