"""Draw the partial-padding ratio map r = K / S for a few convs (the README's picture).

    python tools/plot_ratio_map.py --out docs/ratio_map.png
"""
from __future__ import annotations

import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from seg.atomic import atomic_open  # noqa: E402
from seg.cli import run_tool, tool_parser  # noqa: E402
from seg.nn import PartialConv2d  # noqa: E402


def ratio_map(height: int, width: int, kernel: int, dilation: int = 1, stride: int = 1) -> torch.Tensor:
    """r (Ho, Wo) of a ``kernel`` x ``kernel`` conv with "same" padding on an H x W input.

    Read off a real PartialConv2d: with all-ones weights and input, its output divided by the
    zero-padded conv's output is exactly K / S.
    """
    conv = PartialConv2d(1, 1, kernel, stride=stride, padding=dilation * (kernel - 1) // 2, dilation=dilation,
                         bias=False)
    ones = torch.ones(1, 1, height, width)
    with torch.no_grad():
        conv.weight.fill_(1.0)
        partial = conv(ones)
        zero = F.conv2d(ones, conv.weight, None, stride, conv.padding, dilation)
    return (partial / zero)[0, 0]


def main(argv=None):
    parser = tool_parser(__doc__)
    parser.add_argument("--out", default="docs/ratio_map.png")
    args = parser.parse_args(argv)
    panels = [("3x3 conv, 16x32 map", ratio_map(16, 32, 3)),
              ("7x7 conv, 16x32 map", ratio_map(16, 32, 7)),
              ("ASPP 3x3 rate 36, 64x128 map (OS8)", ratio_map(64, 128, 3, dilation=36))]
    fig, axes = plt.subplots(1, len(panels), figsize=(15, 3.4))
    for ax, (title, r) in zip(axes, panels):
        im = ax.imshow(r.numpy(), cmap="magma", interpolation="nearest")
        ax.set_title(f"{title}\nr from {r.min():.2f} to {r.max():.2f}", fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
        fig.colorbar(im, ax=ax, fraction=0.025)
    fig.suptitle("Partial-padding ratio r = K / S (1 inside, > 1 where the window crosses the border)")
    fig.tight_layout()
    with atomic_open(args.out, "wb") as f:  # a full disk names the file; no half-written figure is left
        fig.savefig(f, format=os.path.splitext(args.out)[1][1:] or "png", dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    sys.exit(run_tool(main))
