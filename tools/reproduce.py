"""The paper's full protocol on real data and GPUs, table by table, with the paper's figures beside ours.

    seg reproduce --tables 5 6 7 seg4           # print the plan (commands) and any results so far
    seg reproduce --tables 5 6 7 seg4 --run     # run what is missing, then print the tables
    seg reproduce --tables 1 2 3 4 --gpus 8 --run

Cityscapes cells (tables 5-7) are trained once per seed (--seeds, default 0,1,2, as the paper's three runs),
validated periodically (train.val_interval), and both the best-on-validation checkpoint (the paper's choice)
and the final one are evaluated; the tables give mean ± std over seeds for each, with the partial - zero
difference and its 95% interval, beside the paper's figures; Tables 6-7 also give the best of the seeds per
padding (the paper's selection). The cross-test uses the first seed.

Where the paper's text is silent, the plan and the report name each choice with its source (the paper, NVIDIA's
code with its file, or our reason) and the options that run the other readings: --additional-split 1|2,
--leave-out-by side|area|both, --partial-init zeros-imagenet|FILE.

Tables (numbering as in the paper):
  1     padding overhead, ResNet-50 and VGG16-BN inference, first call and steady state (bench/padding_overhead.py)
  2, 3  ImageNet top-1, best epoch / mean of last 5 epochs, 5 runs per (arch, padding) (`seg train-classifier`)
  4     ImageNet cross-testing: ResNet-50 weights evaluated under the other padding
  seg4  the same cross-test for the Cityscapes DeepLabV3+ checkpoints, all four modes (`seg cross-test`)
  5     Cityscapes mIoU, regular inference: ResNet-50 and WRN-38 DeepLabV3+, zeros vs partial, on the default
        city split (data.cv_split=0, the official train/val) and the additional one (--additional-split, default 2)
  6     WRN-38, tiled inference without and with overlap (additional split: the paper's figures are its models)
  7     WRN-38, tiled, centre leave-out mIoU (border regions; additional split, as Table 6)

Every step is an ordinary command (printed before it runs, and run in the current folder) whose output lands in
--work-dir (like --cityscapes and --imagenet, relative to the current folder); a step whose
output exists is not run again, so the script can be re-run after an interruption. Training runs under
`torchrun --nproc_per_node GPUS`. Cityscapes must be in --cityscapes (`seg prepare-cityscapes` done),
ImageNet in --imagenet ({train,val}/<wnid>/*.JPEG), the ImageNet WRN-38 in checkpoints/ (ResNet-50: torchvision cache).
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from seg.atomic import atomic_write_text
from seg.classification.summary import cross_test_tables, summary_tables, tables_markdown
from seg.cli import device_name, positive_int, run_tool, tool_parser
from seg.config import LEAVE_OUT_BY, ConfigError, load_config
from seg.data import OFFICIAL_CITIES, split_cities
from seg.evaluation import cross_test, leave_out_keys
from seg.evaluation.metrics import LEAVE_OUT_MEANING, leave_out_readings
from seg.evaluation.uncertainty import difference_interval, mean_std
from seg.nn import PAPER_PAIR
from seg.report import Table, interval_text, mean_std_text, number
from seg.resources import resolve_config

# The tools beside this file (the clone's tools/, or seg/tools/ when installed) run by absolute path, and
# configs resolve by name through seg.resources: outputs and relative data paths stay under the folder the
# command runs in, never inside an installed package.
TOOLS = os.path.dirname(os.path.abspath(__file__))
BENCH = os.path.join(os.path.dirname(TOOLS), "bench")  # the clone's benchmarks (not installed with the package)


def tool(name: str) -> str:
    return os.path.join(TOOLS, f"{name}.py")


def shipped_config(dataset: str, name: str) -> str:
    return resolve_config(f"{dataset}/{name}")

# The paper's tables (arXiv 1811.11718): (zero, partial) figures. Table 5 gives the mean of 3 runs per split;
# Tables 6-7 use one additional-split WRN-38 model per padding, "two models with similar mIoU in the regular
# setting": their regular 79.069 / 79.082 are Table 5's additional-split runs 1 and 3, each the best of its
# padding's three runs, so ours compare additional-split runs with them, as mean over seeds and as best of seeds.
PAPER: dict[str, Any] = {
    "5": {"resnet50": (78.08, 78.20), "wrn38": (80.20, 80.31)},
    "5+": {"resnet50": (76.58, 76.91), "wrn38": (78.84, 79.00)},
    "6": {"regular": (79.07, 79.08), "tile": (79.53, 79.91), "overlap": (79.71, 80.08)},
    "7": "partial - zero grows from +0.38 (nothing left out) to +1.25 mIoU (largest leave-out)",
    "1": "partial / zero, V100: ResNet-50 +3.4% steady (+29.7% first call), VGG16-BN +4.1%",
    "2": {"resnet50": (76.13, 76.61), "vgg19_bn": (74.44, 75.13)},
    "4": "ResNet-50: zero->partial loses about 16 points, partial->zero about 0.7",
}
SEG_MODELS = {"resnet50": "deeplabv3plus_r50_{}_896", "wrn38": "deeplabv3plus_wrn38_{}_736"}
PADS = PAPER_PAIR
SEEDS = "0,1,2"  # the paper ran three trainings per Cityscapes cell and reported their mean
CHECKPOINTS = {"best": os.path.join("checkpoints", "best.pth"), "final": "model_final.pth"}
LEAVE_OUT = "0,1/3,1/2,2/3,3/4,7/8"  # centre proportions for Table 7
# Table 7's (zero, partial) columns, tile inference, in LEAVE_OUT's order (its first is Table 6's tile row)
PAPER_7 = ((79.530, 79.907), (80.298, 80.683), (80.472, 81.051), (81.197, 82.031), (80.684, 81.600), (78.981, 80.230))
CLS_ARCHS = ("resnet50", "resnet101", "resnet152", "vgg16_bn", "vgg19_bn")
ZEROS_IMAGENET = "zeros-imagenet"  # --partial-init: the partial arm starts from the zero-padding ImageNet weights
NVIDIA = "NVIDIA/semantic-segmentation (sdcnet branch)"
# Config values the paper's text leaves open, and where each comes from (the values are read from the configs)
CONFIG_SOURCES: dict[str, Any] = {
    "train.lr": {"resnet50": "our choice: the usual DeepLabV3+ ResNet-50 rate at batch 16; the paper says the two "
                             "encoders' rates differ, so NVIDIA's WRN-38 value is not reused",
                 "wrn38": f"NVIDIA code: train.py default ({NVIDIA}); none of their scripts uses it"},
    "data.color_jitter": "NVIDIA code: datasets/__init__.py ColorJitter(brightness, contrast, saturation, "
                         "hue = --color_aug 0.25)",
    "data.hue_jitter": "NVIDIA code: datasets/__init__.py (hue = --color_aug)",
    "data.blur_prob": "NVIDIA code: datasets/__init__.py (--gblur: RandomGaussianBlur on every crop)",
    "data.class_balance": "NVIDIA code: scripts/train_cityscapes_WideResNet38.sh (--class_uniform_pct 0.5)",
    "train.val_interval": "our choice: best-on-val picked from a few checkpoints (NVIDIA's train.py validates "
                          "every epoch, 186 iterations here: 167 validations of 500 images per run)",
    "eval.overlap": "our choice: exactly 1/3 of a tile side (stride 2/3 of a tile, as in PSPNet-style sliding "
                    "evaluation [35], which the paper cites for tiling), so the middle of three 1024 tiles on 2048 "
                    "starts at 683",
}


class Step:
    """One command and the file whose existence says it is done."""

    def __init__(self, table: str, cmd: list[str], output: str):
        self.table, self.cmd, self.output = table, cmd, output

    def done(self) -> bool:
        return os.path.exists(self.output)


def launcher(gpus: int) -> list[str]:
    return ["torchrun", "--nproc_per_node", str(gpus)] if gpus > 1 else [sys.executable]


def partial_init_file(args, enc: str, pad: str) -> str | None:
    """The --partial-init checkpoint this cell starts from, or None (its config's zero-padding ImageNet weights).
    Only ResNet-50's partial arm takes one: NVIDIA published partial-padding ImageNet ResNets, no WRN-38."""
    return args.partial_init if args.partial_init != ZEROS_IMAGENET and enc == "resnet50" and pad == "partial" \
        else None


def seg_run_dir(args, enc: str, pad: str, seed: int, split: int = 0) -> str:
    """Work dir of one training run; runs from a --partial-init file get their own (tagged with its name)."""
    tag = f"_cv{split}" if split else ""
    init = partial_init_file(args, enc, pad)
    if init:
        tag += "_init-" + os.path.splitext(os.path.basename(init))[0]
    return os.path.join(args.work_dir, "cityscapes", f"{enc}_{pad}{tag}_s{seed}")


def held_out_cities(split: int) -> list[str]:
    """Validation cities of data.cv_split ``split`` on the official Cityscapes tree."""
    return split_cities(list(OFFICIAL_CITIES["val"]), list(OFFICIAL_CITIES["train"]), split)[1]


def split_choice(split: int) -> str:
    """data.cv_split, its held-out cities and where the choice comes from."""
    if split == 0:
        source = "paper: the official train/val split"
    elif split == 2:
        source = (f"NVIDIA code: scripts/train_cityscapes_WideResNet38.sh ({NVIDIA}; --cv 2, their only script "
                  f"with a non-default split; the paper names no cities)")
    else:
        source = "our choice via --additional-split 1 (the paper names no cities; NVIDIA's script uses 2)"
    return f"data.cv_split={split} (val: {', '.join(held_out_cities(split))}; {source})"


def init_choice(args, enc: str, pad: str) -> str:
    """The ImageNet weights this cell starts from, with their source."""
    init = partial_init_file(args, enc, pad)
    if init:
        return f"init {init} (--partial-init: partial-padding ImageNet weights for the partial arm)"
    return ("init zero-padding ImageNet (our choice: the paper does not say which ImageNet weights the partial arm "
            "starts from; --partial-init FILE gives ResNet-50's partial arm e.g. NVIDIA's pdresnet50)")


def leave_out_choice(args) -> str:
    readings = " and ".join(f"{by} ({LEAVE_OUT_MEANING[by]})" for by in leave_out_readings(args.leave_out_by))
    why = ("our choice: the paper does not say whether p is a side or an area fraction, so Table 7 is reported "
           "under each reading from one evaluation pass") if args.leave_out_by == "both" else \
        "--leave-out-by (the paper does not say whether p is a side or an area fraction)"
    return f"leave-out by {args.leave_out_by}: {readings}; {why}"


def choices(args) -> list[tuple[str, str, str]]:
    """(setting, value, source) of every choice the paper's text leaves open, as this run makes it."""
    split = args.additional_split
    rows = [("additional city split", f"--additional-split {split}", split_choice(split)),
            ("Table 7 leave-out region", f"--leave-out-by {args.leave_out_by}", leave_out_choice(args)),
            ("ImageNet weights, partial arm", f"--partial-init {args.partial_init}",
             init_choice(args, "resnet50", "partial")),
            ("Tables 6-7 models", "mean ± std over seeds and best of seeds",
             "paper: one model per padding with similar regular mIoU (its figures are each padding's best of three)")]
    cfgs = {enc: load_config(shipped_config("cityscapes", name.format("zeros"))) for enc, name in SEG_MODELS.items()}
    for key, source in CONFIG_SOURCES.items():
        section, name = key.split(".")
        for enc, text in (source.items() if isinstance(source, dict) else [("", source)]):
            value = cfgs[enc or "resnet50"][section][name]  # keys without an encoder: one shared base config
            rows.append((f"{key} ({enc})" if enc else key, _value(value), text))
    return rows


def _value(value) -> str:
    return f"{value:.10g}" if isinstance(value, float) else str(value)


def seg_splits(args) -> list[int]:
    """data.cv_split of the default and the additional city split."""
    return [0, args.additional_split]


def seg_modes(enc: str, split: int) -> list[str]:
    """Table 5 (regular, both encoders, both splits), 6 and 7 (tile / overlap, WRN-38, additional split)."""
    return ["regular"] + (["tile", "overlap"] if enc == "wrn38" and split else [])


def split_name(split: int) -> str:
    return "default" if split == 0 else "additional"


def cell_settings(enc: str, pad: str) -> dict:
    """The data / optimiser choices of one cell, read from its config."""
    cfg = load_config(shipped_config("cityscapes", SEG_MODELS[enc].format(pad)))
    return {"coarse_mode": cfg["data"]["coarse_mode"], "lr": cfg["train"]["lr"],
            "crop_placement": cfg["data"]["crop_placement"]}


def seg_cells(args) -> list[str]:
    """One line per Cityscapes table cell: its split and held-out cities, initial weights, coarse mode, learning
    rate, seeds, how the seeds are compared and the paper figure (the [choice] lines give each one's source)."""
    lines = []
    seeds = ",".join(map(str, args.seeds))
    for split in seg_splits(args):
        for enc in SEG_MODELS:
            for i, pad in enumerate(PADS):
                st = cell_settings(enc, pad)
                init = partial_init_file(args, enc, pad) or "zero-padding ImageNet"
                tables = [("5", "regular", PAPER["5" if split == 0 else "5+"][enc][i], "mean of 3 runs", "mean")]
                if enc == "wrn38" and split:
                    both = "mean and best of seeds"
                    tables += [("6", m, PAPER["6"][m][i], "one model", both) for m in ("tile", "overlap")]
                    tables += [("7", f"tile, leave-out by {args.leave_out_by}", None, "one model", both)]
                for table, mode, fig, what, compared in tables:
                    paper = f"{fig:.2f} ({what}, {split_name(split)} split)" if fig is not None else \
                        f"{PAPER['7']} ({what}, {split_name(split)} split)"
                    lines.append(f"[cell] table {table} | {enc} {pad} {mode} | split {split_name(split)} "
                                 f"(data.cv_split={split}: {', '.join(held_out_cities(split))}) | init {init} | "
                                 f"coarse_mode={st['coarse_mode']} | lr={st['lr']:g} | seeds {seeds} ({compared}) | "
                                 f"paper: {paper}")
    return lines


def eval_json(work: str, kind: str, mode: str) -> str:
    """Results of the ``kind`` checkpoint ("final": model_final.pth, "best": best on validation)."""
    return os.path.join(work, f"eval_{kind}_{mode}.json")


def seg_steps(args) -> list[Step]:
    """Per (encoder, padding, seed): train with periodic validation, then evaluate the final checkpoint
    and the best-on-validation one in every mode the tables need (one eval process per checkpoint)."""
    steps = []
    data = f"data.root={args.cityscapes}"
    val = [f"train.val_interval={args.val_interval}"] if args.val_interval else []
    for split in seg_splits(args):
        cv = f"data.cv_split={split}"
        for enc, name in SEG_MODELS.items():
            modes = seg_modes(enc, split)
            for pad in PADS:
                cfg = shipped_config("cityscapes", name.format(pad))
                init = partial_init_file(args, enc, pad)
                pretrained = [f"model.pretrained={init}"] if init else []
                for seed in args.seeds:
                    work = seg_run_dir(args, enc, pad, seed, split)
                    steps.append(Step("5", [*launcher(args.gpus), tool("train"), cfg, "--work-dir", work,
                                            "--resume", "auto", "--opts", data, cv, f"train.seed={seed}", *val,
                                            *pretrained],
                                      os.path.join(work, "model_final.pth")))
                    for kind, ckpt in CHECKPOINTS.items():
                        leave = ["--leave-out", LEAVE_OUT, "--leave-out-by", args.leave_out_by] if len(modes) > 1 \
                            else []
                        steps.append(Step("5", [*launcher(args.gpus), tool("eval"), "--config", cfg,
                                                os.path.join(work, ckpt), "--mode", ",".join(modes), *leave, "--out",
                                                eval_json(work, kind, "{mode}"), "--opts", data, cv],
                                          eval_json(work, kind, modes[-1])))
    seed = args.seeds[0]
    ckpts = [os.path.join(seg_run_dir(args, enc, pad, seed), "model_final.pth") for enc in SEG_MODELS for pad in PADS]
    out = os.path.join(args.work_dir, "cityscapes", "cross_test")
    cross_config = shipped_config("cityscapes", SEG_MODELS["resnet50"].format("zeros"))
    steps.append(Step("seg4", [sys.executable, tool("cross_test"), "--config", cross_config, *ckpts,
                               "--out-dir", out, "--opts", data], os.path.join(out, "cross_test.json")))
    return steps


def cls_steps(args) -> list[Step]:
    steps = []
    root = os.path.join(args.work_dir, "imagenet")
    for arch in CLS_ARCHS:
        for pad in PADS:
            work = os.path.join(root, f"{arch}_{pad}")
            steps.append(Step("2", [*launcher(args.gpus), tool("train_classifier"),
                                    shipped_config("imagenet", f"{arch}_{pad}"), "--runs", str(args.runs),
                                    "--work-dir", work, "--data-root", args.imagenet],
                              os.path.join(work, "runs_summary.json")))
    steps.append(Step("3", [sys.executable, tool("train_classifier"), "--summarize", root, "--out",
                            os.path.join(root, "tables")], os.path.join(root, "tables", "tables.json")))
    best = [os.path.join(root, f"resnet50_{pad}", "run0", "checkpoints", "best.pth") for pad in PADS]
    steps.append(Step("4", [sys.executable, tool("train_classifier"), "--cross-test", *best, "--paddings",
                            *PADS, "--data-root", args.imagenet,
                            "--out", os.path.join(root, "cross_test")],
                      os.path.join(root, "cross_test", "cross_test.json")))
    return steps


def overhead_steps(args) -> list[Step]:
    out = os.path.join(args.work_dir, "padding_overhead.json")
    return [Step("1", [sys.executable, os.path.join(BENCH, "padding_overhead.py"), "--arch", "resnet50", "vgg16_bn",
                       "--size", "1", "3", "1024", "2048", "--repeats", "10", "--device", args.device,
                       "--json", out], out)]


def load(path: str) -> dict | None:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError):
        return None


def _ms(values: list[float]) -> str:
    return mean_std_text(*mean_std(values)) if values else "not run"


def _diff(zero: list[float], part: list[float], seeds_z: list[int], seeds_p: list[int]) -> str:
    if not zero or not part:
        return "-"
    t = difference_interval(zero, part, seeds_z, seeds_p)
    return number(t["diff"], sign=True) + ("" if t["df"] is None else f" {interval_text(t['low'], t['high'])}")


def miou(result: dict) -> float:
    return result["mIoU"]


class SegResults:
    """The eval JSONs of every (encoder, padding, seed, checkpoint kind, mode) found under the work dir."""

    def __init__(self, args, split: int = 0):
        self.args = args
        self.res = {(enc, pad, seed, kind, mode): load(eval_json(seg_run_dir(args, enc, pad, seed, split), kind, mode))
                    for enc in SEG_MODELS for pad in PADS for seed in args.seeds for kind in CHECKPOINTS
                    for mode in ("regular", "tile", "overlap")}

    def values(self, enc, pad, kind, mode, pick=miou) -> tuple[list[float], list[int]]:
        """(values, seeds) of the runs that have results."""
        found = [(pick(r), seed) for seed in self.args.seeds
                 if (r := self.res[(enc, pad, seed, kind, mode)]) is not None]
        return [v for v, _ in found], [s for _, s in found]

    def row(self, enc, mode, pick=miou) -> list[str]:
        """zero / partial / difference [95% seed interval] for the best-on-val and the final checkpoints."""
        cells = []
        for kind in ("best", "final"):
            (z, sz), (p, sp) = (self.values(enc, pad, kind, mode, pick) for pad in PADS)
            cells += [_ms(z), _ms(p), _diff(z, p, sz, sp)]
        return cells

    def best_seed(self, enc, pad, kind) -> int | None:
        """The seed whose ``kind`` checkpoint has the highest regular mIoU (the paper's Tables 6-7 models are
        each padding's best of three by regular mIoU); None before any result."""
        values, seeds = self.values(enc, pad, kind, "regular")
        return seeds[values.index(max(values))] if values else None

    def best_of_seeds(self, enc, mode, kind, pick=miou) -> list[str]:
        """zero / partial / difference of each padding's best-of-seeds model, each with its seed."""
        picked: list[tuple[float, int | None] | None] = []
        for pad in PADS:
            seed = self.best_seed(enc, pad, kind)
            r = None if seed is None else self.res[(enc, pad, seed, kind, mode)]
            picked.append(None if r is None else (pick(r), seed))
        cells = ["not run" if v is None else f"{number(v[0])} (seed {v[1]})" for v in picked]
        zero, part = picked
        return cells + ["-" if zero is None or part is None else number(part[0] - zero[0], sign=True)]


def header(first: str) -> list[str]:
    return [first, "zero, best on val", "partial, best on val", "diff [95%]", "zero, final", "partial, final",
            "diff [95%]", "zero (paper)", "partial (paper)"]


PROTOCOL = ("Each cell: mean ± std (n) over the training seeds {seeds}; diff = partial - zero with a 95% t interval "
            "(paired by seed). *best on val*: the checkpoint with the highest periodic validation mIoU (the paper's "
            "choice; it is picked on the same val set it is scored on, so it is optimistic); *final*: the last "
            "checkpoint.")
ONE_MODEL = ("Two readings of the seeds, each beside the paper's figure. *Best of seeds* is like-for-like with the "
             "paper: its Tables 6-7 use one model per padding (\"similar mIoU in the regular setting\"; its regular "
             "79.069 / 79.082 are each padding's best of three additional-split runs in Table 5), so ours takes per "
             "padding the seed with the highest regular mIoU and reports that model in every column. *Mean ± std* is "
             "our estimate of the expected difference; it sits below a best-of-three figure by construction.")


def one_model_table(found: SegResults, first: str, rows: list[tuple[str, str, Callable, tuple]]) -> str:
    """Tables 6-7 layout: per (row, checkpoint kind), mean ± std over seeds and the best-of-seeds model, then
    the paper's figures. ``rows``: (label, eval mode, pick (eval JSON -> mIoU), (zero, partial) paper figures)."""
    cells = []
    for label, mode, pick, paper in rows:
        for kind, name in (("best", "best on val"), ("final", "final")):
            (z, sz), (p, sp) = (found.values("wrn38", pad, kind, mode, pick) for pad in PADS)
            cells.append([label, name, _ms(z), _ms(p), _diff(z, p, sz, sp),
                          *found.best_of_seeds("wrn38", mode, kind, pick), *(number(v) for v in paper)])
    return Table([first, "checkpoint", "zero, mean ± std", "partial, mean ± std", "diff [95%]", "zero, best of seeds",
                  "partial, best of seeds", "diff", "zero (paper)", "partial (paper)"], cells).markdown()


def leave_out_block(result: dict, by: str) -> dict | None:
    """The leave-out results of reading ``by`` in one eval JSON (None when it was evaluated under the other)."""
    return next((result[key] for key in leave_out_keys(result) if result[key]["by"] == by), None)


def leave_out_miou(result: dict, by: str, i: int) -> float:
    """mIoU of the i-th leave-out proportion under reading ``by``; NaN when that run was evaluated without it."""
    block = leave_out_block(result, by)
    return math.nan if block is None else block["results"][i]["mIoU"]


def leave_out_tables(args, found: SegResults) -> list[str]:
    """Table 7 under each --leave-out-by reading, all from the same eval JSONs (one pass per checkpoint)."""
    first = next((r for (enc, _, _, _, mode), r in found.res.items() if enc == "wrn38" and mode == "tile" and r), None)
    if first is None:
        return ["not run yet"]
    lines = []
    for by in leave_out_readings(args.leave_out_by):
        block = leave_out_block(first, by)
        lines += ["", f"### Leave-out by {by}: {LEAVE_OUT_MEANING[by]}", ""]
        if block is None:
            lines.append("not in the eval results (evaluated with another --leave-out-by; delete the "
                         "eval_*_tile.json files to evaluate again)")
            continue
        rows = [(row["label"], "tile", lambda r, i=i, by=by: leave_out_miou(r, by, i), paper)
                for i, (row, paper) in enumerate(zip(block["results"], PAPER_7))]
        lines.append(one_model_table(found, "left out", rows))
    return lines


def table5(found: SegResults, paper: dict) -> str:
    """Per encoder: both checkpoint kinds' zero / partial / difference over seeds, then the paper's figures."""
    rows = [[enc, *found.row(enc, "regular"), number(pz), number(pp)] for enc, (pz, pp) in paper.items()]
    return Table(header("model"), rows).markdown()


def seg_tables(args) -> list[str]:
    """Tables 5-7 as Markdown: means and spreads over seeds for both checkpoint choices, next to the paper;
    Tables 6-7 also as each padding's best of seeds, the paper's selection."""
    split = args.additional_split
    found = SegResults(args, split)
    lines = ["## Table 5: Cityscapes val mIoU, regular inference, default split (data.cv_split=0)", "",
             PROTOCOL.format(seeds=args.seeds), "", table5(SegResults(args, 0), PAPER["5"]), "",
             f"## Table 5, additional split ({split_choice(split)})", "", table5(found, PAPER["5+"])]
    lines += ["", f"## Table 6: WRN-38, tiled inference, additional split (data.cv_split={split})", "", ONE_MODEL, "",
              one_model_table(found, "mode", [(mode, mode, miou, paper) for mode, paper in PAPER["6"].items()])]
    lines += ["", f"## Table 7: WRN-38, tile inference, centre leave-out mIoU, additional split "
              f"(data.cv_split={split})", "", f"Paper: {PAPER['7']}. {leave_out_choice(args)}."]
    return lines + leave_out_tables(args, found)


def result_section(path: str, title: str, paper: str, render: Callable[[dict], str]) -> list[str]:
    """A section rendered from a tool's JSON result (``render``), beside the paper's figure."""
    result = load(path)
    return [f"## {title}", "", f"Paper: {paper}.", "", "not run yet" if result is None else render(result)]


def classification_markdown(tables: Callable[[dict], list[Table]]) -> Callable[[dict], str]:
    return lambda result: tables_markdown(tables(result))


def main(argv=None):
    p = tool_parser(__doc__)
    p.add_argument("--tables", nargs="+", default=["5", "6", "7", "seg4"],
                   choices=["1", "2", "3", "4", "5", "6", "7", "seg4"])
    p.add_argument("--run", action="store_true", help="run the missing steps (default: only print the plan)")
    p.add_argument("--gpus", type=int, default=8, help="processes per training run (torchrun)")
    p.add_argument("--runs", type=int, default=5, help="ImageNet runs per (arch, padding)")
    p.add_argument("--seeds", default=SEEDS, help="training seeds per Cityscapes table cell (default 0,1,2)")
    p.add_argument("--val-interval", type=positive_int,
                   help="validate every N iterations (default: the config's train.val_interval, 5000 of 31k)")
    p.add_argument("--additional-split", type=int, choices=[1, 2], default=2,
                   help="data.cv_split of the paper's additional city split (not named in the paper; default 2, "
                        "the split of NVIDIA's WRN-38 script)")
    p.add_argument("--leave-out-by", choices=LEAVE_OUT_BY, default="both",
                   help="Table 7's leave-out region: side, area, or both readings from one pass (default both)")
    p.add_argument("--partial-init", default=ZEROS_IMAGENET, metavar=f"{ZEROS_IMAGENET}|FILE",
                   help="ImageNet weights of ResNet-50's partial arm: the zero-padding ones (default) or a "
                        "partial-padding ImageNet checkpoint, e.g. NVIDIA's pdresnet50 (torchvision layout)")
    p.add_argument("--cityscapes", default="datasets/cityscapes")
    p.add_argument("--imagenet", default="datasets/imagenet")
    p.add_argument("--device", default="cuda", type=device_name, help="device for the overhead benchmark")
    p.add_argument("--work-dir", default="work_dirs/paper")
    args = p.parse_args(argv)
    args.seeds = [int(v) for v in args.seeds.split(",") if v.strip()]
    if args.partial_init != ZEROS_IMAGENET:
        if not os.path.isfile(args.partial_init):
            raise ConfigError(f"--partial-init {args.partial_init}: no such file (expected {ZEROS_IMAGENET} or a "
                              f"partial-padding ImageNet checkpoint)")
        args.partial_init = os.path.abspath(args.partial_init)
    # relative to the folder the command runs in, also for the steps (which run there too)
    args.work_dir, args.cityscapes, args.imagenet = (os.path.abspath(path) for path in
                                                     (args.work_dir, args.cityscapes, args.imagenet))

    wanted = set(args.tables)
    steps = [s for s in overhead_steps(args) + cls_steps(args) + seg_steps(args) if s.table in wanted]
    if wanted & {"5", "6", "7"}:
        print("\n".join(f"[choice] {name}: {value} | {source}" for name, value, source in choices(args)))
        print("\n".join(line for line in seg_cells(args) if line.split()[2] in wanted), flush=True)
    for step in steps:
        state = "done" if step.done() else ("running" if args.run else "to run")
        print(f"[table {step.table}] [{state}] {' '.join(step.cmd)}", flush=True)
        if args.run and not step.done():
            code = subprocess.run(step.cmd).returncode
            if code:
                raise SystemExit(f"reproduce: step failed (exit {code}): {' '.join(step.cmd)}")

    report = ["# Paper reproduction", ""]
    if wanted & {"5", "6", "7"}:
        report += ["## Choices where the paper's text is silent", "",
                   Table(["setting", "value", "source"], [list(c) for c in choices(args)]).markdown(), ""]
        report += seg_tables(args)
    if "seg4" in wanted:
        report += result_section(os.path.join(args.work_dir, "cityscapes", "cross_test", "cross_test.json"),
                                 "Cross-testing, Cityscapes DeepLabV3+ (Table 4 generalised)", PAPER["4"],
                                 cross_test.markdown)
    if "4" in wanted:
        report += result_section(os.path.join(args.work_dir, "imagenet", "cross_test", "cross_test.json"),
                                 "Table 4: ImageNet cross-testing", PAPER["4"],
                                 classification_markdown(cross_test_tables))
    if wanted & {"2", "3"}:
        report += result_section(os.path.join(args.work_dir, "imagenet", "tables", "tables.json"),
                                 "Tables 2 and 3: ImageNet top-1", f"{PAPER['2']} (zero, partial), best of 5 mean",
                                 classification_markdown(summary_tables))
    if "1" in wanted:
        result = load(os.path.join(args.work_dir, "padding_overhead.json"))
        report += ["## Table 1: padding overhead", "", f"Paper: {PAPER['1']}.", "",
                    "```", json.dumps(result["archs"], indent=1) if result else "not run yet", "```"]
    os.makedirs(args.work_dir, exist_ok=True)
    path = os.path.join(args.work_dir, "reproduction.md")
    atomic_write_text(path, "\n".join(report) + "\n")
    print("\n".join(report))
    print(f"\nwritten to {path}")


if __name__ == "__main__":
    sys.exit(run_tool(main))
