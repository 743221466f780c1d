"""Train / cross-test / summarise ImageNet-style classifiers under any padding mode (paper section 4.1).

Train one run (or N runs with seeds seed, seed+1, ...), one process or under torchrun:
    seg train-classifier configs/demo_cls/tinynet_partial.yaml
    torchrun --nproc_per_node 8 -m seg.tools.train_classifier configs/imagenet/resnet50_partial.yaml --runs 5
Options: --opts train.lr=0.05 ... (YAML values), --work-dir DIR, --resume auto|PATH, --overwrite (move a
previous run in the work dir aside; without it a fresh run there is refused), --debug.
  Work dir (default work_dirs/<config name>; with --runs, one run<r>/ per run): config.yaml, metrics.jsonl,
  tb/, checkpoints/ (iter_*.pth, best.pth), model_final.pth, summary.json (per-epoch top-1/top-5,
  best epoch, mean of the last 5 epochs); with --runs also runs_summary.{json,md} (mean and std over runs).

Cross-testing (Table 4): evaluate checkpoints under other paddings (the weights do not change):
    seg train-classifier --cross-test work_dirs/r50_zeros/run*/checkpoints/best.pth \
        --paddings zeros partial --out work_dirs/cross_test
Tables 2 and 3 (best / last-5 protocols) over every summary.json found under the given folders:
    seg train-classifier --summarize work_dirs/ --out work_dirs/imagenet_tables
"""
import copy
import glob
import json
import os
import sys

from seg.atomic import atomic_write_text
from seg.classification.config import ConfigError, load_classifier_config, validate_classifier_config
from seg.classification.data import build_classification_datasets, build_split
from seg.classification.metrics import evaluate_classifier
from seg.classification.models import build_classifier, load_classifier_weights
from seg.classification.summary import (
    cross_test_rows,
    cross_test_tables,
    padding_tables,
    summary_tables,
    tables_markdown,
    write_json,
)
from seg.classification.trainer import train_classifier
from seg.cli import run_tool, tool_parser
from seg.engine import cleanup_distributed, init_distributed, load_checkpoint, seed_everything, set_determinism
from seg.engine.loaders import build_eval_loader
from seg.nn import PADDING_MODES, convert_padding
from seg.report import Table
from seg.resources import resolve_config


def parse_args(argv=None):
    parser = tool_parser(__doc__)
    parser.add_argument("config", nargs="?", type=resolve_config,
                        help="YAML config file (training), or a shipped one by name, e.g. demo_cls/tinynet_partial")
    parser.add_argument("--opts", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    parser.add_argument("--work-dir", default=None, help="output folder")
    parser.add_argument("--resume", default=None, metavar="auto|PATH", help="resume training")
    parser.add_argument("--overwrite", action="store_true", help="move a previous run in the work dir aside")
    parser.add_argument("--runs", type=int, default=1, help="train N runs with seeds seed..seed+N-1")
    parser.add_argument("--cross-test", nargs="+", metavar="CKPT", help="evaluate checkpoints under --paddings")
    parser.add_argument("--paddings", nargs="+", default=list(PADDING_MODES), choices=PADDING_MODES)
    parser.add_argument("--data-root", default=None, help="cross-test: ImageFolder root (default: the checkpoint's)")
    parser.add_argument("--summarize", nargs="+", metavar="DIR", help="tables over the summary.json files under DIRs")
    parser.add_argument("--out", default=None, help="output folder of --cross-test / --summarize")
    args = parser.parse_args(argv)
    if sum(x is not None for x in (args.config, args.cross_test, args.summarize)) != 1:
        parser.error("give exactly one of CONFIG, --cross-test CKPT..., --summarize DIR...")
    if args.runs < 1:
        parser.error("--runs must be >= 1")
    if args.runs > 1 and args.resume not in (None, "auto"):
        parser.error("--resume PATH names one run's checkpoint; with --runs use --resume auto (each run resumes "
                     "from its own run<r>/checkpoints)")
    return args


def resolve_work_dir(args, cfg) -> str:
    if args.work_dir:
        return args.work_dir
    if cfg["work_dir"]:
        return cfg["work_dir"]
    return os.path.join("work_dirs", os.path.splitext(os.path.basename(args.config))[0])


def _write_tables(out_dir: str, name: str, tables: list[Table], data) -> None:
    write_json(data, os.path.join(out_dir, f"{name}.json"))
    text = tables_markdown(tables)
    atomic_write_text(os.path.join(out_dir, f"{name}.md"), text)
    for table in tables:
        table.write(os.path.join(out_dir, "tables"))
    print(text)


def _summary_tables(runs: list[dict], out_dir: str, name: str) -> None:
    """Tables 2 (best) and 3 (last-k mean) from run records {"arch", "padding", "summary"}."""
    data = {"tables": padding_tables(runs), "runs": runs}
    _write_tables(out_dir, name, summary_tables(data), data)


def train_runs(args) -> None:
    base_cfg = load_classifier_config(args.config, args.opts)
    # absolute, so that the saved config and checkpoints find the data from any folder (--cross-test elsewhere)
    base_cfg["data"]["root"] = os.path.abspath(base_cfg["data"]["root"])
    if 1 not in base_cfg["eval"]["topk"]:
        raise ConfigError(f"{args.config}: eval.topk must contain 1 (best epoch and tables use top-1)")
    root_dir = resolve_work_dir(args, base_cfg)
    info = init_distributed(base_cfg["train"]["device"], base_cfg["train"]["dist_timeout_min"])
    runs = []
    try:
        for r in range(args.runs):
            cfg = copy.deepcopy(base_cfg)
            cfg["train"]["seed"] += r
            work_dir = os.path.join(root_dir, f"run{r}") if args.runs > 1 else root_dir
            cfg["work_dir"] = work_dir
            if info.is_main:
                print(f"run {r + 1}/{args.runs}: work dir {work_dir} | {cfg['model']['arch']} "
                      f"padding={cfg['model']['padding']} seed={cfg['train']['seed']} | world size "
                      f"{info.world_size} on {info.device.type} | global batch {cfg['train']['batch_size']}",
                      flush=True)
            set_determinism(cfg["train"]["deterministic"])
            seed_everything(cfg["train"]["seed"])  # same initial weights on every rank
            model_cfg = cfg["model"]  # the config's "padding" is the builder's padding_mode
            model = build_classifier(model_cfg["arch"], model_cfg["num_classes"], model_cfg["padding"],
                                     model_cfg["pretrained"])
            train_set, val_set = build_classification_datasets(cfg["data"])
            seed_everything(cfg["train"]["seed"] + info.rank)
            _, summary = train_classifier(cfg, model, train_set, val_set, info, work_dir, resume=args.resume,
                                          overwrite=args.overwrite)
            runs.append({"arch": cfg["model"]["arch"], "padding": cfg["model"]["padding"],
                         "seed": cfg["train"]["seed"], "work_dir": work_dir,
                         "summary": {k: v for k, v in summary.items() if k != "history"}})
            if info.is_main:
                b, last = summary["best"], summary["last_k"]
                print(f"run {r + 1}: best top-1 {b['top1']:.3f} (epoch {b['epoch']}), mean of the last "
                      f"{last['k']} epochs {last['top1']:.3f}", flush=True)
        if info.is_main and args.runs > 1:
            _summary_tables(runs, root_dir, "runs_summary")
    finally:
        cleanup_distributed()


def cross_test(args) -> None:
    """Evaluate each checkpoint under each of --paddings on its config's val split (Table 4)."""
    info = init_distributed("auto")
    results = []
    try:
        for path in args.cross_test:
            ckpt = load_checkpoint(path, required=("model", "config"))
            try:
                cfg = validate_classifier_config(ckpt["config"], source=f"config stored in {path}")
            except ConfigError as err:
                raise ConfigError(f"{err} (is {path} a classifier checkpoint?)") from None
            data = cfg["data"]
            split_dir = os.path.join(args.data_root or data["root"], data["val_split"])
            val_set = build_split(split_dir, data, train=False)
            loader = build_eval_loader(val_set, cfg["train"]["val_batch_size"], data["num_workers"])
            model = build_classifier(cfg["model"]["arch"], cfg["model"]["num_classes"], cfg["model"]["padding"])
            load_classifier_weights(model, path).to(info.device)
            for padding in args.paddings:
                metrics = evaluate_classifier(convert_padding(model, padding), loader, info.device,
                                              cfg["eval"]["topk"])
                results.append({"checkpoint": os.path.abspath(path), "arch": cfg["model"]["arch"],
                                "trained_padding": cfg["model"]["padding"], "eval_padding": padding, **metrics})
                if info.is_main:
                    print(f"{path}: trained {cfg['model']['padding']}, evaluated {padding}: "
                          f"top-1 {metrics['top1']:.3f} top-5 {metrics.get('top5', float('nan')):.3f}", flush=True)
        if info.is_main:
            data = {"rows": cross_test_rows(results), "results": results}
            _write_tables(args.out or os.path.join("work_dirs", "cross_test"), "cross_test", cross_test_tables(data),
                          data)
    finally:
        cleanup_distributed()


def summarize(args) -> None:
    paths = sorted({p for folder in args.summarize
                    for p in glob.glob(os.path.join(folder, "**", "summary.json"), recursive=True)})
    if not paths:
        raise FileNotFoundError(f"no summary.json under {args.summarize}")
    runs = []
    for p in paths:
        with open(p) as f:
            s = json.load(f)
        runs.append({"arch": s["arch"], "padding": s["padding"], "seed": s["seed"], "work_dir": os.path.dirname(p),
                     "summary": {k: v for k, v in s.items() if k in ("epochs", "best", "last_k")}})
    _summary_tables(runs, args.out or os.path.join("work_dirs", "imagenet_tables"), "tables")


def main(argv=None):
    args = parse_args(argv)
    if args.cross_test:
        return cross_test(args)
    if args.summarize:
        return summarize(args)
    return train_runs(args)


if __name__ == "__main__":
    sys.exit(run_tool(main))
