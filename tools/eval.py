"""Evaluate a checkpoint: regular / tiled / overlapping-tile inference, mIoU, mAcc, fwIoU, leave-out and
border bands, a confusion-matrix figure.

    seg eval CHECKPOINT [--config CONFIG] [--mode overlap --tile-size 1024 --overlap 1/3] [--flip]
        [--mode regular,tile,overlap --out DIR/eval_{mode}.json]     # several modes, one model load
        [--scales 0.5,1.0,2.0] [--padding partial] [--leave-out 0,1/3,1/2 --leave-out-by area]
        [--save-pred DIR] [--show-dir DIR] [--overwrite] [--official] [--out results.json] [--opts key=value ...]
    seg eval CONFIG CHECKPOINT ...          # the older form: same as --config CONFIG
    torchrun --nproc_per_node N -m seg.tools.eval ...   # the split is sharded; confusion matrices are summed

The config is the one stored in the checkpoint unless --config names one; ``--opts`` overrides either
(e.g. ``data.root=...``). Options left out fall back to the config's ``eval`` section. The model is built
as the checkpoint was trained (its stored model section); a conflicting ``--opts model.KEY=...`` is an
error. Next to the results JSON go its per-image statistics and ``<results>_confusion.png`` (rows = ground
truth, each row normalised). ``{mode}`` in --save-pred / --show-dir is replaced by the mode; with several
modes and no ``{mode}`` each mode writes to DIR/<mode>/. A folder that already holds files is refused
unless ``--overwrite``, which moves it aside to DIR.old (nothing is deleted). ``--debug`` shows tracebacks.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

from seg.cli import add_device_args, fraction_arg, parse_fractions, positive_int, run_tool, scales_arg, tool_parser
from seg.config import LEAVE_OUT_BY, ConfigError, override_keys
from seg.data import build_val_dataset
from seg.engine.checkpoint import load_checkpoint
from seg.engine.distributed import barrier, cleanup_distributed, init_distributed
from seg.engine.loaders import build_eval_loader
from seg.engine.speed import prepare_model
from seg.evaluation import MODES, SegmentationEvaluator, run_inference
from seg.evaluation.evaluators import Evaluator, output_folder, prepare_output_folder
from seg.evaluation.official import PredictionWriter, official_scores
from seg.evaluation.plots import save_confusion_figure
from seg.evaluation.result import EvaluationResult
from seg.evaluation.runner import (
    eval_settings,
    format_table,
    labels_for,
    load_model_for_eval,
    run_config,
)
from seg.evaluation.stats import save_image_stats, sidecar_path
from seg.evaluation.visualize import PanelWriter
from seg.nn import PADDING_MODES
from seg.resources import resolve_config


def parse_args(argv=None) -> argparse.Namespace:
    p = tool_parser(__doc__)
    p.add_argument("paths", nargs="+", metavar="[CONFIG] CHECKPOINT",
                   help="the checkpoint, optionally preceded by a config file (the older form of --config)")
    p.add_argument("--config", type=resolve_config,
                   help="YAML config or a shipped config by name (default: the config stored in the checkpoint)")
    p.add_argument("--opts", nargs="*", default=[], metavar="KEY=VALUE",
                   help="config overrides, e.g. data.root=datasets/cityscapes (values are YAML)")
    p.add_argument("--mode", type=mode_list, help="regular, tile or overlap; several comma-separated give one "
                   "results file each (a given --out must then contain {mode})")
    p.add_argument("--tile-size", type=positive_int)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--overlap", type=fraction_arg,
                   help="overlap fraction of a tile side, e.g. 1/3 (default from config)")
    g.add_argument("--stride", type=positive_int, help="pixels between tile origins (instead of --overlap)")
    p.add_argument("--flip", action="store_true", default=None)
    p.add_argument("--scales", type=scales_arg, help="e.g. 0.5,1.0,2.0")
    p.add_argument("--tile-batch", type=positive_int)
    p.add_argument("--padding", choices=PADDING_MODES,
                   help="evaluate the weights under this padding (cross-testing); default: as trained")
    p.add_argument("--leave-out", type=parse_fractions, help="centre leave-out proportions, e.g. 0,1/3,1/2")
    p.add_argument("--leave-out-by", choices=LEAVE_OUT_BY,
                   help="side: blank a centred p*H x p*W rectangle; area: one covering a fraction p of the image; "
                        "both: each reading from the same pass (default from config)")
    p.add_argument("--distance-bands", type=lambda s: [int(v) for v in s.split(",")], help="e.g. 0,16,32,64,128")
    p.add_argument("--split", help="dataset split (default: data.val_split)")
    p.add_argument("--save-pred", metavar="DIR",
                   help="write prediction PNGs (Cityscapes labelIds for Cityscapes, class indices otherwise); "
                        "{mode} is replaced by the mode, several modes without it write DIR/<mode>/")
    p.add_argument("--show-dir", metavar="DIR", help="write titled panels (overlay, error map, class legend); "
                   "{mode} as for --save-pred")
    p.add_argument("--overwrite", action="store_true",
                   help="move an output folder that already holds files aside (to DIR.old) instead of refusing")
    p.add_argument("--official", action="store_true", help="also score with cityscapesscripts")
    p.add_argument("--out", help="results JSON (default: <checkpoint dir>/eval_<mode>_<padding>.json)")
    add_device_args(p)
    args = p.parse_args(argv)
    if len(args.paths) > 2 or (len(args.paths) == 2 and args.config):
        p.error(f"expected [CONFIG] CHECKPOINT (or CHECKPOINT --config CONFIG), got {args.paths}")
    if len(args.paths) == 2:
        args.config = resolve_config(args.paths[0])
    args.checkpoint = args.paths[-1]
    if args.mode and len(args.mode) > 1 and args.out and "{mode}" not in args.out:
        p.error(f"--out {args.out} must contain {{mode}} when several modes are evaluated")
    return args


def mode_list(text: str) -> list[str]:
    modes = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise argparse.ArgumentTypeError(f"expected modes from {', '.join(MODES)}, got {text!r}")
    return modes


def main(argv=None) -> EvaluationResult:
    args = parse_args(argv)
    ckpt = load_checkpoint(args.checkpoint)
    cfg = run_config(args.checkpoint, args.config, args.opts, loaded=ckpt)
    info = init_distributed(args.device, cfg["train"]["dist_timeout_min"], "--device")
    model, model_info = load_model_for_eval(cfg, args.checkpoint, args.padding, info.device, loaded=ckpt,
                                            explicit=override_keys(args.opts, "model"))
    del ckpt
    model = prepare_model(model, info.device, cfg["train"]["channels_last"], cfg["train"]["compile"])
    dataset = build_val_dataset(cfg["data"], args.split)
    workers = cfg["data"]["num_workers"] if args.num_workers is None else args.num_workers
    loader = build_eval_loader(dataset, batch_size=1, num_workers=workers)
    overrides = {key: getattr(args, key) for key in ("tile_size", "overlap", "stride", "flip", "scales", "tile_batch",
                                                     "leave_out", "leave_out_by", "distance_bands")}
    labels = labels_for(cfg["data"], model_info["num_classes"], args.checkpoint)
    if args.official and labels.output_ids is None:
        raise ConfigError(f"--official scores Cityscapes labelIds, but data.format={cfg['data']['format']!r} "
                          f"predicts class indices of its own; leave --official out")
    for mode in args.mode or [None]:  # the model and data are loaded once for all modes
        settings, analysis = eval_settings(cfg["eval"], mode=mode, **overrides)
        result = evaluate_mode(args, cfg, model, model_info, labels, loader, info, settings, analysis)
    cleanup_distributed()
    return result


def file_writers(args, mode: str, is_main: bool) -> list[Evaluator]:
    """The prediction-PNG and panel writers of ``mode``'s pass, each writing to a folder of its own mode
    (output_folder) that holds no earlier files (prepare_output_folder, on the main process)."""
    several = bool(args.mode) and len(args.mode) > 1
    folders = {"save_pred": args.save_pred, "show_dir": args.show_dir}
    folders = {key: output_folder(folder, mode, several) for key, folder in folders.items() if folder}
    if is_main:
        for folder in folders.values():
            aside = prepare_output_folder(folder, args.overwrite)
            if aside:
                print(f"--overwrite: moved the earlier {folder} to {aside}")
    barrier()
    if args.official and "save_pred" not in folders:
        folders["save_pred"] = tempfile.mkdtemp(prefix="seg_official_")
    writers: list[Evaluator] = [PredictionWriter(folders["save_pred"])] if "save_pred" in folders else []
    return writers + ([PanelWriter(folders["show_dir"])] if "show_dir" in folders else [])


def evaluate_mode(args, cfg, model, model_info, labels, loader, info, settings, analysis) -> EvaluationResult:
    """One inference mode: evaluate, then (main process) write the results JSON, its per-image sidecar and
    the confusion-matrix figure. ``labels``: the checkpoint's label space (labels_for), found once in main()."""
    evaluators = [SegmentationEvaluator(**analysis, image_stats=True),
                  *file_writers(args, settings.mode, info.is_main)]
    result = run_inference(model, loader, settings, evaluators, device=info.device, labels=labels)
    result.update(model_info, config=os.path.abspath(args.config) if args.config else model_info["checkpoint"],
                  split=args.split or cfg["data"]["val_split"])
    barrier()
    if info.is_main:
        if args.official:
            official = official_scores(result.predictions or [])
            result.update(official={"mIoU": official["mIoU"], "IoU": official["IoU"],
                                    "abs_diff_mIoU": abs(official["mIoU"] - result["mIoU"])})
        default = f"eval_{settings.mode}_{model_info['eval_padding']}.json"
        out = args.out.replace("{mode}", settings.mode) if args.out else os.path.join(
            os.path.dirname(os.path.abspath(args.checkpoint)), default)
        stats_path = sidecar_path(out)  # per-image counts for `seg compare`'s bootstrap
        assert result.image_stats is not None  # asked for above
        save_image_stats(result.image_stats, stats_path)
        result.update(image_stats=os.path.basename(stats_path))
        figure = os.path.splitext(out)[0] + "_confusion.png"
        save_confusion_figure(result["confusion_matrix"], labels, figure,
                              title=f"{os.path.basename(out)}: rows = ground truth, normalised per row")
        result.update(confusion_figure=os.path.basename(figure))
        result.to_json(out)
        print(format_table(result))
        print(f"results written to {out} (per-image statistics: {stats_path}; confusion matrix: {figure})")
    return result


if __name__ == "__main__":
    sys.exit(run_tool(main))
