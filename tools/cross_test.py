"""Cross-testing (the paper's Table 4, generalised): every (trained padding, evaluated padding) pair.

    seg cross-test CKPT_A CKPT_B ... [--config CONFIG] [--paddings zeros,partial,reflect,replicate]
        [--mode regular] [--out-dir DIR] [--opts data.root=...]
    seg cross-test CONFIG.yaml CKPT_A ...   # the older form: same as --config CONFIG.yaml

The data and eval sections come from CONFIG (``--config``: a YAML file or a shipped config by name; or a
first argument ending in .yaml / .yml), else from the
config stored in the first checkpoint; each checkpoint's model section comes from the config stored in
it (so checkpoints of different encoders can be mixed), falling back to CONFIG's; a conflicting
``--opts model.KEY=...`` is an error. Rows are named by the run folder of each checkpoint (the folder
holding it, above ``checkpoints/``), so two runs' ``model_final.pth`` stay apart. The same weights are
switched in place to each padding and evaluated; a padding that cannot run on the model (reflect wider than a
feature map, a conv that cannot take it) is reported as not run, every other error stops the tool. Arms (encoder
+ trained padding) get mean ± std over their checkpoints (seeds) and a paired interval of the change from
evaluating as trained (seg.evaluation.cross_test). ``--debug`` shows tracebacks.
"""
from __future__ import annotations

import sys
from functools import partial

from seg.cli import add_device_args, positive_int, run_tool, tool_parser
from seg.config import ConfigError, override_keys
from seg.data import build_val_dataset
from seg.engine.checkpoint import load_checkpoint
from seg.engine.distributed import cleanup_distributed, init_distributed
from seg.engine.loaders import build_eval_loader
from seg.evaluation import MODES, SegmentationEvaluator, run_inference
from seg.evaluation.cross_test import evaluate_with_padding, summarize, write
from seg.evaluation.runner import eval_settings, labels_for, load_model_for_eval, run_config, run_names
from seg.nn import PADDING_MODES, PAPER_PAIR
from seg.resources import resolve_config

PADDINGS = PAPER_PAIR + tuple(m for m in PADDING_MODES if m not in PAPER_PAIR)  # table columns: the paper's pair first


def main(argv=None) -> dict:
    p = tool_parser(__doc__)
    p.add_argument("checkpoints", nargs="+", metavar="[CONFIG.yaml] CHECKPOINT")
    p.add_argument("--config", type=resolve_config,
                   help="YAML config or a shipped config by name (default: the config stored in the first checkpoint)")
    p.add_argument("--opts", nargs="*", default=[], metavar="KEY=VALUE",
                   help="config overrides, e.g. data.root=datasets/cityscapes (values are YAML)")
    p.add_argument("--paddings", default=",".join(PADDINGS))
    p.add_argument("--mode", choices=MODES)
    p.add_argument("--tile-size", type=positive_int)
    p.add_argument("--split")
    add_device_args(p)
    p.add_argument("--out-dir", default="work_dirs/cross_test")
    args = p.parse_args(argv)
    config = args.config
    if args.checkpoints[0].endswith((".yaml", ".yml")):
        if config:
            p.error(f"a config both as first argument ({args.checkpoints[0]}) and as --config ({config})")
        config = resolve_config(args.checkpoints.pop(0))
    if not args.checkpoints:
        p.error("no checkpoint given")
    paddings = [s.strip() for s in args.paddings.split(",") if s.strip()]
    bad = [s for s in paddings if s not in PADDING_MODES]
    if bad:
        raise ConfigError(f"--paddings: unknown padding(s) {bad}; expected some of {list(PADDING_MODES)}")

    # without --config the config comes from the first checkpoint: read it once, for the loop as well
    first = load_checkpoint(args.checkpoints[0]) if config is None else None
    cfg = run_config(args.checkpoints[0], config, args.opts, loaded=first)
    info = init_distributed(args.device, cfg["train"]["dist_timeout_min"], "--device")
    settings, analysis = eval_settings(cfg["eval"], mode=args.mode, tile_size=args.tile_size)
    names = run_names(args.checkpoints)
    dataset = build_val_dataset(cfg["data"], args.split)
    workers = cfg["data"]["num_workers"] if args.num_workers is None else args.num_workers
    loader = build_eval_loader(dataset, num_workers=workers)
    rows, details = [], []
    for path, name in zip(args.checkpoints, names):
        ckpt = first if first is not None else load_checkpoint(path)
        first = None
        model, minfo = load_model_for_eval(cfg, path, None, info.device, loaded=ckpt,
                                           explicit=override_keys(args.opts, "model"))
        del ckpt
        row = {"checkpoint": minfo["checkpoint"], "trained_padding": minfo["trained_padding"], "run": name,
               "encoder": minfo["encoder"], "train_seed": minfo["train_seed"],
               "label": f"{name} ({minfo['encoder']}, {minfo['trained_padding']})", "mIoU": {}, "not_run": {}}
        labels = labels_for(cfg["data"], minfo["num_classes"], path)
        for padding in paddings:
            result, why = evaluate_with_padding(model, padding, partial(
                run_inference, model, loader, settings, [SegmentationEvaluator(**analysis)], device=info.device,
                labels=labels))
            if result is None:  # e.g. reflect padding wider than a small feature map: report, go on
                row["mIoU"][padding] = None
                row["not_run"][padding] = why
                print(f"{row['label']} cannot run with {padding} padding: {why}")
                continue
            row["mIoU"][padding] = result["mIoU"]
            result.update(minfo, eval_padding=padding)
            details.append({key: value for key, value in result.metrics.items() if key != "confusion_matrix"})
            if info.is_main:
                print(f"{row['label']} evaluated with {padding}: mIoU {result['mIoU']:.2f}")
        rows.append(row)
    summary = dict(summarize(rows, paddings, settings.mode), runs=details)
    if info.is_main:
        print(write(summary, args.out_dir))
        print(f"written to {args.out_dir}/cross_test.md, cross_test.json and tables/ (CSV, LaTeX)")
    cleanup_distributed()
    return summary


if __name__ == "__main__":
    sys.exit(run_tool(main))
