"""Training engine: distributed set-up, optimizer and poly LR, checkpoints, logging, the training loop."""
from .checkpoint import (CheckpointError, export_model, find_resume_checkpoint, gather_rng_states, load_checkpoint,
                         save_checkpoint)
from .distributed import DistInfo, cleanup_distributed, init_distributed
from .optim import PolyLR, build_criterion, build_optimizer
from .trainer import NonFiniteLossError, build_train_loader, seed_everything, set_determinism, train, train_step

__all__ = ["CheckpointError", "export_model", "find_resume_checkpoint", "gather_rng_states", "load_checkpoint",
           "save_checkpoint", "DistInfo", "cleanup_distributed", "init_distributed", "PolyLR", "build_criterion", "build_optimizer",
           "NonFiniteLossError", "build_train_loader", "seed_everything", "set_determinism", "train", "train_step"]
