"""Our global Dice / HD95 under the ``official`` convention equal the official ``brats-evaluation`` package's.

The package runs as its users run it (label-map NIfTI files, ``evaluate_single_exam`` with its ``gli`` configuration,
``parse_seg_results``), in its own environment (see ``conftest.py``); ours is :func:`mckd.scoring.score_regions` on
the same masks. Pairs: exact, shifted, ball vs box, a region empty on both sides, missed, spurious, disjoint and
anisotropic (3 x 1 x 3 mm).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).with_name("official_pairs.py")
ANISOTROPIC = "anisotropic 3x1x3 mm, shifted 1 voxel in x"


@pytest.fixture(scope="module")
def scores(brats_eval_site_packages, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("official_pairs")
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(brats_eval_site_packages), str(out)],
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_global_dice_equals_the_package_on_every_pair(scores):
    assert len(scores) == 8
    for name, entry in scores.items():
        np.testing.assert_allclose(entry["official"]["dice"], entry["package"]["dice"], atol=1e-6, err_msg=name)


def test_global_hd95_equals_the_package_on_every_isotropic_pair(scores):
    for name, entry in scores.items():
        if name != ANISOTROPIC:
            np.testing.assert_allclose(entry["official"]["hd95"], entry["package"]["hd95"], atol=1e-4, err_msg=name)


def test_both_empty_is_nan_and_missed_or_disjoint_is_373_as_in_the_package(scores):
    assert np.isnan(scores["ET empty on both sides"]["package"]["dice"][0])
    assert np.isnan(scores["ET empty on both sides"]["official"]["hd95"][0])
    for name in ("ET missed", "ET spurious"):
        assert scores[name]["package"]["hd95"][0] == scores[name]["official"]["hd95"][0] == 373.0
    assert scores["WT disjoint"]["official"]["hd95"][2] == 373.0
    assert scores["WT disjoint"]["brats_legacy"]["hd95"][2] == pytest.approx(22.23, abs=0.01)  # measured instead


def test_anisotropic_pair_is_scored_in_mm_as_the_package_scores_its_lesions(scores):
    entry = scores[ANISOTROPIC]
    assert entry["official"]["hd95"] == pytest.approx([3.0, 3.0, 3.0])  # a one-voxel shift along a 3 mm axis
    np.testing.assert_allclose(entry["official"]["hd95"], entry["monai"]["hd95"], atol=1e-4)
    # one lesion per region: the package's lesion-wise HD95 (given the spacing) is the same number
    np.testing.assert_allclose(entry["official"]["hd95"], entry["package_lesionwise"]["lesionwise_hd95"], atol=1e-4)
    # its global HD95 ignores the file's spacing: equal to ours on the voxel grid
    np.testing.assert_allclose(entry["package"]["hd95"], entry["official_unit_spacing"]["hd95"], atol=1e-4)


def test_lesion_wise_scorer_reports_the_package_matches(scores):
    exact = scores["exact"]["package_lesionwise"]
    assert exact["lesionwise_dice"] == [1.0, 1.0, 1.0] and exact["lesions_tp"] == [1.0, 1.0, 1.0]
    missed = scores["ET missed"]["package_lesionwise"]
    assert missed["lesions_fn"][0] == 1.0 and missed["lesionwise_hd95"][0] == 373.0


def test_lesion_wise_scorer_without_the_package_names_the_install_command():
    if importlib.util.find_spec("brats_evaluation") is not None:
        pytest.skip("brats-evaluation is installed in this environment")
    from mckd.brats.official import LesionWiseScorer

    with pytest.raises(ImportError, match=r'pip install "mckd\[brats-eval\]"'):
        LesionWiseScorer()
    assert "brats_evaluation" not in sys.modules and "panoptica" not in sys.modules
