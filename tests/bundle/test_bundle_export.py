"""The model-zoo export: a self-contained copy that trains and infers with only MONAI and the pinned packages."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mckd.bundle_export import ExportError, export_bundle, main, rewrite_imports

_UNPREFIXED = re.compile(r"(?<![\w.])(mckd|data_prep)\.")


@pytest.fixture(scope="module")
def exported(bundle, tmp_path_factory):
    out = tmp_path_factory.mktemp("zoo") / "brats_mri_mckd_segmentation"
    return export_bundle(bundle.root, out)


def test_export_vendors_the_import_closure_and_points_configs_at_scripts(exported, bundle):
    out = exported.out
    assert {"mckd.networks.segnet", "mckd.handlers", "mckd.engines", "mckd.brats.cases", "mckd.brats.inference", "data_prep.brats"} <= set(
        exported.modules
    )
    assert (out / "scripts" / "__init__.py").is_file() and (out / "LICENSE").is_file()
    assert (out / "docs" / "README.md").is_file() and not (out / "models").exists()
    for config in (out / "configs").glob("*.json"):
        assert not _UNPREFIXED.findall(config.read_text()), config.name
    meta = json.loads((out / "configs" / "metadata.json").read_text())
    assert "mckd" not in meta["required_packages_version"] and exported.unpinned == []
    for name in exported.modules:
        vendored = out / "scripts" / Path(*name.split("."))
        source_text = (vendored / "__init__.py" if vendored.is_dir() else vendored.with_suffix(".py")).read_text()
        assert not re.search(r"^\s*(from|import) (mckd|data_prep)\b", source_text, re.M), name


def test_rewrite_touches_import_statements_only():
    source = 'from mckd.availability import pack_available\n"""see mckd.availability"""\nimport data_prep.brats as db\n'
    assert rewrite_imports(source) == (
        'from scripts.mckd.availability import pack_available\n"""see mckd.availability"""\n'
        "import scripts.data_prep.brats as db\n"
    )


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
def test_exported_copy_trains_and_infers_in_a_fresh_environment_without_mckd(exported, bundle, brats_data, tmp_path):
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

    run_root = tmp_path / "run"
    train = ["-m", "monai.bundle", "run", "--config_file", "['configs/train.json','configs/cpu_small.json']"]
    small = dict(bundle.small_run, num_iterations=2, bundle_root=str(run_root))
    small["data_list_file_path"] = str(brats_data.datalist)
    run(*train, *[a for k, v in small.items() for a in (f"--{k}", str(v).replace(" ", ""))])
    assert (run_root / "models" / "model.pt").is_file()

    case_folder = Path(brats_data.cases[0].images["flair"]).parent
    output = tmp_path / "predictions"
    infer = ["-m", "monai.bundle", "run", "--config_file", "configs/inference.json", "--bundle_root", str(run_root)]
    infer += ["--dataset_dir", str(case_folder), "--output_dir", str(output), "--backbone", "light"]
    infer += ["--sw_roi_size", "[32,32,32]", "--num_workers", "0"]
    run(*infer)
    assert (output / f"{case_folder.name}_seg.nii.gz").is_file()
