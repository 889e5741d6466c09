"""Published protocols: the shipped lists, ``data_prep.brats --split <protocol>`` membership, IM-Fuse subsets, errors.

Datasets are synthetic cases named with the real case ids. BraTS 2018 is written by ``data_prep.synthetic_published``
(285 cases of 16^3, about 3 s); the larger releases reuse four generated cases, hard-linked under every listed id, so
that every listed case exists on disk and goes through discovery and the per-case checks like real data.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from pathlib import Path

import pytest

from data_prep._brats_splits import META_VALIDATION_SIZE, SplitSpec, meta_validation_from
from data_prep.brats import EXIT_USAGE, main, prepare_datalist
from data_prep.synthetic_brats import write_dataset
from data_prep.synthetic_published import protocol_case_ids, write_protocol_cases
from mckd.brats.conventions import LAYOUTS, MODALITIES
from mckd.brats.protocols import PROTOCOLS, ProtocolError, imfuse_mask, published_split

TINY = (16, 16, 16)
SPLITS_README = Path(__file__).resolve().parents[3] / "shared" / "reference" / "splits"


def _read_ids(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def _linked_dataset(root: Path, name: str, sources: Path, layout: str) -> Path:
    """Every case id of protocol ``name`` under ``root``, its files hard links to one of four generated cases."""
    spec = LAYOUTS[layout]
    written = write_dataset(sources, 4, layout, TINY, seed=1)
    for index, case_id in enumerate(protocol_case_ids(name)):
        source = written[index % len(written)]
        folder = root / case_id
        folder.mkdir(parents=True)
        for modality in MODALITIES:
            os.link(source.images[modality], folder / spec.modality_file(case_id, modality))
        os.link(source.label, folder / spec.label_file(case_id))
    return root


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Dataset roots per release: BraTS 2018 generated case by case, 2020 / 2021 / 2023 hard-linked."""
    base = tmp_path_factory.mktemp("published")
    roots = {"rfnet2018": base / "brats2018"}
    write_protocol_cases(roots["rfnet2018"], "rfnet2018:1", TINY, seed=0)
    for name, layout in (("rfnet2020", "brats2018"), ("m2ftrans2021", "brats2021"), ("imfuse2023", "brats2023")):
        roots[name] = _linked_dataset(base / name, name, base / f"{name}_sources", layout)
    return roots


def _root(datasets: dict[str, Path], name: str) -> Path:
    return datasets[name.split(":")[0]]


@pytest.fixture(scope="module")
def datalists(datasets: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """The datalist of each protocol (seed 3), written once per module."""
    out, cache = tmp_path_factory.mktemp("lists"), {}

    def get(name: str) -> dict:
        if name not in cache:
            target = out / f"{name.replace(':', '_')}.json"
            cache[name] = prepare_datalist(_root(datasets, name), target, split=name, seed=3, jobs=2).datalist
        return cache[name]

    return get  # type: ignore[return-value]


def _ids(items: list[dict]) -> list[str]:
    return [item["case_id"] for item in items]


# ----------------------------------------------------------------------------------------------- the shipped lists


@pytest.mark.parametrize("name", list(PROTOCOLS))
def test_shipped_lists_are_the_published_files_with_their_sizes_and_disjoint(name):
    split = published_split(name)
    lists = [split.training, split.validation, split.testing]
    assert tuple(len(ids) for ids in lists) == split.protocol.sizes
    assert sum(len(set(ids)) for ids in lists) == len(set().union(*lists))
    reference = SPLITS_README / f"{split.protocol.stem}_train.txt"
    if reference.exists():  # the project's copy of the sources: the shipped list is the same, ids mapped
        assert list(split.training) == [split.protocol.case_id(c) for c in _read_ids(reference)]


def test_the_three_2018_splits_cover_the_same_285_cases_with_different_test_lists():
    splits = [published_split(f"rfnet2018:{k}") for k in (1, 2, 3)]
    assert all(set().union(*s.lists().values()) == set().union(*splits[0].lists().values()) for s in splits)
    assert len(set().union(*splits[0].lists().values())) == 285
    assert len({s.testing for s in splits}) == 3


def test_2020_ids_lose_the_grade_prefix_the_release_folders_do_not_have():
    split = published_split("rfnet2020")
    assert split.testing[0] == "BraTS20_Training_001"
    assert not any(c.startswith(("HG_", "LG_")) for ids in split.lists().values() for c in ids)


def test_imfuse_masks_are_read_in_flair_t1ce_t1_t2_order():
    # the files' order is FLAIR, T1ce, T1, T2; MODALITIES is FLAIR, T1, T1ce, T2
    t1_only = imfuse_mask("[False, False, True, False]")
    t1ce_only = imfuse_mask("[False, True, False, False]")
    assert [m for m, a in zip(MODALITIES, t1_only) if a] == ["t1"]
    assert [m for m, a in zip(MODALITIES, t1ce_only) if a] == ["t1ce"]
    assert published_split("imfuse2023").subsets["BraTS-GLI-00011-000"] == t1_only
    for bad in ("[True, False]", "[False, False, False, False]", "nonsense", "[1, 0, 0, 1]"):
        with pytest.raises(ProtocolError):
            imfuse_mask(bad)


def test_every_imfuse_validation_and_test_case_has_one_subset_and_all_15_occur():
    split = published_split("imfuse2023")
    assert set(split.subsets) == set(split.validation) | set(split.testing)
    counts = Counter(split.subsets[c] for c in split.testing)
    assert len(counts) == 15 and min(counts.values()) >= 16


def test_protocol_names_parse_as_published_splits_and_unknown_names_are_refused():
    assert SplitSpec.parse("rfnet2018:2") == SplitSpec("published", protocol="rfnet2018:2")
    assert str(SplitSpec.parse("imfuse2023")) == "imfuse2023"
    with pytest.raises(ValueError, match="rfnet2018:1, rfnet2018:2"):
        SplitSpec.parse("rfnet2018:4")


# ------------------------------------------------------------------------------------------ datalist membership


@pytest.mark.parametrize("name", list(PROTOCOLS))
def test_datalist_keeps_the_published_membership(datalists, name):
    datalist = datalists(name)
    split = published_split(name)
    training, meta = _ids(datalist["training"]), _ids(datalist["meta_validation"])
    assert len(meta) == META_VALIDATION_SIZE and not set(meta) & set(training)
    assert sorted(training + meta) == sorted(split.training)
    assert _ids(datalist["validation"]) == list(split.validation)
    assert _ids(datalist["testing"]) == list(split.testing)
    assert datalist["split"] == name and datalist["protocol"]["name"] == name
    assert all("label" in item for key in ("training", "validation", "testing") for item in datalist[key])


def test_imfuse_validation_and_test_items_carry_their_published_subset(datalists):
    datalist = datalists("imfuse2023")
    subsets = published_split("imfuse2023").subsets
    for key in ("validation", "testing"):
        for item in datalist[key]:
            assert tuple(item["available"]) == subsets[item["case_id"]], item["case_id"]
    t1_only = next(i for i in datalist["testing"] if i["case_id"] == "BraTS-GLI-00011-000")
    assert t1_only["available"] == [m == "t1" for m in MODALITIES]
    assert not any("available" in item for item in datalist["training"] + datalist["meta_validation"])


def test_meta_validation_is_a_seeded_stratified_pick_from_the_training_list(datalists):
    training = published_split("rfnet2018:1").training
    strata = [(c, ("HGG" if i % 3 else "LGG", i % 4 > 0)) for i, c in enumerate(training)]
    picks = [meta_validation_from(strata, seed)[1] for seed in (0, 0, 1)]
    assert picks[0] == picks[1] and picks[0] != picks[2]
    assert len({dict(strata)[c] for c in picks[0]}) == 4  # every stratum represented
    rest, meta = meta_validation_from(strata, 0)
    assert rest == [c for c in training if c not in meta]
    assert _ids(datalists("rfnet2018:1")["meta_validation"]) != _ids(datalists("rfnet2018:2")["meta_validation"])


# ---------------------------------------------------------------------------------------------------- errors


def _copy_linked(source: Path, target: Path, skip: str = "") -> Path:
    """A hard-linked copy of the dataset ``source`` without the case folder ``skip``."""
    for folder in source.rglob("*"):
        if folder.is_dir() and skip and folder.name == skip:
            continue
        if folder.is_file() and (not skip or skip not in folder.parts):
            destination = target / folder.relative_to(source)
            destination.parent.mkdir(parents=True, exist_ok=True)
            os.link(folder, destination)
    return target


def test_a_listed_case_missing_from_the_folder_is_an_error_naming_it(datasets, tmp_path, caplog):
    missing = published_split("rfnet2018:1").testing[4]
    root = _copy_linked(datasets["rfnet2018"], tmp_path / "data", skip=missing)
    out = tmp_path / "lists" / "d.json"
    with caplog.at_level(logging.ERROR):
        status = main(["--root", str(root), "--out", str(out), "--split", "rfnet2018:1"])
    assert status == EXIT_USAGE and not out.exists()
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and missing in errors[0] and "rfnet2018:1" in errors[0] and "1 of the 285" in errors[0]


def test_an_unusable_listed_case_is_an_error_naming_it_and_why(datasets, tmp_path, caplog):
    broken = published_split("rfnet2018:1").validation[0]
    root = _copy_linked(datasets["rfnet2018"], tmp_path / "data", skip=broken)
    source = next(p for p in datasets["rfnet2018"].rglob(broken) if p.is_dir())
    folder = root / source.relative_to(datasets["rfnet2018"])
    folder.mkdir(parents=True)
    for path in source.iterdir():
        os.link(path, folder / path.name)
    flair = folder / f"{broken}_flair.nii.gz"
    flair.unlink()
    flair.write_bytes(b"not a nifti file")
    with caplog.at_level(logging.ERROR):
        status = main(["--root", str(root), "--out", str(tmp_path / "d.json"), "--split", "rfnet2018:1", "--jobs", "2"])
    assert status == EXIT_USAGE
    assert any(broken in r.getMessage() and "unusable" in r.getMessage() for r in caplog.records)


def test_cases_not_in_the_lists_are_named_and_left_out(datasets, tmp_path, caplog):
    root = _copy_linked(datasets["rfnet2018"], tmp_path / "data")
    write_dataset(root / "extra", 2, "brats2018", TINY, seed=5)  # Brats18_SYN_0001_1, Brats18_SYN_0002_1
    with caplog.at_level(logging.WARNING):
        datalist = prepare_datalist(root, tmp_path / "d.json", split="rfnet2018:1", jobs=2).datalist
    every = [c for key in ("training", "meta_validation", "validation", "testing") for c in _ids(datalist[key])]
    assert "Brats18_SYN_0001_1" not in every and len(every) == 285
    assert sorted(datalist["left_out"]) == ["Brats18_SYN_0001_1", "Brats18_SYN_0002_1"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("Brats18_SYN_0001_1" in w and "Brats18_SYN_0002_1" in w and "left out" in w for w in warnings)


def test_synthetic_published_cases_are_every_listed_id_in_the_release_layout(datasets):
    root = datasets["rfnet2018"]
    found = {p.name for grade in ("HGG", "LGG") for p in (root / grade).iterdir()}
    assert found == set(protocol_case_ids("rfnet2018:1")) and len(found) == 285
