"""Evaluation: regular / tiled / overlapping-tile inference, mIoU, leave-out and border-distance analysis."""
from .evaluator import ShardSampler, build_eval_loader, class_names_for, evaluate
from .inference import MODES, predict_logits, tile_grid, tile_starts, tile_stride
from .metrics import (border_distance, centre_leave_out_mask, centre_leave_out_size, confusion_matrix,
                      distance_band_index, scores_from_confusion)

__all__ = [
    "evaluate", "build_eval_loader", "ShardSampler", "class_names_for",
    "MODES", "predict_logits", "tile_grid", "tile_starts", "tile_stride",
    "confusion_matrix", "scores_from_confusion", "centre_leave_out_mask", "centre_leave_out_size",
    "border_distance", "distance_band_index",
]
