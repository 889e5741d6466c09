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
from monai.metrics.utils import get_edge_surface_distance

from mckd.availability import all_subsets
from mckd.brats.conventions import MODALITY_DISPLAY_NAMES, MODALITIES, REGIONS
from mckd.brats.report import _representative, evaluate_and_report, markdown_table, write_report
from mckd.evaluation import SubsetEvaluator
from mckd.scoring import BRATS_DIAGONAL_MM, ScoringConvention, score_regions

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


def test_missed_regions_score_dice_zero_and_the_legacy_penalty_whatever_the_spacing(results):
    res = results.res
    t2_only = _subset_index(res, ["T2"])
    assert res.dice[t2_only, 0].tolist() == [0.0, 0.0, 0.0]  # nothing predicted, reference present
    assert res.hd95[t2_only, 0].tolist() == pytest.approx([BRATS_DIAGONAL_MM] * 3)
    assert res.hd95[t2_only, 1, 1] == pytest.approx(373.1287, abs=1e-4)  # a fixed number, also at 2 mm voxels
    flair_t1 = _subset_index(res, ["FLAIR", "T1"])
    assert res.dice[flair_t1, 2, 0] == 1.0  # the case's data has no FLAIR, so no spurious ET
    assert res.conventions["scoring_convention"] == "brats_legacy"


def _spurious_case() -> dict:
    zero, a = torch.zeros(S, S, S), _block((4, 4, 4), (12, 12, 12))
    return _case("spurious_et", [zero, a, zero], [a, a, zero, zero])  # FLAIR predicts an ET that is not there


def test_official_convention_leaves_both_empty_regions_out_and_penalises_a_missed_region_373(threshold_net):
    flair_t1, t2 = (True, True, False, False), (False, False, False, True)
    legacy = _evaluate([_spurious_case()], threshold_net, subsets=[flair_t1, t2])
    assert legacy.dice[:, 0].tolist() == [[0.0, 1.0, 1.0], [1.0, 0.0, 1.0]]
    np.testing.assert_allclose(legacy.hd95[:, 0], [[BRATS_DIAGONAL_MM, 0.0, 0.0], [0.0, BRATS_DIAGONAL_MM, 0.0]])
    official = _evaluate([_spurious_case()], threshold_net, subsets=[flair_t1, t2], convention="official")
    np.testing.assert_array_equal(official.dice[:, 0], [[0.0, 1.0, np.nan], [np.nan, 0.0, np.nan]])
    np.testing.assert_array_equal(official.hd95[:, 0], [[373.0, 0.0, np.nan], [np.nan, 373.0, np.nan]])
    assert np.isnan(official.per_subset_mean("dice")[1, 0])  # a region empty on both sides is left out of the mean
    assert official.conventions["scoring_convention"] == "official" and official.subset_names == ["FLAIR+T1", "T2"]


def test_official_convention_scores_disjoint_masks_373_and_legacy_measures_them():
    ref = _block((2, 2, 2), (6, 6, 6))[None].bool()
    pred = _block((12, 2, 2), (16, 6, 6))[None].bool()  # 10 voxels away, no common voxel
    legacy_dice, legacy_hd95 = score_regions(pred, ref, "brats_legacy")
    official_dice, official_hd95 = score_regions(pred, ref, "official")
    assert legacy_dice.tolist() == official_dice.tolist() == [0.0]
    assert official_hd95.tolist() == [373.0] and legacy_hd95[0] == pytest.approx(10.0)


def test_a_custom_convention_and_an_unknown_name(threshold_net):
    custom = ScoringConvention("mine", both_empty_dice=0.5, both_empty_hd95=1.0, missed_hd95=99.0,
                               disjoint_hd95=None, summary="test", source="test")
    res = _evaluate([_spurious_case()], threshold_net, subsets=[(True, True, False, False)], convention=custom)
    assert res.dice[0, 0].tolist() == [0.0, 1.0, 0.5] and res.hd95[0, 0].tolist() == [99.0, 0.0, 1.0]
    with pytest.raises(ValueError, match="unknown scoring convention 'brats2019'.*'brats_legacy', 'official'"):
        SubsetEvaluator(threshold_net, [], SlidingWindowInferer(roi_size=(16, 16, 16)), convention="brats2019")


def test_pooled_hd95_differs_from_monai_max_of_directed_percentiles_on_asymmetric_masks():
    ref = _block((4, 4, 4), (14, 14, 14))[None]
    pred = _block((5, 5, 5), (12, 12, 12))[None]  # inside the reference, nearer to one corner
    _, ours = score_regions(pred.bool(), ref.bool(), "brats_legacy")
    monai = HausdorffDistanceMetric(include_background=True, percentile=95, reduction="none")(pred[None], ref[None])
    _, distances, _ = get_edge_surface_distance(pred[0].bool(), ref[0].bool(), symmetric=True)
    pooled = np.percentile(np.concatenate([d.numpy() for d in distances]), 95)
    directed = max(np.percentile(d.numpy(), 95) for d in distances)
    assert ours[0] == pytest.approx(pooled) and float(monai[0, 0]) == pytest.approx(directed, abs=1e-5)
    assert ours[0] == pytest.approx(math.sqrt(6)) and float(monai[0, 0]) == pytest.approx(math.sqrt(8))


def test_report_writes_csv_markdown_heat_maps_overlay_with_fifteen_rows_and_the_mean(results, tmp_path):
    res = results.res
    paths = write_report(res, tmp_path / "report")
    with open(paths["csv"], newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 15 * 3 * 3 and set(rows[0]) == {"subset", "case", "region", "dice", "hd95"}
    with open(paths["summary_csv"], newline="") as f:
        summary = list(csv.DictReader(f))
    assert len(summary) == (15 + 1) * 3 and summary[-1]["subset"] == "Mean over subsets"
    for key in ("heatmap", "hd95_heatmap", "overlay"):
        assert paths[key].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", key
    assert paths["hd95_heatmap"].name == "evaluation_hd95.png" and paths["overlay"].name == "evaluation_overlay.png"

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
    header = markdown.splitlines()[2]
    assert header.startswith("Scoring convention: **`brats_legacy`**") and "nnUNet issue #134" in header
    assert table in markdown and "| FLAIR | 0.4000 |" in markdown
    assert "empty prediction and empty reference: Dice 1.0, HD95 0.0" in markdown
    assert not list((tmp_path / "report").glob(".*"))


def test_overlay_shows_per_subset_the_case_closest_to_the_median_dice(results):
    res = results.res
    assert [k.case_id for k in res.slices] == ["exact", "shifted", "spurious"]
    exact = res.slices[0]
    assert exact.index == 4 and exact.reference.shape == (3, S, S) and exact.prediction.shape == (15, 3, S, S)
    full = _subset_index(res, NAMES)
    np.testing.assert_array_equal(exact.prediction[full], exact.reference)  # the exact case is predicted exactly
    flair_only = _subset_index(res, ["FLAIR"])
    assert not exact.prediction[flair_only, 1:].any()  # only ET is predicted from FLAIR
    # FLAIR alone: exact 1/3, shifted 1/3, spurious not evaluable -> median 1/3, the first of the two
    assert _representative(res, flair_only).case_id == "exact"


def test_extra_scorer_metrics_are_kept_reported_and_may_not_shadow_dice(threshold_net, tmp_path):
    def volumes(pred, reference, spacing):
        return {"pred_voxels": pred.flatten(1).sum(1).tolist()}

    res = _evaluate(_cases()[:1], threshold_net, subsets=[(True, True, True, True)], extra_scorer=volumes)
    assert res.metrics == ["dice", "hd95", "pred_voxels"] and res.extra["pred_voxels"][0, 0].tolist() == [512.0] * 3
    paths = write_report(res, tmp_path)
    assert "## Further metrics" in paths["markdown"].read_text()
    assert "pred_voxels_mean" in paths["summary_csv"].read_text()
    with pytest.raises(ValueError, match="'dice', which is already a metric"):
        _evaluate(_cases()[:1], threshold_net, subsets=[(True,) * 4], extra_scorer=lambda p, r, s: {"dice": [0, 0, 0]})


def test_evaluate_and_report_writes_the_files_and_logs_the_table(threshold_net, tmp_path, caplog):
    loader = DataLoader(_cases()[:1], batch_size=1)
    evaluator = SubsetEvaluator(
        threshold_net, loader, SlidingWindowInferer(roi_size=(24, 24, 24)), region_names=REGIONS, modality_names=NAMES
    )
    with caplog.at_level("INFO", logger="mckd.brats.report"):
        paths = evaluate_and_report(evaluator, tmp_path)
    assert all(path.exists() for path in paths.values())
    assert "| **Mean over subsets** |" in caplog.text and "| T2 |" in caplog.text
