"""Segmentation's side of a training step: the loss (pixel-wise cross-entropy whose all-ignore batch gives 0,
not NaN), the device-side label check that skips a batch without a labelled pixel and stops on a value that
is neither a class nor the ignore index, and the data checks run before iteration 1."""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import Dataset

from seg.data.dataset import SegDataset
from seg.data.verify import check_pairs, label_range_error
from seg.engine.distributed import all_reduce_mean
from seg.engine.guard import TargetCheck
from seg.engine.hooks import Hook
from seg.engine.loop import TrainLoop
from seg.errors import SegError

__all__ = ["SegCrossEntropy", "build_criterion", "VERIFY_SAMPLE", "any_labelled", "LabelCheck", "DataChecks"]


class SegCrossEntropy(nn.CrossEntropyLoss):
    """Cross-entropy averaged over the labelled pixels; a batch without one gives 0 (with a graph, so DDP's
    gradient all-reduce still runs on that rank), not 0/0 = NaN.

    The choice is made on the device (a where, no host sync); the NaN branch it leaves out gets a zero
    gradient, and with every pixel ignored the loss's backward writes none."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = super().forward(logits, target)
        return torch.where((target != self.ignore_index).any(), loss, logits.sum() * 0.0)


def build_criterion(train_cfg: dict, device: torch.device) -> SegCrossEntropy:
    """Pixel-wise cross-entropy ignoring `ignore_index`, with optional per-class weights."""
    weights = train_cfg["class_weights"]
    if weights is not None:
        weights = torch.tensor(weights, dtype=torch.float32, device=device)
    return SegCrossEntropy(weight=weights, ignore_index=train_cfg["ignore_index"])


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
        if loop.skipped:
            loop.storage.message(f"warning: {loop.skipped} batch(es) without a labelled pixel were skipped")
