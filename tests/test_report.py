"""seg.report: one table rendered as Markdown, CSV (read back with the csv module) and booktabs LaTeX."""
import csv
import io
import math

import pytest

from seg.report import Table, interval_text, mean_std_text, measured, number

TABLE = Table(["model", "mIoU ± std", "Δ"], [["zeros_r18", "**70.12** ± 0.50 (3)", "-"],
                                               ["partial, 50% & more", "71.00 ± 0.25 (3)", "+0.88"]],
              title="mIoU", name="miou", notes=["paired on 3 of 4 seeds"])


def test_markdown():
    assert TABLE.markdown().splitlines() == [
        "| model | mIoU ± std | Δ |", "|---|---|---|", "| zeros_r18 | **70.12** ± 0.50 (3) | - |",
        "| partial, 50% & more | 71.00 ± 0.25 (3) | +0.88 |", "", "- paired on 3 of 4 seeds"]


def test_an_empty_cell_is_one_space():
    assert Table(["a", "b", "c"], [["x", "", "z"]]).markdown().splitlines()[2] == "| x | | z |"


def test_csv_reads_back_cell_by_cell_without_markup():
    rows = list(csv.reader(io.StringIO(TABLE.csv())))
    assert rows == [["model", "mIoU ± std", "Δ"], ["zeros_r18", "70.12 ± 0.50 (3)", "-"],
                    ["partial, 50% & more", "71.00 ± 0.25 (3)", "+0.88"]]


def test_latex_is_booktabs_with_escaped_cells():
    lines = TABLE.latex().splitlines()
    assert lines[:2] == ["% mIoU", "% paired on 3 of 4 seeds"]
    assert lines[2:6] == [r"\begin{tabular}{lrr}", r"\toprule", r"model & mIoU $\pm$ std & $\Delta$ \\", r"\midrule"]
    assert lines[6] == r"zeros\_r18 & \textbf{70.12} $\pm$ 0.50 (3) & - \\"
    assert lines[7] == r"partial, 50\% \& more & 71.00 $\pm$ 0.25 (3) & +0.88 \\"
    assert lines[8:] == [r"\bottomrule", r"\end{tabular}"]


def test_write_gives_one_file_per_format(tmp_path):
    paths = TABLE.write(str(tmp_path), ("md", "csv", "tex"))
    assert [p.rsplit("/", 1)[1] for p in paths] == ["miou.md", "miou.csv", "miou.tex"]
    assert open(paths[1]).read() == TABLE.csv() and open(paths[2]).read() == TABLE.latex()


def test_cells():
    assert number(math.nan) == number(None) == "-" and number(1.005, sign=True) == f"{1.005:+.2f}"
    assert mean_std_text(70.0, 0.5, 3) == "70.00 ± 0.50 (3)" and mean_std_text(70.0, math.nan, 1) == "70.00 (1)"
    assert mean_std_text(0.3, None, 2, sign=True) == "+0.30 (2)"
    assert interval_text(-0.5, 1.25) == "[-0.50, +1.25]" and interval_text(None, 1.0) == "-"
    assert [measured(v) for v in (0.00123, 0.5, 123.456, None, 7, 0.0)] == ["0.00123", "0.500", "123.5", "", "7",
                                                                             "0.000"]
    with pytest.raises(ValueError, match="row of 2 cells"):
        Table(["a"], [["x", "y"]])
