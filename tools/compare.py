"""Paper-style comparison tables and plots from tools/eval.py result files.

    python tools/compare.py A.json B.json ... [--labels zeros,partial] [--out-dir DIR]

Writes (and prints) Markdown tables: mIoU per inference mode (regular / tile / overlap), centre
leave-out mIoU per proportion and border-distance mIoU per band, each with difference rows against the
first model; and PNG plots of the leave-out curve and the distance profile.
"""
from __future__ import annotations

import argparse
import json
import math
import os
from collections import OrderedDict

MODES = ("regular", "tile", "overlap")


def load(path: str) -> dict:
    try:
        with open(path) as f:
            result = json.load(f)
    except FileNotFoundError:
        raise SystemExit(f"compare: result file not found: {path}")
    except json.JSONDecodeError as err:
        raise SystemExit(f"compare: {path} is not valid JSON ({err})")
    for key in ("mIoU", "settings"):
        if key not in result:
            raise SystemExit(f"compare: {path} lacks '{key}'; is it a tools/eval.py result?")
    return result


def model_label(result: dict) -> str:
    trained, evaluated = result.get("trained_padding"), result.get("eval_padding")
    pad = trained if trained == evaluated or evaluated is None else f"{trained}->{evaluated}"
    return " ".join(str(p) for p in (result.get("encoder"), pad) if p) or os.path.basename(result.get("checkpoint", "?"))


def fmt(v) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.2f}"


def diff(a, b):
    return None if a is None or b is None else a - b


def markdown(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) if isinstance(c, str) else fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def with_diffs(rows: OrderedDict) -> list[list]:
    """Rows {label: [values]} plus one "Δ label − first" row per later model."""
    out = [[label] + values for label, values in rows.items()]
    labels = list(rows)
    for label in labels[1:]:
        out.append([f"Δ {label} − {labels[0]}"] + [diff(b, a) for a, b in zip(rows[labels[0]], rows[label])])
    return out


def mode_table(runs: list[tuple[str, dict]]) -> str:
    rows: OrderedDict = OrderedDict()
    for label, r in runs:
        rows.setdefault(label, [None] * len(MODES))[MODES.index(r["settings"]["mode"])] = r["mIoU"]
    return "### mIoU by inference mode\n\n" + markdown(["model"] + list(MODES), with_diffs(rows))


def analysis_table(runs, key: str, title: str) -> list[str]:
    """One table per (mode, leave-out meaning) for key "leave_out" or "distance_bands"."""
    groups: OrderedDict = OrderedDict()
    for label, r in runs:
        if key not in r:
            continue
        section = r[key]
        cols = tuple(row["label"] for row in section["results"])
        group = (r["settings"]["mode"], section.get("by"), cols)
        groups.setdefault(group, (section["meaning"], OrderedDict()))[1][label] = \
            [row["mIoU"] for row in section["results"]]
    tables = []
    for (mode, by, cols), (meaning, rows) in groups.items():
        what = f"leave-out by {by}" if by else "distance to border (px)"
        tables.append(f"### {title}, {mode} inference\n\n{meaning}\n\n"
                      + markdown([f"model \\ {what}"] + list(cols), with_diffs(rows)))
    return tables


def plot(runs, key: str, path: str, xlabel: str) -> bool:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    drawn = False
    for label, r in runs:
        if key not in r:
            continue
        res = r[key]["results"]
        ys = [row["mIoU"] if row["mIoU"] is not None else math.nan for row in res]
        xs = [row["proportion"] for row in res] if key == "leave_out" else list(range(len(res)))
        ax.plot(xs, ys, marker="o", label=f"{label} ({r['settings']['mode']})")
        if key == "distance_bands":
            ax.set_xticks(xs, [row["label"] for row in res])
        drawn = True
    if not drawn:
        plt.close(fig)
        return False
    bys = sorted({r[key].get("by") for _, r in runs if key in r} - {None})
    ax.set_xlabel(xlabel + (f" (by {' / '.join(bys)})" if bys else ""))
    ax.set_ylabel("mIoU (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def main(argv=None) -> str:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", nargs="+", help="tools/eval.py JSON files")
    p.add_argument("--labels", help="comma-separated model labels, one per file (default: encoder + padding)")
    p.add_argument("--out-dir", default="work_dirs/compare")
    args = p.parse_args(argv)
    results = [load(path) for path in args.results]
    labels = args.labels.split(",") if args.labels else [model_label(r) for r in results]
    if len(labels) != len(results):
        raise SystemExit(f"compare: {len(labels)} labels for {len(results)} result files")
    runs = list(zip(labels, results))
    parts = ["## Comparison\n", mode_table(runs)]
    parts += analysis_table(runs, "leave_out", "Centre leave-out mIoU")
    parts += analysis_table(runs, "distance_bands", "mIoU by distance to the nearest image border")
    os.makedirs(args.out_dir, exist_ok=True)
    for key, name, xlabel in (("leave_out", "leave_out.png", "centre proportion left out"),
                              ("distance_bands", "distance_profile.png", "distance to the nearest border (px)")):
        path = os.path.join(args.out_dir, name)
        if plot(runs, key, path, xlabel):
            parts.append(f"![{key}]({name})")
    text = "\n\n".join(parts) + "\n"
    with open(os.path.join(args.out_dir, "compare.md"), "w") as f:
        f.write(text)
    print(text)
    print(f"written to {args.out_dir}/compare.md")
    return text


if __name__ == "__main__":
    main()
