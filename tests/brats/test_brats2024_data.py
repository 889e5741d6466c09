"""BraTS 2024/2025 post-treatment data: synthetic cases with a resection cavity, their datalist (layout and its
auto-detection), and the official package's lesion-wise metrics on the cavity."""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest
import torch

import mckd.brats.official as official
from data_prep.brats import main as brats_main
from data_prep.brats import PreparationError, prepare_datalist
from data_prep.synthetic_brats import cavity_plan, case_rng, enhancing_plan, generate_case, write_dataset
from mckd.brats.conventions import BRATS2023_LABELS, BRATS2024_LABELS

SHAPE = (32, 32, 32)
N_CASES = 6


@pytest.fixture(scope="module")
def post_treatment(tmp_path_factory) -> SimpleNamespace:
    """Six synthetic brats2024 cases (five with a cavity) and four brats2023 cases, in separate folders."""
    root = tmp_path_factory.mktemp("brats2024")
    cases = write_dataset(root / "cases", N_CASES, "brats2024", SHAPE, seed=3)
    pre = write_dataset(root / "pre", 4, "brats2023", SHAPE, seed=3)
    return SimpleNamespace(root=root, cases=cases, pre=pre)


def _array(path) -> np.ndarray:
    return np.asarray(nib.load(str(path)).dataobj)


def test_synthetic_2024_cases_have_a_cavity_of_label_4_beside_the_tumour(post_treatment):
    assert [c.cavity for c in post_treatment.cases] == cavity_plan(N_CASES, 3)
    assert sum(c.cavity for c in post_treatment.cases) == N_CASES - 1
    for written in post_treatment.cases:
        label = _array(written.label)
        assert set(np.unique(label).tolist()) <= BRATS2024_LABELS.valid_values
        assert (label == 4).any() == written.cavity, written.case_id
        if written.cavity:
            cavity = label == 4
            near = np.zeros_like(cavity)  # the cavity touches the tumour within two voxels
            for axis in range(3):
                for shift in (-2, -1, 1, 2):
                    near |= np.roll(cavity, shift, axis=axis)
            assert (near & np.isin(label, (1, 2, 3))).any(), written.case_id


def test_the_cavity_is_fluid_dark_on_t1ce_and_flair_bright_on_t2(post_treatment):
    for written in (c for c in post_treatment.cases if c.cavity):
        label = _array(written.label)
        cavity, tumour = label == 4, np.isin(label, (1, 2, 3))
        t1ce, flair, t2 = (_array(written.images[m]).astype(float) for m in ("t1ce", "flair", "t2"))
        assert t1ce[cavity].mean() < 0.6 * t1ce[tumour].mean(), written.case_id
        assert flair[cavity].mean() < 0.6 * flair[tumour].mean(), written.case_id
        assert t2[cavity].mean() > t2[tumour].mean(), written.case_id


def test_a_case_without_cavity_is_the_2023_case_of_the_same_seed(post_treatment):
    plan = enhancing_plan(N_CASES, 3)
    index = next(c.index for c in post_treatment.cases if not c.cavity)
    again = generate_case(SHAPE, case_rng(3, index), plan[index], cavity=False)
    with_cavity = generate_case(SHAPE, case_rng(3, index), plan[index], cavity=True)
    assert not again.regions["RC"].any() and with_cavity.regions["RC"].any()
    written = post_treatment.cases[index]
    np.testing.assert_array_equal(_array(written.images["t1ce"]), again.images["t1ce"])
    with pytest.raises(ValueError, match="'brats2023' label convention has no value for the resection cavity"):
        with_cavity.label(BRATS2023_LABELS)


def test_auto_reads_2023_names_with_label_4_as_brats2024_and_says_so(post_treatment, tmp_path, caplog):
    out = tmp_path / "lists" / "datalist.json"
    with caplog.at_level(logging.WARNING, logger="data_prep.brats"):
        result = prepare_datalist(post_treatment.root / "cases", out, split="ratio:0.34", seed=0)
    assert result.layout == "brats2024" and not result.problems
    lists = json.loads(out.read_text())
    assert lists["label_convention"] == "brats2024" and lists["labels"]["4"] == "RC"
    items = [i for key in ("training", "meta_validation", "validation") for i in lists[key]]
    assert len(items) == N_CASES and {i["label_convention"] for i in items} == {"brats2024"}
    assert "reading the dataset as brats2024" in caplog.text and "--layout brats2023 to refuse them" in caplog.text


def test_the_explicit_layouts_accept_or_refuse_label_4(post_treatment, tmp_path):
    assert prepare_datalist(post_treatment.root / "cases", tmp_path / "a.json", "brats2024").layout == "brats2024"
    with pytest.raises(PreparationError) as refused:  # one case is left: too few for a split
        prepare_datalist(post_treatment.root / "cases", tmp_path / "b.json", "brats2023")
    with_cavity = {c.case_id for c in post_treatment.cases if c.cavity}
    assert {p.case_id for p in refused.value.problems} == with_cavity
    assert all("values [4]" in p.reason and "'brats2023'" in p.reason for p in refused.value.problems)
    assert brats_main(["--root", str(post_treatment.root / "cases"), "--out", str(tmp_path / "c.json"),
                       "--layout", "brats2023", "--strict"]) == 1


def test_auto_keeps_a_2023_dataset_without_label_4_as_brats2023(post_treatment, tmp_path):
    result = prepare_datalist(post_treatment.root / "pre", tmp_path / "lists" / "d.json", split="ratio:0.5")
    assert result.layout == "brats2023" and result.datalist["label_convention"] == "brats2023"


def test_brats2018_label_4_stays_enhancing_tumour(tmp_path):
    write_dataset(tmp_path / "cases", 4, "brats2018", SHAPE, seed=1)
    result = prepare_datalist(tmp_path / "cases", tmp_path / "lists" / "d.json", split="ratio:0.5")
    assert result.layout == "brats2018" and result.datalist["labels"]["4"] == "ET" and not result.problems


class _FakePackage:
    """Stands in for the package's panoptica evaluator: records the label maps, answers per group."""

    def __init__(self, groups: tuple[str, ...]) -> None:
        self.segmentation_class_groups_names = list(groups)
        self.calls: list[tuple[np.ndarray, np.ndarray]] = []

    def evaluate(self, pred, ref, voxelspacing, verbose):
        self.calls.append((pred, ref))
        scores = {"sq_dsc": 0.5, "sq_hd95": 1.0, "tp": 1, "fp": 0, "fn": 0}
        return {g: SimpleNamespace(to_dict=lambda _all: scores) for g in self.segmentation_class_groups_names}


def test_lesion_wise_metrics_cover_rc_with_the_gli_configuration(monkeypatch):
    fake = _FakePackage(("snfh", "et", "netc", "rc", "tc", "wt"))  # the groups of the package's config_gli.yaml
    monkeypatch.setattr(official, "_load_package", lambda config: fake)
    scorer = official.LesionWiseScorer("gli", region_names=["ET", "TC", "WT", "RC"])
    pred = torch.zeros(4, 4, 4, 4)
    pred[3, :2] = 1  # a cavity
    pred[2, 3] = 1  # oedema
    out = scorer(pred, pred)
    assert {k: len(v) for k, v in out.items()} == {m: 4 for m in official.LesionWiseScorer.METRICS}
    label = fake.calls[0][0]
    assert set(np.unique(label).tolist()) == {0, 2, 4} and (label[:2] == 4).all()


def test_lesion_wise_metrics_refuse_regions_the_configuration_does_not_cover(monkeypatch):
    monkeypatch.setattr(official, "_load_package", lambda config: _FakePackage(("et", "tc", "wt")))
    with pytest.raises(ValueError, match=r"'GoAT' configuration has no lesion-wise group for the regions \['RC'\]"):
        official.LesionWiseScorer("GoAT", region_names=["ET", "TC", "WT", "RC"])
    assert official.LesionWiseScorer("GoAT").region_names == ("ET", "TC", "WT")
