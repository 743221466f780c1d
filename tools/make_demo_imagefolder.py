"""Write a tiny procedurally drawn ImageFolder (4 classes: checker, disk, hstripes, vstripes).

    python tools/make_demo_imagefolder.py --out datasets/demo_cls --train 48 --val 8 --size 24
Then: seg train-classifier configs/demo_cls/tinynet_zeros.yaml
"""
import sys

from seg.classification.demo import generate_demo_imagefolder
from seg.cli import positive_int, run_tool, tool_parser


def main(argv=None):
    parser = tool_parser(__doc__)
    parser.add_argument("--out", default="datasets/demo_cls", help="ImageFolder root to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train", type=positive_int, default=48, help="training images per class")
    parser.add_argument("--val", type=positive_int, default=8, help="validation images per class")
    parser.add_argument("--size", type=positive_int, default=24, help="image side in pixels")
    args = parser.parse_args(argv)
    root = generate_demo_imagefolder(args.out, args.train, args.val, args.size, args.seed)
    print(f"wrote {root}/train and {root}/val ({args.train} + {args.val} images per class, {args.size}px)")


if __name__ == "__main__":
    sys.exit(run_tool(main))
