"""Paper-style comparison tables and plots from `seg eval` result files, with their uncertainty.

    seg compare A.json B.json ... [--labels zeros,zeros,partial,...] [--resamples 1000]
        [--seed 0] [--effect 0.3] [--out-dir DIR] [--allow-different-images]

Results are grouped by inference mode and, within a mode, into arms by label (default: encoder + padding);
the first arm is the baseline. Per metric (mIoU, leave-out proportions, distance bands, class IoUs): each
arm's mean ± std over runs, the difference with a 95% interval over seeds (paired on the seeds both arms
hold, Welch otherwise) and a paired bootstrap over images (``--resamples`` draws with ``--seed``). Per
comparison: the smallest mIoU difference the current seeds detect (two-sided 5%, 80% power) and, with
``--effect``, the seeds needed to detect that difference. All runs must have been scored on the same
images (``--allow-different-images``: each arm's own numbers only). Writes compare.md, compare.json,
tables/*.csv and tables/*.tex and PNG plots (seg.evaluation.compare does the work).
"""
from __future__ import annotations

import argparse
import os
import sys

from seg.cli import positive_int, run_tool, tool_parser
from seg.evaluation.compare import compare_runs
from seg.evaluation.uncertainty import DEFAULT_RESAMPLES


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def parse_args(argv=None):
    p = tool_parser(__doc__)
    p.add_argument("results", nargs="+", help="`seg eval` JSON files (several per arm for several seeds)")
    p.add_argument("--labels", help="comma-separated arm label per file (default: encoder + padding)")
    p.add_argument("--resamples", type=positive_int, default=DEFAULT_RESAMPLES, help="bootstrap resamples B")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap draws")
    p.add_argument("--effect", type=positive_float, help="an mIoU difference (points) to plan for: the paired seeds "
                   "needed to detect it (two-sided 5%%, 80%% power) at the measured spread")
    p.add_argument("--out-dir", default="work_dirs/compare")
    p.add_argument("--allow-different-images", action="store_true", help="compare runs that were not all scored on "
                   "the same images: each arm's own numbers, but no difference or interval between such arms")
    return p.parse_args(argv)


def main(argv=None) -> str:
    args = parse_args(argv)
    result = compare_runs(args.results, args.labels.split(",") if args.labels else None, resamples=args.resamples,
                          seed=args.seed, allow_different_images=args.allow_different_images, effect=args.effect)
    text = result.write(args.out_dir)
    print(text)
    print(f"written to {os.path.join(args.out_dir, 'compare.md')}, compare.json and tables/ (CSV, LaTeX)")
    return text


if __name__ == "__main__":
    sys.exit(run_tool(main))
