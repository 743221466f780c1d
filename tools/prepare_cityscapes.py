#!/usr/bin/env python
"""Create the missing ``*_labelTrainIds.png`` of a Cityscapes root (gtFine and gtCoarse) and check the layout.

    seg prepare-cityscapes datasets/cityscapes [--workers 8] [--verify]
    seg prepare-cityscapes --check datasets/cityscapes     # is the tree complete? (changes nothing)

Rasterises each ``*_polygons.json`` with cityscapesscripts' json2labelImg (trainIds), in parallel with a
progress bar; files that exist are skipped, so re-running is cheap. Then checks that every image has its label
and every label its image, with equal sizes; --verify also decodes every PNG and checks label values.
Exits non-zero with a message naming the offending file.

--check only reports, per split, the images, labels (polygon JSON or labelIds) and labelTrainIds files found
against the official counts (fine 2975 / 500 / 1525, coarse train_extra 19998) and names what is missing;
it exits 1 when something is missing.
"""
import json
import os
import sys

from seg.cli import run_tool, tool_parser
from seg.data.prepare import check_readiness, prepare_cityscapes


def main(argv=None) -> int:
    p = tool_parser(__doc__)
    p.add_argument("root", help="Cityscapes root holding leftImg8bit/, gtFine/ and optionally gtCoarse/")
    p.add_argument("--workers", type=int, default=min(os.cpu_count() or 1, 8))
    p.add_argument("--verify", action="store_true", help="decode every PNG and check the label values")
    p.add_argument("--check", action="store_true",
                   help="only report what is found against the official counts and what is missing")
    args = p.parse_args(argv)
    if args.check:
        rows = check_readiness(args.root)
        print(f"{'set':<24}{'expected':>9}{'images':>9}{'labels':>9}{'trainIds':>9}")
        for r in rows:
            print(f"{r['set']:<24}{r['expected']:>9}{r['images']:>9}{r['labels']:>9}{r['train_ids']:>9}")
        problems = [f"{r['set']}: {m}" for r in rows for m in r["missing"]]
        print("\n".join(["missing:", *(f"  {m}" for m in problems)]) if problems else "ready: every split complete")
        if problems:
            raise SystemExit(1)
        return 0
    summary = prepare_cityscapes(args.root, workers=args.workers, verify=args.verify)
    print(json.dumps(summary, indent=2))
    print(f"{'split':<24}{'pairs':>8}")
    for name, n in summary["pairs"].items():
        print(f"{name:<24}{n:>8}")
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
