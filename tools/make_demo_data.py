#!/usr/bin/env python
"""Generate the synthetic Cityscapes-format demo dataset.

    seg make-demo-data --out datasets/demo --train 60 --val 20 --height 256 --width 512 \\
        --seed 0 [--extra 20] [--workers 2]

Writes leftImg8bit/{train,val[,train_extra]} photos, gtFine polygon JSONs with the labelIds / labelTrainIds /
color PNGs made from them by cityscapesscripts' json2labelImg, and (with --extra) gtCoarse annotations.
"""
import json
import sys
import time

from seg.cli import nonnegative_int, positive_int, run_tool, tool_parser
from seg.data.demo import generate_demo_dataset


def main(argv=None):
    p = tool_parser(__doc__)
    p.add_argument("--out", default="datasets/demo", help="dataset root to write (default: datasets/demo)")
    p.add_argument("--train", type=positive_int, default=60, help="number of gtFine train images")
    p.add_argument("--val", type=positive_int, default=20, help="number of gtFine val images")
    p.add_argument("--extra", type=nonnegative_int, default=0, help="number of train_extra images with gtCoarse labels")
    p.add_argument("--height", type=positive_int, default=256)
    p.add_argument("--width", type=positive_int, default=512)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=positive_int, default=1, help="processes (output is identical for any number)")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    info = generate_demo_dataset(args.out, train=args.train, val=args.val, height=args.height, width=args.width,
                                 seed=args.seed, extra=args.extra, workers=args.workers)
    dt = time.perf_counter() - t0
    n = args.train + args.val + args.extra
    info["seconds"] = round(dt, 2)
    info["images_per_second"] = round(n / dt, 1) if dt > 0 else None
    print(json.dumps(info, indent=2))


if __name__ == "__main__":
    sys.exit(run_tool(main))
