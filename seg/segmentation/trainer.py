"""Segmentation training: the engine's loop (seg.engine.loop) run for ``train.iterations`` iterations with
the poly LR schedule, the pixel-wise loss, data checks before iteration 1 and all-ignore batches skipped
(seg.segmentation.criterion).

Validation is the caller's: `validate(model) -> metrics with "mIoU"` (seg.segmentation.validation builds it
from the validation set), run every ``train.val_interval`` iterations (0: after the last);
checkpoints/best.pth keeps the best mIoU.
"""
from __future__ import annotations

from collections.abc import Callable

from torch import nn
from torch.utils.data import Dataset

from seg.config import ConfigError
from seg.data import label_space, shown_data_keys
from seg.engine.distributed import DistInfo
from seg.engine.ema import EMA_PREFIX, WeightEMA
from seg.engine.hooks import Hook, KeepBest
from seg.engine.loop import TrainLoop
from seg.engine.optim import build_scheduler

from .criterion import DataChecks, LabelCheck, build_criterion
from .trackers import ExternalTracker, RunTrackers, SegValidation

__all__ = ["train"]


def train(cfg: dict, model: nn.Module, train_set: Dataset, info: DistInfo, work_dir: str,
          val_set: Dataset | None = None, validate: Callable[[nn.Module], dict] | None = None,
          resume: str | None = None, overwrite: bool = False, verify: bool = False) -> nn.Module:
    """Train `model` for ``cfg["train"]["iterations"]`` iterations; returns the trained (unwrapped) model.

    val_set: checked before iteration 1 (every label decoded and checked, every image's header and end read
    when it was built; one image through the model). validate: scores the model (every rank calls it) with
    at least "mIoU"; None trains without validation. resume: None (fresh run), "auto" (newest usable
    periodic checkpoint of the work dir's run; a run with none is refused unless starting over loses
    nothing) or a checkpoint path. The work dir is locked for the run; a fresh run in a folder that holds
    one is refused (WorkDirError) unless `overwrite` moves it aside (see seg.engine.workdir). `verify`:
    decode every training and validation file before iteration 1, not a sample. Raises NonFiniteLossError
    on divergence.
    """
    train_cfg = cfg["train"]
    hooks: list[Hook] = [DataChecks(train_set, val_set, verify)]
    ema = WeightEMA(train_cfg["ema_decay"]) if train_cfg["ema_decay"] is not None else None
    if ema is not None:  # before the validation: a step's validation comes after its EMA update
        hooks.append(ema)
    if validate is not None:  # with an EMA, each validation scores it too (ema_mIoU); best.pth follows the raw mIoU
        shown = ("mIoU",) if ema is None else ("mIoU", EMA_PREFIX + "mIoU")
        hooks += [SegValidation(validate if ema is None else ema.beside(validate), train_cfg["val_interval"],
                                shown=shown),
                  KeepBest("mIoU", state_key="best_miou")]
        if val_set is not None:
            hooks.append(RunTrackers(val_set, label_space(cfg["data"]), train_cfg["val_panels"]))
    hooks += [ExternalTracker(name) for name in train_cfg["trackers"]]
    loop = TrainLoop(cfg, model, train_set, info, work_dir, criterion=build_criterion(train_cfg, info.device),
                     schedule=build_scheduler, iterations=train_cfg["iterations"], hooks=tuple(hooks),
                     target_check=LabelCheck(cfg), shown_cfg={**cfg, "data": shown_data_keys(cfg["data"])})
    _check_images_per_process(loop.model, train_cfg, info)
    # SegTrainDataset's crop plan; both attributes come together there
    if hasattr(train_set, "crop_sources") and hasattr(train_set, "coarse_mode") and info.is_main:
        fine, coarse = train_set.crop_sources()
        coarse_note = f" ({fine} from fine, {coarse} from coarse images, data.coarse_mode={train_set.coarse_mode})" \
            if cfg["data"]["format"] == "cityscapes" else ""  # other formats have no coarse annotations
        print(f"training crops per epoch: {fine + coarse}{coarse_note}", flush=True)
    return loop.fit(resume, overwrite)


def _check_images_per_process(model: nn.Module, train_cfg: dict, info: DistInfo) -> None:
    """ConfigError for one image per process under BatchNorm whose batch statistics come from this process's
    images alone (SyncBatchNorm pools ranks): the image-pooling statistics are undefined for one image."""
    per_rank = train_cfg["batch_size"] // info.world_size
    if per_rank < 2 and any(isinstance(m, nn.modules.batchnorm._BatchNorm) and not isinstance(m, nn.SyncBatchNorm)
                            for m in model.modules()):
        raise ConfigError(f"train.batch_size={train_cfg['batch_size']} gives {per_rank} image per process; "
                          "BatchNorm needs at least 2 (its image-pooling statistics are undefined for one image): "
                          "raise train.batch_size, or use SyncBatchNorm on GPUs")

