"""Training engine: distributed set-up, optimizer and LR schedules, checkpoints, logging, the training loop
(seg.engine.loop) and the segmentation task on it (seg.engine.trainer)."""
from .checkpoint import (
                         CheckpointError,
                         export_model,
                         find_resume_checkpoint,
                         gather_rng_states,
                         load_checkpoint,
                         save_checkpoint,
)
from .distributed import DistInfo, cleanup_distributed, init_distributed
from .loop import Hook, KeepBest, TrainLoop
from .optim import PolyLR, StepEpochLR, build_criterion, build_optimizer, build_scheduler
from .step import NonFiniteLossError, build_train_loader, seed_everything, set_determinism, train_step
from .trainer import train

__all__ = ["CheckpointError", "export_model", "find_resume_checkpoint", "gather_rng_states", "load_checkpoint",
           "save_checkpoint", "DistInfo", "cleanup_distributed", "init_distributed", "Hook", "KeepBest", "TrainLoop",
           "PolyLR", "StepEpochLR", "build_criterion", "build_optimizer", "build_scheduler", "NonFiniteLossError",
           "build_train_loader", "seed_everything", "set_determinism", "train", "train_step"]
