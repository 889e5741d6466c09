"""The accuracy study: its smoke budget runs both bundles end to end, and its aggregation is right on known numbers."""

from __future__ import annotations

import csv
import json
import math
import shutil
import statistics

import pytest

import torch

import benchmarks.accuracy_study as accuracy_study
from benchmarks._study_summary import (
    FUSION_ROW,
    MEAN_ROW,
    SINGLES_ROW,
    importance_ranking,
    mean_sd,
    paired_comparison,
    summarise_avmnist,
    summarise_brats,
)
from benchmarks.accuracy_study import AVMNIST_ARMS, BRATS_ARMS, BUDGETS, RunTask, run_study, single_subsets, subset_rows
from mckd.checkpoints import CheckpointError

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
    found = [
        c for c in summary["comparisons"] if c["other"] == "no_kd" and c["row"] == SINGLES_ROW and c["region"] == "TC"
    ]
    assert len(found) == 1
    assert found[0]["diff_mean"] == pytest.approx(0.10)
    assert found[0]["verdict"] == "higher"
    assert {c["row"] for c in summary["comparisons"]} == {MEAN_ROW, SINGLES_ROW, FUSION_ROW, *SINGLES}
    # all four = base + 0.3, the best single = base: the fusion row is +0.3 on every seed
    assert table[FUSION_ROW]["WT"]["mean"] == pytest.approx(0.3) and table[FUSION_ROW]["WT"]["sd"] == pytest.approx(0)


def test_diverged_runs_are_never_scored_nor_paired():
    runs = [_brats_run("mckd", s, b) for s, b in zip((0, 1, 2), (0.40, 0.50, 0.60))]
    runs += [_brats_run("no_kd", s, b) for s, b in zip((0, 1, 2), (0.30, 0.41, 0.49))]
    runs[0]["diverged"] = True  # mckd seed 0: its (perfect-looking) scores must not count
    runs[0]["dice"] = {name: {"ET": 1.0, "TC": 1.0, "WT": 1.0} for name in subset_rows()}
    runs[4].update(scored=False, dice=None)  # no_kd seed 1 was never evaluated
    summary = summarise_brats(runs, single_subsets(), reference_arm="mckd")
    assert summary["table"]["mckd"][SINGLES_ROW]["TC"]["n"] == 2
    assert summary["table"]["mckd"][SINGLES_ROW]["TC"]["mean"] == pytest.approx(0.55)
    assert summary["not_scored"] == {"mckd": [0], "no_kd": [1]}
    found = [c for c in summary["comparisons"] if c["other"] == "no_kd" and c["row"] == MEAN_ROW][0]
    assert found["seeds"] == [2]  # the only seed both arms scored
    av = [
        {"arm": "mckd", "seed": 0, "accuracy": {"Image": 0.9}, "diverged": True},
        {"arm": "mckd", "seed": 1, "accuracy": {"Image": 0.5}},
    ]
    assert summarise_avmnist(av)["table"]["mckd"]["Image"] == {
        "mean": 0.5,
        "sd": pytest.approx(math.nan, nan_ok=True),
        "n": 1,
    }


def test_importance_ranking_compares_the_last_p_with_the_reference_ranking():
    informativeness = {"FLAIR": 0.8, "T1": 0.1, "T1ce": 0.7, "T2": 0.5}
    names = list(informativeness)
    right = {"arm": "mckd", "modalities": names, "points": [[0, 0.25, 0.25, 0.25, 0.25], [5, 0.4, 0.1, 0.3, 0.2]]}
    wrong = {"arm": "mckd", "modalities": names, "points": [[0, 0.3, 0.2, 0.2, 0.3], [5, 0.1, 0.4, 0.2, 0.3]]}
    nan = {"arm": "mckd", "modalities": names, "points": [[0] + [0.25] * 4, [5, math.nan, 0.3, 0.3, 0.4]]}
    uniform = {"arm": "uniform_kd", "modalities": names, "points": [[0] + [0.25] * 4, [5] + [0.25] * 4]}
    result = importance_ranking([right, wrong, nan, uniform], informativeness)
    assert result["mckd"]["n"] == 2  # the NaN trajectory is left out
    assert result["mckd"]["spearman"] == pytest.approx(0.0)  # +1 and -1
    assert result["mckd"]["top_agrees"] == 0.5 and result["mckd"]["last_agrees"] == 0.5
    assert result["mckd"]["distance_start"] == pytest.approx((0.0 + 0.05) / 2)
    assert result["mckd"]["distance_end"] == pytest.approx((0.15 + 0.15) / 2)
    assert result["mckd"]["mean_p"]["FLAIR"] == pytest.approx(0.25)
    assert math.isnan(result["uniform_kd"]["spearman"])


def _task(tmp_path) -> RunTask:
    return RunTask("brats", "mckd", 0, str(tmp_path / "run"), str(tmp_path / "datalist.json"), {}, 1)


def _training(diverged: bool) -> dict:
    return {
        "modalities": ["FLAIR", "T1", "T1ce", "T2"],
        "trajectory": [[0, 0.25, 0.25, 0.25, 0.25]],
        "loss_curve": [],
        "first_loss": 1.0,
        "max_loss": math.inf if diverged else 1.0,
        "loss_spike": diverged,
        "parameters_finite": not diverged,
        "diverged": diverged,
        "not_scored_reason": "training diverged at iteration 3" if diverged else "",
    }


def test_a_run_that_diverged_in_training_is_recorded_and_never_evaluated(tmp_path, monkeypatch):
    monkeypatch.setattr(accuracy_study, "_train", lambda configs, overrides: _training(True))
    monkeypatch.setattr(
        accuracy_study, "_evaluate_brats", lambda *a: pytest.fail("a diverged run must not be evaluated")
    )
    record = accuracy_study.run_one(_task(tmp_path))
    assert record["diverged"] and not record["scored"] and "dice" not in record
    assert record["not_scored_reason"] == "training diverged at iteration 3"
    assert record["final_importance"] == {"FLAIR": 0.25, "T1": 0.25, "T1ce": 0.25, "T2": 0.25}


def test_a_checkpoint_the_evaluation_refuses_as_non_finite_makes_the_run_diverged(tmp_path, monkeypatch):
    checkpoint = tmp_path / "model_final.pt"
    torch.save({"model": {"weight": torch.tensor([1.0, math.nan])}}, checkpoint)

    def refuse(*args):
        raise CheckpointError(checkpoint, "holds NaN or infinite values in model.weight: the run diverged")

    monkeypatch.setattr(accuracy_study, "_train", lambda configs, overrides: _training(False))
    monkeypatch.setattr(accuracy_study, "_evaluate_brats", refuse)
    record = accuracy_study.run_one(_task(tmp_path))
    assert record["diverged"] and not record["scored"] and "holds NaN" in record["not_scored_reason"]

    torch.save({"model": {"weight": torch.tensor([1.0, 2.0])}}, checkpoint)  # finite but refused: a real error
    with pytest.raises(CheckpointError):
        accuracy_study.run_one(_task(tmp_path))


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
    runs = [
        {"arm": arm, "seed": s, "accuracy": {"Image": 0.9, "Audio": a + (0.05 if arm == "mckd" else 0.0)}}
        for arm in ("mckd", "no_kd")
        for s, a in zip((0, 1, 2), (0.70, 0.72, 0.74))
    ]
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
    assert names == sorted(
        [
            "accuracy_study.md",
            "brats_runs.csv",
            "brats_summary.csv",
            "avmnist_runs.csv",
            "avmnist_summary.csv",
            "importance_trajectory.csv",
            "importance_trajectory.png",
            "study.json",
        ]
    )
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
    assert set(study["avmnist_summary"]["table"]) == set(AVMNIST_ARMS)
    assert study["scoring_convention"] == "brats_legacy" and study["commit"]["sha"] != "unknown"
    assert set(study["importance_ranking"]) == {"brats", "avmnist"}

    for run in record["runs"]:
        assert run["parameters_finite"] and not run["diverged"] and run["scored"] and math.isfinite(run["first_loss"])
    assert "## Training stability" in report

    trajectories = {(r["bundle"], r["arm"]): r["trajectory"] for r in record["runs"]}
    # smoke: 4 iterations, meta rounds before iterations 1 and 3 -> initial p plus 2 rounds
    assert [p[0] for p in trajectories[("brats", "mckd")]] == [0.0, 1.0, 3.0]
    assert trajectories[("brats", "mckd")][-1][1:] != trajectories[("brats", "mckd")][0][1:]
    assert all(p[1:] == pytest.approx([0.25] * 4) for p in trajectories[("brats", "uniform_kd")])
    assert all(p[1:] == pytest.approx([0.5, 0.5]) for p in trajectories[("avmnist", "uniform_kd")])
