"""End to end through the BraTS bundle on tiny synthetic cases: train -> resume -> evaluate -> infer -> TorchScript.

The steps share one trained run (module fixture) so that the whole chain costs a few training iterations.
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest
import torch
from ignite.engine import Events
from monai.bundle import ConfigParser, ConfigWorkflow, ckpt_export
from monai.data import MetaTensor
from monai.inferers import SlidingWindowInferer
from monai.metrics import DiceMetric
from monai.transforms import LoadImage

from data_prep.synthetic_brats import write_dataset
from mckd.availability import all_subsets, pack_available, subset_name
from mckd.brats.conventions import MODALITIES, MODALITY_DISPLAY_NAMES, REGIONS
from mckd.brats.inference import EXIT_CASES_SKIPPED
from mckd.distillation import ModalityImportance

MODALITY_NAMES = [MODALITY_DISPLAY_NAMES[m] for m in MODALITIES]


def _workflow(bundle, configs, workflow_type, **override) -> ConfigWorkflow:
    workflow = ConfigWorkflow(
        config_file=bundle.config_files(*configs), workflow_type=workflow_type, logging_file=False, **override
    )
    workflow.initialize()
    return workflow


def _digest(folder: Path) -> dict[str, str]:
    files = (p for p in folder.rglob("*") if p.is_file())
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.fixture(scope="module")
def trained(bundle, brats_data, tmp_path_factory) -> SimpleNamespace:
    """4 training iterations of the CPU configuration (meta rounds before iterations 1 and 4, two validations)."""
    root = tmp_path_factory.mktemp("brats_bundle_run")
    workflow = _workflow(
        bundle,
        ("train.json", "cpu_small.json"),
        "train",
        bundle_root=str(root),
        data_list_file_path=str(brats_data.datalist),
        **bundle.small_run,
    )
    assert workflow.check_properties() == []
    trainer = workflow.parser.get_parsed_content("train#trainer")
    workflow.run()
    workflow.finalize()
    return SimpleNamespace(root=root, models=root / "models", state=trainer.state)


@pytest.fixture(scope="module")
def inference(bundle, trained):
    """Run the inference workflow (with the CPU overlay the model was trained with) on ``dataset_dir``."""

    def run(dataset_dir: Path, output_dir: Path, **override) -> ConfigWorkflow:
        workflow = _workflow(
            bundle,
            ("inference.json", "cpu_small.json"),
            "infer",
            bundle_root=str(trained.root),
            dataset_dir=str(dataset_dir),
            output_dir=str(output_dir),
            sw_roi_size=[32, 32, 32],
            **override,
        )
        assert workflow.check_properties() == []
        workflow.run()
        workflow.finalize()
        return workflow

    return run


def test_training_runs_meta_rounds_and_writes_best_last_and_final_checkpoints(trained, bundle):
    assert trained.state.iteration == 4 and trained.state.epoch == 2
    assert {"importance/FLAIR", "importance/T1", "importance/T1ce", "importance/T2"} <= set(trained.state.metrics)
    names = sorted(p.name for p in trained.models.iterdir())
    assert names == ["last_checkpoint_epoch=2.pt", "modality_weights.pt", "model.pt", "model_final.pt"]
    last = torch.load(trained.models / "last_checkpoint_epoch=2.pt", weights_only=True)
    assert set(last) == {"model", "optimizer", "lr_scheduler", "modality_weights", "meta_optimizer", "trainer"}
    assert last["trainer"]["iteration"] == 4
    best = torch.load(trained.models / "model.pt", weights_only=True)
    assert set(best) == set(last["model"])  # the network's state dict alone
    assert set(torch.load(trained.models / "modality_weights.pt", weights_only=True)) == {"w"}
    initial = ModalityImportance(len(MODALITIES), seed=999).w.detach()
    assert not torch.allclose(last["modality_weights"]["w"], initial), "the meta rounds did not move w"
    assert len(last["meta_optimizer"]["state"]) == 1  # Adam state of w only


def test_resume_continues_iterations_with_the_saved_importance_and_schedule(trained, bundle, brats_data, tmp_path):
    checkpoint = trained.models / "last_checkpoint_epoch=2.pt"
    saved = torch.load(checkpoint, weights_only=True)
    root = tmp_path / "resumed"
    shutil.copytree(trained.root, root)
    small = dict(bundle.small_run, num_iterations=6)
    workflow = _workflow(
        bundle,
        ("train.json", "cpu_small.json"),
        "train",
        bundle_root=str(root),
        data_list_file_path=str(brats_data.datalist),
        resume_checkpoint=str(checkpoint),
        **small,
    )
    trainer = workflow.parser.get_parsed_content("train#trainer")
    weights = workflow.parser.get_parsed_content("modality_weights")
    seen = {}
    trainer.add_event_handler(
        Events.STARTED, lambda e: seen.update(w=weights.w.detach().clone(), lr=e.optimizer.param_groups[0]["lr"])
    )
    iterations = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: iterations.append(e.state.iteration))
    workflow.run()
    workflow.finalize()
    assert iterations == [5, 6]
    torch.testing.assert_close(seen["w"], saved["modality_weights"]["w"])
    assert seen["lr"] == pytest.approx(saved["optimizer"]["param_groups"][0]["lr"])
    assert (root / "models" / "last_checkpoint_epoch=3.pt").is_file()


def test_evaluation_reports_all_15_subsets_and_its_dice_agrees_with_monai(trained, bundle, brats_data):
    workflow = _workflow(
        bundle,
        ("train.json", "cpu_small.json", "evaluate.json"),
        None,
        bundle_root=str(trained.root),
        data_list_file_path=str(brats_data.datalist),
        **bundle.small_run,
    )
    (paths,) = workflow.run()
    workflow.finalize()
    assert all(Path(p).is_file() for p in paths.values())
    with open(paths["summary_csv"]) as f:
        summary = list(csv.DictReader(f))
    subsets = {row["subset"] for row in summary if "mean" not in row["subset"].lower()}
    assert len(subsets) == 15 and len(summary) == 16 * len(REGIONS)  # 15 subsets + the mean over subsets
    assert {row["region"] for row in summary} == set(REGIONS)
    markdown = Path(paths["markdown"]).read_text()
    assert "T1ce" in markdown and "FLAIR+T1+T1ce+T2" in markdown

    with open(paths["csv"]) as f:
        reported = {(r["subset"], r["case"], r["region"]): float(r["dice"]) for r in csv.DictReader(f)}
    network = workflow.parser.get_parsed_content("network").eval()
    dataset = workflow.parser.get_parsed_content("evaluate#dataset")
    inferer = SlidingWindowInferer(roi_size=[32, 32, 32], overlap=0.25, mode="gaussian")
    metric = DiceMetric(include_background=True, reduction="none", ignore_empty=False)
    for subset in (all_subsets(4)[-1], (False, False, True, False), (True, False, False, True)):
        for item in dataset:
            image = item["image"].as_tensor()[None]
            available = torch.tensor([subset])
            with torch.no_grad():
                pred = (torch.sigmoid(inferer(pack_available(image, available), network)) > 0.5).float()
            dice = metric(pred, MetaTensor(item["label"])[None].float())[0]
            for r, region in enumerate(REGIONS):
                key = (subset_name(subset, MODALITY_NAMES), item["case_id"], region)
                assert reported[key] == pytest.approx(float(dice[r]), abs=1e-4), key


def test_inference_on_nifti_cases_with_a_missing_modality_keeps_geometry_and_skips_a_bad_case(
    trained, inference, brats_data, tmp_path
):
    source = Path(brats_data.cases[0].images["flair"]).parent
    inputs = tmp_path / "inputs"
    good = inputs / source.name
    shutil.copytree(source, good)
    (good / f"{source.name}_t1.nii.gz").unlink()  # T1 missing
    (good / f"{source.name}_seg.nii.gz").unlink()
    bad = inputs / "Brats18_BAD_1"
    bad.mkdir()
    nib.save(nib.Nifti1Image(np.ones((20, 20, 20), np.int16), np.eye(4)), bad / "Brats18_BAD_1_flair.nii.gz")
    nib.save(nib.Nifti1Image(np.ones((24, 24, 24), np.int16), np.eye(4)), bad / "Brats18_BAD_1_t2.nii.gz")
    before = _digest(inputs)
    output = tmp_path / "predictions"

    with pytest.raises(SystemExit) as exited:
        inference(inputs, output, save_probabilities=True, grid="same")

    assert exited.value.code == EXIT_CASES_SKIPPED
    summary = json.loads((output / "inference_summary.json").read_text())
    assert [p["case_id"] for p in summary["skipped"]] == ["Brats18_BAD_1"]
    assert "spatial shape (24, 24, 24) differs from (20, 20, 20)" in summary["skipped"][0]["reason"]
    predictions = sorted(p.name for p in output.iterdir() if p.name != "inference_summary.json")
    assert predictions == [f"{source.name}_prob.nii.gz", f"{source.name}_seg.nii.gz"]
    reference = nib.load(good / f"{source.name}_flair.nii.gz")
    seg = nib.load(output / f"{source.name}_seg.nii.gz")
    assert seg.shape == reference.shape and np.allclose(seg.affine, reference.affine)
    assert set(np.unique(np.asarray(seg.dataobj)).tolist()) <= {0, 1, 2, 4}
    assert nib.load(output / f"{source.name}_prob.nii.gz").shape[:3] == reference.shape
    assert _digest(inputs) == before  # inputs untouched, nothing written beside them


def test_inference_on_an_msd_4d_image_writes_brats2023_labels_on_the_input_grid(inference, tmp_path):
    (case,) = write_dataset(tmp_path / "msd", 1, "msd", (32, 32, 32), seed=3)
    image = Path(case.images["flair"])
    output = tmp_path / "predictions"

    inference(image, output, output_convention="brats2023")

    reference = nib.load(image)
    (written,) = list(output.glob("*.nii.gz"))
    seg = nib.load(written)
    assert written.name == f"{case.case_id}_seg.nii.gz"
    assert seg.shape == reference.shape[:3] and np.allclose(seg.affine, reference.affine)
    assert set(np.unique(np.asarray(seg.dataobj)).tolist()) <= {0, 1, 2, 3}


def test_inference_on_dicom_series_with_two_modalities_matches_the_series_geometry(
    inference, brats_data, bundle, tmp_path
):
    case = brats_data.cases[1]
    patient = tmp_path / "dicom" / "patient7"
    for modality in ("flair", "t1ce"):
        volume = np.asarray(nib.load(case.images[modality]).dataobj)
        bundle.write_dicom_series(patient / modality, volume, (1.0, 1.0, 1.5))
    output = tmp_path / "predictions"

    inference(patient, output)

    reference = LoadImage(reader="ITKReader", image_only=True)(str(patient / "flair"))
    seg = nib.load(output / "patient7_seg.nii.gz")
    assert seg.shape == tuple(reference.shape)
    np.testing.assert_allclose(seg.affine, reference.affine.numpy(), atol=1e-4)


def test_ckpt_export_gives_torchscript_that_runs_with_a_modality_subset(trained, bundle, tmp_path):
    target = tmp_path / "model.ts"
    ckpt_export(
        net_id="network_def",
        filepath=str(target),
        ckpt_file=str(trained.models / "model.pt"),
        meta_file=str(bundle.configs / "metadata.json"),
        config_file=str(bundle.configs / "inference.json"),
        backbone="light",
    )
    scripted = torch.jit.load(str(target))
    parser = ConfigParser()
    parser.read_config(bundle.config_files("inference.json"))
    parser["backbone"] = "light"
    network = parser.get_parsed_content("network_def")
    network.load_state_dict(torch.load(trained.models / "model.pt", weights_only=True))
    network.eval()
    image = torch.randn(1, 4, 32, 32, 32)
    flair_t2 = torch.tensor([[True, False, False, True]])
    with torch.no_grad():
        torch.testing.assert_close(scripted(pack_available(image, flair_t2)), network(pack_available(image, flair_t2)))
