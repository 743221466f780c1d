"""The cross-test heatmap: mean mIoU per (trained-with, evaluated-with) cell."""
from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from seg.atomic import atomic_open  # noqa: E402

__all__ = ["draw_heatmap"]


def draw_heatmap(matrix: list[list[float]], train_labels: list[str], eval_paddings: list[str],
                 path_stem: str) -> list[str]:
    """``path_stem``.png: rows = trained with, columns = evaluated with, each cell annotated with its value (NaN:
    not run, left blank). Returns the written paths (none for an empty matrix)."""
    values = np.asarray(matrix, np.float64)
    if values.size == 0:
        return []
    fig, ax = plt.subplots(figsize=(1.4 * len(eval_paddings) + 2.5, 0.6 * len(train_labels) + 1.8))
    image = ax.imshow(np.ma.masked_invalid(values), cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(eval_paddings)), eval_paddings)
    ax.set_yticks(range(len(train_labels)), train_labels)
    ax.set_xlabel("evaluated with")
    ax.set_ylabel("trained with")
    for (i, j), v in np.ndenumerate(values):
        if not math.isnan(v):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", color="white", fontsize=8)
    fig.colorbar(image, ax=ax, label="mIoU (%), mean over seeds")
    fig.tight_layout()
    path = path_stem + ".png"
    with atomic_open(path, "wb") as f:  # a killed run keeps the previous figure, not half a PNG
        fig.savefig(f, format="png", dpi=200)
    plt.close(fig)
    return [path]
