"""Segmentation training: the engine's loop (seg.engine.loop) run for ``train.iterations`` iterations with
the poly LR schedule, the pixel-wise loss, data checks before iteration 1 and all-ignore batches skipped.

Validation is the caller's: `validate(model) -> metrics with "mIoU"` (seg.evaluation.validation_hook
builds it from the validation set), run every ``train.val_interval`` iterations (0: after the last);
checkpoints/best.pth keeps the best mIoU.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.utils.data import Dataset

from seg.config import ConfigError
from seg.data.dataset import SegDataset
from seg.data.verify import check_pairs, label_range_error
from seg.errors import SegError

from .distributed import DistInfo, all_reduce_mean
from .ema import EMA_PREFIX, WeightEMA
from .guard import TargetCheck
from .loop import Hook, KeepBest, TrainLoop
from .optim import build_criterion, build_scheduler

__all__ = ["VERIFY_SAMPLE", "any_labelled", "LabelCheck", "DataChecks", "train"]

VERIFY_SAMPLE = 16  # training files decoded and checked before iteration 1 (all with verify; validation: all)


def any_labelled(targets: torch.Tensor, num_classes: int, ignore_index: int, where: str) -> bool:
    """Whether any rank's `targets` hold a labelled (not `ignore_index`) pixel; DataError, on every rank, when a
    value is neither a class of ``model.num_classes`` nor the ignore index. Collective under DDP; reads from the
    device (a check before training: the training steps use :class:`LabelCheck`)."""
    labelled = targets != ignore_index
    values = torch.where(labelled, targets, 0)
    bad = ((values < 0) | (values >= num_classes)).any()
    stats = all_reduce_mean(torch.stack([labelled.sum().float(), bad.float()]))
    if stats[1].item() > 0:
        seen = torch.unique(values[(values < 0) | (values >= num_classes)])[:5].tolist()
        raise label_range_error(where, seen, num_classes, ignore_index)
    return stats[0].item() > 0


class LabelCheck(TargetCheck):
    """The training batches' label check, on the device: a batch without a labelled pixel on any rank is
    skipped (its loss would be 0/0); a value that is neither a class nor the ignore index stops the run
    (DataError, naming the iteration), and is ignored by the loss until then."""

    def __init__(self, cfg: dict):
        self.num_classes, self.ignore = cfg["model"]["num_classes"], cfg["train"]["ignore_index"]

    def check(self, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, H, W) integer targets -> (targets with invalid values set to the ignore index, learnable: bool
        scalar, invalid: float64 (3,) [found, smallest, largest invalid value])."""
        invalid = (targets != self.ignore) & ((targets < 0) | (targets >= self.num_classes))
        clean = targets.masked_fill(invalid, self.ignore)
        limits = torch.iinfo(targets.dtype)
        smallest = targets.masked_fill(~invalid, limits.max).amin()
        largest = targets.masked_fill(~invalid, limits.min).amax()
        return clean, (clean != self.ignore).any(), torch.stack([invalid.any(), smallest, largest]).double()

    def skipped(self, count: int, first: int, last: int) -> str:
        which = (f"the training batch of iteration {first}" if count == 1
                 else f"{count} training batches of iterations {first}..{last}")
        return f"every pixel of {which} is train.ignore_index={self.ignore}"

    def invalid(self, iteration: int, values: list[int]) -> SegError:
        return label_range_error(f"training batch of iteration {iteration}", values, self.num_classes,
                                 self.ignore)


class DataChecks(Hook):
    """Fail in seconds, before iteration 1, on data that would fail later: a sample of the training pairs
    and every validation label decoded (with `verify`: every pair of both sets), all label values checked
    against ``model.num_classes`` (the dataset read every file's header and end when it was built); then one
    validation image through the model. At the end, the count of skipped all-ignore batches."""

    def __init__(self, train_set: Dataset, val_set: Dataset | None, verify: bool):
        self.train_set, self.val_set, self.verify = train_set, val_set, verify

    def before_train(self, loop: TrainLoop) -> None:
        model_cfg, train_cfg = loop.cfg["model"], loop.train_cfg
        threads = max(1, loop.cfg["data"]["num_workers"])  # the CPU share the user gave this process's loading
        for ds, sample, decode in ((self.train_set, None if self.verify else VERIFY_SAMPLE, True),
                                   (self.val_set, None, self.verify)):
            if isinstance(ds, SegDataset):  # a dataset over (image, label) files (SegTrainDataset too)
                check_pairs(ds.pairs, sample, ds.decoder, model_cfg["num_classes"], train_cfg["ignore_index"],
                            threads, decode)
        if self.val_set is None:
            return
        image, target = self.val_set[0]
        normalize = getattr(self.val_set, "normalize", None) or (lambda images: images)  # uint8 images, as evaluate
        loop.model.eval()
        with torch.no_grad(), torch.autocast(loop.info.device.type, dtype=loop.dtype or torch.float32,
                                             enabled=loop.dtype is not None):
            loop.model(normalize(image[None].to(loop.info.device)))
        loop.model.train()
        labels = getattr(self.val_set, "label_paths", None)
        any_labelled(target, model_cfg["num_classes"], train_cfg["ignore_index"],
                     labels[0] if labels else "validation sample 0")

    def after_train(self, loop: TrainLoop) -> None:
        if loop.skipped and loop.info.is_main:
            print(f"warning: {loop.skipped} batch(es) without a labelled pixel were skipped", flush=True)


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
    if ema is not None:  # before KeepBest: a step's validation comes after its EMA update
        hooks.append(ema)
    if validate is not None:  # with an EMA, each validation scores it too (ema_mIoU); best.pth follows the raw mIoU
        shown = ("mIoU",) if ema is None else ("mIoU", EMA_PREFIX + "mIoU")
        hooks.append(KeepBest(validate if ema is None else ema.beside(validate), "mIoU", train_cfg["val_interval"],
                              state_key="best_miou", shown=shown))
    loop = TrainLoop(cfg, model, train_set, info, work_dir, criterion=build_criterion(train_cfg, info.device),
                     schedule=build_scheduler, iterations=train_cfg["iterations"], hooks=tuple(hooks),
                     target_check=LabelCheck(cfg))
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

