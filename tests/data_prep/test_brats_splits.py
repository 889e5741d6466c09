"""Splits: the published meta-validation cases, stratified fallbacks, k-fold and ratio; deterministic per seed."""

from __future__ import annotations

import pytest

from data_prep._brats_splits import SplitSpec, split_cases
from data_prep.brats import prepare_datalist
from data_prep.synthetic_brats import write_dataset
from mckd.brats.conventions import PAPER_META_VALIDATION_CASES

from .conftest import SHAPE


def _cases(n: int) -> list[tuple[str, tuple[str, bool]]]:
    """``n`` cases in two grades, a third of them without enhancing tumour."""
    return [(f"case_{i:03d}", ("HGG" if i % 4 else "LGG", i % 3 > 0)) for i in range(n)]


def test_paper_split_holds_the_published_meta_validation_cases_when_present(tmp_path):
    write_dataset(tmp_path / "src", 7, "brats2021", SHAPE, seed=0)
    hgg = tmp_path / "data" / "HGG"
    hgg.mkdir(parents=True)
    sources = sorted((tmp_path / "src").iterdir())
    for source, case_id in zip(sources, PAPER_META_VALIDATION_CASES + ("Brats18_CBICA_AAA_1", "Brats18_CBICA_AAB_1")):
        folder = hgg / case_id
        folder.mkdir()
        for path in source.iterdir():
            path.rename(folder / path.name.replace(source.name, case_id))
    datalist = prepare_datalist(tmp_path / "data", tmp_path / "lists" / "d.json", split="paper").datalist
    assert [item["case_id"] for item in datalist["meta_validation"]] == list(PAPER_META_VALIDATION_CASES)
    assert {item["case_id"] for item in datalist["training"]} == {"Brats18_CBICA_AAA_1", "Brats18_CBICA_AAB_1"}


def test_paper_split_without_the_published_ids_takes_five_cases_covering_every_stratum():
    split = split_cases(_cases(40), SplitSpec.parse("paper"), seed=0)
    strata = dict(_cases(40))
    assert len(split["meta_validation"]) == 5 and len(split["training"]) == 35 and split["validation"] == []
    assert len({strata[c] for c in split["meta_validation"]}) == 4


def test_splits_are_deterministic_per_seed_and_differ_between_seeds():
    spec = SplitSpec.parse("ratio:0.2")
    assert split_cases(_cases(30), spec, seed=1) == split_cases(_cases(30), spec, seed=1)
    assert split_cases(_cases(30), spec, seed=1) != split_cases(_cases(30), spec, seed=2)


def test_kfold_validation_folds_partition_the_cases_and_meta_validation_comes_from_training():
    folds = [split_cases(_cases(23), SplitSpec.parse(f"kfold:5:{i}"), seed=0) for i in range(5)]
    validation = [c for split in folds for c in split["validation"]]
    assert sorted(validation) == sorted(c for c, _ in _cases(23))
    for split in folds:
        assert len(split["meta_validation"]) == 5
        assert not set(split["meta_validation"]) & set(split["validation"])
        assert len(split["training"]) + len(split["meta_validation"]) + len(split["validation"]) == 23


def test_ratio_sends_that_fraction_to_validation():
    split = split_cases(_cases(40), SplitSpec.parse("ratio:0.25"), seed=0)
    assert (len(split["validation"]), len(split["meta_validation"]), len(split["training"])) == (10, 5, 25)


@pytest.mark.parametrize("text", ["", "paper:1", "kfold:1:0", "kfold:3:3", "kfold:a:b", "ratio:0", "ratio:x", "fold"])
def test_malformed_split_specs_are_rejected_naming_the_value(text):
    with pytest.raises(ValueError, match=f"malformed --split '{text}'"):
        SplitSpec.parse(text)


def test_too_few_cases_for_a_split_is_an_error():
    with pytest.raises(ValueError, match="needs at least 5 labelled cases"):
        split_cases(_cases(3), SplitSpec.parse("kfold:5:0"), seed=0)
