"""Training engine, task-neutral: distributed set-up, optimizer and LR schedules, checkpoints, logging, the
training loop (seg.engine.loop) and its hooks (seg.engine.hooks). The tasks on it: seg.segmentation,
seg.classification."""
from .checkpoint import (
                         CheckpointError,
                         export_model,
                         find_resume_checkpoint,
                         gather_rng_states,
                         load_checkpoint,
                         save_checkpoint,
)
from .distributed import DistInfo, cleanup_distributed, init_distributed
from .hooks import Checkpointer, Hook, KeepBest, LRSchedule, MetricsStore, MetricsWriter, Validation
from .loop import TrainLoop
from .optim import PolyLR, StepEpochLR, build_optimizer, build_scheduler
from .step import NonFiniteLossError, build_train_loader, seed_everything, set_determinism, train_step

__all__ = ["CheckpointError", "export_model", "find_resume_checkpoint", "gather_rng_states", "load_checkpoint",
           "save_checkpoint", "DistInfo", "cleanup_distributed", "init_distributed", "Hook", "KeepBest", "TrainLoop",
           "Checkpointer", "LRSchedule", "MetricsStore", "MetricsWriter", "Validation", "PolyLR", "StepEpochLR",
           "build_optimizer", "build_scheduler", "NonFiniteLossError", "build_train_loader", "seed_everything",
           "set_determinism", "train_step"]
