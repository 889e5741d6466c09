"""Scoring in a published protocol: RFNet-family 15-subset mean, IM-Fuse per-case subsets, peers beside ours, the
mean of the three 2018 splits, and the report written through ``evaluate_and_report``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from mckd.availability import all_subsets, subset_name
from mckd.brats.conventions import MODALITIES, MODALITY_NAMES, REGIONS
from mckd.brats.protocol_report import (
    average_markdown,
    average_split_reports,
    main,
    protocol_markdown,
    read_availability,
    score_protocol,
)
from mckd.brats.protocols import ProtocolError, peer_results, published_split
from mckd.brats.report import evaluate_and_report
from mckd.evaluation import SubsetResults

FULL = tuple(True for _ in MODALITIES)


def _results(case_ids, subsets, dice, convention="brats_legacy") -> SubsetResults:
    dice = np.asarray(dice, dtype=float)
    return SubsetResults(
        subsets=list(subsets),
        subset_names=[subset_name(s, MODALITY_NAMES) for s in subsets],
        case_ids=list(case_ids),
        region_names=list(REGIONS),
        modality_names=list(MODALITY_NAMES),
        dice=dice,
        hd95=np.zeros_like(dice),
        conventions={"scoring_convention": convention},
    )


def _rfnet_results(name="rfnet2018:1", drop=0, convention="brats_legacy") -> SubsetResults:
    """15 subsets on the test list; subset s scores (s + 1) / 20 in every region, case c adds nothing."""
    cases = published_split(name).testing[drop:]
    subsets = all_subsets(len(MODALITIES))
    dice = np.repeat(((np.arange(15) + 1) / 20.0)[:, None, None], len(cases), axis=1).repeat(3, axis=2)
    return _results(cases, subsets, dice, convention)


def test_rfnet_headline_is_the_mean_over_the_15_subsets_and_comparable_under_the_peers_rules():
    score = score_protocol(_rfnet_results(), "rfnet2018:1", et_min_size=500)
    assert score.dice == pytest.approx({r: 100 * np.mean((np.arange(15) + 1) / 20.0) for r in REGIONS})
    assert score.evaluated_list == "testing" and score.comparable and score.num_cases == 57
    text = protocol_markdown(score, REGIONS)
    assert (
        "| RFNet | RFN-R; re-quoted in DMS-R | predicted ET under 500 voxels set empty | 57.12 | 76.53 | 85.67 |"
        in text
    )
    assert "mean of the 3 splits" in text


@pytest.mark.parametrize(
    "kwargs, reason",
    [
        ({"et_min_size": 0}, "Post-processing: none"),
        ({"et_min_size": 500, "convention": "official"}, "leaves such cases out"),
        ({"et_min_size": 500, "drop": 1}, "1 of its 57 cases not evaluated"),
    ],
)
def test_what_breaks_comparability_is_named(kwargs, reason):
    et = kwargs.pop("et_min_size")
    score = score_protocol(_rfnet_results(**kwargs), "rfnet2018:1", et_min_size=et)
    assert not score.comparable
    assert any(reason in note for note in score.notes), score.notes


def test_fewer_than_15_subsets_give_no_rfnet_headline():
    full = _rfnet_results()
    part = _results(full.case_ids, full.subsets[:3], full.dice[:3])
    score = score_protocol(part, "rfnet2018:1", et_min_size=500)
    assert all(math.isnan(v) for v in score.dice.values()) and not score.comparable
    assert any("only 3 of the 15 subsets" in note for note in score.notes)


def _imfuse_results(all_subsets_evaluated: bool) -> tuple[SubsetResults, dict[str, tuple[bool, ...]]]:
    """IM-Fuse test cases: a case's Dice is the number of modalities in its published subset / 10 (all regions)."""
    split = published_split("imfuse2023")
    cases = split.testing
    per_case = np.array([sum(split.subsets[c]) / 10.0 for c in cases])
    subsets = all_subsets(len(MODALITIES)) if all_subsets_evaluated else [FULL]
    dice = np.full((len(subsets), len(cases), 3), np.nan)
    dice[subsets.index(FULL)] = per_case[:, None]  # under the full subset each case sees its own subset
    return _results(cases, subsets, dice), {c: split.subsets[c] for c in cases}


@pytest.mark.parametrize("all_evaluated", [True, False])
def test_imfuse_scores_each_case_once_with_its_published_subset(all_evaluated):
    results, availability = _imfuse_results(all_evaluated)
    score = score_protocol(results, "imfuse2023", availability, et_min_size=500)
    assert len(score.groups) == 15 and sum(n for _, n, _ in score.groups) == 251
    groups = {name: (n, d) for name, n, d in score.groups}
    assert groups["T1ce"][1]["ET"] == pytest.approx(10.0) and groups["FLAIR+T1+T1ce+T2"][1]["WT"] == pytest.approx(40.0)
    # mean of the 15 group means: (4 * 1 + 6 * 2 + 4 * 3 + 4) / 15 / 10
    assert score.dice["ET"] == pytest.approx(100 * 32 / 15 / 10)
    assert score.comparable and any("published subset" in note for note in score.notes)


def test_imfuse_cases_evaluated_with_another_subset_are_named():
    results, availability = _imfuse_results(False)
    case = results.case_ids[7]
    availability[case] = FULL if availability[case] != FULL else (True, False, False, False)
    score = score_protocol(results, "imfuse2023", availability, et_min_size=500)
    assert not score.comparable and any(case in note for note in score.notes)
    without = score_protocol(results, "imfuse2023", None, et_min_size=500)  # no 'available': every case with all
    assert not without.comparable


def test_peers_numbers_come_from_the_one_data_file():
    assert peer_results("m2ftrans2021") == []
    split3 = [p.method for p in peer_results("rfnet2018:3")]
    assert "RFNet" in split3 and "mmFormer (paper)" in split3
    assert "mmFormer (paper)" not in [p.method for p in peer_results("rfnet2018:1")]
    score = score_protocol(
        _results(published_split("m2ftrans2021").testing, [FULL], np.ones((1, 250, 3))), "m2ftrans2021"
    )
    assert "No peer's number on this protocol was retrieved" in protocol_markdown(score)
    with pytest.raises(ProtocolError, match="unknown protocol 'brats2019'"):
        peer_results("brats2019")


def _write_split_report(folder: Path, name: str, scale: float) -> Path:
    results = _rfnet_results(name)
    results.dice *= scale
    path = folder / f"{name.replace(':', '_')}.json"
    path.write_text(json.dumps(score_protocol(results, name, et_min_size=500).to_json()))
    return path


def test_the_three_2018_splits_average_into_rfnets_table_row(tmp_path, capsys):
    paths = [_write_split_report(tmp_path, f"rfnet2018:{k}", k / 2.0) for k in (1, 2, 3)]
    average = average_split_reports(paths)
    single = 100 * np.mean((np.arange(15) + 1) / 20.0)
    assert average["dice"]["ET"] == pytest.approx(single * (0.5 + 1.0 + 1.5) / 3) and average["comparable"]
    assert "| DeMoSeg |" in average_markdown(average)
    assert main(["average", *map(str, paths), "--out", str(tmp_path / "mean.md")]) == 0
    assert "mean of the 3 splits" in (tmp_path / "mean.md").read_text()


def test_averaging_refuses_anything_but_the_three_splits_once_each(tmp_path, capsys):
    one, two, three = (_write_split_report(tmp_path, f"rfnet2018:{k}", 1.0) for k in (1, 2, 3))
    with pytest.raises(ValueError, match="repeats protocol 'rfnet2018:1'"):
        average_split_reports([one, one, two])
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"protocol": "rfnet2020", "dice": {"ET": 1.0}}))
    assert main(["average", str(one), str(two), str(other)]) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0


class _FixedEvaluator:
    """Stands in for ``SubsetEvaluator``: ``run`` returns prepared results."""

    def __init__(self, results: SubsetResults) -> None:
        self.results = results

    def run(self) -> SubsetResults:
        return self.results


def test_evaluate_and_report_writes_the_protocol_section_and_json(tmp_path):
    results, availability = _imfuse_results(True)
    datalist = tmp_path / "datalist.json"
    items = [{"case_id": c, "image": [], "available": list(a)} for c, a in availability.items()]
    datalist.write_text(json.dumps({"testing": items}))
    assert read_availability(datalist, "testing") == availability
    paths = evaluate_and_report(
        _FixedEvaluator(results), tmp_path / "eval", protocol="imfuse2023", datalist=datalist, et_min_size=500
    )
    written = json.loads(paths["protocol"].read_text())
    assert written["protocol"] == "imfuse2023" and written["evaluated_list"] == "testing" and written["comparable"]
    report = paths["markdown"].read_text()
    assert "## Protocol `imfuse2023`" in report and "| UniME |" in report and "Cases grouped by" in report
    # literature order: T2 first
    assert report.index("| T2 | 17 |") < report.index("| T1ce | 17 |")


def test_an_unknown_protocol_stops_before_evaluating(tmp_path):
    class Boom:
        def run(self):
            raise AssertionError("evaluated")

    with pytest.raises(ProtocolError, match="unknown protocol"):
        evaluate_and_report(Boom(), tmp_path, protocol="rfnet2019")


def test_the_bundles_evaluation_config_hands_the_protocol_to_the_report():
    import inspect

    configs = Path(__file__).resolve().parents[2] / "bundle" / "brats_mri_mckd_segmentation" / "configs"
    evaluate = json.loads((configs / "evaluate.json").read_text())
    train = json.loads((configs / "train.json").read_text())
    report = evaluate["evaluate"]["report"]
    assert evaluate["protocol"] is None and report["_target_"] == "mckd.brats.report.evaluate_and_report"
    wiring = {k: report[k] for k in ("protocol", "datalist", "list_key", "et_min_size")}
    assert wiring == {
        "protocol": "@protocol",
        "datalist": "@data_list_file_path",
        "list_key": "@eval_list",
        "et_min_size": "@et_min_size",
    }
    assert all(ref[1:] in {**train, **evaluate} for ref in wiring.values())
    assert set(wiring) <= set(inspect.signature(evaluate_and_report).parameters)


def test_imfuse_post_processing_is_stated_not_judged():
    results, availability = _imfuse_results(False)
    for et in (0, 500):
        score = score_protocol(results, "imfuse2023", availability, et_min_size=et)
        assert score.comparable
        assert any("ET and ETpp" in note for note in score.notes)
