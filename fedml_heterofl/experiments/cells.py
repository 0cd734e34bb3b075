"""The report's cells: a metrics value as a number, means over seeds, their text, and Markdown and CSV
tables (what every table, figure and the summary of the report share)."""
from __future__ import annotations

import csv
import io
import math
import re
import statistics
from typing import Any, Iterable, List, Sequence, Tuple


def to_float(value: Any) -> float:
    """``value`` as a float; NaN when it is not a number (an empty CSV cell, None)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def finite_values(values: Iterable[float]) -> List[float]:
    """The values that are neither None nor NaN."""
    return [v for v in values if v is not None and not math.isnan(v)]


def mean_of(values: Iterable[float]) -> float:
    """Mean of the non-NaN values (NaN when there is none)."""
    vals = finite_values(values)
    return statistics.fmean(vals) if vals else math.nan


def mean_and_std(values: Sequence[float]) -> Tuple[float, float]:
    """Mean and sample standard deviation (0 for one value) of the non-NaN values."""
    vals = finite_values(values)
    if not vals:
        return math.nan, math.nan
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def mean_text(mean: float, std: float, n: int) -> str:
    """``0.8500 ± 0.0707`` (one seed: ``0.8500``; nothing: ``–``)."""
    if math.isnan(mean):
        return "–"
    return f"{mean:.4f} ± {std:.4f}" if n > 1 else f"{mean:.4f}"


def number_text(value: float, spec: str = ".2f") -> str:
    """``value`` formatted by ``spec``; ``–`` for a missing value (None or NaN)."""
    return "–" if value is None or math.isnan(value) else format(value, spec)


def span_text(values: Iterable[Any]) -> str:
    """``30`` when every value is 30, ``10–30`` when they range from 10 to 30, ``–`` for none."""
    found = sorted({v for v in values if v is not None})
    if not found:
        return "–"
    return f"{found[0]:g}" if len(found) == 1 else f"{found[0]:g}–{found[-1]:g}"


def md_table(header: Sequence[str], body: Iterable[Sequence[str]]) -> List[str]:
    """A Markdown table; a ``|`` inside a cell (``|D_trg|=4``) is escaped so it does not split the cell."""
    def row(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    return [row(header), "|---" * len(header) + "|"] + [row(cells) for cells in body]


def csv_text(header: Sequence[str], body: Iterable[Sequence[Any]]) -> str:
    """A CSV table: ``header``, then a line per row of ``body``."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows(body)
    return out.getvalue()


def markdown_tables(lines: Sequence[str]) -> List[Tuple[int, int]]:
    """``(first line, end line)`` of every Markdown table in ``lines``: a header row, a ``|---|`` row, and
    the ``|`` rows after them (what :func:`md_table` writes, and docs/results.md quotes)."""
    found, i = [], 0
    while i < len(lines) - 1:
        if lines[i].startswith("|") and re.match(r"^\|[-| :]+\|$", lines[i + 1]):
            j = i + 2
            while j < len(lines) and lines[j].startswith("|"):
                j += 1
            found.append((i, j))
            i = j
        else:
            i += 1
    return found
