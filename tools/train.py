"""Train a segmentation network from a config.

One process:
    python tools/train.py configs/demo/deeplabv3plus_r18_zeros.yaml
Several processes (one per GPU, or CPU processes with gloo), with torchrun:
    torchrun --nproc_per_node 8 tools/train.py configs/cityscapes/deeplabv3plus_r50_partial_896.yaml
    torchrun --nnodes 2 --node_rank 0 --master_addr HOST --master_port 29500 --nproc_per_node 8 tools/train.py ...
Options:
    --opts train.lr=0.02 data.crop_size=512   override config keys (values are YAML)
    --work-dir DIR                            output folder (default: config's work_dir, else work_dirs/<config name>)
    --resume auto|PATH                        continue from the newest valid checkpoint in the work dir, or from PATH

``train.batch_size`` is the global batch: each of the N processes loads batch_size / N images per step.
Outputs in the work dir: config.yaml (resolved), metrics.jsonl, tb/ (TensorBoard), checkpoints/, model_final.pth.
"""
import argparse
import os
import sys

from seg.config import ConfigError, dump_config, load_config
from seg.data import DataError, build_train_dataset, build_val_dataset
from seg.engine import (CheckpointError, NonFiniteLossError, cleanup_distributed, init_distributed,
                        seed_everything, set_determinism, train)
from seg.models import DeepLabV3Plus, PretrainedLoadError


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="YAML config file")
    parser.add_argument("--opts", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    parser.add_argument("--work-dir", default=None, help="output folder")
    parser.add_argument("--resume", default=None, metavar="auto|PATH", help="resume training")
    return parser.parse_args(argv)


def build_model(cfg):
    """DeepLabV3+ from the config's model section."""
    return DeepLabV3Plus(**cfg["model"])


def build_datasets(cfg):
    """(train set, validation set or None) from the config's data section."""
    train_set = build_train_dataset(cfg["data"], seed=cfg["train"]["seed"])
    val_set = build_val_dataset(cfg["data"]) if cfg["data"]["val_split"] else None
    return train_set, val_set


def resolve_work_dir(args, cfg):
    if args.work_dir:
        return args.work_dir
    if cfg["work_dir"]:
        return cfg["work_dir"]
    return os.path.join("work_dirs", os.path.splitext(os.path.basename(args.config))[0])


def main(args):
    cfg = load_config(args.config, args.opts)
    work_dir = resolve_work_dir(args, cfg)
    cfg["work_dir"] = work_dir
    info = init_distributed(cfg["train"]["device"])
    if info.is_main:
        os.makedirs(work_dir, exist_ok=True)
        dump_config(cfg, os.path.join(work_dir, "config.yaml"))
        print(f"work dir: {work_dir} | world size {info.world_size} on {info.device.type} | global batch "
              f"{cfg['train']['batch_size']} = {info.world_size} x {cfg['train']['batch_size'] // info.world_size}",
              flush=True)

    try:
        set_determinism(cfg["train"]["deterministic"])
        seed_everything(cfg["train"]["seed"])  # same initial weights on every rank
        model = build_model(cfg)
        train_set, val_set = build_datasets(cfg)
        seed_everything(cfg["train"]["seed"] + info.rank)  # distinct dropout streams per rank
        return train(cfg, model, train_set, info, work_dir, val_set=val_set, resume=args.resume)
    finally:
        cleanup_distributed()


if __name__ == "__main__":
    try:
        main(parse_args())
    except (ConfigError, DataError, FileNotFoundError, PretrainedLoadError, CheckpointError, NonFiniteLossError) as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
