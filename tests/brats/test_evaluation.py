"""All-subset evaluation with a hand-checkable stand-in network, its scoring conventions, and the written report."""

from __future__ import annotations

import csv
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from monai.data import DataLoader, MetaTensor
from monai.inferers import SlidingWindowInferer
from monai.metrics import DiceMetric, HausdorffDistanceMetric

from mckd.availability import all_subsets
from mckd.brats.conventions import MODALITY_DISPLAY_NAMES, MODALITIES, REGIONS
from mckd.brats.report import evaluate_and_report, markdown_table, write_report
from mckd.evaluation import SubsetEvaluator

S = 24  # volume side
NAMES = [MODALITY_DISPLAY_NAMES[m] for m in MODALITIES]


def _block(lo, hi) -> torch.Tensor:
    mask = torch.zeros(S, S, S)
    mask[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = 1
    return mask


def _case(case_id, regions, images, available=(True,) * 4, spacing=1.0) -> dict:
    """Reference ``regions`` (3 masks) and the 4 image channels the stand-in network thresholds."""
    affine = torch.diag(torch.tensor([spacing, spacing, spacing, 1.0], dtype=torch.float64))
    return {
        "case_id": case_id,
        "image": torch.stack(images),
        "label": MetaTensor(torch.stack(regions), affine=affine),
        "available": torch.tensor(available),
    }


def _cases() -> list[dict]:
    zero = torch.zeros(S, S, S)
    a = _block((4, 4, 4), (12, 12, 12))
    shifted = _block((5, 4, 4), (13, 12, 12))
    # exact: each region channel equals the image the network reads for it (FLAIR->ET, T1->TC, T1ce->WT)
    exact = _case("exact", [a, a, a], [a, a, a, zero])
    # shifted: WT prediction is the block shifted by one voxel along x (Dice = 2*448/1024 = 0.875); empty ET both sides
    shifted_case = _case("shifted", [zero, a, a], [zero, a, shifted, zero], spacing=2.0)
    # spurious: ET reference empty but FLAIR predicts it; no FLAIR in this case's data for TC/WT checks
    spurious = _case("spurious", [zero, a, a], [a, a, a, zero], available=(False, True, True, True))
    return [exact, shifted_case, spurious]


def _evaluate(cases, net, **kwargs):
    loader = DataLoader(cases, batch_size=kwargs.pop("batch_size", 1), num_workers=0)
    evaluator = SubsetEvaluator(
        net,
        loader,
        SlidingWindowInferer(roi_size=(16, 16, 16), sw_batch_size=2, overlap=0.25),
        region_names=REGIONS,
        modality_names=NAMES,
        **kwargs,
    )
    return evaluator.run()


@pytest.fixture(scope="module")
def results(net_factory):
    net = net_factory()
    res = _evaluate(_cases(), net, importance=torch.tensor([0.4, 0.1, 0.3, 0.2]))
    return SimpleNamespace(res=res, calls=net.calls)


def _subset_index(res, names) -> int:
    return res.subset_names.index("+".join(names))


def test_results_cover_fifteen_subsets_times_cases_times_regions(results):
    res = results.res
    assert res.dice.shape == res.hd95.shape == (15, 3, 3)
    assert res.subsets == all_subsets(4) and res.case_ids == ["exact", "shifted", "spurious"]
    assert len(res.records()) == 15 * 3 * 3


def test_each_case_is_loaded_once_and_every_subset_runs_inside(results):
    # 3 cases x 15 subsets, minus the FLAIR-only subset of the case without FLAIR, x 8 windows / sw_batch_size 2
    assert results.calls == (3 * 15 - 1) * 4


def test_dice_follows_the_hand_values(results):
    res = results.res
    exact, shifted, spurious = 0, 1, 2
    for s, subset in enumerate(res.subsets):
        flair, t1, t1ce = subset[0], subset[1], subset[2]
        assert res.dice[s, exact].tolist() == [float(flair), float(t1), float(t1ce)]
        # empty ET both sides -> 1; TC exact when T1 is there; WT shifted by one voxel when T1ce is there
        assert res.dice[s, shifted, 0] == 1.0 and res.hd95[s, shifted, 0] == 0.0
        assert res.dice[s, shifted, 1] == float(t1)
        assert res.dice[s, shifted, 2] == pytest.approx(0.875 if t1ce else 0.0)
        if subset == (True, False, False, False):
            assert np.isnan(res.dice[s, spurious]).all()  # the case has no FLAIR: nothing to evaluate
        else:
            assert res.dice[s, spurious, 0] == 1.0  # FLAIR is not in the case's data: ET stays empty as the reference
    full = _subset_index(res, NAMES)
    assert res.per_subset_mean("dice")[full].tolist() == pytest.approx([1.0, 1.0, (1 + 0.875 + 1) / 3])


def test_dice_and_hd95_agree_with_an_independent_monai_computation(results):
    res = results.res
    cases = _cases()
    s = _subset_index(res, ["T1", "T1ce"])
    for c, case in enumerate(cases[:2]):
        pred = torch.zeros(1, 3, S, S, S)
        pred[0, 1], pred[0, 2] = case["image"][1], case["image"][2]
        ref = case["label"].as_tensor()[None]
        dice = DiceMetric(include_background=True, reduction="none", ignore_empty=False)(pred, ref)
        np.testing.assert_allclose(res.dice[s, c, 1:], dice[0, 1:].numpy(), atol=1e-6)
        spacing = float(case["label"].affine[0, 0])
        hd = HausdorffDistanceMetric(include_background=True, percentile=95, reduction="none")(
            pred[:, 1:], ref[:, 1:], spacing=spacing
        )
        np.testing.assert_allclose(res.hd95[s, c, 1:], hd[0].numpy(), atol=1e-6)
    assert res.hd95[s, 1, 2] == pytest.approx(2.0)  # a one-voxel shift at 2 mm spacing


def test_missed_regions_score_dice_zero_and_the_diagonal_penalty(results):
    res = results.res
    t2_only = _subset_index(res, ["T2"])
    diagonal_1mm = math.sqrt(3) * S
    assert res.dice[t2_only, 0].tolist() == [0.0, 0.0, 0.0]  # nothing predicted, reference present
    assert res.hd95[t2_only, 0].tolist() == pytest.approx([diagonal_1mm] * 3)
    assert res.hd95[t2_only, 1, 1] == pytest.approx(2 * diagonal_1mm)  # physical units: 2 mm voxels
    flair_t1 = _subset_index(res, ["FLAIR", "T1"])
    assert res.dice[flair_t1, 2, 0] == 1.0  # the case's data has no FLAIR, so no spurious ET


def test_spurious_prediction_of_an_empty_region_scores_zero_and_conventions_are_configurable(threshold_net):
    zero, a = torch.zeros(S, S, S), _block((4, 4, 4), (12, 12, 12))
    case = _case("spurious_et", [zero, a, zero], [a, a, zero, zero])  # FLAIR predicts an ET that is not there
    flair_t1, t2 = (True, True, False, False), (False, False, False, True)
    default = _evaluate([case], threshold_net, subsets=[flair_t1, t2])
    assert default.dice[:, 0].tolist() == [[0.0, 1.0, 1.0], [1.0, 0.0, 1.0]]
    diagonal = math.sqrt(3) * S
    np.testing.assert_allclose(default.hd95[:, 0], [[diagonal, 0.0, 0.0], [0.0, diagonal, 0.0]])
    custom = _evaluate([case], threshold_net, subsets=[flair_t1, t2], missed_hd95=373.13, empty_dice=0.5, empty_hd95=1)
    assert custom.dice[:, 0].tolist() == [[0.0, 1.0, 0.5], [0.5, 0.0, 0.5]]
    assert custom.hd95[:, 0].tolist() == [[373.13, 0.0, 1.0], [1.0, 373.13, 1.0]]
    assert custom.conventions["one_side_empty_hd95"] == 373.13 and custom.subset_names == ["FLAIR+T1", "T2"]


def test_report_writes_csv_markdown_png_with_fifteen_rows_and_the_mean(results, tmp_path):
    res = results.res
    paths = write_report(res, tmp_path / "report")
    with open(paths["csv"], newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 15 * 3 * 3 and set(rows[0]) == {"subset", "case", "region", "dice", "hd95"}
    with open(paths["summary_csv"], newline="") as f:
        summary = list(csv.DictReader(f))
    assert len(summary) == (15 + 1) * 3 and summary[-1]["subset"] == "Mean over subsets"
    assert paths["heatmap"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    table = markdown_table(res)
    body = table.strip().splitlines()[2:]
    assert len(body) == 16 and "Mean over subsets" in body[-1]
    assert body[0].startswith("| T2 |") and body[3].startswith("| FLAIR |")
    assert body[14].startswith("| FLAIR+T1+T1ce+T2 |")
    full = res.per_subset_mean("dice")[_subset_index(res, NAMES)]
    assert f"{full[2] * 100:.2f}" in body[14]
    mean = res.mean_over_subsets("dice")
    assert mean.tolist() == pytest.approx(np.nanmean(np.nanmean(res.dice, axis=1), axis=0).tolist())
    markdown = paths["markdown"].read_text()
    assert table in markdown and "| FLAIR | 0.4000 |" in markdown and "Empty prediction and empty reference" in markdown
    assert not list((tmp_path / "report").glob(".*"))


def test_evaluate_and_report_writes_the_files_and_logs_the_table(threshold_net, tmp_path, caplog):
    loader = DataLoader(_cases()[:1], batch_size=1)
    evaluator = SubsetEvaluator(
        threshold_net, loader, SlidingWindowInferer(roi_size=(24, 24, 24)), region_names=REGIONS, modality_names=NAMES
    )
    with caplog.at_level("INFO", logger="mckd.brats.report"):
        paths = evaluate_and_report(evaluator, tmp_path)
    assert all(path.exists() for path in paths.values())
    assert "| **Mean over subsets** |" in caplog.text and "| T2 |" in caplog.text
