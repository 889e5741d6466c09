"""Score synthetic prediction / reference pairs four ways: ours (each convention), the official package, MONAI.

Run by ``test_official_package.py`` with this project's Python and the official package's own environment appended
to ``sys.path`` (``python official_pairs.py SITE_PACKAGES OUT_DIR``); prints one JSON object. With ``--table`` it
prints the Markdown comparison table instead. The package is run as its users run it: label-map NIfTI files through
``evaluate_single_exam`` with its ``gli`` configuration, then ``parse_seg_results`` (which writes 373 for an
infinite HD95); its lesion-wise numbers come through :class:`mckd.brats.official.LesionWiseScorer`.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import sys
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

S = (24, 24, 20)
REGION_GROUPS = {"ET": "et", "TC": "tc", "WT": "wt"}


def _box(lo: tuple[int, int, int], hi: tuple[int, int, int]) -> np.ndarray:
    mask = np.zeros(S, bool)
    mask[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = True
    return mask


def _ball(centre: tuple[float, float, float], radius: float) -> np.ndarray:
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in S], indexing="ij"))
    return ((grid - np.asarray(centre)[:, None, None, None]) ** 2).sum(0) <= radius**2


def _regions(et: np.ndarray, tc: np.ndarray, wt: np.ndarray) -> np.ndarray:
    """Nested ET, TC, WT channels (TC includes ET, WT includes TC)."""
    return np.stack([et, tc | et, wt | tc | et])


def _shift(mask: np.ndarray, dx: int) -> np.ndarray:
    return np.roll(mask, dx, axis=0)


def pairs() -> dict[str, tuple[np.ndarray, np.ndarray, tuple[float, float, float]]]:
    """name -> (prediction [3, *S], reference [3, *S], spacing)."""
    et, tc, wt = _box((9, 9, 8), (13, 13, 12)), _box((7, 7, 6), (15, 15, 14)), _box((4, 4, 3), (18, 18, 17))
    none = np.zeros(S, bool)
    reference = _regions(et, tc, wt)
    iso = (1.0, 1.0, 1.0)
    return {
        "exact": (reference, reference, iso),
        "shifted 2 voxels": (_regions(_shift(et, 2), _shift(tc, 2), _shift(wt, 2)), reference, iso),
        "ball vs box": (_regions(_ball((11, 11, 10), 2.5), _ball((11, 11, 10), 4.5), _ball((11, 11, 10), 7.5)),
                        reference, iso),
        "ET empty on both sides": (_regions(none, _shift(tc, 1), wt), _regions(none, tc, wt), iso),
        "ET missed": (_regions(none, tc, wt), reference, iso),
        "ET spurious": (reference, _regions(none, tc, wt), iso),
        "WT disjoint": (_regions(none, none, _box((0, 0, 0), (3, 3, 3))), _regions(none, none, wt), iso),
        "anisotropic 3x1x3 mm, shifted 1 voxel in x": (
            _regions(_shift(et, 1), _shift(tc, 1), _shift(wt, 1)), reference, (3.0, 1.0, 3.0)),
    }


def _label_map(regions: np.ndarray) -> np.ndarray:
    """BraTS 2023 labels: 3 ET, 1 the rest of TC, 2 the rest of WT."""
    label = np.zeros(S, np.uint8)
    label[regions[2]], label[regions[1]], label[regions[0]] = 2, 1, 3
    return label


def _package_global(pred: np.ndarray, ref: np.ndarray, spacing: tuple, folder: Path) -> dict[str, list[float]]:
    """The package's global Dice and HD95 per region, from files, as its users get them."""
    from brats_evaluation import config_path, evaluate_single_exam, parse_seg_results
    from panoptica import Panoptica_Evaluator

    affine = np.diag([*spacing, 1.0])
    folder.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(_label_map(pred), affine), folder / "pred-00001-000.nii.gz")
    nib.save(nib.Nifti1Image(_label_map(ref), affine), folder / "ref-00001-000.nii.gz")
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = Panoptica_Evaluator.load_from_config(config_path("gli"))
        result = evaluate_single_exam(
            str(folder / "pred-00001-000.nii.gz"), str(folder / "ref-00001-000.nii.gz"), "00001", evaluator
        )
        (folder / "summary.json").write_text(json.dumps({"metrics": [result], "missings": []}, default=float))
        parse_seg_results(str(folder / "summary.json"), str(folder / "parsed.csv"))
    with open(folder / "parsed.csv", newline="") as f:
        row = next(csv.DictReader(f))
    value = lambda key: float(row[key]) if row[key] != "" else float("nan")  # noqa: E731
    return {
        "dice": [value(f"global_dsc_{g}") for g in REGION_GROUPS.values()],
        "hd95": [value(f"global_hd95_{g}") for g in REGION_GROUPS.values()],
    }


def _monai(pred: torch.Tensor, ref: torch.Tensor, spacing: tuple) -> dict[str, list[float]]:
    from monai.metrics import DiceMetric, HausdorffDistanceMetric

    dice = DiceMetric(include_background=True, reduction="none", ignore_empty=True)(pred[None], ref[None])[0]
    hd95 = HausdorffDistanceMetric(include_background=True, percentile=95, reduction="none")(
        pred[None], ref[None], spacing=list(spacing)
    )[0]
    return {"dice": dice.tolist(), "hd95": hd95.tolist()}


def score_all(out: Path) -> dict[str, dict]:
    """Every pair scored by ours (both conventions, and at unit spacing), the package (global, lesion-wise), MONAI."""
    from mckd.brats.official import LesionWiseScorer
    from mckd.scoring import score_regions

    with contextlib.redirect_stdout(io.StringIO()):  # panoptica prints notes about the configuration
        lesion_wise = LesionWiseScorer()
    scores = {}
    for p, (name, (pred, ref, spacing)) in enumerate(pairs().items()):
        pred_t, ref_t = torch.as_tensor(pred), torch.as_tensor(ref)
        entry = {"spacing": spacing}
        for convention in ("brats_legacy", "official"):
            dice, hd95 = score_regions(pred_t, ref_t, convention, spacing)
            entry[convention] = {"dice": dice.tolist(), "hd95": hd95.tolist()}
        dice, hd95 = score_regions(pred_t, ref_t, "official", None)
        entry["official_unit_spacing"] = {"dice": dice.tolist(), "hd95": hd95.tolist()}
        entry["package"] = _package_global(pred, ref, spacing, out / f"pair{p}")
        with contextlib.redirect_stdout(io.StringIO()):
            entry["package_lesionwise"] = lesion_wise(pred_t, ref_t, spacing)
        entry["monai"] = _monai(pred_t.float(), ref_t.float(), spacing)
        scores[name] = entry
    return scores


def _cell(values: list[float], dice: bool) -> str:
    return " / ".join("NaN" if np.isnan(v) else (f"{v:.4f}" if dice else f"{v:.2f}") for v in values)


def table(scores: dict[str, dict]) -> str:
    """Markdown: pair | ours (brats_legacy) | ours (official) | official package | MONAI, Dice then HD95."""
    lines = []
    for metric in ("dice", "hd95"):
        lines += [
            f"\n{metric.upper()} (ET / TC / WT){' in mm' if metric == 'hd95' else ''}\n",
            "| pair | ours, brats_legacy | ours, official | official package (global) | MONAI |",
            "|---|---|---|---|---|",
        ]
        for name, entry in scores.items():
            cells = [_cell(entry[k][metric], metric == "dice") for k in ("brats_legacy", "official", "package", "monai")]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    site_packages, out = argv[1], Path(argv[2])
    sys.path.append(site_packages)  # after this project's own packages: only the package and its extras come from it
    warnings.filterwarnings("ignore")
    scores = score_all(out)
    print(table(scores) if "--table" in argv else json.dumps(scores))


if __name__ == "__main__":
    main(sys.argv)
