"""ImageNet-style classification with any padding mode (paper section 4.1), on seg.engine's pieces."""
from seg.engine.optim import StepEpochLR  # the classifier's schedule lives beside PolyLR

from .config import CLASSIFIER_ARCHS, CLS_SCHEMA, load_classifier_config
from .data import (
    ClassificationFolder,
    ImageFolderError,
    build_classification_datasets,
    build_imagefolder,
    build_split,
    build_transforms,
)
from .demo import generate_demo_imagefolder
from .metrics import evaluate_classifier, topk_correct
from .models import TinyNet, build_classifier, load_classifier_weights
from .summary import aggregate, compare_groups, cross_test_rows, format_comparison, padding_tables, summarize_run
from .trainer import train_classifier

__all__ = ["CLASSIFIER_ARCHS", "CLS_SCHEMA", "load_classifier_config", "ImageFolderError", "ClassificationFolder",
           "build_classification_datasets", "build_imagefolder", "build_split", "build_transforms",
           "generate_demo_imagefolder",
           "evaluate_classifier", "topk_correct", "TinyNet", "build_classifier", "load_classifier_weights",
           "StepEpochLR", "aggregate", "compare_groups", "cross_test_rows", "format_comparison", "padding_tables",
           "summarize_run", "train_classifier"]
