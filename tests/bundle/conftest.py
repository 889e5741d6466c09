"""Shared pieces of the BraTS bundle tests: the bundle paths, a tiny synthetic dataset and the small-run overrides."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from data_prep.brats import prepare_datalist
from data_prep.synthetic_brats import write_dataset
from tests.dicom_builders import write_dicom_series

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundle" / "brats_mri_mckd_segmentation"
CONFIGS = BUNDLE / "configs"
SCHEMA = REPO / "bundle" / "meta_schema_20240725.json"
#: Voxel shape (x, y, z) of the synthetic test cases: one 32^3 window of the light backbone (total stride 16).
CASE_SHAPE = (32, 32, 32)

#: Overrides that shrink the CPU configuration to a few seconds: 4 iterations (random subsets from iteration 3),
#: meta rounds before iterations 1 and 4, validation after each 2-iteration epoch.
SMALL_RUN = {
    "crop_size": [32, 32, 32],
    "sw_roi_size": [32, 32, 32],
    "batch_size": 1,
    "num_workers": 0,
    "num_iterations": 4,
    "epoch_length": 2,
    "val_interval": 1,
    "checkpoint_interval": 1,
    "warmup_iterations": 2,
    "meta_interval": 3,
    "meta_steps": 1,
}


def config_files(*names: str) -> list[str]:
    """Paths of bundle config files, in order."""
    return [str(CONFIGS / name) for name in names]


@pytest.fixture(scope="session")
def brats_data(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """8 synthetic BraTS 2018 cases and their datalist (3 training, 3 meta-validation, 2 validation cases).

    The datalist sits in its own folder: ``load_decathlon_datalist`` would turn a value that names a sibling path
    (e.g. a ``brats2018`` folder next to it) into a path.
    """
    root = tmp_path_factory.mktemp("brats_bundle_data")
    cases = write_dataset(root / "cases", 8, "brats2018", CASE_SHAPE, seed=0)
    datalist = root / "lists" / "datalist.json"
    prepare_datalist(root / "cases", datalist, split="ratio:0.25", seed=0)
    lists = json.loads(datalist.read_text())
    assert [len(lists[k]) for k in ("training", "meta_validation", "validation")] == [3, 3, 2]
    return SimpleNamespace(root=root, cases=cases, datalist=datalist, lists=lists)


@pytest.fixture(scope="session")
def bundle() -> SimpleNamespace:
    """The bundle's paths, the small-run overrides and helpers (test modules cannot import this conftest)."""
    return SimpleNamespace(
        repo=REPO,
        root=BUNDLE,
        configs=CONFIGS,
        schema=SCHEMA,
        small_run=dict(SMALL_RUN),
        case_shape=CASE_SHAPE,
        config_files=config_files,
        write_dicom_series=write_dicom_series,
    )
