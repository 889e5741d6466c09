"""The report tables every report and benchmark renders through (mckd.tables)."""

from __future__ import annotations

import math

from mckd.tables import csv_text, markdown_table, mean_sd_cell, number


def test_markdown_table_left_aligns_the_label_columns_and_right_aligns_the_numbers():
    table = markdown_table(["subset", "arm", "ET"], [["T1", "(a) MCKD", "50.00"]], text_columns=2)

    assert table.splitlines() == ["| subset | arm | ET |", "|---|---|---:|", "| T1 | (a) MCKD | 50.00 |"]


def test_markdown_table_can_bold_a_mean_row():
    table = markdown_table(["subset", "ET"], [["T1", "1"], ["Mean", "2"]], bold_last=True)

    assert table.splitlines()[-1] == "| **Mean** | **2** |"


def test_mean_sd_cell_scales_and_prints_the_mean_alone_without_a_deviation():
    assert mean_sd_cell(0.5, 0.25, scale=100.0) == "50.00 ± 25.00"
    assert mean_sd_cell(0.4, math.nan, scale=100.0) == "40.00"
    assert mean_sd_cell(math.nan, math.nan) == "n/a"


def test_number_and_csv_text():
    assert number(None) == "n/a" and number(0.123, scale=100.0, digits=1) == "12.3"
    assert csv_text(["a", "b"], [[1, 2]]) == "a,b\n1,2\n"
