"""The figures of a comparison (:mod:`seg.evaluation.compare`): the leave-out curve and the distance profile."""
from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

from seg.atomic import atomic_open  # noqa: E402

from .uncertainty import LEVEL, excludes_zero  # noqa: E402

__all__ = ["plot"]


def _series(summary: dict, prefix: str) -> tuple[list[str], list[float], list[float]]:
    keys = [k for k in summary["metrics"] if k.startswith(prefix + " ")]
    return ([k.split(" ", 1)[1] for k in keys], [summary["metrics"][k][0] for k in keys],
            [summary["metrics"][k][1] for k in keys])


def plot(prefix: str, xlabel: str, summaries: dict, comparisons: dict, path: str) -> bool:
    """Top: each arm's mean ± std over runs; bottom: each difference with its 95% interval (seeds when
    both arms have several runs, else images). False (and no file) when no arm has the section."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6.5, 6), sharex=True)
    drawn: list[str] = []  # the x tick labels, once an arm has the section
    for mode, arms in summaries.items():
        for label, summary in arms.items():
            ticks, means, stds = _series(summary, prefix)
            if ticks:
                top.errorbar(range(len(ticks)), means, yerr=[0 if math.isnan(s) else s for s in stds], marker="o",
                             capsize=3, label=f"{label} ({mode})")
                drawn = ticks
        for name, cmp in comparisons[mode].items():
            keys = [k for k in cmp["rows"] if k.startswith(prefix + " ")]
            if not keys:
                continue
            diffs = [cmp["rows"][k]["diff"] for k in keys]
            ivs = [_primary(cmp["rows"][k]) for k in keys]
            err = [[d - lo for d, (lo, _) in zip(diffs, ivs)], [hi - d for d, (_, hi) in zip(diffs, ivs)]]
            bottom.errorbar(range(len(keys)), diffs, yerr=err, marker="s", capsize=3, label=f"{name} ({mode})")
    if not drawn:
        plt.close(fig)
        return False
    bottom.axhline(0, color="grey", lw=0.8)
    bottom.set_xticks(range(len(drawn)), drawn)
    bottom.set_xlabel(xlabel)
    top.set_ylabel("mIoU (%), mean ± std")
    bottom.set_ylabel(f"difference, {LEVEL:.0%} interval")
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:  # no differences drawn when no arms were compared
            ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_open(path, "wb") as f:  # a killed run keeps the previous plot, not half a PNG
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)
    return True


def _primary(row: dict) -> tuple[float, float]:
    """The seed interval when there is one, else the image bootstrap (NaN-free for error bars)."""
    iv = row["seeds"] if excludes_zero(*row["seeds"]) is not None else row["images"]
    return (row["diff"], row["diff"]) if excludes_zero(*iv) is None else iv
