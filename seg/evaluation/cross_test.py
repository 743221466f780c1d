"""Cross-testing over seeds (the paper's Table 4, generalised): every (trained padding, evaluated padding) cell.

The same weights are switched in place to each padding and evaluated (tools/cross_test.py runs the passes and
gives each checkpoint a row: {"run", "label", "encoder", "trained_padding", "train_seed", "mIoU": {padding:
value or None}, "not_run": {padding: why}}). Here the rows are grouped into arms as in
:mod:`seg.evaluation.compare` (encoder + trained padding; several checkpoints of one setting are its seeds), and
each (arm, evaluated padding) cell gets the mean ± std over seeds and the change from evaluating each checkpoint
with the padding it was trained with: per checkpoint, so the interval over seeds is paired (the same weights on
both sides).
"""
from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

from seg.atomic import atomic_write_text
from seg.nn import PaddingConversionError, convert_padding
from seg.report import Table, interval_text, mean_std_text, number

from .plots import cross_test_heatmap
from .result import write_json
from .uncertainty import LEVEL, difference_interval, mean_std

__all__ = ["TORCH_PADDING_TOO_WIDE", "evaluate_with_padding", "summarize", "arm_label", "tables", "markdown",
           "heatmap", "write"]

# torch's message when reflect padding is as wide as the feature map it pads: the padding cannot run there
TORCH_PADDING_TOO_WIDE = "Padding size should be less than the corresponding input dimension"


R = TypeVar("R")


def evaluate_with_padding(model, padding: str, run: Callable[[], R]) -> tuple[R | None, str | None]:
    """Switch ``model`` to ``padding`` and ``run()`` the evaluation: (result, None), or (None, why) when the
    padding cannot run on this model (a conv that cannot take it) or on these inputs (reflect padding wider than a
    feature map). Every other error (a label space or channel mismatch, a missing file, ...) propagates."""
    try:
        convert_padding(model, padding)
        return run(), None
    except PaddingConversionError as err:
        return None, str(err)
    except RuntimeError as err:
        if TORCH_PADDING_TOO_WIDE not in str(err):
            raise
        return None, f"{padding} padding is wider than a feature map ({str(err).splitlines()[0]})"


def arm_label(row: dict) -> str:
    """The arm of a checkpoint: encoder and trained padding, as seg.evaluation.compare labels them."""
    return " ".join(str(p) for p in (row.get("encoder"), row["trained_padding"]) if p) or row["run"]


def _cell(runs: list[dict], padding: str, trained: str) -> dict:
    """Mean ± std over the arm's checkpoints evaluated with ``padding``, and the per-checkpoint change from
    evaluating each with the padding it was trained with (paired interval over the checkpoints)."""
    values = [r["mIoU"][padding] for r in runs if r["mIoU"].get(padding) is not None]
    both = [r for r in runs if r["mIoU"].get(padding) is not None and r["mIoU"].get(trained) is not None]
    changes = [r["mIoU"][padding] - r["mIoU"][trained] for r in both]
    cell: dict[str, Any] = {"values": values, "mean_std": mean_std(values), "changes": changes, "change": None}
    if padding != trained and both:
        keys = list(range(len(both)))  # paired by checkpoint: the same weights under both paddings
        t = difference_interval([r["mIoU"][trained] for r in both], [r["mIoU"][padding] for r in both], keys, keys)
        cell["change"] = {"mean_std": mean_std(changes), "low": t["low"], "high": t["high"], "method": t["method"]}
    return cell


def summarize(rows: list[dict], paddings: list[str], mode: str) -> dict:
    """The cross-test JSON: {"mode", "paddings", "rows", "arms": {label: {"trained_padding", "runs", "seeds",
    "cells": {padding: cell}}}} (``rows`` as tools/cross_test.py makes them; arms in first-seen order)."""
    grouped: dict[str, list[dict]] = {}
    for row in rows:
        grouped.setdefault(arm_label(row), []).append(row)
    arms = {label: {"trained_padding": runs[0]["trained_padding"], "runs": [r["run"] for r in runs],
                    "seeds": [r.get("train_seed") for r in runs],
                    "cells": {p: _cell(runs, p, runs[0]["trained_padding"]) for p in paddings}}
            for label, runs in grouped.items()}
    return {"mode": mode, "paddings": list(paddings), "rows": rows, "arms": arms}


def _bold_if(text: str, bold: bool) -> str:
    return f"**{text}**" if bold else text


def runs_table(summary: dict) -> Table:
    """One row per checkpoint, one column per evaluated padding; bold = as trained, (±) = change from it."""
    rows = []
    for row in summary["rows"]:
        own = row["mIoU"].get(row["trained_padding"])
        cells = []
        for p in summary["paddings"]:
            v = row["mIoU"].get(p)
            change = f" ({v - own:+.2f})" if own is not None and v is not None and p != row["trained_padding"] else ""
            cells.append(_bold_if(number(v), p == row["trained_padding"]) + change)
        rows.append([row["label"]] + cells)
    notes = [f"{row['label']} with {p}: not run ({why})"
             for row in summary["rows"] for p, why in row["not_run"].items()]
    return Table(["run (encoder, trained padding)"] + [f"eval {p}" for p in summary["paddings"]], rows,
                 title=f"Cross-testing per checkpoint: mIoU ({summary['mode']} inference)", name="cross_test_runs",
                 notes=notes)


def seeds_table(summary: dict) -> Table:
    """Per arm (rows) and evaluated padding (columns): mIoU mean ± std over seeds (n); bold = as trained."""
    rows = [[label] + [_bold_if(mean_std_text(*arm["cells"][p]["mean_std"]), p == arm["trained_padding"])
                       for p in summary["paddings"]] for label, arm in summary["arms"].items()]
    return Table(["trained (arm)"] + [f"eval {p}" for p in summary["paddings"]], rows,
                 title=f"Cross-testing over seeds: mIoU mean ± std (n), {summary['mode']} inference",
                 name="cross_test_mean")


def change_table(summary: dict) -> Table:
    """Per arm and evaluated padding: the change from evaluating as trained, mean ± std (n) and its paired
    interval over seeds."""
    rows = []
    for label, arm in summary["arms"].items():
        cells = []
        for p in summary["paddings"]:
            change = arm["cells"][p]["change"]
            if change is None:
                cells.append("-")
                continue
            mean, std, n = change["mean_std"]
            cells.append(f"{mean_std_text(mean, std, n, sign=True)} {interval_text(change['low'], change['high'])}")
        rows.append([label] + cells)
    return Table(["trained (arm)"] + [f"eval {p}" for p in summary["paddings"]], rows,
                 title=f"Change of mIoU from evaluating as trained: mean ± std (n) [{LEVEL:.0%} paired interval over "
                       "seeds]", name="cross_test_change")


def tables(summary: dict) -> list[Table]:
    return [seeds_table(summary), change_table(summary), runs_table(summary)]


def markdown(summary: dict) -> str:
    return "\n\n".join(f"### {t.title}\n\n{t.markdown()}" for t in tables(summary)) + "\n"


def heatmap(summary: dict) -> tuple[list[list[float]], list[str], list[str]]:
    """(mean mIoU matrix, trained-with arm labels (rows), evaluated-with paddings (columns)); NaN where not run."""
    labels = list(summary["arms"])
    matrix = [[float("nan") if summary["arms"][a]["cells"][p]["mean_std"][2] == 0 else
               summary["arms"][a]["cells"][p]["mean_std"][0] for p in summary["paddings"]] for a in labels]
    return matrix, labels, list(summary["paddings"])


def write(summary: dict, out_dir: str) -> str:
    """cross_test.md, cross_test.json, tables/<name>.csv|.tex and the heatmap (PNG, PDF, SVG) under ``out_dir``; returns
    the Markdown."""
    os.makedirs(out_dir, exist_ok=True)
    for table in tables(summary):
        table.write(os.path.join(out_dir, "tables"))
    matrix, rows, cols = heatmap(summary)
    drawn = cross_test_heatmap(matrix, rows, cols, os.path.join(out_dir, "cross_test_heatmap"),
                               title=f"Cross-testing, {summary['mode']} inference") if rows and cols else []
    text = markdown(summary) + "".join(f"\n![cross-test heatmap]({os.path.basename(p)})\n" for p in drawn
                                       if p.endswith(".png"))
    atomic_write_text(os.path.join(out_dir, "cross_test.md"), text)
    write_json(summary, os.path.join(out_dir, "cross_test.json"))
    return text
