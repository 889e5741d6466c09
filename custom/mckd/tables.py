"""Plain-text tables of the reports (Markdown, CSV) and the ``mean ± sd`` cell, written in one place.

The BraTS and AV-MNIST reports, the AV-MNIST KD comparison and the benchmarks' summaries all render their numbers
through these functions, so a table looks the same wherever it comes from.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["markdown_table", "csv_text", "mean_sd_cell", "number"]


def markdown_table(
    header: Sequence[str], rows: Iterable[Sequence[Any]], bold_last: bool = False, text_columns: int = 1
) -> str:
    """A Markdown table: the first ``text_columns`` columns left-aligned (labels), the others right-aligned (numbers).

    Args:
        header: the column titles.
        rows: the cells of each row (rendered with ``str``).
        bold_last: render the last row in bold (a mean row).
        text_columns: how many leading columns hold labels.
    """
    rows = [[str(cell) for cell in row] for row in rows]
    if bold_last and rows:
        rows[-1] = [f"**{cell}**" if cell else cell for cell in rows[-1]]
    text_columns = min(text_columns, len(header))
    alignment = ["---"] * text_columns + ["---:"] * (len(header) - text_columns)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(alignment) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def csv_text(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """CSV text (``\\n`` line ends) with a header row."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def number(value: Any, scale: float = 1.0, digits: int = 2) -> str:
    """``value * scale`` with ``digits`` decimals; ``n/a`` for None or NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{float(value) * scale:.{digits}f}"


def mean_sd_cell(mean: float, sd: float, scale: float = 1.0, digits: int = 2) -> str:
    """``mean ± sd`` of an already computed mean and deviation; the mean alone when ``sd`` is NaN (one value)."""
    if math.isnan(mean):
        return "n/a"
    if math.isnan(sd):
        return number(mean, scale, digits)
    return f"{mean * scale:.{digits}f} ± {sd * scale:.{digits}f}"
