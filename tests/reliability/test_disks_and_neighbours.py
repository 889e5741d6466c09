"""Disks and neighbours (issue 23, class 5): one training per checkpoint folder, "disk full" said as such naming the
file, inference output folders checked before the first case, and an inference summary that matches the disk."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.data import NibabelWriter
from monai.transforms import Compose, Lambda

from mckd.brats import inference
from mckd.brats.cases import CaseError, Discovery
from mckd.brats.inference import EXIT_CASES_SKIPPED, EXIT_USAGE, FAILURE_KEY, InferenceSummary, _message
from mckd.brats.writing import SaveCasePrediction
from mckd.checkpoints import AtomicCheckpointSaver, FolderInUseError, save_checkpoint
from mckd.fileio import DiskFullError, check_writable_folder

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundle" / "brats_mri_mckd_segmentation"
SHAPE = (32, 32, 32)


@contextmanager
def _tiny_tmpfs(where: Path, size: str = "64k", read_only: bool = False):
    """A real small (or read-only) file system, where this process may mount one; else the test is skipped."""
    where.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode(errors='replace').strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=False)


# ---------------------------------------------------------------------------------------------- one training


def _holder(folder: Path) -> subprocess.Popen:
    """Another process that holds ``folder``'s lock, as a running training's checkpoint saver does."""
    code = (
        f"from mckd.checkpoints import lock_folder; import time; lock_folder({str(folder)!r}); "
        "print('ok', flush=True); time.sleep(120)"
    )
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "ok"
    return process


def test_a_second_training_in_a_checkpoint_folder_is_refused_naming_the_first_and_its_save_is_kept(tmp_path, toy):
    models = tmp_path / "models"
    models.mkdir()
    in_progress = models / ".last_checkpoint_epoch=2.pt.x1y2z3.part.pt"  # the first run's save, being written
    in_progress.write_bytes(b"PK\x03\x04 half")
    first = _holder(models)
    try:
        trainer, save_dict = toy.build(1)
        saver = AtomicCheckpointSaver(str(models), save_dict, save_interval=1)
        with pytest.raises(
            FolderInUseError,
            match=rf"checkpoint folder '{models}' is in use by another training "
            rf"\(pid {first.pid}, started \d{{4}}-\d\d-\d\dT[\d:]+[+-][\d:]+: .*lock_folder",
        ):
            saver.attach(trainer)
        assert in_progress.exists()
    finally:
        first.kill()
        first.wait()
    saver.attach(trainer)  # the lock went with the first process: nothing stale is left behind
    assert not in_progress.exists() and list(models.iterdir()) == []


def _training_command(root: Path, datalist: Path) -> list[str]:
    overrides = {"crop_size": [32, 32, 32], "sw_roi_size": [32, 32, 32], "batch_size": 1, "num_workers": 0,
                 "num_iterations": 2, "epoch_length": 2}  # fmt: skip
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file",
               json.dumps([str(BUNDLE / "configs" / "train.json"), str(BUNDLE / "configs" / "cpu_small.json")]),
               "--bundle_root", str(root), "--dataset_dir", str(datalist.parent)]  # fmt: skip
    for key, value in overrides.items():
        command += [f"--{key}", json.dumps(value)]
    return command


def test_a_second_bundle_training_in_one_bundle_folder_stops_at_start_in_one_line(tmp_path):
    from data_prep.brats import prepare_datalist
    from data_prep.synthetic_brats import write_dataset

    write_dataset(tmp_path / "cases", 6, "brats2018", SHAPE, seed=0)
    datalist = tmp_path / "lists" / "datalist.json"
    prepare_datalist(tmp_path / "cases", datalist, split="ratio:0.34", seed=0)
    models = tmp_path / "bundle" / "models"
    models.mkdir(parents=True)
    first = _holder(models)
    try:
        result = subprocess.run(_training_command(tmp_path / "bundle", datalist), cwd=BUNDLE, capture_output=True,
                                text=True, timeout=600)  # fmt: skip
    finally:
        first.kill()
        first.wait()
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"FolderInUseError: checkpoint folder '{models}' is in use by another training (pid "
                           f"{first.pid}, started "), last  # fmt: skip
    assert "Traceback" not in result.stderr
    assert list(models.iterdir()) == []


# ---------------------------------------------------------------------------------------------- disk full


def test_a_checkpoint_save_on_a_full_disk_says_disk_full_naming_the_file(tmp_path):
    with _tiny_tmpfs(tmp_path / "tiny"):
        target = tmp_path / "tiny" / "models" / "model.pt"
        with pytest.raises(DiskFullError, match=rf"^disk full \(No space left on device\) while writing '{target}'"):
            save_checkpoint({"model": torch.nn.Linear(300, 300)}, target)
        assert list(target.parent.iterdir()) == []


def test_torch_save_failing_on_a_full_disk_without_an_errno_is_named_disk_full(tmp_path, monkeypatch):
    # torch's C++ writer reports "basic_ios::clear: iostream error" (or "unexpected pos"), no errno: the free space
    # of the folder tells it was the disk
    def failing_save(*args, **kwargs):
        raise RuntimeError("basic_ios::clear: iostream error")

    monkeypatch.setattr(torch, "save", failing_save)
    monkeypatch.setattr(os, "statvfs", lambda path: SimpleNamespace(f_bavail=0, f_frsize=4096))
    target = tmp_path / "models" / "model.pt"
    with pytest.raises(DiskFullError, match=rf"disk full \(No space left on device\) while writing '{target}'"):
        save_checkpoint({"model": torch.nn.Linear(2, 2)}, target)


def test_the_same_writer_failure_with_free_space_is_not_called_disk_full(tmp_path, monkeypatch):
    def failing_save(*args, **kwargs):
        raise RuntimeError("basic_ios::clear: iostream error")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(RuntimeError, match="basic_ios") as raised:
        save_checkpoint({"model": torch.nn.Linear(2, 2)}, tmp_path / "models" / "model.pt")
    assert not isinstance(raised.value, DiskFullError)


def test_a_prediction_on_a_full_disk_is_a_case_error_saying_disk_full(tmp_path, monkeypatch):
    def full(self, filename, verbose=False, **kwargs):
        Path(filename).write_bytes(b"\x1f\x8b partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(NibabelWriter, "write", full)
    target = tmp_path / "out" / "c6_seg.nii.gz"
    with pytest.raises(CaseError, match=rf"case 'c6' \(file '{target}'\): cannot write the prediction: disk full \(No "
                       rf"space left on device\) while writing '{target}'"):  # fmt: skip
        SaveCasePrediction(tmp_path / "out")(torch.ones(1, 4, 4, 4), "c6")
    assert list((tmp_path / "out").iterdir()) == []


def test_a_failure_in_a_transform_chain_is_reported_by_its_system_error_not_the_transform_repr(tmp_path):
    def full(data):
        raise DiskFullError(tmp_path / "c1_alignment.json")

    with pytest.raises(Exception) as raised:
        Compose([Compose([Lambda(full)])])({"x": 1})
    message = _message(raised.value, "c1", "inference")
    assert message == (
        f"case 'c1' (file '{tmp_path}/c1_alignment.json'): inference failed: disk full (No space left "
        f"on device) while writing '{tmp_path}/c1_alignment.json'; free space or write elsewhere."
    )
    assert "object at 0x" not in message


# ---------------------------------------------------------------------------------------------- the summary


def _engine(output, batch=None) -> SimpleNamespace:
    return SimpleNamespace(state=SimpleNamespace(output=output, batch=batch))


def test_a_case_whose_prediction_was_written_before_a_later_failure_is_listed_written(tmp_path):
    summary = InferenceSummary(Discovery(tmp_path), tmp_path)
    summary._start()
    nib.save(nib.Nifti1Image(np.zeros((2, 2, 2), np.uint8), np.eye(4)), str(tmp_path / "c1_seg.nii.gz"))
    reason = "case 'c1' (file 'x'): inference failed: disk full: ..."
    summary.record(_engine({"case_id": "c1", FAILURE_KEY: reason}))
    summary.record(_engine({"case_id": "c2", FAILURE_KEY: "case 'c2': cannot be read"}))
    result = summary.summarise()
    assert [(e["case_id"], e["prediction"], e["problem"]) for e in result["written"]] == [
        ("c1", str(tmp_path / "c1_seg.nii.gz"), reason)
    ]
    assert [e["case_id"] for e in result["skipped"]] == ["c2"]
    assert json.loads((tmp_path / "inference_summary.json").read_text()) == result


def test_a_listed_prediction_missing_from_disk_is_moved_to_skipped(tmp_path):
    summary = InferenceSummary(Discovery(tmp_path), tmp_path)
    summary.record(_engine({"prediction_path": str(tmp_path / "gone_seg.nii.gz")}, {"case_id": "gone"}))
    result = summary.summarise()
    assert result["written"] == [] and "the prediction is not on disk" in result["skipped"][0]["reason"]
    assert summary.exit_status == EXIT_CASES_SKIPPED


def test_a_summary_that_cannot_be_written_is_one_error_line_and_exit_3(tmp_path, monkeypatch, caplog):
    def full(target, payload):
        raise DiskFullError(target)

    monkeypatch.setattr(inference, "write_json_atomic", full)
    summary = InferenceSummary(Discovery(tmp_path), tmp_path)
    summary.summarise()
    assert f"error: cannot write the inference summary '{tmp_path}/inference_summary.json': disk full" in caplog.text
    assert summary.exit_status == EXIT_CASES_SKIPPED
    with pytest.raises(SystemExit) as exited:
        summary.exit_if_skipped()
    assert exited.value.code == EXIT_CASES_SKIPPED


# ------------------------------------------------------------------------------------- output folder at start


def test_a_read_only_output_folder_is_refused_before_any_case(tmp_path):
    with _tiny_tmpfs(tmp_path / "ro", read_only=True) as folder:
        with pytest.raises(PermissionError, match=f"output folder '{folder}' is not writable: Read-only file system"):
            check_writable_folder(folder)


@pytest.fixture(scope="module")
def bundle_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("neighbours")
    files = [str(BUNDLE / "configs" / n) for n in ("inference.json", "cpu_small.json")]
    parser = ConfigParser()
    parser.read_config(files)
    (root / "bundle" / "models").mkdir(parents=True)
    torch.save(
        {"model": parser.get_parsed_content("network_def").state_dict()}, root / "bundle" / "models" / "model.pt"
    )
    rng = np.random.default_rng(0)
    for modality in ("flair", "t1"):
        data = (rng.random(SHAPE) * 100 + 1).astype(np.float32)
        (root / "cases" / "c1").mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(data, np.eye(4)), str(root / "cases" / "c1" / f"c1_{modality}.nii.gz"))
    return root


def _infer(root: Path, output_dir: Path) -> subprocess.CompletedProcess:
    command = [
        sys.executable, "-m", "monai.bundle", "run", "--config_file",
        json.dumps([str(BUNDLE / "configs" / n) for n in ("inference.json", "cpu_small.json")]),
        "--bundle_root", str(root / "bundle"), "--dataset_dir", str(root / "cases"),
        "--output_dir", str(output_dir), "--sw_roi_size", "[32, 32, 32]", "--num_workers", "0",
    ]  # fmt: skip
    return subprocess.run(command, cwd=BUNDLE, capture_output=True, text=True, check=False, timeout=600)


def test_an_output_path_that_is_a_file_is_one_line_exit_2_and_nothing_written(bundle_root):
    blocker = bundle_root / "predictions.txt"
    blocker.write_text("keep me")
    started = time.time()
    result = _infer(bundle_root, blocker)
    assert result.returncode == EXIT_USAGE, result.stdout[-2000:] + result.stderr[-2000:]
    errors = [line for line in (result.stdout + result.stderr).splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and f"error: output folder '{blocker}' is a file, not a folder." in errors[0]
    assert "Traceback" not in result.stderr
    assert blocker.read_text() == "keep me"
    assert not [p for p in bundle_root.rglob("*") if p.is_file() and p.stat().st_mtime > started]


def test_an_output_folder_below_a_file_is_one_line_exit_2(bundle_root):
    blocker = bundle_root / "plain"
    blocker.write_text("")
    result = _infer(bundle_root, blocker / "predictions")
    assert result.returncode == EXIT_USAGE
    assert (
        f"error: cannot create output folder '{blocker}/predictions': Not a directory." in result.stderr + result.stdout
    )
    assert "Traceback" not in result.stderr


def test_inference_onto_a_disk_that_fills_up_reports_what_is_on_disk_in_lines_not_tracebacks(bundle_root, tmp_path):
    # a real small file system: some cases' files fit, the next ones meet ENOSPC part-way (prediction, alignment
    # report or the summary itself)
    cases = tmp_path / "cases"
    rng = np.random.default_rng(1)
    for index in range(6):
        for modality in ("flair", "t1"):
            (cases / f"p{index}").mkdir(parents=True, exist_ok=True)
            data = (rng.random(SHAPE) * 100 + 1).astype(np.float32)
            nib.save(nib.Nifti1Image(data, np.eye(4)), str(cases / f"p{index}" / f"p{index}_{modality}.nii.gz"))
    with _tiny_tmpfs(tmp_path / "full", size="16k") as out:
        command = [
            sys.executable, "-m", "monai.bundle", "run", "--config_file",
            json.dumps([str(BUNDLE / "configs" / n) for n in ("inference.json", "cpu_small.json")]),
            "--bundle_root", str(bundle_root / "bundle"), "--dataset_dir", str(cases), "--output_dir", str(out),
            "--sw_roi_size", "[32, 32, 32]", "--num_workers", "0",
        ]  # fmt: skip
        result = subprocess.run(command, cwd=BUNDLE, capture_output=True, text=True, check=False, timeout=600)
        output = result.stdout + result.stderr
        assert result.returncode == EXIT_CASES_SKIPPED, output[-3000:]
        assert "Traceback" not in output and "object at 0x" not in output, output[-3000:]
        assert "disk full (No space left on device) while writing" in output
        on_disk = {p.name for p in out.iterdir() if p.name.endswith("_seg.nii.gz")}
        summary_path = out / "inference_summary.json"
        if summary_path.exists():
            summary = json.loads(summary_path.read_text())
            assert {Path(e["prediction"]).name for e in summary["written"]} == on_disk
            assert not {f"{e['case_id']}_seg.nii.gz" for e in summary["skipped"]} & on_disk
            assert len(summary["written"]) + len(summary["skipped"]) == 6
        else:
            assert f"error: cannot write the inference summary '{summary_path}': disk full" in output
        assert not [p.name for p in out.iterdir() if ".part" in p.name]
