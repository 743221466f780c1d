"""Figures of evaluation results (matplotlib, Agg backend: no display needed)."""
from __future__ import annotations

import math
import os
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import matplotlib

matplotlib.use("Agg")  # before pyplot: tools run on headless machines
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from seg.atomic import atomic_open  # noqa: E402
from seg.data.labels import LabelSpace  # noqa: E402
from seg.nn import PADDING_MODES  # noqa: E402

from .inference import MODES  # noqa: E402
from .stats import COUNTS, iou_from_counts  # noqa: E402
from .uncertainty import LEVEL  # noqa: E402

__all__ = ["row_normalised", "save_confusion_figure", "FIGURE_FORMATS", "PNG_DPI", "save_figure", "mode_colours",
           "padding_of", "SEED_INTERVAL", "IMAGE_INTERVAL", "position", "profile_figure", "band_class_difference",
           "class_band_figure", "cross_test_figure", "cross_test_heatmap", "compare_figures"]


def row_normalised(confusion: Sequence[Sequence[int]]) -> np.ndarray:
    """Each row (a ground-truth class) divided by its sum, so entry [t, p] is the share of class t's
    pixels predicted as p; rows of classes absent from the truth are NaN (drawn blank, not as zeros)."""
    cm = np.asarray(confusion, dtype=np.float64)
    rows = cm.sum(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(rows > 0, cm / rows, np.nan)


def save_confusion_figure(confusion: Sequence[Sequence[int]], labels: LabelSpace, path: str,
                          title: str = "confusion matrix, rows = ground truth, normalised per row") -> None:
    """PNG of the row-normalised confusion matrix with class names on both axes and the shares (percent)
    written in the cells when the matrix is small enough to read them."""
    norm = row_normalised(confusion)
    k = norm.shape[0]
    size = max(4.0, 0.42 * k + 2.0)
    fig, ax = plt.subplots(figsize=(size + 1.0, size))
    try:
        im = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
        ax.set_xticks(range(k), labels.class_names, rotation=90, fontsize=8)
        ax.set_yticks(range(k), labels.class_names, fontsize=8)
        ax.set_xlabel("prediction")
        ax.set_ylabel("ground truth")
        ax.set_title(title, fontsize=9)
        if k <= 30:
            for t in range(k):
                for p in range(k):
                    if not np.isnan(norm[t, p]) and norm[t, p] >= 0.005:
                        ax.text(p, t, f"{100 * norm[t, p]:.0f}", ha="center", va="center", fontsize=6,
                                color="white" if norm[t, p] > 0.5 else "black")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the ground-truth class")
        fig.tight_layout()
        with atomic_open(path, "wb") as f:  # a full disk names the figure; a killed run leaves no half PNG
            fig.savefig(f, format="png", dpi=100)
    finally:
        plt.close(fig)


# ----------------------------------------------------------------------------- print-ready output
FIGURE_FORMATS = ("png", "pdf", "svg")
PNG_DPI = 200
# no creation date, fixed SVG ids: the same figure gives the same bytes on every run
_METADATA = {"png": {}, "pdf": {"CreationDate": None}, "svg": {"Date": None}}


def save_figure(fig: Figure, path_stem: str) -> list[str]:
    """Write ``fig`` as ``<path_stem>.png`` (PNG_DPI), ``.pdf`` and ``.svg`` and close it; the paths written."""
    paths = []
    try:
        with matplotlib.rc_context({"svg.hashsalt": "seg"}):
            for fmt in FIGURE_FORMATS:
                path = f"{path_stem}.{fmt}"
                with atomic_open(path, "wb") as f:  # a killed run keeps the previous file, not half of one
                    fig.savefig(f, format=fmt, dpi=PNG_DPI, metadata=_METADATA[fmt])
                paths.append(path)
    finally:
        plt.close(fig)
    return paths


# Okabe-Ito: distinguishable with the common colour-vision deficiencies; the first ones go to PADDING_MODES
_PALETTE = ("#0072b2", "#e69f00", "#009e73", "#d55e00", "#cc79a7", "#56b4e9", "#f0e442", "#000000")


def mode_colours(modes: Sequence[str]) -> dict[str, str]:
    """{mode: colour}: each of seg.nn.PADDING_MODES always gets the same colour (its place in that list), any
    other name the next free colour in the order given, so every figure drawn with one such dict agrees."""
    colours = {}
    others = [m for m in dict.fromkeys(modes) if m not in PADDING_MODES]
    for mode in modes:
        at = PADDING_MODES.index(mode) if mode in PADDING_MODES else len(PADDING_MODES) + others.index(mode)
        colours[mode] = _PALETTE[at % len(_PALETTE)]
    return colours


def padding_of(label: str) -> str:
    """The padding mode an arm label names (its last word that is one of PADDING_MODES: "resnet18 partial" ->
    "partial"), else the label itself."""
    return next((word for word in reversed(label.split()) if word in PADDING_MODES), label)


def _linestyle(mode: str) -> str:
    """One line style per inference mode, so colour can stay the padding's."""
    styles = ("-", "--", ":", "-.")
    return styles[MODES.index(mode) % len(styles)] if mode in MODES else styles[-1]


# ----------------------------------------------------------------------------- profiles (leave-out, distance)
BAND_PREFIX = "band"
SEED_INTERVAL = f"{LEVEL:.0%} seed interval (t over training runs)"
IMAGE_INTERVAL = f"{LEVEL:.0%} image interval (bootstrap over test images)"
_SEED_STYLE: dict[str, Any] = {"fmt": "o", "capsize": 4, "elinewidth": 1.0}
_IMAGE_STYLE: dict[str, Any] = {"fmt": "D", "capsize": 0, "elinewidth": 2.4, "markerfacecolor": "white"}
_INTERVALS = {"seeds": (SEED_INTERVAL, _SEED_STYLE), "images": (IMAGE_INTERVAL, _IMAGE_STYLE)}


def band_edges(label: str) -> tuple[int, int | None]:
    """"4-8" -> (4, 8); the open last band "32+" -> (32, None)."""
    lo, _, hi = label.rstrip("+").partition("-")
    return int(lo), (int(hi) if hi else None)


def position(prefix: str, label: str) -> float:
    """Where a section's row sits on the numeric x axis: a band at its centre in px (the open last band at its
    lower edge), a leave-out proportion at its value ("1/2" -> 0.5)."""
    if prefix == BAND_PREFIX:
        lo, hi = band_edges(label)
        return lo if hi is None else (lo + hi) / 2
    return float(Fraction(label))


def _points(values: dict, prefix: str) -> list[tuple[float, str, Any]]:
    """(x, label, value) of each ``"<prefix> <label>"`` key of ``values``, in key order."""
    return [(position(prefix, key.split(" ", 1)[1]), key.split(" ", 1)[1], value)
            for key, value in values.items() if key.startswith(prefix + " ")]


def _finite(*values: float) -> bool:
    return all(v is not None and math.isfinite(v) for v in values)


def _draw_arms(ax: Axes, summaries: dict, prefix: str, colours: dict[str, str]) -> dict[float, str]:
    """Each arm's mean ± std per row, rows without a mean (empty bands) left out; the drawn {x: label}."""
    drawn: dict[float, str] = {}
    for mode, arms in summaries.items():
        for label, summary in arms.items():
            points = [(x, lab, stat) for x, lab, stat in _points(summary["metrics"], prefix) if _finite(stat[0])]
            if not points:
                continue
            drawn.update((x, lab) for x, lab, _ in points)
            ax.errorbar([x for x, _, _ in points], [s[0] for _, _, s in points],
                        yerr=[s[1] if _finite(s[1]) else 0.0 for _, _, s in points], marker="o", capsize=3,
                        color=colours[padding_of(label)], linestyle=_linestyle(mode), label=f"{label} ({mode})")
    return drawn


def _draw_interval(ax: Axes, rows: list, kind: str, shift: float, colour: str, style: dict) -> bool:
    """One kind of interval ("seeds" / "images") of every row that has it, ``shift`` to the right of the row;
    whether any row had it."""
    kept = [(x + shift, r["diff"], r[kind]) for x, _, r in rows if _finite(r["diff"], *r[kind])]
    if kept:
        ax.errorbar([x for x, _, _ in kept], [d for _, d, _ in kept],
                    yerr=[[d - iv[0] for _, d, iv in kept], [iv[1] - d for _, d, iv in kept]], color=colour,
                    linestyle="none", **style)
    return bool(kept)


def _draw_differences(ax: Axes, summaries: dict, comparisons: dict, prefix: str, colours: dict[str, str],
                      span: float) -> None:
    """Each comparison's difference per row (coloured by the compared arm's padding), its seed interval and its
    image interval side by side (``span``: the x range, for the sideways shifts), and a legend entry naming
    each kind of interval."""
    series = [(mode, label, name, cmp) for mode, arms in summaries.items()
              for label, (name, cmp) in zip(list(arms)[1:], comparisons[mode].items())]
    series = [(mode, label, name, rows) for mode, label, name, cmp in series
              if (rows := [p for p in _points(cmp["rows"], prefix) if _finite(p[2]["diff"])])]
    step, drawn = 0.012 * span, set()
    for i, (mode, label, name, rows) in enumerate(series):
        colour, centre = colours[padding_of(label)], 3 * step * (i - (len(series) - 1) / 2)
        ax.plot([x for x, _, _ in rows], [r["diff"] for _, _, r in rows], color=colour, linestyle=_linestyle(mode),
                label=f"{name} ({mode})")
        for kind, shift in (("seeds", -step / 2), ("images", step / 2)):
            if _draw_interval(ax, rows, kind, centre + shift, colour, _INTERVALS[kind][1]):
                drawn.add(kind)
    for kind in sorted(drawn, reverse=True):  # the kinds in black, outside the data: each series has its colour
        label, style = _INTERVALS[kind]
        ax.errorbar([math.nan], [math.nan], yerr=[[1.0], [1.0]], color="black", label=label, **style)


def _numeric_ticks(ax: Axes, prefix: str, drawn: dict[float, str]) -> None:
    """Bands: ticks at the edges of the drawn bands (px); leave-out: at the drawn proportions, named as scored."""
    if prefix != BAND_PREFIX:
        ax.set_xticks(sorted(drawn), [drawn[x] for x in sorted(drawn)])
        return
    edges = sorted({e for label in drawn.values() for e in band_edges(label) if e is not None})
    ax.set_xticks(edges, [str(e) for e in edges])


def profile_figure(prefix: str, xlabel: str, summaries: dict, comparisons: dict,
                   colours: dict[str, str]) -> Figure | None:
    """Top: each arm's mean ± std over runs per leave-out proportion (``prefix`` "leave_out") or distance band
    ("band") on a numeric axis; bottom: each difference with its seed and its image interval. ``summaries`` /
    ``comparisons``: {inference mode: {arm label / comparison name: ...}} as tools/compare.py builds them, the
    comparisons in the order of the arms after the first. None when no arm has the section."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6.5, 6.5), sharex=True)
    drawn = _draw_arms(top, summaries, prefix, colours)
    if not drawn:
        plt.close(fig)
        return None
    _draw_differences(bottom, summaries, comparisons, prefix, colours, (max(drawn) - min(drawn)) or 1.0)
    bottom.axhline(0, color="grey", lw=0.8)
    bottom.margins(x=0.08)
    _numeric_ticks(bottom, prefix, drawn)
    bottom.set_xlabel(xlabel + (": band centre (open last band: lower edge)" if prefix == BAND_PREFIX else ""),
                      fontsize=9)
    top.set_ylabel("mIoU (%), mean ± std")
    bottom.set_ylabel("difference (points)")
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:  # no differences drawn when no arms were compared
            ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- class x distance band
def _common_bands(stats: Sequence[dict]) -> list[str]:
    bands = [r for r in stats[0]["regions"] if r.startswith(BAND_PREFIX + " ")]
    return [b for b in bands if all(b in s["regions"] for s in stats)]


def _arm_band_iou(stats: Sequence[dict], bands: list[str]) -> np.ndarray:
    """(runs, bands, classes) IoU of each run per band, its counts summed over its images."""
    per_run = []
    for s in stats:
        at = [s["regions"].index(b) for b in bands]
        per_run.append(iou_from_counts(*(s[name][:, at].sum(0) for name in COUNTS)))
    return np.stack(per_run)


def band_class_difference(stats_a: Sequence[dict], stats_b: Sequence[dict]) -> tuple[np.ndarray, list[str]]:
    """Per class and distance band, the mean IoU over arm b's runs minus that over arm a's (points): a
    (classes, bands) array and the band labels. Each run's IoU comes from its per-image counts
    (:func:`seg.evaluation.stats.load_image_stats`) summed over its images; NaN where a run has the class in
    neither truth nor prediction of the band. Bands no run scored a pixel in are left out, as are bands not
    held by every run."""
    stats = [*stats_a, *stats_b]
    bands = _common_bands(stats)
    scored = [b for b in bands
              if any(s["ground_truth"][:, s["regions"].index(b)].sum() > 0 for s in stats)]
    if not scored:
        return np.zeros((stats[0]["intersection"].shape[-1], 0)), []
    diff = _arm_band_iou(stats_b, scored).mean(0) - _arm_band_iou(stats_a, scored).mean(0)
    return diff.T, [b.split(" ", 1)[1] for b in scored]


def class_band_figure(diff: np.ndarray, class_names: Sequence[str], band_labels: Sequence[str],
                      title: str) -> Figure:
    """Heatmap of a (classes, bands) IoU difference, diverging colours centred at 0 (blue: gain, red: loss),
    undefined cells grey, the value written in each cell when the map is small enough to read them."""
    k, b = diff.shape
    limit = float(np.nanmax(np.abs(diff))) if np.isfinite(diff).any() else 0.0
    limit = limit or 1.0
    fig, ax = plt.subplots(figsize=(max(4.0, 0.7 * b + 3.0), max(3.0, 0.32 * k + 1.6)))
    im = ax.imshow(diff, cmap=plt.get_cmap("RdBu").with_extremes(bad="0.85"), vmin=-limit, vmax=limit,
                   aspect="auto")
    ax.set_xticks(range(b), band_labels)
    ax.set_yticks(range(k), class_names, fontsize=7)
    ax.set_xlabel("distance to the border (px), band")
    ax.set_title(title, fontsize=9)
    if k * b <= 400:
        for c, j in np.argwhere(np.isfinite(diff)):
            ax.text(j, c, f"{diff[c, j]:+.1f}", ha="center", va="center", fontsize=6,
                    color="white" if abs(diff[c, j]) > 0.6 * limit else "black")
    fig.colorbar(im, ax=ax, label="IoU difference (points)")
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- cross-testing
def cross_test_figure(matrix: Sequence[Sequence[float]], train_modes: Sequence[str], eval_modes: Sequence[str],
                      title: str = "") -> Figure:
    """mIoU heatmap, rows = padding trained with, columns = padding evaluated with; mode names in their
    :func:`mode_colours`, the value in each cell, missing cells (NaN) blank."""
    values = np.asarray(matrix, np.float64)
    fig, ax = plt.subplots(figsize=(1.1 * len(eval_modes) + 2.6, 0.8 * len(train_modes) + 1.6))
    im = ax.imshow(values, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(eval_modes)), eval_modes)
    ax.set_yticks(range(len(train_modes)), train_modes)
    colours = mode_colours([*train_modes, *eval_modes])
    for tick in [*ax.get_xticklabels(), *ax.get_yticklabels()]:
        tick.set_color(colours[tick.get_text()])
    ax.set_xlabel("evaluated with")
    ax.set_ylabel("trained with")
    ax.set_title(title, fontsize=9)
    mid = np.nanmean(values) if np.isfinite(values).any() else 0.0
    for r, c in np.argwhere(np.isfinite(values)):
        ax.text(c, r, f"{values[r, c]:.2f}", ha="center", va="center", fontsize=8,
                color="white" if values[r, c] < mid else "black")
    fig.colorbar(im, ax=ax, label="mIoU (%)")
    fig.tight_layout()
    return fig


def cross_test_heatmap(matrix: Sequence[Sequence[float]], train_modes: Sequence[str], eval_modes: Sequence[str],
                       path_stem: str, title: str = "") -> list[str]:
    """:func:`cross_test_figure` written by :func:`save_figure`; the paths written."""
    return save_figure(cross_test_figure(matrix, train_modes, eval_modes, title), path_stem)


# ----------------------------------------------------------------------------- a comparison's figures
PROFILE_FILES = {"leave_out": "leave_out", BAND_PREFIX: "distance_profile"}  # file stem per section prefix


def compare_figures(summaries: dict, comparisons: dict, groups: dict, xlabels: dict[str, str],
                    out_dir: str) -> list[tuple[str, str]]:
    """Every figure of one comparison (tools/compare.py's summaries, comparisons and {mode: {arm: [results]}},
    results carrying their per-image statistics under "_stats"; ``xlabels``: {section prefix: axis label})
    written into ``out_dir`` in every format, one colour per padding mode throughout: (title, PNG file name)
    of each, for the report to link."""
    colours = mode_colours([padding_of(label) for arms in summaries.values() for label in arms])
    written = []
    for prefix, name in PROFILE_FILES.items():
        fig = profile_figure(prefix, xlabels[prefix], summaries, comparisons, colours)
        if fig is not None:
            save_figure(fig, os.path.join(out_dir, name))
            written.append((prefix, f"{name}.png"))
    for mode, arms in groups.items():
        base = arms[next(iter(arms))]
        for j, (label, name) in enumerate(zip(list(arms)[1:], comparisons[mode])):
            if "not_compared" in comparisons[mode][name]:  # runs not scored on one set of images
                continue
            diff, bands = band_class_difference([r["_stats"] for r in base], [r["_stats"] for r in arms[label]])
            if not bands:
                continue
            stem = f"class_band_{mode}" + (f"_{j + 1}" if len(arms) > 2 else "")
            title = f"IoU difference by class and distance band\n{name}, {mode} inference, means over runs"
            save_figure(class_band_figure(diff, base[0]["class_names"], bands, title), os.path.join(out_dir, stem))
            written.append((f"class x band, {name} ({mode})", f"{stem}.png"))
    return written
