"""Paper-style comparison tables and plots from `seg eval` result files, with their uncertainty.

    seg compare A.json B.json ... [--labels zeros,zeros,partial,...] [--resamples 1000]
        [--seed 0] [--out-dir DIR] [--allow-different-images]

Results are grouped by inference mode (regular / tile / overlap) and, within a mode, into *arms* by label
(default: encoder + padding), so several runs of one setting (one eval JSON per training seed) form one
arm. The first arm is the baseline; every other arm is compared with it:

* per arm: mean ± standard deviation over its runs (n);
* seeds: the difference of the arm means with a 95% Student-t interval, paired by seed when both arms
  hold the same training seeds, Welch otherwise (the table says which) -- training variation;
* images: a paired bootstrap over the evaluated images (the per-image ``.images.npz`` beside each JSON,
  ``--resamples`` draws with ``--seed``) -- the variation from which images were tested.

This holds for mIoU, every centre leave-out proportion, every border-distance band and every class IoU.

Differences mean something only on one test set, so every run must have been scored on the same images:
the image names, in order, of each run's sidecar must agree, and each sidecar's counts, summed over its
images, must equal its JSON's confusion matrix (a sidecar of another run is refused). Otherwise compare stops
with one line naming the files; with ``--allow-different-images`` it reports each arm's own numbers (mean ±
std) but no difference or interval between arms whose runs were not all scored on one set of images.
Writes compare.md (tables and one verdict sentence per comparison), compare.json and figures (PNG at 200 dpi,
PDF, SVG; one colour per padding mode throughout): the leave-out curve and the distance profile on numeric
axes, each difference with its seed and its image interval, and per compared pair the IoU difference by class
and distance band.
"""
from __future__ import annotations

import json
import math
import os
import sys
from collections import OrderedDict

import numpy as np

from seg.atomic import atomic_write_text
from seg.cli import positive_int, run_tool, tool_parser
from seg.errors import ResultFileError
from seg.evaluation import MODES
from seg.evaluation.plots import PNG_DPI, compare_figures
from seg.evaluation.result import write_json
from seg.evaluation.runner import run_names
from seg.evaluation.stats import COUNTS, REGION_ALL, load_image_stats
from seg.evaluation.uncertainty import (
    DEFAULT_RESAMPLES,
    LEVEL,
    bootstrap_difference,
    difference_interval,
    excludes_zero,
    mean_std,
)

SECTIONS = (("leave_out", "leave_out", "Centre leave-out mIoU", "centre proportion left out"),
            ("distance_bands", "band", "mIoU by distance to the nearest image border", "distance to the border (px)"))


# ----------------------------------------------------------------------------- loading
def load(path: str) -> dict:
    """A `seg eval` result with its per-image statistics under "_stats" (None when it has none)."""
    try:
        with open(path) as f:
            result = json.load(f)
    except json.JSONDecodeError as err:
        raise ResultFileError(f"{path} is not valid JSON ({err})") from None
    for key in ("mIoU", "settings"):
        if key not in result:
            raise ResultFileError(f"{path} lacks '{key}'; is it a `seg eval` result?")
    sidecar = result.get("image_stats")
    result["_path"] = path
    result["_stats"] = None
    if sidecar:
        result["_stats"] = load_image_stats(os.path.join(os.path.dirname(path), sidecar))
        check_sidecar(result, os.path.join(os.path.dirname(path), sidecar))
    return result


def check_sidecar(result: dict, sidecar: str) -> None:
    """ResultFileError unless the sidecar's per-image counts of the whole image, summed over its images, are
    the diagonal, column sums and row sums of the JSON's confusion matrix (K x K, rows = truth), and it holds
    as many images as the JSON counted: a sidecar copied from another run would give another run's bootstrap."""
    path, stats = result["_path"], result["_stats"]
    if "confusion_matrix" not in result or REGION_ALL not in stats["regions"]:
        missing = "confusion_matrix" if "confusion_matrix" not in result else f"the region {REGION_ALL!r}"
        raise ResultFileError(f"{path}: cannot check its per-image statistics {sidecar} (no {missing}); "
                              "re-run `seg eval`")
    confusion = np.asarray(result["confusion_matrix"], np.int64)
    region = stats["regions"].index(REGION_ALL)
    summed = np.stack([stats[name][:, region].sum(0) for name in COUNTS])  # (3, K)
    expected = np.stack([confusion.diagonal(), confusion.sum(0), confusion.sum(1)])
    images = len(stats["images"])
    if summed.shape != expected.shape or (summed != expected).any() or result.get("num_images", images) != images:
        raise ResultFileError(f"{sidecar} does not belong to {path}: its {images} images' counts "
                              f"({summed.shape[1]} classes) do not sum to that file's confusion matrix "
                              f"({len(confusion)} classes, {result.get('num_images', '?')} images); re-run "
                              "`seg eval`")


def image_set(result: dict) -> tuple[str, ...] | None:
    """The names of the images ``result`` was scored on, in order (None: it has no per-image statistics)."""
    return None if result["_stats"] is None else tuple(result["_stats"]["images"])


def different_images(results: list[dict]) -> str | None:
    """Why ``results`` cannot be compared as scored on one set of images (naming the files), or None."""
    first = results[0]
    for r in results:
        if image_set(r) is None:
            return (f"{r['_path']} has no per-image statistics (.images.npz), so nothing shows that it was scored "
                    f"on the same images as {first['_path']}")
    for r in results[1:]:
        if image_set(r) != image_set(first):
            return (f"{first['_path']} and {r['_path']} were scored on different images "
                    f"({_first_difference(first['_stats']['images'], r['_stats']['images'])})")
    return None


def _first_difference(a: list[str], b: list[str]) -> str:
    at = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)
    if at is None:
        return f"{len(a)} vs {len(b)} images"
    return f"image {at + 1} is {a[at]!r} in one, {b[at]!r} in the other"


def model_label(result: dict) -> str:
    trained, evaluated = result.get("trained_padding"), result.get("eval_padding")
    pad = trained if trained == evaluated or evaluated is None else f"{trained}->{evaluated}"
    # without encoder and padding, the run folder names the model (every run's file is model_final.pth)
    return " ".join(str(p) for p in (result.get("encoder"), pad) if p) or run_names([result.get("checkpoint", "?")])[0]


def run_metrics(result: dict) -> OrderedDict:
    """Every compared number of one run: "all" (mIoU), "leave_out <p>", "band <a-b>", "class <name>"."""
    metrics = OrderedDict([(REGION_ALL, result["mIoU"])])
    for key, prefix, _, _ in SECTIONS:
        for row in result.get(key, {}).get("results", []):
            metrics[f"{prefix} {row['label']}"] = row["mIoU"]
    for name, iou in zip(result.get("class_names", []), result.get("IoU", [])):
        metrics[f"class {name}"] = iou
    return metrics


def group_arms(labels: list[str], results: list[dict]) -> OrderedDict:
    """{mode: {label: [results]}} in first-seen order."""
    groups: OrderedDict = OrderedDict()
    for label, r in zip(labels, results):
        groups.setdefault(r["settings"]["mode"], OrderedDict()).setdefault(label, []).append(r)
    return groups


# ----------------------------------------------------------------------------- statistics
def _nan(v) -> float:
    return math.nan if v is None else float(v)


def arm_summary(runs: list[dict]) -> dict:
    """{metric: (mean, std, n)} over the arm's runs, plus the runs' seeds."""
    per_run = [run_metrics(r) for r in runs]
    keys = list(per_run[0])
    summary = {k: mean_std([_nan(m.get(k)) for m in per_run]) for k in keys}
    return {"metrics": summary, "values": {k: [_nan(m.get(k)) for m in per_run] for k in keys},
            "seeds": [r.get("train_seed") for r in runs], "files": [r["_path"] for r in runs]}


def _bootstrap(runs_a: list[dict], runs_b: list[dict], resamples: int, seed: int) -> tuple[dict, str]:
    """{metric: (low, high)} of the paired image bootstrap, and a note (why it is missing, if it is)."""
    stats_a, stats_b = [r["_stats"] for r in runs_a], [r["_stats"] for r in runs_b]
    if any(s is None for s in stats_a + stats_b):
        return {}, "no image bootstrap: a result file has no per-image statistics (re-run `seg eval`)"
    try:
        boot = bootstrap_difference(stats_a, stats_b, resamples, seed)
    except ValueError as err:
        return {}, f"no image bootstrap: {err}"
    intervals = dict(boot["regions"])
    names = stats_a[0].get("class_names", [])
    intervals.update({f"class {n}": iv for n, iv in zip(names, boot["classes"])})
    return intervals, f"paired bootstrap over {boot['num_images']} images, B={resamples}, seed {seed}"


def compare_arms(base: dict, other: dict, runs_a, runs_b, resamples: int, seed: int) -> dict:
    """Per metric: difference of means, seed interval (paired / Welch t) and image-bootstrap interval."""
    boot, boot_note = _bootstrap(runs_a, runs_b, resamples, seed)
    rows, method = OrderedDict(), None
    for key in base["values"]:
        if key not in other["values"]:
            continue
        t = difference_interval(base["values"][key], other["values"][key], base["seeds"], other["seeds"])
        method = method or t["method"]
        rows[key] = {"diff": t["diff"], "seeds": (t["low"], t["high"]), "images": boot.get(key, (math.nan, math.nan))}
    return {"rows": rows, "seed_method": method, "image_method": boot_note}


# ----------------------------------------------------------------------------- text
def fmt(v, sign: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:+.2f}" if sign else f"{v:.2f}"


def fmt_ms(stat: tuple) -> str:
    mean, std, n = stat
    return f"{fmt(mean)} ± {fmt(std)} ({n})" if n > 1 else f"{fmt(mean)} (1)"


def fmt_iv(iv: tuple) -> str:
    return "-" if any(math.isnan(v) for v in iv) else f"[{iv[0]:+.2f}, {iv[1]:+.2f}]"


def markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def _says(iv: tuple) -> str:
    verdict = excludes_zero(*iv)
    return {True: "excludes 0", False: "includes 0", None: "-"}[verdict]


def verdict(name: str, mode: str, cmp: dict) -> str:
    """One sentence: does the mIoU difference stand out from training noise and from test-set sampling?"""
    if "not_compared" in cmp:
        return f"**{name}, {mode} inference**: not compared: {cmp['not_compared']}."
    row = cmp["rows"][REGION_ALL]
    seeds, images = row["seeds"], row["images"]
    parts = [f"**{name}, {mode} inference**: mIoU difference {fmt(row['diff'], True)}"]
    if excludes_zero(*seeds) is None:
        parts.append("no seed interval (an arm has one run), so nothing can be said about run-to-run variation")
    elif excludes_zero(*seeds):
        parts.append(f"the {LEVEL:.0%} interval over seeds {fmt_iv(seeds)} ({cmp['seed_method']}) excludes 0, "
                     "so it is larger than run-to-run variation")
    else:
        parts.append(f"the {LEVEL:.0%} interval over seeds {fmt_iv(seeds)} ({cmp['seed_method']}) includes 0, "
                     "so it is not distinguishable from run-to-run variation")
    if excludes_zero(*images) is not None:
        parts.append(f"over test images the interval {fmt_iv(images)} {_says(images)}")
    return "; ".join(parts) + "."


def metric_rows(keys, arms: OrderedDict, comparisons: dict, label_of) -> list[list[str]]:
    """One row per metric key: each arm's mean ± std (n), then Δ and both intervals per comparison."""
    rows = []
    for key in keys:
        row = [label_of(key)] + [fmt_ms(a["metrics"][key]) if key in a["metrics"] else "-" for a in arms.values()]
        for cmp in comparisons.values():
            r = cmp["rows"].get(key)
            row += ([fmt(r["diff"], True), fmt_iv(r["seeds"]), fmt_iv(r["images"])] if r else ["-", "-", "-"])
        rows.append(row)
    return rows


def metric_header(first: str, arms: OrderedDict, comparisons: dict) -> list[str]:
    header = [first] + [f"{label} mean ± std (n)" for label in arms]
    for name in comparisons:
        header += [f"Δ {name}", "95% seeds", "95% images"]
    return header


def mode_section(mode: str, arms: OrderedDict, comparisons: dict, results: list[dict]) -> list[str]:
    """Markdown of one inference mode: verdicts, mIoU, leave-out, distance bands, per-class IoU."""
    parts = [f"### {mode} inference"]
    parts += [verdict(name, mode, cmp) for name, cmp in comparisons.items()]
    notes = [f"- {name}: seeds: {cmp['seed_method']}; images: {cmp['image_method']}"
             for name, cmp in comparisons.items() if "not_compared" not in cmp]
    if notes or not comparisons:
        parts.append("\n".join(notes) if notes else "Only one arm: nothing to compare.")
    keys = list(next(iter(arms.values()))["metrics"])
    header = metric_header("mIoU", arms, comparisons)
    parts.append(markdown(header, metric_rows([REGION_ALL], arms, comparisons, lambda k: "all pixels")))
    first = results[0]
    for key, prefix, title, what in SECTIONS:
        section_keys = [k for k in keys if k.startswith(prefix + " ")]
        if section_keys and key in first:
            parts.append(f"#### {title}\n\n{first[key]['meaning']}\n\n" + markdown(
                metric_header(what, arms, comparisons),
                metric_rows(section_keys, arms, comparisons, lambda k: k.split(" ", 1)[1])))
    class_keys = [k for k in keys if k.startswith("class ")]
    parts.append("#### Per-class IoU\n\n" + markdown(metric_header("class", arms, comparisons),
                                                     metric_rows(class_keys, arms, comparisons, lambda k: k[6:])))
    return parts


def overview(groups: OrderedDict, summaries: dict) -> str:
    """mIoU mean ± std (n) per arm and inference mode."""
    labels = list(OrderedDict.fromkeys(label for arms in groups.values() for label in arms))
    modes = [m for m in MODES if m in groups] + [m for m in groups if m not in MODES]
    rows = [[label] + [fmt_ms(summaries[m][label]["metrics"][REGION_ALL]) if label in summaries[m] else "-"
                       for m in modes] for label in labels]
    return "### mIoU by inference mode, mean ± std over runs (n)\n\n" + markdown(["model"] + modes, rows)


# ----------------------------------------------------------------------------- main
def parse_args(argv=None):
    p = tool_parser(__doc__)
    p.add_argument("results", nargs="+", help="`seg eval` JSON files (several per arm for several seeds)")
    p.add_argument("--labels", help="comma-separated arm label per file (default: encoder + padding)")
    p.add_argument("--resamples", type=positive_int, default=DEFAULT_RESAMPLES, help="bootstrap resamples B")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap draws")
    p.add_argument("--out-dir", default="work_dirs/compare")
    p.add_argument("--allow-different-images", action="store_true", help="compare runs that were not all scored on "
                   "the same images: each arm's own numbers, but no difference or interval between such arms")
    return p.parse_args(argv)


def compare(results: list[dict], labels: list[str], resamples: int, seed: int) -> tuple[dict, dict, OrderedDict]:
    """Arm summaries and comparisons per mode: ({mode: {label: summary}}, {mode: {name: comparison}}, groups).
    Arms whose runs were not all scored on one set of images get no comparison, only why (``"not_compared"``)."""
    groups = group_arms(labels, results)
    summaries, comparisons = OrderedDict(), OrderedDict()
    for mode, arms in groups.items():
        summaries[mode] = OrderedDict((label, arm_summary(runs)) for label, runs in arms.items())
        base = list(arms)[0]
        comparisons[mode] = OrderedDict()
        for label in list(arms)[1:]:
            why = different_images(arms[base] + arms[label])
            comparisons[mode][f"{label} − {base}"] = (
                {"rows": OrderedDict(), "not_compared": why} if why else
                compare_arms(summaries[mode][base], summaries[mode][label], arms[base], arms[label], resamples, seed))
    return summaries, comparisons, groups


def main(argv=None) -> str:
    args = parse_args(argv)
    results = [load(path) for path in args.results]
    labels = args.labels.split(",") if args.labels else [model_label(r) for r in results]
    if len(labels) != len(results):
        raise ResultFileError(f"compare: {len(labels)} labels for {len(results)} result files")
    why = different_images(results)
    if why and not args.allow_different_images:
        raise ResultFileError(f"compare: {why}; differences and intervals need one test set (compare runs scored "
                              "on the same images, or pass --allow-different-images for each arm's own numbers)")
    summaries, comparisons, groups = compare(results, labels, args.resamples, args.seed)
    parts = ["## Comparison", f"All intervals are {LEVEL:.0%}. *Seeds*: Student t over training runs (paired by "
             "seed when both arms hold the same seeds, else Welch): how much retraining moves the difference, "
             "test set fixed. *Images*: paired bootstrap over the evaluated images: how much the choice of "
             "test images moves it, trainings fixed. A difference is supported only where an interval "
             "excludes 0.", overview(groups, summaries)]
    for mode, arms in groups.items():
        parts += mode_section(mode, summaries[mode], comparisons[mode], [r for runs in arms.values() for r in runs])
    os.makedirs(args.out_dir, exist_ok=True)
    figures = compare_figures(summaries, comparisons, groups, {prefix: what for _, prefix, _, what in SECTIONS},
                              args.out_dir)
    parts += [f"![{title}]({png})" for title, png in figures]
    if figures:
        parts.append(f"Each figure is also written as PDF and SVG beside its PNG ({PNG_DPI} dpi).")
    text = "\n\n".join(parts) + "\n"
    atomic_write_text(os.path.join(args.out_dir, "compare.md"), text)
    write_json({"level": LEVEL, "resamples": args.resamples, "seed": args.seed, "summaries": summaries,
                "comparisons": comparisons}, os.path.join(args.out_dir, "compare.json"))
    print(text)
    print(f"written to {args.out_dir}/compare.md and compare.json")
    return text


if __name__ == "__main__":
    sys.exit(run_tool(main))
