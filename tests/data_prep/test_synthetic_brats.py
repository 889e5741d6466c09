"""The synthetic BraTS generator: layouts, determinism, tumour structure and MRI-like contrasts."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from data_prep.synthetic_brats import (
    DEFAULT_SHAPE,
    brats_affine,
    case_rng,
    enhancing_plan,
    generate_case,
    main,
)
from mckd.brats.conventions import LAYOUTS, MODALITIES

from .conftest import SHAPE


def _digest(root: Path) -> dict[str, str]:
    """SHA-256 of every file under ``root`` keyed by relative path."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*.*")}


@pytest.fixture(scope="module")
def cases() -> list:
    """Twelve cases with enhancing tumour and four without, generated at the test size."""
    return [generate_case(SHAPE, case_rng(0, i), enhancing=i < 12) for i in range(16)]


def _mean(case, modality: str, mask: np.ndarray) -> float:
    return float(case.images[modality][mask].mean())


def test_brats2018_layout_sorts_cases_into_hgg_and_lgg_folders(make_dataset):
    root, written = make_dataset("brats2018", n_cases=5)
    for case in written:
        folder = root / ("HGG" if case.enhancing else "LGG") / case.case_id
        names = sorted(p.name for p in folder.iterdir())
        assert names == sorted(f"{case.case_id}_{s}.nii.gz" for s in ("flair", "t1", "t1ce", "t2", "seg"))
    assert {c.case_id for c in written} >= {"Brats18_SYN_0001_1", "Brats18_SYN_0005_1"}
    assert {(root / g).is_dir() for g in ("HGG", "LGG")} == {True}


@pytest.mark.parametrize(
    "layout, case_id, files",
    [
        ("brats2021", "BraTS2021_00001", ["_flair", "_t1", "_t1ce", "_t2", "_seg"]),
        ("brats2023", "BraTS-GLI-00001-000", ["-t2f", "-t1n", "-t1c", "-t2w", "-seg"]),
    ],
)
def test_later_releases_use_their_own_folder_and_file_names(make_dataset, layout, case_id, files):
    root, _ = make_dataset(layout, n_cases=2)
    assert sorted(p.name for p in (root / case_id).iterdir()) == sorted(f"{case_id}{s}.nii.gz" for s in files)


def test_msd_layout_writes_4d_images_labels_and_a_task01_dataset_json(make_dataset):
    root, written = make_dataset("msd", n_cases=3)
    listing = json.loads((root / "dataset.json").read_text())
    assert listing["modality"] == {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"}
    assert listing["labels"] == {"0": "background", "1": "edema", "2": "non-enhancing tumor", "3": "enhancing tumour"}
    assert listing["numTraining"] == 3
    assert listing["training"][0] == {"image": "./imagesTr/BRATS_001.nii.gz", "label": "./labelsTr/BRATS_001.nii.gz"}
    assert nib.load(root / "imagesTr" / "BRATS_001.nii.gz").shape == (*SHAPE, 4)
    assert nib.load(root / "labelsTr" / "BRATS_001.nii.gz").shape == SHAPE


def test_files_have_the_requested_shape_realistic_dtypes_and_the_brats_affine(make_dataset):
    _, written = make_dataset("brats2021", n_cases=1)
    image, label = nib.load(written[0].images["t1ce"]), nib.load(written[0].label)
    assert image.shape == SHAPE and image.get_data_dtype() == np.int16
    assert label.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(image.affine, brats_affine(SHAPE))
    assert np.diag(image.affine)[:3].tolist() == [-1.0, -1.0, 1.0]


def test_default_shape_is_the_real_brats_size():
    assert DEFAULT_SHAPE == (240, 240, 155)


@pytest.mark.parametrize("layout, values", [("brats2018", {4}), ("brats2023", {3}), ("msd", {3})])
def test_labels_use_the_values_of_the_release(make_dataset, layout, values):
    _, written = make_dataset(layout, n_cases=3)
    found = set().union(*(np.unique(np.asarray(nib.load(c.label).dataobj)).tolist() for c in written))
    assert found <= LAYOUTS[layout].label_convention.valid_values
    assert values <= found


def test_same_seed_writes_byte_identical_files(tmp_path, make_dataset):
    root, _ = make_dataset("brats2023", n_cases=2, seed=3)
    main(["--out", str(tmp_path / "again"), "--cases", "2", "--shape", *map(str, SHAPE), "--layout", "brats2023",
          "--seed", "3"])
    assert _digest(root) == _digest(tmp_path / "again")


def test_different_seeds_give_different_cases():
    first, second = generate_case(SHAPE, case_rng(0, 0)), generate_case(SHAPE, case_rng(1, 0))
    assert not np.array_equal(first.tissues, second.tissues)


def test_about_a_fifth_of_the_cases_have_no_enhancing_tumour():
    plan = enhancing_plan(20, seed=0)
    assert plan.count(False) == 4
    assert enhancing_plan(20, seed=0) == plan and enhancing_plan(2, seed=5).count(False) == 1


def test_non_enhancing_case_has_a_core_but_no_et(cases):
    regions = cases[12].regions
    assert not regions["ET"].any() and regions["TC"].any()


def test_tumour_regions_are_nested_and_inside_the_brain(cases):
    for case in cases:
        regions = case.regions
        assert not (regions["ET"] & ~regions["TC"]).any()
        assert not (regions["TC"] & ~regions["WT"]).any()
        assert not (regions["WT"] & ~case.brain).any()


def test_background_outside_the_brain_is_zero_in_every_modality(cases):
    for modality in MODALITIES:
        assert not cases[0].images[modality][~cases[0].brain].any()


def test_t1ce_shows_the_enhancing_rim_brighter_than_oedema(cases):
    for case in cases[:12]:
        oedema = case.regions["WT"] & ~case.regions["TC"]
        assert _mean(case, "t1ce", case.regions["ET"]) > 1.5 * _mean(case, "t1ce", oedema)


def test_flair_and_t2_show_oedema_brighter_than_white_matter(cases):
    for case in cases:
        oedema, white_matter = case.regions["WT"] & ~case.regions["TC"], case.tissues == 3
        for modality in ("flair", "t2"):
            assert _mean(case, modality, oedema) > 1.5 * _mean(case, modality, white_matter)


def test_csf_is_dark_on_flair_and_bright_on_t2(cases):
    case = cases[0]
    csf, white_matter = case.tissues == 1, case.tissues == 3
    assert _mean(case, "flair", csf) < 0.5 * _mean(case, "flair", white_matter)
    assert _mean(case, "t2", csf) > 2.0 * _mean(case, "t2", white_matter)


def test_tumour_contrast_is_weaker_on_t1_than_on_t1ce(cases):
    for case in cases[:12]:
        brain = case.brain & ~case.regions["WT"]

        def contrast(modality: str) -> float:
            return abs(_mean(case, modality, case.regions["TC"]) / _mean(case, modality, brain) - 1)

        assert contrast("t1") < 0.5 * contrast("t1ce")


def test_cli_rejects_a_too_small_shape_with_status_2(tmp_path, caplog):
    assert main(["--out", str(tmp_path), "--cases", "1", "--shape", "8", "40", "24"]) == 2
    assert "shape must be three sizes" in caplog.text
