"""Figures of seg.evaluation.plots: print formats, colours per padding mode, both interval kinds, numeric band axis,
and the class x distance-band IoU difference against a naive float64 loop over a sidecar written here."""
import math
import xml.etree.ElementTree as ET

import matplotlib.colors as mcolors
import numpy as np
import pytest
from matplotlib.container import ErrorbarContainer
from PIL import Image
from test_compare import _tool, write_run

from seg.evaluation import plots
from seg.evaluation.stats import load_image_stats, save_image_stats
from seg.nn import PADDING_MODES

NAN = math.nan


def _hex(colour) -> str:
    return mcolors.to_hex(colour)


def _assert_formats(stem) -> None:
    """PNG at >= 200 dpi (as PIL reads its pHYs chunk), a PDF and a parseable SVG."""
    with Image.open(f"{stem}.png") as png:
        assert png.format == "PNG" and all(round(d) >= 200 for d in png.info["dpi"])
    with open(f"{stem}.pdf", "rb") as f:
        assert f.read(5) == b"%PDF-"
    assert ET.parse(f"{stem}.svg").getroot().tag.endswith("svg")


def _line_figure():
    fig = plots.plt.figure(figsize=(3, 2))
    fig.add_subplot().plot([0, 1], [1, 0])
    return fig


def test_save_figure_writes_png_pdf_svg_and_closes(tmp_path):
    fig = _line_figure()
    paths = plots.save_figure(fig, str(tmp_path / "f"))
    assert sorted(paths) == sorted(str(tmp_path / f"f.{x}") for x in ("png", "pdf", "svg"))
    _assert_formats(tmp_path / "f")
    with Image.open(tmp_path / "f.png") as png:
        assert png.size == (600, 400)  # 3 x 2 inches at 200 dpi
    assert not plots.plt.fignum_exists(fig.number)
    plots.save_figure(_line_figure(), str(tmp_path / "again"))
    for ext in ("png", "pdf", "svg"):  # no dates or random ids: a rerun rewrites the same bytes
        assert (tmp_path / f"f.{ext}").read_bytes() == (tmp_path / f"again.{ext}").read_bytes()


def test_mode_colours_fixed_per_padding_mode():
    forward, backward = plots.mode_colours(["zeros", "partial", "twin"]), plots.mode_colours(["twin", "partial",
                                                                                               "zeros"])
    assert forward["zeros"] == backward["zeros"] and forward["partial"] == backward["partial"]
    every = plots.mode_colours([*PADDING_MODES, "twin", "other"])
    assert len(set(every.values())) == len(every)  # no two modes share a colour
    assert plots.padding_of("resnet18 partial") == "partial" and plots.padding_of("twin") == "twin"


def _compare(tmp_path, monkeypatch):
    """compare on zeros / partial / reflect arms of 3 seeds in two inference modes; every figure it saves,
    kept open for inspection: ({file stem: figure}, markdown)."""
    rng = np.random.default_rng(3)
    files, labels = [], []
    for padding, noise in (("zeros", 0.5), ("partial", 0.2), ("reflect", 0.45)):
        for seed in range(3):
            for mode in ("regular", "tile"):
                files.append(write_run(tmp_path, f"{padding}{seed}{mode}", rng, noise, seed, padding, mode)[0])
                labels.append(padding)
    saved = {}
    save = plots.save_figure

    def keep(fig, stem):
        saved[stem.rsplit("/", 1)[-1]] = fig  # its artists stay readable after save_figure closes it
        return save(fig, stem)

    monkeypatch.setattr(plots, "save_figure", keep)
    text = _tool().main(files + ["--labels", ",".join(labels), "--out-dir", str(tmp_path / "out"),
                                 "--resamples", "100"])
    return saved, text


def _top_colours(fig) -> dict[str, str]:
    top = fig.axes[0]
    return {c.get_label(): _hex(c.lines[0].get_color()) for c in top.containers}


def test_compare_figures_formats_colours_and_intervals(tmp_path, monkeypatch):
    saved, text = _compare(tmp_path, monkeypatch)
    assert set(saved) == {"leave_out", "distance_profile", "class_band_regular_1", "class_band_regular_2",
                          "class_band_tile_1", "class_band_tile_2"}
    for stem in saved:
        _assert_formats(tmp_path / "out" / stem)
        assert f"]({stem}.png)" in text
    fixed = plots.mode_colours(PADDING_MODES)
    for stem in ("leave_out", "distance_profile"):
        top = _top_colours(saved[stem])
        assert top == {f"{p} ({m})": fixed[p] for p in ("zeros", "partial", "reflect") for m in ("regular", "tile")}
        bottom = saved[stem].axes[1]
        lines = {line.get_label(): _hex(line.get_color()) for line in bottom.get_lines()
                 if not line.get_label().startswith("_")}
        assert lines == {f"{p} − zeros ({m})": fixed[p] for p in ("partial", "reflect") for m in ("regular", "tile")}
        legend = [t.get_text() for t in bottom.get_legend().get_texts()]
        assert plots.SEED_INTERVAL in legend and plots.IMAGE_INTERVAL in legend
        drawn = [c for c in bottom.containers if isinstance(c, ErrorbarContainer) and c.get_label().startswith("_")]
        with_caps = [c for c in drawn if c.lines[1]]  # seed intervals have caps, image intervals none
        assert len(with_caps) == len(drawn) - len(with_caps) == 4  # both kinds for each of the 4 series


def _summary(means: dict[str, tuple]) -> dict:
    return {"metrics": {"all": (50.0, 1.0, 3), **means}}


def test_band_axis_is_numeric_and_leaves_empty_bands_out():
    bands = {"band 0-4": (40.0, 1.0, 3), "band 4-8": (45.0, 2.0, 3), "band 8-16": (NAN, NAN, 3),
             "band 16+": (48.0, NAN, 1), "leave_out 0": (50.0, 1.0, 3), "leave_out 3/4": (47.0, 1.0, 3)}
    summaries = {"regular": {"zeros": _summary(bands), "partial": _summary({k: (v[0] + 1, *v[1:])
                                                                         for k, v in bands.items()})}}
    rows = {"band 0-4": {"diff": 1.0, "seeds": (0.5, 1.5), "images": (0.2, 1.8)},
            "band 4-8": {"diff": 1.0, "seeds": (0.1, 1.9), "images": (0.3, 1.7)},
            "band 8-16": {"diff": NAN, "seeds": (NAN, NAN), "images": (NAN, NAN)},
            "band 16+": {"diff": 1.0, "seeds": (NAN, NAN), "images": (0.4, 1.6)}}
    comparisons = {"regular": {"partial − zeros": {"rows": rows}}}
    fig = plots.profile_figure("band", "px", summaries, comparisons, plots.mode_colours(["zeros", "partial"]))
    top, bottom = fig.axes
    for container in top.containers:  # centres of the closed bands, the open band at its lower edge; 8-16 absent
        assert list(container.lines[0].get_xdata()) == [2.0, 6.0, 16.0]
    assert list(bottom.get_xticks()) == [0.0, 4.0, 8.0, 16.0]
    assert [t.get_text() for t in bottom.get_xticklabels()] == ["0", "4", "8", "16"]
    intervals = [c for c in bottom.containers if c.get_label().startswith("_")]
    seeds, images = (c for c in intervals if c.lines[1]), (c for c in intervals if not c.lines[1])
    assert len(next(seeds).lines[0].get_xdata()) == 2  # the open band has one run: no seed interval, only images
    assert len(next(images).lines[0].get_xdata()) == 3
    plots.plt.close(fig)
    fig = plots.profile_figure("leave_out", "p", summaries, comparisons, plots.mode_colours(["zeros", "partial"]))
    assert list(fig.axes[0].containers[0].lines[0].get_xdata()) == [0.0, 0.75]
    plots.plt.close(fig)
    for row in rows.values():  # one run per arm: no seed interval anywhere, so the legend names none
        row["seeds"] = (NAN, NAN)
    fig = plots.profile_figure("band", "px", summaries, comparisons, plots.mode_colours(["zeros", "partial"]))
    legend = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
    assert plots.IMAGE_INTERVAL in legend and plots.SEED_INTERVAL not in legend
    plots.plt.close(fig)


def _naive_difference(runs_a, runs_b, bands):
    """Mean over runs of I / (P + G - I) in percent per band and class, b minus a, by plain loops."""
    def arm(runs):
        out = np.zeros((len(bands), runs[0]["intersection"].shape[-1]))
        for s in runs:
            for j, band in enumerate(bands):
                r = s["regions"].index(band)
                for c in range(out.shape[1]):
                    i, p, g = (float(s[name][:, r, c].sum()) for name in ("intersection", "prediction",
                                                                          "ground_truth"))
                    out[j, c] += (100.0 * i / (p + g - i) if p + g - i > 0 else NAN) / len(runs)
        return out
    return (arm(runs_b) - arm(runs_a)).T


def test_band_class_difference_against_naive_loops(tmp_path):
    rng = np.random.default_rng(4)
    regions = ["all", "band 0-4", "band 4-8", "band 8+"]
    names = ["road", "car", "sky", "bus"]

    def sidecar(name):
        truth = rng.integers(0, 50, (5, 4, 4))
        inter = rng.integers(0, 1 + truth)
        pred = inter + rng.integers(0, 20, truth.shape)
        counts = np.stack([inter, pred, truth])
        counts[:, :, 3] = 0  # band 8+: no pixel in any image (too small images)
        counts[:, :, 1, 3] = 0  # "bus" in neither truth nor prediction of band 0-4: IoU undefined
        save_image_stats({"intersection": counts[0], "prediction": counts[1], "ground_truth": counts[2],
                          "regions": regions, "images": [f"im{n}" for n in range(5)], "class_names": names},
                         str(tmp_path / f"{name}.images.npz"))
        return load_image_stats(str(tmp_path / f"{name}.images.npz"))

    runs_a, runs_b = [sidecar(f"a{s}") for s in range(3)], [sidecar(f"b{s}") for s in range(3)]
    diff, bands = plots.band_class_difference(runs_a, runs_b)
    assert bands == ["0-4", "4-8"]
    expected = _naive_difference(runs_a, runs_b, ["band 0-4", "band 4-8"])
    assert np.isnan(expected[3, 0]) and np.isfinite(expected[3, 1])
    np.testing.assert_allclose(diff, expected, rtol=1e-12, atol=1e-12, equal_nan=True)
    fig = plots.class_band_figure(diff, names, bands, "t")
    image = fig.axes[0].images[0]
    assert image.cmap.name.startswith("RdBu") and image.norm.vmin == -image.norm.vmax == -np.nanmax(np.abs(diff))
    np.testing.assert_array_equal(image.get_array().filled(np.nan), diff)
    plots.save_figure(fig, str(tmp_path / "class_band"))
    _assert_formats(tmp_path / "class_band")


def test_cross_test_heatmap(tmp_path):
    matrix = [[61.0, 45.5], [60.2, 62.1]]
    stem = str(tmp_path / "cross")
    fig = plots.cross_test_figure(matrix, ["zeros", "partial"], ["zeros", "partial"])
    ax = fig.axes[0]
    np.testing.assert_array_equal(ax.images[0].get_array(), matrix)
    colours = plots.mode_colours(PADDING_MODES)
    for tick in [*ax.get_xticklabels(), *ax.get_yticklabels()]:
        assert _hex(tick.get_color()) == colours[tick.get_text()]
    assert sorted(t.get_text() for t in ax.texts) == sorted(f"{v:.2f}" for row in matrix for v in row)
    plots.plt.close(fig)
    assert len(plots.cross_test_heatmap(matrix, ["zeros", "partial"], ["zeros", "partial"], stem)) == 3
    _assert_formats(stem)


@pytest.mark.parametrize("label,expected", [("0-4", 2.0), ("16+", 16.0), ("4-32", 18.0)])
def test_band_position(label, expected):
    assert plots.position("band", label) == expected
