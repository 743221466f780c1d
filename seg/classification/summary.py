"""The paper's two run protocols and its tables over runs.

- "best" (Table 2): the top-1 of the epoch checkpoint with the highest validation top-1.
- "last_k" (Table 3, after Wu et al.): the mean validation accuracy of the last k (= 5) epochs.
Over several runs of one (arch, padding): the values per run, their mean, the difference of the mean
to the zero-padding row of the same arch, and the sample standard deviation (ddof=1, stated in tables).
Cross-testing (Table 4) uses the same rows with "trained -> evaluated" names.
"""
from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence

from seg.atomic import atomic_write_text
from seg.errors import InputError
from seg.nn import PADDING_MODES
from seg.report import Table, number

__all__ = ["summarize_run", "aggregate", "compare_groups", "comparison_table", "format_comparison", "padding_tables",
           "cross_test_rows", "summary_tables", "cross_test_tables", "tables_markdown", "write_json", "STD_DDOF"]

STD_DDOF = 1  # sample standard deviation over runs


def summarize_run(history: Sequence[dict], last_k: int = 5, metrics: Sequence[str] = ("top1", "top5")) -> dict:
    """Best-epoch and last-k-epoch accuracy of one run.

    history: one record per epoch, in order, each {"epoch": int, "top1": float, "top5": float, ...}.
    Returns {"epochs", "best": {"epoch", <metric>...}, "last_k": {"k", "requested_k", "epochs", <metric>...}}.
    The best epoch is the first one with the highest top-1. A run shorter than `last_k` epochs averages
    all of them and says so ("k" < "requested_k").
    """
    if not history:
        raise InputError("summarize_run: the run has no validated epoch")
    if last_k <= 0:
        raise InputError(f"summarize_run: last_k must be > 0, got {last_k}")
    best = max(history, key=lambda r: r["top1"])  # max keeps the first of equal values
    tail = list(history[-last_k:])
    return {
        "epochs": len(history),
        "best": {"epoch": best["epoch"], **{m: best[m] for m in metrics}},
        "last_k": {"k": len(tail), "requested_k": last_k, "epochs": [r["epoch"] for r in tail],
                   **{m: sum(r[m] for r in tail) / len(tail) for m in metrics}},
    }


def aggregate(values: Iterable[float], ddof: int = STD_DDOF) -> dict:
    """{"values", "n", "mean", "std"} of per-run values; std is None with fewer than ddof + 1 runs."""
    values = [float(v) for v in values]
    n = len(values)
    if n == 0:
        raise InputError("aggregate: no values")
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - ddof)) if n > ddof else None
    return {"values": values, "n": n, "mean": mean, "std": std}


def compare_groups(groups: Mapping[str, list[float]], baselines: Mapping[str, str | None]) -> list[dict]:
    """One row per group, in the order of `groups`: aggregate() plus "name" and "diff" = mean minus the
    mean of the group named by baselines[name] (None for a baseline row itself or when it is absent)."""
    stats = {name: aggregate(values) for name, values in groups.items()}
    rows = []
    for name, s in stats.items():
        base = baselines.get(name)
        diff = s["mean"] - stats[base]["mean"] if base in stats and base != name else None
        rows.append({"name": name, **s, "diff": diff})
    return rows


def comparison_table(rows: list[dict], run_label: str = "best", first_column: str = "Network", title: str = "",
                     name: str = "table") -> Table:
    """The paper's layout: per-run columns 1_<label>..n_<label>, average, diff, stdev (3 decimals)."""
    n = max(len(r["values"]) for r in rows)
    head = [first_column, *[f"{i + 1}_{run_label}" for i in range(n)], "average", "diff", f"stdev (ddof={STD_DDOF})"]
    cells = [[r["name"], *(number(v, 3) for v in r["values"]), *[""] * (n - len(r["values"])), number(r["mean"], 3),
              number(r["diff"], 3), number(r["std"], 3)] for r in rows]
    return Table(head, cells, title=title, name=name)


def format_comparison(rows: list[dict], run_label: str = "best", first_column: str = "Network") -> str:
    """:func:`comparison_table` as Markdown."""
    return comparison_table(rows, run_label, first_column).markdown()


def summary_tables(data: dict) -> list[Table]:
    """Tables 2 (best epoch) and 3 (last-k mean) from the summary JSON {"tables": padding_tables(...), "runs"}."""
    k = data["runs"][0]["summary"]["last_k"]["requested_k"]
    return [comparison_table(data["tables"]["best"], "best", title="Top-1 of the best epoch per run (paper Table 2)",
                             name="table2_best"),
            comparison_table(data["tables"]["last_k"], f"last{k}avg", name="table3_last_k",
                             title=f"Top-1 averaged over the last {k} epochs per run (paper Table 3)")]


def cross_test_tables(data: dict) -> list[Table]:
    """Table 4 from the cross-test JSON {"rows": cross_test_rows(...), "results"}."""
    return [comparison_table(data["rows"], "top1", "Training -> Inference", name="table4_cross_test",
                             title="Cross-testing: top-1 with the weights of one padding evaluated under another "
                                   "(paper Table 4; diff to evaluating with the training padding)")]


def tables_markdown(tables: list[Table]) -> str:
    return "\n\n".join(f"## {t.title}\n\n{t.markdown()}" for t in tables) + "\n"


def _padding_order(padding: str) -> int:
    return PADDING_MODES.index(padding) if padding in PADDING_MODES else len(PADDING_MODES)


def padding_tables(runs: list[dict], metric: str = "top1") -> dict[str, list[dict]]:
    """Tables 2 and 3 from per-run summaries.

    runs: dicts {"arch", "padding", "summary": summarize_run(...)} (one per run). Returns
    {"best": rows, "last_k": rows} with rows named "<arch>_<padding>", diff against "<arch>_zeros".
    """
    ordered = sorted(runs, key=lambda r: (r["arch"], _padding_order(r["padding"])))
    tables = {}
    for protocol in ("best", "last_k"):
        groups: dict[str, list[float]] = {}
        for r in ordered:
            groups.setdefault(f"{r['arch']}_{r['padding']}", []).append(r["summary"][protocol][metric])
        baselines = {f"{r['arch']}_{r['padding']}": f"{r['arch']}_zeros" for r in ordered}
        tables[protocol] = compare_groups(groups, baselines)
    return tables


def cross_test_rows(results: list[dict], metric: str = "top1") -> list[dict]:
    """Table 4 from cross-test results {"arch", "trained_padding", "eval_padding", "top1", ...} (one per
    checkpoint and eval padding). Rows "<arch>_<trained> -> <arch>_<eval>"; diff against evaluating with
    the padding the weights were trained with."""
    def name(r, pad):
        return f"{r['arch']}_{r['trained_padding']} -> {r['arch']}_{pad}"
    ordered = sorted(results, key=lambda r: (r["arch"], _padding_order(r["trained_padding"]),
                                             r["eval_padding"] != r["trained_padding"],
                                             _padding_order(r["eval_padding"])))
    groups: dict[str, list[float]] = {}
    for r in ordered:
        groups.setdefault(name(r, r["eval_padding"]), []).append(r[metric])
    baselines = {name(r, r["eval_padding"]): name(r, r["trained_padding"]) for r in ordered}
    return compare_groups(groups, baselines)


def write_json(obj, path: str) -> None:
    """Write `obj` as indented JSON atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")
