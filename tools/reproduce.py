"""The paper's full protocol on real data and GPUs, table by table, with the paper's figures beside ours.

    python tools/reproduce.py --tables 5 6 7 seg4           # print the plan (commands) and any results so far
    python tools/reproduce.py --tables 5 6 7 seg4 --run     # run what is missing, then print the tables
    python tools/reproduce.py --tables 1 2 3 4 --gpus 8 --run

Tables (numbering as in the paper):
  1     padding overhead, ResNet-50 and VGG16-BN inference, first call and steady state (bench/padding_overhead.py)
  2, 3  ImageNet top-1, best epoch / mean of last 5 epochs, 5 runs per (arch, padding) (tools/train_classifier.py)
  4     ImageNet cross-testing: ResNet-50 weights evaluated under the other padding
  seg4  the same cross-test for the Cityscapes DeepLabV3+ checkpoints, all four modes (tools/cross_test.py)
  5     Cityscapes mIoU, regular inference: ResNet-50 and WRN-38 DeepLabV3+, zeros vs partial
  6     WRN-38, tiled inference without and with overlap
  7     WRN-38, tiled, centre leave-out mIoU (border regions)

Every step is an ordinary command (printed before it runs) whose output lands in --work-dir; a step whose
output exists is not run again, so the script can be re-run after an interruption. Training runs under
`torchrun --nproc_per_node GPUS`. Cityscapes must be in --cityscapes (tools/prepare_cityscapes.py done),
ImageNet in --imagenet ({train,val}/<wnid>/*.JPEG), ImageNet-pretrained encoders in checkpoints/.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

from seg.atomic import atomic_write_text
from seg.cli import run_tool, tool_parser

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# SPEC §5 and the paper's tables: (zero, partial) figures
PAPER = {
    "5": {"resnet50": (78.08, 78.20), "wrn38": (80.20, 80.31)},
    "6": {"tile": (79.53, 79.91), "overlap": (79.71, 80.08)},
    "7": "partial - zero grows from +0.38 (nothing left out) to +1.25 mIoU (largest leave-out)",
    "1": "partial / zero, V100: ResNet-50 +3.4% steady (+29.7% first call), VGG16-BN +4.1%",
    "2": {"resnet50": (76.13, 76.61), "vgg19_bn": (74.44, 75.13)},
    "4": "ResNet-50: zero->partial loses about 16 points, partial->zero about 0.7",
}
SEG_MODELS = {"resnet50": "deeplabv3plus_r50_{}_896", "wrn38": "deeplabv3plus_wrn38_{}_736"}
CLS_ARCHS = ("resnet50", "resnet101", "resnet152", "vgg16_bn", "vgg19_bn")


class Step:
    """One command and the file whose existence says it is done."""

    def __init__(self, table: str, cmd: list[str], output: str):
        self.table, self.cmd, self.output = table, cmd, output

    def done(self) -> bool:
        return os.path.exists(self.output)


def launcher(gpus: int) -> list[str]:
    return ["torchrun", "--nproc_per_node", str(gpus)] if gpus > 1 else [sys.executable]


def seg_steps(args) -> list[Step]:
    steps = []
    data = f"data.root={args.cityscapes}"
    for enc, name in SEG_MODELS.items():
        for pad in ("zeros", "partial"):
            cfg = f"configs/cityscapes/{name.format(pad)}.yaml"
            work = os.path.join(args.work_dir, "cityscapes", f"{enc}_{pad}")
            ckpt = os.path.join(work, "model_final.pth")
            steps.append(Step("5", [*launcher(args.gpus), "tools/train.py", cfg, "--work-dir", work,
                                    "--resume", "auto", "--opts", data], ckpt))
            modes = ["regular"] + (["tile", "overlap"] if enc == "wrn38" else [])
            for mode in modes:
                table = {"regular": "5", "tile": "6", "overlap": "6"}[mode]
                steps.append(Step(table, [*launcher(args.gpus), "tools/eval.py", cfg, ckpt, "--mode", mode,
                                          "--out", os.path.join(work, f"eval_{mode}.json"), "--opts", data],
                                  os.path.join(work, f"eval_{mode}.json")))
    ckpts = [os.path.join(args.work_dir, "cityscapes", f"{enc}_{pad}", "model_final.pth")
             for enc in SEG_MODELS for pad in ("zeros", "partial")]
    out = os.path.join(args.work_dir, "cityscapes", "cross_test")
    steps.append(Step("seg4", [sys.executable, "tools/cross_test.py", "configs/cityscapes/"
                               f"{SEG_MODELS['resnet50'].format('zeros')}.yaml", *ckpts, "--out-dir", out,
                               "--opts", data], os.path.join(out, "cross_test.json")))
    return steps


def cls_steps(args) -> list[Step]:
    steps = []
    root = os.path.join(args.work_dir, "imagenet")
    for arch in CLS_ARCHS:
        for pad in ("zeros", "partial"):
            work = os.path.join(root, f"{arch}_{pad}")
            steps.append(Step("2", [*launcher(args.gpus), "tools/train_classifier.py",
                                    f"configs/imagenet/{arch}_{pad}.yaml", "--runs", str(args.runs),
                                    "--work-dir", work, "--data-root", args.imagenet],
                              os.path.join(work, "runs_summary.json")))
    steps.append(Step("3", [sys.executable, "tools/train_classifier.py", "--summarize", root, "--out",
                            os.path.join(root, "tables")], os.path.join(root, "tables", "tables.json")))
    best = [os.path.join(root, f"resnet50_{pad}", "run0", "checkpoints", "best.pth") for pad in ("zeros", "partial")]
    steps.append(Step("4", [sys.executable, "tools/train_classifier.py", "--cross-test", *best, "--paddings",
                            "zeros", "partial", "--data-root", args.imagenet, "--out", os.path.join(root, "cross_test")],
                      os.path.join(root, "cross_test", "cross_test.json")))
    return steps


def overhead_steps(args) -> list[Step]:
    out = os.path.join(args.work_dir, "padding_overhead.json")
    return [Step("1", [sys.executable, "bench/padding_overhead.py", "--arch", "resnet50", "vgg16_bn",
                       "--size", "1", "3", "1024", "2048", "--repeats", "10", "--device", args.device,
                       "--json", out], out)]


def load(path: str) -> dict | None:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError):
        return None


def seg_tables(args) -> list[str]:
    """Tables 5-7 as Markdown, measured next to the paper."""
    work = os.path.join(args.work_dir, "cityscapes")
    res = {(enc, pad, mode): load(os.path.join(work, f"{enc}_{pad}", f"eval_{mode}.json"))
           for enc in SEG_MODELS for pad in ("zeros", "partial") for mode in ("regular", "tile", "overlap")}

    def miou(enc, pad, mode):
        r = res[(enc, pad, mode)]
        return f"{r['mIoU']:.2f}" if r else "not run"

    lines = ["## Table 5: Cityscapes val mIoU, regular inference", "",
             "| model | zero (ours) | partial (ours) | zero (paper) | partial (paper) |", "|---|---|---|---|---|"]
    for enc, (pz, pp) in PAPER["5"].items():
        lines.append(f"| {enc} | {miou(enc, 'zeros', 'regular')} | {miou(enc, 'partial', 'regular')} | {pz:.2f} | {pp:.2f} |")
    lines += ["", "## Table 6: WRN-38, tiled inference", "",
              "| mode | zero (ours) | partial (ours) | zero (paper) | partial (paper) |", "|---|---|---|---|---|"]
    for mode, (pz, pp) in PAPER["6"].items():
        lines.append(f"| {mode} | {miou('wrn38', 'zeros', mode)} | {miou('wrn38', 'partial', mode)} | {pz:.2f} | {pp:.2f} |")
    lines += ["", "## Table 7: WRN-38, tile inference, centre leave-out mIoU", "", f"Paper: {PAPER['7']}.", ""]
    zero, part = res[("wrn38", "zeros", "tile")], res[("wrn38", "partial", "tile")]
    if zero and part:
        lines += ["| left out | zero | partial | diff |", "|---|---|---|---|"]
        for z, p in zip(zero["leave_out"]["results"], part["leave_out"]["results"]):
            lines.append(f"| {z['label']} | {z['mIoU']:.2f} | {p['mIoU']:.2f} | {p['mIoU'] - z['mIoU']:+.2f} |")
        lines += ["", zero["leave_out"]["meaning"]]
    else:
        lines.append("not run yet")
    return lines


def text_result(path: str, title: str, paper: str) -> list[str]:
    md = path.replace(".json", ".md")
    body = open(md).read() if os.path.exists(md) else "not run yet"
    return [f"## {title}", "", f"Paper: {paper}.", "", body]


def main(argv=None):
    p = tool_parser(__doc__)
    p.add_argument("--tables", nargs="+", default=["5", "6", "7", "seg4"],
                   choices=["1", "2", "3", "4", "5", "6", "7", "seg4"])
    p.add_argument("--run", action="store_true", help="run the missing steps (default: only print the plan)")
    p.add_argument("--gpus", type=int, default=8, help="processes per training run (torchrun)")
    p.add_argument("--runs", type=int, default=5, help="ImageNet runs per (arch, padding)")
    p.add_argument("--cityscapes", default="datasets/cityscapes")
    p.add_argument("--imagenet", default="datasets/imagenet")
    p.add_argument("--device", default="cuda", help="device for the overhead benchmark")
    p.add_argument("--work-dir", default="work_dirs/paper")
    args = p.parse_args(argv)

    wanted = set(args.tables)
    steps = [s for s in overhead_steps(args) + cls_steps(args) + seg_steps(args) if s.table in wanted]
    for step in steps:
        state = "done" if step.done() else ("running" if args.run else "to run")
        print(f"[table {step.table}] [{state}] {' '.join(step.cmd)}", flush=True)
        if args.run and not step.done():
            code = subprocess.run(step.cmd, cwd=ROOT).returncode
            if code:
                raise SystemExit(f"reproduce: step failed (exit {code}): {' '.join(step.cmd)}")

    report = ["# Paper reproduction", ""]
    if wanted & {"5", "6", "7"}:
        report += seg_tables(args)
    if "seg4" in wanted:
        report += text_result(os.path.join(args.work_dir, "cityscapes", "cross_test", "cross_test.json"),
                              "Cross-testing, Cityscapes DeepLabV3+ (Table 4 generalised)", PAPER["4"])
    if "4" in wanted:
        report += text_result(os.path.join(args.work_dir, "imagenet", "cross_test", "cross_test.json"),
                              "Table 4: ImageNet cross-testing", PAPER["4"])
    if wanted & {"2", "3"}:
        report += text_result(os.path.join(args.work_dir, "imagenet", "tables", "tables.json"),
                              "Tables 2 and 3: ImageNet top-1", f"{PAPER['2']} (zero, partial), best of 5 mean")
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
