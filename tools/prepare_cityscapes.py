#!/usr/bin/env python
"""Create the missing ``*_labelTrainIds.png`` of a Cityscapes root (gtFine and gtCoarse) and check the layout.

    python tools/prepare_cityscapes.py datasets/cityscapes [--workers 8] [--verify]

Rasterises each ``*_polygons.json`` with cityscapesscripts' json2labelImg (trainIds), in parallel with a
progress bar; files that exist are skipped, so re-running is cheap. Then checks that every image has its label
and every label its image, with equal sizes; --verify also decodes every PNG and checks label values.
Exits non-zero with a message naming the offending file.
"""
import json
import os
import sys

from seg.cli import run_tool, tool_parser
from seg.data.prepare import prepare_cityscapes


def main(argv=None) -> int:
    p = tool_parser(__doc__)
    p.add_argument("root", help="Cityscapes root holding leftImg8bit/, gtFine/ and optionally gtCoarse/")
    p.add_argument("--workers", type=int, default=min(os.cpu_count() or 1, 8))
    p.add_argument("--verify", action="store_true", help="decode every PNG and check the label values")
    args = p.parse_args(argv)
    summary = prepare_cityscapes(args.root, workers=args.workers, verify=args.verify)
    print(json.dumps(summary, indent=2))
    print(f"{'split':<24}{'pairs':>8}")
    for name, n in summary["pairs"].items():
        print(f"{name:<24}{n:>8}")


if __name__ == "__main__":
    sys.exit(run_tool(main))
