"""Figures of evaluation results (matplotlib, Agg backend: no display needed)."""
from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # before pyplot: tools run on headless machines
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from seg.atomic import atomic_open  # noqa: E402
from seg.data.labels import LabelSpace  # noqa: E402

__all__ = ["row_normalised", "save_confusion_figure"]


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
