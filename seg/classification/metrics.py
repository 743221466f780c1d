"""Top-k accuracy and the validation pass (single centre crop), summed over ranks under torchrun."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from seg.engine.distributed import current_dist
from seg.errors import InputError
from seg.progress import progress_bar

__all__ = ["topk_correct", "evaluate_classifier"]


def topk_correct(logits: torch.Tensor, targets: torch.Tensor, ks: Sequence[int] = (1, 5)) -> list[int]:
    """Number of samples whose target is among the k highest logits, for each k.

    logits (B, C), targets (B,) int64. With k > C every sample counts as correct (k is clamped to C).
    """
    if logits.ndim != 2 or targets.shape != logits.shape[:1]:
        raise InputError(f"topk_correct: expected logits (B, C) and targets (B,), got {tuple(logits.shape)} "
                         f"and {tuple(targets.shape)}")
    kmax = min(max(ks), logits.shape[1])
    top = logits.topk(kmax, dim=1).indices  # (B, kmax), highest first
    hit = top.eq(targets[:, None])  # (B, kmax)
    return [int(hit[:, :min(k, kmax)].any(dim=1).sum()) for k in ks]


@torch.no_grad()
def evaluate_classifier(model: nn.Module, loader: DataLoader, device: torch.device | str = "cpu",
                        topk: Sequence[int] = (1, 5), amp_dtype: torch.dtype | None = None,
                        progress: bool = True) -> dict:
    """Top-k accuracy (percent) and mean cross-entropy of `model` over `loader`.

    Under torchrun each rank scores its own shard (e.g. seg.engine.loaders.build_eval_loader, which never
    repeats a sample) and the counts are summed over ranks, so every rank returns the same numbers.
    Images: uint8 batches normalised on the device by ``loader.dataset.normalize`` (seg.data.BatchNormalize),
    or float batches taken as already normalised.
    Returns {"top1": float, "top5": float, ..., "loss": float, "count": int}.
    """
    device = torch.device(device)
    normalize = getattr(loader.dataset, "normalize", None) or (lambda images: images)
    was_training = model.training
    model.eval()
    sums = torch.zeros(len(topk) + 2, dtype=torch.float64, device=device)  # [correct@k..., loss sum, count]
    info = current_dist()
    show = progress and info.is_main
    for images, targets in progress_bar(loader, desc="val", leave=False, disable=not show, dynamic_ncols=True):
        images = normalize(images.to(device, non_blocking=True))
        targets = targets.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            logits = model(images)
        logits = logits.float()
        counts = topk_correct(logits, targets, topk)
        sums += torch.tensor([*counts, F.cross_entropy(logits, targets, reduction="sum").item(), len(targets)],
                             dtype=torch.float64, device=device)
    if info.distributed:
        dist.all_reduce(sums)
    model.train(was_training)
    count = int(sums[-1].item())
    if count == 0:
        raise InputError("evaluate_classifier: the loader yielded no samples")
    out = {f"top{k}": 100.0 * sums[i].item() / count for i, k in enumerate(topk)}
    out.update(loss=sums[-2].item() / count, count=count)
    return out
