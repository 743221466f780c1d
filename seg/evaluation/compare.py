"""Comparison of `seg eval` results with their uncertainty: arms, seed and image intervals, power, tables.

    result = compare_runs(["z_s0.json", "z_s1.json", "p_s0.json", "p_s1.json"], labels=[...], effect=0.3)
    result.write("work_dirs/compare")        # compare.md, compare.json, tables/*.csv|tex, PNG plots
    seg.compare(...)                         # the same function

Results are grouped by inference mode (regular / tile / overlap) and, within a mode, into *arms* by label
(default: encoder + padding), so several runs of one setting (one eval JSON per training seed) form one
arm. The first arm is the baseline; every other arm is compared with it:

* per arm: mean ± standard deviation over its runs (n);
* seeds: a 95% Student-t interval of the difference, paired by seed on the seeds both arms hold (the table
  says "paired t on k of m seeds" when some seeds are held by one arm only), Welch over all runs when they
  share fewer than two -- training variation;
* images: a paired bootstrap over the evaluated images (the per-image ``.images.npz`` beside each JSON) --
  the variation from which images were tested;
* power (mIoU, paired comparisons): the smallest difference the current seeds detect (two-sided 5%, 80%
  power, from the measured spread of the paired differences), the seeds needed for a given ``effect``, and the
  chance that a rerun with as many seeds shows the measured difference again (:mod:`seg.evaluation.power`).

Differences mean something only on one test set, so every run must have been scored on the same images: the
image names, in order, of each run's sidecar must agree, and each sidecar's counts, summed over its images,
must equal its JSON's confusion matrix. Otherwise :func:`compare_runs` raises a ResultFileError naming the
files; with ``allow_different_images`` it reports each arm's own numbers but no difference between arms whose
runs were not all scored on one set of images.
"""
from __future__ import annotations

import json
import math
import os
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from seg.atomic import atomic_write_text
from seg.config import ConfigError
from seg.errors import ResultFileError
from seg.report import Table, interval_text, mean_std_text, missing, number

from .inference import MODES
from .plots import PNG_DPI, compare_figures
from .power import MAX_SEEDS, min_detectable_difference, same_verdict_probability, seeds_needed
from .result import write_json
from .runner import run_names
from .stats import COUNTS, REGION_ALL, load_image_stats
from .uncertainty import DEFAULT_RESAMPLES, LEVEL, bootstrap_difference, difference_interval, mean_std

__all__ = ["SECTIONS", "ComparisonResult", "compare_runs", "compare", "load_result", "model_label"]

# (result key, metric prefix, section title, x label), and the file name of the section's figure
SECTIONS = (("leave_out", "leave_out", "Centre leave-out mIoU", "centre proportion left out"),
            ("distance_bands", "band", "mIoU by distance to the nearest image border", "distance to the border (px)"))
INTRO = (f"All intervals are {LEVEL:.0%}. *Seeds*: Student t over training runs (paired by seed on the seeds both "
         "arms hold, else Welch): how much retraining moves the difference, test set fixed. *Images*: paired "
         "bootstrap over the evaluated images: how much the choice of test images moves it, trainings fixed. A "
         "difference is supported only where an interval excludes 0.")


# ----------------------------------------------------------------------------- loading
def load_result(path: str) -> dict:
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
        missing_part = "confusion_matrix" if "confusion_matrix" not in result else f"the region {REGION_ALL!r}"
        raise ResultFileError(f"{path}: cannot check its per-image statistics {sidecar} (no {missing_part}); "
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
    """The default arm label: encoder and padding ("trained->evaluated" when they differ)."""
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


def group_arms(labels: Sequence[str], results: Sequence[dict]) -> OrderedDict:
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


def power_summary(interval: dict, effect: float | None) -> dict:
    """Power of the paired mIoU comparison (:func:`difference_interval`'s result): the smallest difference the
    current seeds detect, the seeds needed for ``effect``, and the chance that a rerun with as many fresh seeds
    shows the measured difference again if it were the true one. Without pairing, why not."""
    n, sd = interval["paired_n"], interval["paired_sd"]
    if n is None:
        return {"note": "no power: the arms share fewer than 2 seeds (no paired spread)"}
    if not sd > 0:
        return {"note": "no power: the paired differences do not vary", "paired_n": n, "paired_sd": sd}
    needed = None
    if effect is not None:
        try:
            needed = seeds_needed(effect, sd)
        except ConfigError:  # more than power.MAX_SEEDS: shown as "-"
            needed = None
    return {"paired_n": n, "paired_sd": sd, "min_detectable": min_detectable_difference(sd, n), "effect": effect,
            "seeds_needed": needed, "rerun_same_verdict": same_verdict_probability(interval["diff"], sd, n)}


def compare_arms(base: dict, other: dict, runs_a: list[dict], runs_b: list[dict], resamples: int, seed: int,
                 effect: float | None = None) -> dict:
    """Per metric: difference, seed interval (paired / Welch t) and image-bootstrap interval; the mIoU power."""
    boot, boot_note = _bootstrap(runs_a, runs_b, resamples, seed)
    rows, method, power = OrderedDict(), None, {}
    for key in base["values"]:
        if key not in other["values"]:
            continue
        t = difference_interval(base["values"][key], other["values"][key], base["seeds"], other["seeds"])
        method = method or t["method"]
        if key == REGION_ALL:
            power = power_summary(t, effect)
        rows[key] = {"diff": t["diff"], "seeds": (t["low"], t["high"]), "images": boot.get(key, (math.nan, math.nan))}
    return {"rows": rows, "seed_method": method, "image_method": boot_note, "power": power}


# ----------------------------------------------------------------------------- text
def _excludes(iv) -> bool | None:
    """True when the interval lies wholly on one side of 0, None when there is none (NaN or null ends)."""
    return None if missing(iv[0]) or missing(iv[1]) else (iv[0] > 0 or iv[1] < 0)


def _says(iv) -> str:
    return {True: "excludes 0", False: "includes 0", None: "-"}[_excludes(iv)]


def verdict(name: str, mode: str, cmp: dict) -> str:
    """One sentence: does the mIoU difference stand out from training noise and from test-set sampling?"""
    if "not_compared" in cmp:
        return f"**{name}, {mode} inference**: not compared: {cmp['not_compared']}."
    row = cmp["rows"][REGION_ALL]
    seeds, images = row["seeds"], row["images"]
    parts = [f"**{name}, {mode} inference**: mIoU difference {number(row['diff'], sign=True)}"]
    shown = _excludes(seeds)
    if shown is None:
        parts.append("no seed interval (an arm has one run), so nothing can be said about run-to-run variation")
    else:
        parts.append(f"the {LEVEL:.0%} interval over seeds {interval_text(*seeds)} ({cmp['seed_method']}) "
                     + ("excludes 0, so it is larger than run-to-run variation" if shown else
                        "includes 0, so it is not distinguishable from run-to-run variation"))
    if _excludes(images) is not None:
        parts.append(f"over test images the interval {interval_text(*images)} {_says(images)}")
    return "; ".join(parts) + "."


def _mean_std(stat) -> str:
    return mean_std_text(*stat)


def metric_table(name: str, first: str, keys: list[str], arms: dict, comparisons: dict, label_of) -> Table:
    """One row per metric key: each arm's mean ± std (n), then Δ and both intervals per comparison."""
    header = [first] + [f"{label} mean ± std (n)" for label in arms]
    for cmp_name in comparisons:
        header += [f"Δ {cmp_name}", f"{LEVEL:.0%} seeds", f"{LEVEL:.0%} images"]
    rows = []
    for key in keys:
        row = [label_of(key)] + [_mean_std(a["metrics"][key]) if key in a["metrics"] else "-" for a in arms.values()]
        for cmp in comparisons.values():
            r = cmp["rows"].get(key)
            row += ([number(r["diff"], sign=True), interval_text(*r["seeds"]), interval_text(*r["images"])] if r
                    else ["-", "-", "-"])
        rows.append(row)
    return Table(header, rows, name=name)


def power_table(mode: str, comparisons: dict, effect: float | None) -> Table:
    """Per comparison: paired seeds, spread of the paired differences, the smallest difference detectable now,
    the seeds needed for ``effect`` and the chance that a rerun shows the measured difference again."""
    header = ["comparison", "paired seeds", "std of paired differences", "detectable difference (80% power)"]
    header += ([f"seeds for ±{number(effect)} (80% power)"] if effect is not None else [])
    header += ["rerun shows it again"]
    rows, notes = [], []
    for name, cmp in comparisons.items():
        power = cmp.get("power") or {"note": cmp.get("not_compared", "not compared")}
        if "min_detectable" not in power:
            notes.append(f"{name}: {power['note']}")
            continue
        row = [name, str(power["paired_n"]), number(power["paired_sd"]), number(power["min_detectable"])]
        row += [f"> {MAX_SEEDS}" if power["seeds_needed"] is None else str(power["seeds_needed"])] \
            if effect is not None else []
        rows.append(row + [f"{power['rerun_same_verdict']:.0%}"])
    return Table(header, rows, title=f"Power of the paired mIoU comparison, {mode} inference", name=f"{mode}_power",
                 notes=notes)


@dataclass
class ComparisonResult:
    """Arm summaries and comparisons per inference mode, as :func:`compare_runs` computed them.

    ``summaries``: {mode: {label: {"metrics": {metric: (mean, std, n)}, "values", "seeds", "files"}}};
    ``comparisons``: {mode: {"<label> − <baseline>": {"rows": {metric: {"diff", "seeds", "images"}},
    "seed_method", "image_method", "power"} or {"rows": {}, "not_compared": why}}}; ``meanings``: {mode:
    {section key: what its regions mean}}; ``figures``: [title, PNG file] of each figure :meth:`write` drew;
    ``groups``: {mode: {label: [results]}}, the runs with their per-image statistics (what the class x band
    figures need; not in compare.json, so empty after :meth:`load`)."""

    summaries: dict
    comparisons: dict
    meanings: dict
    resamples: int
    seed: int
    effect: float | None = None
    level: float = LEVEL
    figures: list[list[str]] = field(default_factory=list)
    groups: dict = field(default_factory=dict, repr=False, compare=False)

    def to_dict(self) -> dict:
        return {"level": self.level, "resamples": self.resamples, "seed": self.seed, "effect": self.effect,
                "summaries": self.summaries, "comparisons": self.comparisons, "meanings": self.meanings,
                "figures": self.figures}

    @classmethod
    def load(cls, path: str) -> ComparisonResult:
        """A result written by :meth:`write` (compare.json; NaN is null there)."""
        try:
            with open(path) as f:
                d = json.load(f)
            return cls(d["summaries"], d["comparisons"], d["meanings"], d["resamples"], d["seed"], d["effect"],
                       d["level"], d["figures"])
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ResultFileError(f"{path} is not a comparison written by `seg compare` ({err!r})") from None

    def overview(self) -> Table:
        """mIoU mean ± std (n) per arm and inference mode."""
        labels = list(OrderedDict.fromkeys(label for arms in self.summaries.values() for label in arms))
        modes = [m for m in MODES if m in self.summaries] + [m for m in self.summaries if m not in MODES]
        rows = [[label] + [_mean_std(self.summaries[m][label]["metrics"][REGION_ALL]) if label in self.summaries[m]
                           else "-" for m in modes] for label in labels]
        return Table(["model"] + modes, rows, title="mIoU by inference mode, mean ± std over runs (n)",
                     name="miou_by_mode")

    def mode_tables(self, mode: str) -> list[Table]:
        """The tables of one inference mode: mIoU, power, leave-out, distance bands, per-class IoU."""
        arms, comparisons = self.summaries[mode], self.comparisons[mode]
        keys = list(next(iter(arms.values()))["metrics"])
        tables = [metric_table(f"{mode}_miou", "mIoU", [REGION_ALL], arms, comparisons, lambda k: "all pixels")]
        if comparisons:
            tables.append(power_table(mode, comparisons, self.effect))
        for key, prefix, title, what in SECTIONS:
            section_keys = [k for k in keys if k.startswith(prefix + " ")]
            if section_keys and key in self.meanings[mode]:
                table = metric_table(f"{mode}_{key}", what, section_keys, arms, comparisons,
                                     lambda k: k.split(" ", 1)[1])
                table.title = f"{title}\n\n{self.meanings[mode][key]}"
                tables.append(table)
        class_keys = [k for k in keys if k.startswith("class ")]
        table = metric_table(f"{mode}_classes", "class", class_keys, arms, comparisons, lambda k: k[6:])
        table.title = "Per-class IoU"
        return tables + [table]

    def tables(self) -> list[Table]:
        return [self.overview()] + [t for mode in self.summaries for t in self.mode_tables(mode)]

    def markdown(self, figure_dir: str = "") -> str:
        """compare.md: tables and one verdict sentence per comparison; figures linked under ``figure_dir``."""
        overview = self.overview()
        parts = ["## Comparison", INTRO, f"### {overview.title}\n\n{overview.markdown()}"]
        for mode, comparisons in self.comparisons.items():
            parts.append(f"### {mode} inference")
            parts += [verdict(name, mode, cmp) for name, cmp in comparisons.items()]
            notes = [f"- {name}: seeds: {cmp['seed_method']}; images: {cmp['image_method']}"
                     for name, cmp in comparisons.items() if "not_compared" not in cmp]
            if notes or not comparisons:
                parts.append("\n".join(notes) if notes else "Only one arm: nothing to compare.")
            miou, *rest = self.mode_tables(mode)
            parts.append(miou.markdown())
            parts += [f"#### {table.title}\n\n{table.markdown()}" for table in rest]
        parts += [f"![{title}]({os.path.join(figure_dir, png)})" for title, png in self.figures]
        if self.figures:
            parts.append(f"Each figure is also written as PDF and SVG beside its PNG ({PNG_DPI} dpi).")
        tables = os.path.join(figure_dir, "tables")
        parts.append(f"Every table is also written as CSV and LaTeX (booktabs) in {tables}/.")
        return "\n\n".join(parts) + "\n"

    def write(self, out_dir: str) -> str:
        """compare.md, compare.json, the figures and tables/<name>.csv|.tex under ``out_dir``; returns the
        Markdown."""
        os.makedirs(out_dir, exist_ok=True)
        xlabels = {prefix: what for _, prefix, _, what in SECTIONS}
        self.figures = [[title, png] for title, png in
                        compare_figures(self.summaries, self.comparisons, self.groups, xlabels, out_dir)]
        for table in self.tables():
            table.write(os.path.join(out_dir, "tables"))
        text = self.markdown()
        atomic_write_text(os.path.join(out_dir, "compare.md"), text)
        write_json(self.to_dict(), os.path.join(out_dir, "compare.json"))
        return text


def compare_runs(results: Sequence[str | dict], labels: Sequence[str] | None = None, *,
                 resamples: int = DEFAULT_RESAMPLES, seed: int = 0, allow_different_images: bool = False,
                 effect: float | None = None) -> ComparisonResult:
    """Compare `seg eval` results (paths, or dicts from :func:`load_result`), grouped into arms by ``labels``
    (default :func:`model_label`); ``effect``: a difference to plan the number of seeds for."""
    loaded = [load_result(r) if isinstance(r, str) else r for r in results]
    labels = list(labels) if labels is not None else [model_label(r) for r in loaded]
    if len(labels) != len(loaded):
        raise ResultFileError(f"compare: {len(labels)} labels for {len(loaded)} result files")
    why = different_images(loaded)
    if why and not allow_different_images:
        raise ResultFileError(f"compare: {why}; differences and intervals need one test set (compare runs scored "
                              "on the same images, or pass --allow-different-images for each arm's own numbers)")
    groups = group_arms(labels, loaded)
    summaries: OrderedDict = OrderedDict()
    comparisons: OrderedDict = OrderedDict()
    meanings: dict[str, dict[str, str]] = {}
    for mode, arms in groups.items():
        summaries[mode] = OrderedDict((label, arm_summary(runs)) for label, runs in arms.items())
        first = next(iter(arms.values()))[0]
        meanings[mode] = {key: first[key]["meaning"] for key, *_ in SECTIONS if key in first}
        base = list(arms)[0]
        comparisons[mode] = OrderedDict()
        for label in list(arms)[1:]:
            why = different_images(arms[base] + arms[label])
            comparisons[mode][f"{label} − {base}"] = (
                {"rows": OrderedDict(), "not_compared": why} if why else
                compare_arms(summaries[mode][base], summaries[mode][label], arms[base], arms[label], resamples, seed,
                             effect))
    return ComparisonResult(summaries, comparisons, meanings, resamples, seed, effect, groups=groups)


compare = compare_runs  # seg.compare(...)
