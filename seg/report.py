"""Result tables, written once and rendered as Markdown, CSV or booktabs LaTeX, and the number formats of their cells.

A :class:`Table` holds text cells (numbers formatted with :func:`number`, :func:`mean_std_text` and
:func:`interval_text`, so every table of the toolkit shows a number the same way); Markdown bold (``**x**``)
becomes ``\\textbf{x}`` in LaTeX and plain text in CSV.
"""
from __future__ import annotations

import csv
import io
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from seg.atomic import atomic_write_text
from seg.errors import InputError

__all__ = ["MISSING", "Table", "number", "measured", "mean_std_text", "interval_text", "missing"]

MISSING = "-"  # the cell of a number that does not exist (no run, no interval)
FORMATS = ("md", "csv", "tex")

_BOLD = re.compile(r"\*\*(.+?)\*\*")
# LaTeX: characters with a meaning of their own, and the typographic symbols the tables use
_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
          "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "±": r"$\pm$", "−": "$-$",
          "Δ": r"$\Delta$", "→": r"$\rightarrow$", "≥": r"$\geq$", "≤": r"$\leq$"}


def missing(v) -> bool:
    """None (JSON's null) or NaN: no number."""
    return v is None or (isinstance(v, float) and math.isnan(v))


def number(v, digits: int = 2, sign: bool = False) -> str:
    """``v`` with ``digits`` decimals (a leading + for a difference when ``sign``); "-" when missing."""
    if missing(v):
        return MISSING
    return f"{v:+.{digits}f}" if sign else f"{v:.{digits}f}"


def measured(v) -> str:
    """A measurement of any size: 3 significant digits below 0.01, 3 decimals below 100, 1 beyond; None is
    empty; anything else (a name, a count) as text."""
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1e-2 and v != 0 else f"{v:.3f}" if abs(v) < 100 else f"{v:.1f}"
    return "" if v is None else str(v)


def mean_std_text(mean, std, n: int, sign: bool = False) -> str:
    """"mean ± std (n)"; "mean (n)" for a single run (no std)."""
    if n > 1 and not missing(std):
        return f"{number(mean, sign=sign)} ± {number(std)} ({n})"
    return f"{number(mean, sign=sign)} ({n})"


def interval_text(low, high) -> str:
    """"[low, high]" with signs; "-" when there is no interval."""
    return MISSING if missing(low) or missing(high) else f"[{low:+.2f}, {high:+.2f}]"


def _pipe_row(cells: Sequence[str]) -> str:
    return "|" + "|".join(f" {c} " if c else " " for c in cells) + "|"  # an empty cell as "| |"


def _latex_cell(text: str) -> str:
    parts = _BOLD.split(text)  # odd parts were bold
    out = ["".join(_LATEX.get(ch, ch) for ch in part) for part in parts]
    return "".join(f"\\textbf{{{p}}}" if i % 2 else p for i, p in enumerate(out))


@dataclass
class Table:
    """A titled table of text cells; ``name`` is its file stem when written."""

    header: list[str]
    rows: list[list[str]]
    title: str = ""
    name: str = "table"
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        for row in self.rows:
            if len(row) != len(self.header):
                raise InputError(f"table {self.name!r}: a row of {len(row)} cells under {len(self.header)} columns")

    def markdown(self) -> str:
        """The pipe table, then its notes as list items (no title: the caller's document places it)."""
        lines = [_pipe_row(self.header), "|" + "---|" * len(self.header)]
        lines += [_pipe_row(row) for row in self.rows]
        return "\n".join(lines + ([""] + [f"- {n}" for n in self.notes] if self.notes else []))

    def csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        for row in [self.header, *self.rows]:
            writer.writerow([_BOLD.sub(r"\1", cell) for cell in row])
        return out.getvalue()

    def latex(self) -> str:
        """A booktabs tabular (needs ``\\usepackage{booktabs}``); the title and notes as comments."""
        cols = "l" + "r" * (len(self.header) - 1)
        lines = [f"% {line}" for text in [self.title, *self.notes] for line in text.splitlines() if line]
        lines += [f"\\begin{{tabular}}{{{cols}}}", "\\toprule",
                  " & ".join(_latex_cell(h) for h in self.header) + r" \\", "\\midrule"]
        lines += [" & ".join(_latex_cell(c) for c in row) + r" \\" for row in self.rows]
        return "\n".join(lines + ["\\bottomrule", "\\end{tabular}"]) + "\n"

    def render(self, fmt: str) -> str:
        if fmt not in FORMATS:
            raise InputError(f"unknown table format {fmt!r}; expected one of {FORMATS}")
        return {"md": self.markdown() + "\n", "csv": self.csv(), "tex": self.latex()}[fmt]

    def write(self, folder: str, formats: Sequence[str] = ("csv", "tex")) -> list[str]:
        """``folder/<name>.<fmt>`` for each format, atomically; returns the paths."""
        os.makedirs(folder, exist_ok=True)
        paths = []
        for fmt in formats:
            path = os.path.join(folder, f"{self.name}.{fmt}")
            atomic_write_text(path, self.render(fmt))
            paths.append(path)
        return paths
