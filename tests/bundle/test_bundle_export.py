"""The model-zoo export: a self-contained copy that trains and infers with only MONAI and the pinned packages."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser

from mckd.bundle_export import (
    ExportError,
    eval_metrics_from_summary,
    export_bundle,
    imported_packages,
    main,
    merge_overlays,
    rewrite_imports,
    waive_lint,
)
from mckd.distillation import ModalityImportance

_UNPREFIXED = re.compile(r"(?<![\w.])(mckd|data_prep)\.")
WEIGHTS_URL = "https://example.org/brats_mri_mckd_segmentation/model.pt"


def _light_network(bundle) -> torch.nn.Module:
    parser = ConfigParser()
    parser.read_config(bundle.config_files("inference.json", "cpu_small.json"))
    return parser.get_parsed_content("network_def")


def _light_weights(bundle, path: Path, importance: bool = True) -> Path:
    """The CPU configuration's network as training writes it: ``model.pt`` (plain state dict) and, unless
    ``importance`` is False, ``modality_weights.pt`` beside it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(_light_network(bundle).state_dict(), path)
    if importance:
        torch.save(ModalityImportance(4, seed=3).state_dict(), path.parent / "modality_weights.pt")
    return path


@pytest.fixture(scope="module")
def exported(bundle, tmp_path_factory):
    """An export for the CPU configuration, with shipped weights and an evaluation report."""
    root = tmp_path_factory.mktemp("zoo")
    weights = _light_weights(bundle, root / "run" / "models" / "model.pt")
    per_region = {
        "ET": {"dice": 0.61234, "hd95": 7.5},
        "TC": {"dice": 0.7, "hd95": 6.0},
        "WT": {"dice": 0.8, "hd95": None},
    }
    summary = {
        "per_subset": {"FLAIR": per_region, "FLAIR+T1+T1ce+T2": per_region},
        "mean_over_subsets": per_region,
        "num_cases": 2,
        "conventions": {"name": "brats_legacy"},
    }
    report = root / "evaluation_summary.json"
    report.write_text(json.dumps(summary))
    out = root / "brats_mri_mckd_segmentation"
    return export_bundle(
        bundle.root, out, overlays=["cpu_small.json"], weights=weights, weights_url=WEIGHTS_URL, eval_report=report
    )


def test_export_vendors_the_import_closure_and_points_configs_at_scripts(exported, bundle):
    out = exported.out
    assert {
        "mckd.networks.segnet",
        "mckd.handlers",
        "mckd.engines",
        "mckd.brats.cases",
        "mckd.brats.inference",
        "data_prep.brats",
    } <= set(exported.modules)
    assert (out / "scripts" / "__init__.py").is_file() and (out / "LICENSE").is_file()
    assert (out / "docs" / "README.md").is_file()
    for config in (out / "configs").glob("*.json"):
        assert not _UNPREFIXED.findall(config.read_text()), config.name
    meta = json.loads((out / "configs" / "metadata.json").read_text())
    assert "mckd" not in meta["required_packages_version"] and exported.unpinned == []
    # the AGPL lesion-wise scorer's packages are imported on request only: an optional extra, never a pin
    assert {"brats_evaluation", "panoptica"} <= set(exported.optional)
    assert not {"brats-evaluation", "brats_evaluation", "panoptica"} & set(meta["required_packages_version"])
    for name in exported.modules:
        vendored = out / "scripts" / Path(*name.split("."))
        source_text = (vendored / "__init__.py" if vendored.is_dir() else vendored.with_suffix(".py")).read_text()
        assert not re.search(r"^\s*(from|import) (mckd|data_prep)\b", source_text, re.M), name


def test_imports_inside_functions_and_optional_import_are_optional_not_required():
    source = (
        "from __future__ import annotations\nimport json\nimport numpy as np\nfrom typing import TYPE_CHECKING\n"
        "from monai.utils import optional_import\nsitk, _ = optional_import('SimpleITK')\n"
        "if TYPE_CHECKING:\n    import ignite\n"
        "def score():\n    import brats_evaluation\n    from panoptica import Panoptica_Evaluator\n"
    )
    required, optional = imported_packages(source)
    assert required == {"numpy", "monai"}
    assert optional == {"SimpleITK", "ignite", "brats_evaluation", "panoptica"}


def test_rewrite_touches_import_statements_only():
    source = 'from mckd.availability import pack_available\n"""see mckd.availability"""\nimport data_prep.brats as db\n'
    assert rewrite_imports(source) == (
        'from scripts.mckd.availability import pack_available\n"""see mckd.availability"""\n'
        "import scripts.data_prep.brats as db\n"
    )


def test_overlay_sets_the_inference_defaults_the_shipped_weights_belong_to(exported, bundle):
    inference = json.loads((exported.out / "configs" / "inference.json").read_text())
    small = json.loads((bundle.configs / "cpu_small.json").read_text())
    assert inference["backbone"] == small["backbone"] == "light"
    assert inference["sw_roi_size"] == small["sw_roi_size"]
    assert "num_iterations" not in inference  # training keys of the overlay stay out of the inference config
    assert json.loads(merge_overlays('{"a": 1, "b": 2}', ['{"b": 3, "c": 4}'])) == {"a": 1, "b": 3}


def test_shipped_weights_are_listed_in_large_files_with_their_sha256(exported):
    weights = exported.out / "models" / "model.pt"
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    assert (exported.out / "large_files.yml").read_text() == (
        f'large_files:\n  - path: "models/model.pt"\n    url: "{WEIGHTS_URL}"\n'
        f'    hash_val: "{digest}"\n    hash_type: "sha256"\n'
    )


def test_shipped_model_is_a_plain_state_dict_with_its_importance_beside_it(exported, bundle):
    state = torch.load(exported.out / "models" / "model.pt", weights_only=True)
    assert set(state) == set(_light_network(bundle).state_dict())  # the network's keys only, no "model" entry
    importance = torch.load(exported.out / "models" / "modality_weights.pt", weights_only=True)
    assert torch.equal(importance["w"], ModalityImportance(4, seed=3).w.detach())


def test_a_legacy_checkpoint_ships_as_a_plain_state_dict_and_its_importance(bundle, tmp_path):
    network = _light_network(bundle)
    importance = ModalityImportance(4, seed=5).state_dict()
    legacy = tmp_path / "model_final.pt"
    torch.save({"model": network.state_dict(), "modality_weights": importance, "trainer": {"iteration": 3}}, legacy)
    out = export_bundle(
        bundle.root, tmp_path / "zoo", overlays=["cpu_small.json"], weights=legacy, weights_url=WEIGHTS_URL
    ).out
    state = torch.load(out / "models" / "model.pt", weights_only=True)
    assert set(state) == set(network.state_dict())
    assert torch.equal(torch.load(out / "models" / "modality_weights.pt", weights_only=True)["w"], importance["w"])


def test_weights_without_an_importance_file_ship_alone_and_a_wrong_importance_is_refused(bundle, tmp_path):
    weights = _light_weights(bundle, tmp_path / "alone" / "model.pt", importance=False)
    out = export_bundle(
        bundle.root, tmp_path / "zoo", overlays=["cpu_small.json"], weights=weights, weights_url=WEIGHTS_URL
    ).out
    assert sorted(p.name for p in (out / "models").iterdir()) == ["model.pt"]
    torch.save(ModalityImportance(3).state_dict(), tmp_path / "alone" / "modality_weights.pt")
    with pytest.raises(ExportError, match="4-modality"):
        export_bundle(
            bundle.root, tmp_path / "zoo2", overlays=["cpu_small.json"], weights=weights, weights_url=WEIGHTS_URL
        )
    assert not (tmp_path / "zoo2").exists()


def test_eval_metrics_come_from_the_evaluation_report(exported):
    metrics = json.loads((exported.out / "configs" / "metadata.json").read_text())["eval_metrics"]
    assert metrics["mean_over_subsets_dice_et"] == 0.6123 and metrics["all_modalities_dice_wt"] == 0.8
    assert metrics["all_modalities_subset"] == "FLAIR+T1+T1ce+T2" and metrics["num_cases"] == 2
    assert "mean_over_subsets_hd95_wt" not in metrics  # undefined (no case) values are left out
    assert metrics["scoring_convention"] == "brats_legacy"
    with pytest.raises(ExportError, match="not an evaluation_summary"):
        eval_metrics_from_summary({"num_cases": 2})


def test_weights_that_do_not_fit_the_exported_network_are_refused(bundle, tmp_path):
    weights = _light_weights(bundle, tmp_path / "light.pt")
    with pytest.raises(ExportError, match="do not fit"):  # the default inference config builds resnet50_aspp
        export_bundle(bundle.root, tmp_path / "out", weights=weights, weights_url=WEIGHTS_URL)
    with pytest.raises(ExportError, match="weights-url"):
        export_bundle(bundle.root, tmp_path / "out2", weights=weights)
    assert not (tmp_path / "out").exists() and not (tmp_path / "out2").exists()


def test_waived_lines_get_a_noqa_comment_also_after_a_multi_line_string():
    source = 'def f(x=len("ab")):\n    return x  # noqa: E1\n'
    assert waive_lint(source, {1: {"B008"}, 2: {"B9"}}) == (
        'def f(x=len("ab")):  # noqa: B008\n    return x  # noqa: B9, E1\n'
    )
    # flake8 applies a noqa at the end of a multi-line string to each of its lines
    assert waive_lint('x = """a\nb"""\ny = 1\n', {1: {"B950"}, 2: {"B950"}}) == 'x = """a\nb"""  # noqa: B950\ny = 1\n'


def test_both_zoo_unit_tests_are_written(exported):
    unit_tests = exported.out / "ci" / "unit_tests"
    assert exported.unit_tests == [
        unit_tests / "test_brats_mri_mckd_segmentation.py",
        unit_tests / "test_brats_mri_mckd_segmentation_dist.py",
    ]
    assert exported.unit_test == exported.unit_tests[0]


def test_export_refuses_a_folder_inside_the_bundle_or_a_non_empty_one(bundle, tmp_path):
    with pytest.raises(ExportError, match="outside the bundle"):
        export_bundle(bundle.root, bundle.root / "zoo")
    (tmp_path / "keep.txt").write_text("x")
    with pytest.raises(ExportError, match="not empty"):
        export_bundle(bundle.root, tmp_path)
    assert main(["--bundle", str(tmp_path), "--out", str(tmp_path / "x")]) == 2


def _zoo_venv(requirements: list[str]) -> Path:
    """A venv with only torch, MONAI and ``requirements`` (cached across runs, updated when they change)."""
    cache = Path(os.environ.get("MCKD_TEST_CACHE", Path.home() / ".cache")) / "mckd-bundle-zoo-venv"
    python = cache / "bin" / "python"
    stamp = cache / "requirements.txt"
    wanted = "\n".join(requirements) + "\n"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(cache)], check=True)
    if not stamp.exists() or stamp.read_text() != wanted:
        pip = [str(python), "-m", "pip", "install", "--quiet"]
        subprocess.run(pip + ["torch==2.13.0"], check=True)  # pinned first: otherwise pip resolves a CUDA build
        subprocess.run(pip + ["torch==2.13.0", *requirements], check=True)
        stamp.write_text(wanted)
    return python


@pytest.mark.slow
def test_exported_copy_passes_its_zoo_unit_test_and_infers_in_a_fresh_environment_without_mckd(
    exported, brats_data, tmp_path
):
    meta = json.loads((exported.out / "configs" / "metadata.json").read_text())
    requirements = [f"monai=={meta['monai_version']}"]
    requirements += [f"{name}=={version}" for name, version in meta["required_packages_version"].items()]
    python = _zoo_venv(requirements)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"OMP_NUM_THREADS": "2"}

    def run(*args: str) -> None:
        result = subprocess.run([str(python), *args], cwd=exported.out, env=env, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    probe = subprocess.run([str(python), "-c", "import mckd"], cwd=tmp_path, env=env, capture_output=True)
    assert probe.returncode != 0, "the zoo environment must not have mckd installed"

    # the model zoo's route: train, evaluate and infer through ConfigWorkflow with check_properties
    run("-m", "unittest", "discover", "-s", "ci/unit_tests")
    # the README's route: the command line with the shipped weights and the exported inference defaults
    case_folder = Path(brats_data.cases[0].images["flair"]).parent
    output = tmp_path / "predictions"
    run("-m", "monai.bundle", "run", "--config_file", "configs/inference.json", "--dataset_dir", str(case_folder),
        "--output_dir", str(output), "--sw_roi_size", "[32,32,32]")  # fmt: skip
    assert (output / f"{case_folder.name}_seg.nii.gz").is_file()
