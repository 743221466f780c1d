"""Evaluation: regular / tiled / overlapping-tile inference, mIoU, leave-out and border-distance analysis."""
from seg.engine.loaders import ShardSampler, build_eval_loader

from .evaluator import (
                      SegmentationEvaluator,
                      default_label_space,
                      leave_out_keys,
                      predicted_classes,
                      region_layout,
                      run_inference,
)
from .evaluators import Batch, Evaluator, OutputFolderError, PassContext
from .inference import (
                      MODES,
                      InferenceSettings,
                      predict_logits,
                      preprocess,
                      tile_grid,
                      tile_starts,
                      tile_stride,
                      to_device,
)
from .metrics import (
                      ConfusionAccumulator,
                      border_distance,
                      centre_leave_out_mask,
                      centre_leave_out_size,
                      confusion_matrix,
                      distance_band_index,
                      scores_from_confusion,
)
from .result import EvaluationResult

__all__ = [
    "run_inference", "SegmentationEvaluator", "Evaluator", "Batch", "PassContext", "EvaluationResult",
    "OutputFolderError", "build_eval_loader", "ShardSampler", "default_label_space", "InferenceSettings",
    "MODES", "predict_logits", "tile_grid", "tile_starts", "tile_stride",
    "ConfusionAccumulator", "confusion_matrix", "scores_from_confusion", "centre_leave_out_mask",
    "centre_leave_out_size", "border_distance", "distance_band_index", "leave_out_keys",
    # the steps of an evaluation pass, one by one (what a benchmark times)
    "to_device", "preprocess", "predicted_classes", "region_layout",
]
