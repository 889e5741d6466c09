"""The accuracy study: its smoke budget runs both bundles end to end, and its aggregation is right on known numbers."""

from __future__ import annotations

import csv
import json
import math
import shutil
import statistics

import pytest

from benchmarks._study_summary import (
    MEAN_ROW,
    SINGLES_ROW,
    format_mean_sd,
    mean_sd,
    paired_comparison,
    summarise_avmnist,
    summarise_brats,
)
from benchmarks.accuracy_study import BRATS_ARMS, BUDGETS, run_study, single_subsets, subset_rows

SINGLES = ["T2", "T1ce", "T1", "FLAIR"]


def _brats_run(arm: str, seed: int, base: float) -> dict:
    """A run whose Dice is ``base`` on single-modality subsets and ``base + 0.3`` on the others, ET one point lower."""
    dice = {}
    for name in subset_rows():
        value = base if name in SINGLES else base + 0.3
        dice[name] = {"ET": value - 0.01, "TC": value, "WT": value + 0.01}
    return {"arm": arm, "seed": seed, "dice": dice}


def test_mean_sd_is_the_sample_deviation_and_nan_for_one_value():
    assert mean_sd([0.5, 0.7, 0.9]) == pytest.approx((0.7, 0.2))
    mean, sd = mean_sd([0.4])
    assert mean == 0.4 and math.isnan(sd)
    assert format_mean_sd(0.4, sd) == "40.00 ± n/a"
    with pytest.raises(ValueError):
        mean_sd([])


def test_brats_summary_gives_mean_over_subsets_singles_row_and_seed_spread():
    runs = [_brats_run("mckd", s, b) for s, b in zip((0, 1, 2), (0.40, 0.50, 0.60))]
    runs += [_brats_run("no_kd", s, b) for s, b in zip((0, 1, 2), (0.30, 0.41, 0.49))]
    summary = summarise_brats(runs, single_subsets(), reference_arm="mckd")
    table = summary["table"]["mckd"]
    # 4 singles at base, 11 other subsets at base + 0.3 -> mean over subsets = base + 0.3 * 11 / 15
    expected = [b + 0.3 * 11 / 15 for b in (0.40, 0.50, 0.60)]
    assert table[MEAN_ROW]["TC"]["mean"] == pytest.approx(statistics.fmean(expected))
    assert table[MEAN_ROW]["TC"]["sd"] == pytest.approx(statistics.stdev(expected))
    assert table[MEAN_ROW]["ET"]["mean"] == pytest.approx(statistics.fmean(expected) - 0.01)
    assert table[SINGLES_ROW]["WT"]["mean"] == pytest.approx(0.51)
    assert table[SINGLES_ROW]["WT"]["sd"] == pytest.approx(0.1)
    assert table["T1ce"]["TC"]["n"] == 3
    # paired differences mckd - no_kd = 0.10, 0.09, 0.11 per seed: consistently positive -> "higher"
    found = [c for c in summary["comparisons"] if c["other"] == "no_kd" and c["row"] == SINGLES_ROW and c["region"] == "TC"]
    assert len(found) == 1
    assert found[0]["diff_mean"] == pytest.approx(0.10)
    assert found[0]["verdict"] == "higher"
    assert {c["row"] for c in summary["comparisons"]} == {MEAN_ROW, SINGLES_ROW, *SINGLES}


def test_brats_summary_refuses_runs_without_the_single_modality_subsets():
    run = _brats_run("mckd", 0, 0.5)
    del run["dice"]["T1"]
    with pytest.raises(ValueError, match="T1"):
        summarise_brats([run], single_subsets())


@pytest.mark.parametrize(
    "reference, other, verdict",
    [
        ({0: 0.60, 1: 0.70, 2: 0.50}, {0: 0.50, 1: 0.61, 2: 0.39}, "higher"),
        ({0: 0.50, 1: 0.61, 2: 0.39}, {0: 0.60, 1: 0.70, 2: 0.50}, "lower"),
        ({0: 0.60, 1: 0.40, 2: 0.50}, {0: 0.50, 1: 0.50, 2: 0.52}, "within seed noise"),
        ({0: 0.60}, {0: 0.50}, "n/a (one seed)"),
    ],
)
def test_paired_comparison_verdicts(reference, other, verdict):
    assert paired_comparison(reference, other)["verdict"] == verdict


def test_paired_comparison_interval_is_the_student_t_interval():
    result = paired_comparison({0: 0.3, 1: 0.5, 2: 0.4}, {0: 0.2, 1: 0.2, 2: 0.2})
    half = 4.302652729911275 * 0.1 / math.sqrt(3)  # t(0.975, 2 dof) * sd / sqrt(n)
    assert result["diff_mean"] == pytest.approx(0.2)
    assert (result["ci_low"], result["ci_high"]) == pytest.approx((0.2 - half, 0.2 + half))


def test_avmnist_summary_per_input_set():
    runs = [{"arm": arm, "seed": s, "accuracy": {"Image": 0.9, "Audio": a + (0.05 if arm == "mckd" else 0.0)}}
            for arm in ("mckd", "no_kd") for s, a in zip((0, 1, 2), (0.70, 0.72, 0.74))]
    summary = summarise_avmnist(runs, reference_arm="mckd")
    assert summary["table"]["mckd"]["Audio"]["mean"] == pytest.approx(0.77)
    assert summary["table"]["no_kd"]["Audio"]["sd"] == pytest.approx(0.02)
    audio = [c for c in summary["comparisons"] if c["inputs"] == "Audio"][0]
    assert audio["diff_mean"] == pytest.approx(0.05) and audio["verdict"] == "higher"
    image = [c for c in summary["comparisons"] if c["inputs"] == "Image"][0]
    assert image["verdict"] == "within seed noise"


@pytest.mark.slow
def test_smoke_budget_trains_every_arm_of_both_bundles_and_writes_tables_and_plot(tmp_path):
    if shutil.which("espeak-ng") is None or shutil.which("sox") is None:
        pytest.skip("espeak-ng and sox are needed for the offline AV-MNIST build (apt-get install -y espeak-ng sox)")
    out = tmp_path / "out"
    record = run_study(BUDGETS["smoke"], out, tmp_path / "work", seeds=[0], jobs=2, threads=1)

    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(["accuracy_study.md", "brats_runs.csv", "brats_summary.csv", "avmnist_runs.csv",
                            "avmnist_summary.csv", "importance_trajectory.csv", "importance_trajectory.png",
                            "study.json"])
    assert (out / "importance_trajectory.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(out / "brats_runs.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(BRATS_ARMS) * 15 * 3
    assert {r["arm"] for r in rows} == set(BRATS_ARMS)
    assert all(0.0 <= float(r["dice"]) <= 1.0 for r in rows)
    report = (out / "accuracy_study.md").read_text()
    for label in ("(a) MCKD", "(b) no KD", "(c) KD, fixed uniform p", "(d) MCKD paper_exact", MEAN_ROW, SINGLES_ROW):
        assert label in report
    study = json.loads((out / "study.json").read_text())
    assert set(study["avmnist_summary"]["table"]) == {"mckd", "no_kd", "uniform_kd"}

    for run in record["runs"]:
        assert run["parameters_finite"] and not run["diverged"] and math.isfinite(run["first_loss"])
    assert "## Training stability" in report

    trajectories = {(r["bundle"], r["arm"]): r["trajectory"] for r in record["runs"]}
    # smoke: 4 iterations, meta rounds before iterations 1 and 3 -> initial p plus 2 rounds
    assert [p[0] for p in trajectories[("brats", "mckd")]] == [0.0, 1.0, 3.0]
    assert trajectories[("brats", "mckd")][-1][1:] != trajectories[("brats", "mckd")][0][1:]
    assert all(p[1:] == pytest.approx([0.25] * 4) for p in trajectories[("brats", "uniform_kd")])
    assert all(p[1:] == pytest.approx([0.5, 0.5]) for p in trajectories[("avmnist", "uniform_kd")])
