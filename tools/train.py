"""Train a segmentation network from a config.

One process:
    seg train configs/demo/deeplabv3plus_r18_zeros.yaml
Several processes (one per GPU, or CPU processes with gloo), with torchrun:
    torchrun --nproc_per_node 8 -m seg.tools.train configs/cityscapes/deeplabv3plus_r50_partial_896.yaml
    torchrun --nnodes 2 --node_rank 0 --master_addr HOST --master_port 29500 --nproc_per_node 8 -m seg.tools.train ...
Options:
    --opts train.lr=0.02 data.crop_size=512   override config keys (values are YAML)
    --work-dir DIR                            output folder (default: config's work_dir, else work_dirs/<config name>)
    --resume auto|PATH                        continue this work dir's run from its newest valid checkpoint, or
                                              from PATH; changed train.* keys (lr, iterations, ...) take effect,
                                              a changed model.* key is refused; auto with no valid checkpoint
                                              starts afresh only where that loses nothing
    --overwrite                               start afresh in a work dir that holds a run: the old run is moved
                                              aside to <work dir>.old-<time> (without it, that is refused)
    --verify                                  before iteration 1, decode every data file (default: a sample of
                                              the training files, every validation label)
    --debug                                   show tracebacks

A classification config (one with model.arch, e.g. demo_cls/tinynet_partial) is handed to
`seg train-classifier`, with the same options (and its --runs).

``train.batch_size`` is the global batch: each of the N processes loads batch_size / N images per step.
Outputs in the work dir: config.yaml (resolved), run.json (run id), metrics.jsonl, tb/ (TensorBoard),
checkpoints/, model_final.pth. A running job holds the work dir's lock (.lock); a second one is refused.
"""
import os
import sys

from seg.classification.config import is_classifier_config
from seg.cli import add_config_args, run_tool, tool_parser
from seg.commands import load_tool
from seg.config import load_config
from seg.data import build_train_dataset, build_val_dataset
from seg.engine import cleanup_distributed, init_distributed, seed_everything, set_determinism
from seg.models import build_model
from seg.segmentation import build_validator, train


def build_parser():
    parser = tool_parser(__doc__)
    add_config_args(parser)
    parser.add_argument("--work-dir", default=None, help="output folder")
    parser.add_argument("--resume", default=None, metavar="auto|PATH", help="resume training")
    parser.add_argument("--overwrite", action="store_true", help="move a previous run in the work dir aside")
    parser.add_argument("--verify", action="store_true", help="check every data file before iteration 1")
    return parser


def parse_args(argv=None):
    return build_parser().parse_args(argv)


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


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    known, _ = build_parser().parse_known_args(argv)  # a classifier's own options (--runs) are not errors yet
    if is_classifier_config(known.config):
        return load_tool("train_classifier").main(argv)
    args = parse_args(argv)
    cfg = load_config(args.config, args.opts)
    # absolute, so that the saved config and checkpoints find the data from any folder (seg eval CKPT elsewhere)
    cfg["data"]["root"] = os.path.abspath(cfg["data"]["root"])
    work_dir = resolve_work_dir(args, cfg)
    cfg["work_dir"] = work_dir
    info = init_distributed(cfg["train"]["device"], cfg["train"]["dist_timeout_min"])
    if info.is_main:
        print(f"work dir: {work_dir} | world size {info.world_size} on {info.device.type} | global batch "
              f"{cfg['train']['batch_size']} = {info.world_size} x {cfg['train']['batch_size'] // info.world_size}",
              flush=True)

    try:
        set_determinism(cfg["train"]["deterministic"])
        seed_everything(cfg["train"]["seed"])  # same initial weights on every rank
        model = build_model(cfg["model"])
        train_set, val_set = build_datasets(cfg)
        seed_everything(cfg["train"]["seed"] + info.rank)  # distinct dropout streams per rank
        validate = build_validator(val_set, cfg, info.device) if val_set is not None else None
        return train(cfg, model, train_set, info, work_dir, val_set=val_set, validate=validate, resume=args.resume,
                     overwrite=args.overwrite, verify=args.verify)
    finally:
        cleanup_distributed()


if __name__ == "__main__":
    sys.exit(run_tool(main))
