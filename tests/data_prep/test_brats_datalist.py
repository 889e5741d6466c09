"""Generated datasets of every layout -> datalist -> MONAI loading, with regions matching the generator's truth."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from monai.data import load_decathlon_datalist
from monai.transforms import LoadImaged

from data_prep.brats import SPLIT_KEYS, main, prepare_datalist
from data_prep.synthetic_brats import case_rng, cavity_plan, enhancing_plan, generate_case
from mckd.brats.conventions import LAYOUTS, MODALITIES

from .conftest import SHAPE


def _load_all(datalist: Path, key: str = "training") -> list[dict]:
    """Every item of ``key`` loaded with MONAI (4 files stack to 4 channels; the MSD 4D file moves channels first)."""
    loader = LoadImaged(keys=["image", "label"], ensure_channel_first=True, allow_missing_keys=True)
    return [loader(item) for item in load_decathlon_datalist(datalist, data_list_key=key)]


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_each_layout_is_detected_and_loads_as_four_channels_with_regions_matching_the_truth(
    tmp_path, make_dataset, layout
):
    root, written = make_dataset(layout, n_cases=6, seed=2)
    out = tmp_path / "lists" / "datalist.json"
    assert prepare_datalist(root, out).layout == layout
    plan = enhancing_plan(6, seed=2)
    convention = LAYOUTS[layout].label_convention
    cavities = cavity_plan(6, seed=2) if "RC" in convention.regions else [False] * 6  # brats2024: resection cavities
    loaded = _load_all(out) + _load_all(out, "meta_validation")
    assert len(loaded) == 6
    for item in loaded:
        index = [c.case_id for c in written].index(item["case_id"])
        truth = generate_case(SHAPE, case_rng(2, index), plan[index], cavities[index])
        assert tuple(item["image"].shape) == (4, *SHAPE)
        np.testing.assert_array_equal(item["image"][2].numpy(), truth.images["t1ce"])
        label = item["label"][0].numpy()
        for region in convention.region_names:
            np.testing.assert_array_equal(np.isin(label, convention.regions[region]), truth.regions[region])


def test_items_name_case_convention_and_modality_files_in_fixed_order(tmp_path, make_dataset):
    root, written = make_dataset("brats2023", n_cases=3)
    prepare_datalist(root, tmp_path / "lists" / "datalist.json")
    item = json.loads((tmp_path / "lists" / "datalist.json").read_text())["training"][0]
    case = next(c for c in written if c.case_id == item["case_id"])
    assert item["label_convention"] == "brats2023"
    assert item["image"] == [f"../brats2023/{item['case_id']}/{case.images[m].name}" for m in MODALITIES]
    assert [Path(p).name.split("-")[-1] for p in item["image"]] == ["t2f.nii.gz", "t1n.nii.gz", "t1c.nii.gz", "t2w.nii.gz"]


def test_datalist_records_layout_convention_modalities_split_and_seed(tmp_path, make_dataset):
    root, _ = make_dataset("brats2021", n_cases=4)
    datalist = prepare_datalist(root, tmp_path / "lists" / "d.json", split="ratio:0.25", seed=7).datalist
    assert (datalist["layout"], datalist["label_convention"], datalist["split"], datalist["seed"]) == (
        "brats2021", "brats2018", "ratio:0.25", 7
    )
    assert datalist["modalities"] == list(MODALITIES)
    assert set(SPLIT_KEYS) <= set(datalist)


def test_cases_without_label_go_to_testing(tmp_path, make_dataset):
    root, written = make_dataset("brats2021", n_cases=8)
    for case in written[:2]:
        case.label.unlink()
    datalist = prepare_datalist(root, tmp_path / "lists" / "d.json").datalist
    assert [item["case_id"] for item in datalist["testing"]] == [c.case_id for c in written[:2]]
    assert all("label" not in item for item in datalist["testing"])
    assert len(datalist["training"]) + len(datalist["meta_validation"]) == 6


def test_unlabelled_only_root_gives_a_testing_only_datalist(tmp_path, make_dataset):
    root, written = make_dataset("brats2018", n_cases=2)
    for case in written:
        case.label.unlink()
    datalist = prepare_datalist(root, tmp_path / "lists" / "d.json").datalist
    assert (datalist["num_testing"], datalist["num_training"], datalist["num_meta_validation"]) == (2, 0, 0)


def test_msd_test_images_go_to_testing(tmp_path, make_dataset):
    root, written = make_dataset("msd", n_cases=3)
    (root / "imagesTs").mkdir()
    written[0].label.unlink()
    written[0].images["flair"].rename(root / "imagesTs" / "BRATS_001.nii.gz")
    listing = json.loads((root / "dataset.json").read_text())
    listing["training"], listing["test"] = listing["training"][1:], ["./imagesTs/BRATS_001.nii.gz"]
    (root / "dataset.json").write_text(json.dumps(listing))
    datalist = prepare_datalist(root, tmp_path / "lists" / "d.json").datalist
    assert datalist["testing"] == [
        {"case_id": "BRATS_001", "image": "../msd/imagesTs/BRATS_001.nii.gz", "label_convention": "msd"}
    ]


def test_allow_missing_modalities_keeps_the_case_and_records_availability(tmp_path, make_dataset):
    root, written = make_dataset("brats2021", n_cases=3)
    written[0].images["t1"].unlink()
    prepare_datalist(root, tmp_path / "lists" / "d.json", allow_missing_modalities=True)
    items = {i["case_id"]: i for k in SPLIT_KEYS for i in json.loads((tmp_path / "lists" / "d.json").read_text())[k]}
    item = items[written[0].case_id]
    assert item["available"] == [True, False, True, True]
    assert item["image"][1].endswith(f"{written[0].case_id}_t1.nii.gz")
    assert not (tmp_path / "lists" / item["image"][1]).exists()
    assert items[written[1].case_id]["available"] == [True] * 4


def test_datalist_paths_are_relative_to_the_datalist_folder(tmp_path, make_dataset):
    root, _ = make_dataset("brats2018", n_cases=2)
    prepare_datalist(root, tmp_path / "nested" / "d.json")
    item = json.loads((tmp_path / "nested" / "d.json").read_text())["training"][0]
    assert item["label"].startswith("../brats2018/")
    assert (tmp_path / "nested" / item["label"]).resolve().is_file()


def test_cli_main_writes_the_datalist_and_returns_0(tmp_path, make_dataset, caplog):
    caplog.set_level("INFO")
    root, _ = make_dataset("brats2018", n_cases=6)
    assert main(["--root", str(root), "--out", str(tmp_path / "lists" / "d.json"), "--split", "kfold:3:0", "--jobs", "2"]) == 0
    assert "training 2, meta_validation 2, validation 2, testing 0" in caplog.text
    assert "load_decathlon_datalist" not in caplog.text


def test_datalist_beside_folders_named_like_its_values_warns_about_monai_path_rewriting(tmp_path, make_dataset, caplog):
    root, _ = make_dataset("brats2018", n_cases=2)
    prepare_datalist(root, tmp_path / "d.json")
    assert "load_decathlon_datalist would read these values as paths" in caplog.text
    assert "brats2018" in caplog.text
