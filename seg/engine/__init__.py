"""Training engine: distributed set-up, optimizer and LR schedules, checkpoints, logging, the training loop."""
from .checkpoint import (CheckpointError, export_model, find_resume_checkpoint, gather_rng_states, load_checkpoint,
                         save_checkpoint)
from .distributed import DistInfo, cleanup_distributed, init_distributed
from .optim import PolyLR, StepEpochLR, build_criterion, build_optimizer, build_scheduler
from .trainer import NonFiniteLossError, build_train_loader, seed_everything, set_determinism, train, train_step

__all__ = ["CheckpointError", "export_model", "find_resume_checkpoint", "gather_rng_states", "load_checkpoint",
           "save_checkpoint", "DistInfo", "cleanup_distributed", "init_distributed", "PolyLR", "StepEpochLR",
           "build_criterion", "build_optimizer", "build_scheduler", "NonFiniteLossError", "build_train_loader",
           "seed_everything", "set_determinism", "train", "train_step"]
