"""The demo command end to end at a toy size (the real demo trains cpu_small.json's schedule on 32 cases)."""

from __future__ import annotations

import csv

import pytest

from data_prep.demo import main


@pytest.mark.slow
def test_demo_trains_through_the_bundle_and_prints_the_15_subset_table(tmp_path, capsys):
    out = tmp_path / "demo"

    assert main(["--out", str(out), "--cases", "8", "--shape", "32", "32", "32", "--iterations", "20"]) == 0

    printed = capsys.readouterr().out
    assert "| FLAIR+T1+T1ce+T2 |" in printed and "Mean over subsets" in printed
    assert "Heat map (PNG):" in printed and str(out / "bundle_run" / "eval" / "evaluation_dice.png") in printed
    with open(out / "bundle_run" / "eval" / "evaluation_summary.csv") as f:
        assert len({row["subset"] for row in csv.DictReader(f)}) == 16  # 15 subsets + the mean row


def test_demo_rejects_a_shape_the_light_backbone_cannot_take(tmp_path):
    assert main(["--out", str(tmp_path), "--shape", "40", "40", "40"]) == 2
