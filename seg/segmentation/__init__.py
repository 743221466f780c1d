"""Semantic segmentation on seg.engine's loop: the loss, the label checks and all-ignore handling, the data
checks before iteration 1, the validation a run scores, and `train`."""
from .criterion import SegCrossEntropy, build_criterion
from .trainer import train
from .validation import build_validator

__all__ = ["SegCrossEntropy", "build_criterion", "build_validator", "train"]
