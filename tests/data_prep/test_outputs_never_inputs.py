"""Writers refuse an output that is, or lies inside, one of their inputs: the evaluation report, the demo and the
AV-MNIST build (data prep, inference and the exports are tested beside their commands)."""

from __future__ import annotations

from pathlib import Path

import pytest

from data_prep import avmnist, demo
from mckd.brats.report import evaluate_and_report
from mckd.fileio import InputOverwriteError

BUNDLE = Path(__file__).resolve().parents[2] / "bundle" / "brats_mri_mckd_segmentation"


class _NeverRun:
    def run(self):  # pragma: no cover - the refusal comes first
        raise AssertionError("evaluated although the report would overwrite an input")


def test_the_evaluation_report_refuses_to_overwrite_an_input_before_evaluating(tmp_path):
    checkpoint = tmp_path / "evaluation_summary.json"
    checkpoint.write_text("{}")
    with pytest.raises(InputOverwriteError, match=f"refusing to overwrite input file '{checkpoint}'"):
        evaluate_and_report(_NeverRun(), tmp_path, inputs=[checkpoint])
    assert checkpoint.read_text() == "{}"


def test_the_demo_refuses_an_output_folder_inside_the_bundle(caplog):
    assert demo.main(["--out", str(BUNDLE / "demo_output"), "--bundle", str(BUNDLE)]) == 2
    assert "lies inside, the bundle" in caplog.text
    assert not (BUNDLE / "demo_output").exists()


def test_the_avmnist_build_refuses_an_output_inside_its_sources(tmp_path):
    mnist, fsdd = tmp_path / "mnist", tmp_path / "fsdd"
    mnist.mkdir()
    fsdd.mkdir()
    with pytest.raises(SystemExit, match="lies inside, the input folder"):
        avmnist.main(["standard", "--mnist-dir", str(mnist), "--fsdd-dir", str(fsdd), "--out", str(mnist / "built")])
    assert list(mnist.iterdir()) == []
