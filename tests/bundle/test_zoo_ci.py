"""The model zoo's CI checks, reproduced offline on an export placed at ``models/<bundle>`` of a zoo-like checkout.

What the zoo's CI (Project-MONAI/model-zoo: ``runtests.sh --codeformat``, ``ci/verify_bundle.py``,
``ci/unit_tests/runner.py``) checks, as facts, with this project's own code: isort, black and flake8 (with the
bugbear, comprehensions, executable and naming plugins) under the zoo's settings, written here as our own config
files; ``large_files.yml`` downloaded by MONAI; ``ckpt_export`` without ``--key_in_ckpt``, ``verify_net_in_out`` and
the metadata schema; the README in the shape of the zoo's template; the ``_dist`` unit test under ``torchrun``.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser

from mckd.bundle_export import ExportError, _card_sections, export_bundle, render_readme, unlink_outside
from mckd.distillation import ModalityImportance

BUNDLE_NAME = "brats_mri_mckd_segmentation"
AVMNIST = "avmnist_mckd_classification"
#: The zoo's code-format settings (its ``setup.cfg`` and ``pyproject.toml``), written as our own config files.
ZOO_SETUP_CFG = """\
[flake8]
select = B,C,E,F,N,P,T4,W,B9
max_line_length = 120
ignore = E203,E501,E741,W503,W504,C408,N812,B023,B905,B028,B907,C419
per_file_ignores = __init__.py: F401, __main__.py: F401

[isort]
known_first_party = models
profile = black
line_length = 120
"""
ZOO_PYPROJECT = """\
[tool.black]
line-length = 120
target-version = ['py37', 'py38', 'py39']
"""
#: The sections of the zoo's README template (``docs/readme_template.md``), in order; "(Optional)" ones may be absent.
TEMPLATE_HEADINGS = (
    "### **Authors**",
    "### **Tags**",
    "## **Model Description**",
    "## **Data**",
    "## **Performance**",
    "## **Additional Usage Steps**",
    "## **System Configuration**",
    "## **Limitations**",
    "## **Citation Info**",
    "## **References**",
)
REQUIRED_HEADINGS = TEMPLATE_HEADINGS[:5] + ("## **System Configuration**",)
#: Newest release of each pinned package that installs on Python 3.10, the zoo CI's Python, with the other pins:
#: each pin was checked with ``pip download --no-deps --only-binary=:all: --python-version 3.10 NAME==VERSION`` and
#: the pins without torch together with ``pip install --dry-run --only-binary=:all:`` under Python 3.10. The next
#: minor release of each needs Python 3.11 (numpy 2.3, scipy 1.16, matplotlib 3.11, scikit-learn 1.8), and mlxtend
#: 0.24 needs scipy >= 1.16.3. None: every release up to the pinned one installed there. A pin missing here is an
#: unchecked pin: check it the same way and add it.
NEWEST_ON_PY310 = {
    "numpy": (2, 2),
    "scipy": (1, 15),
    "matplotlib": (3, 10),
    "scikit-learn": (1, 7),
    "mlxtend": (0, 23),
    "torch": None,
    "monai": None,
    "pytorch-ignite": None,
    "nibabel": None,
    "pydicom": None,
    "itk-io": None,
    "simpleitk": None,
    "tensorboard": None,
    "fire": None,
    "tqdm": None,
    "jsonschema": None,
    "librosa": None,
}


def _plain_weights(bundle, folder: Path) -> Path:
    """``model.pt`` (plain state dict of the CPU configuration's network) and ``modality_weights.pt`` beside it."""
    parser = ConfigParser()
    parser.read_config(bundle.config_files("inference.json", "cpu_small.json"))
    folder.mkdir(parents=True)
    torch.save(parser.get_parsed_content("network_def").state_dict(), folder / "model.pt")
    torch.save(ModalityImportance(4, seed=1).state_dict(), folder / "modality_weights.pt")
    return folder / "model.pt"


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    """A web server on 127.0.0.1 serving a fresh folder: ``(folder, base URL)``."""
    folder = tmp_path_factory.mktemp("served")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture(scope="module")
def zoo(bundle, web, tmp_path_factory):
    """A zoo-like checkout (our copies of its settings) with an export carrying weights at ``models/<bundle>``."""
    root = tmp_path_factory.mktemp("model-zoo")
    (root / "setup.cfg").write_text(ZOO_SETUP_CFG)
    (root / "pyproject.toml").write_text(ZOO_PYPROJECT)
    weights = _plain_weights(bundle, tmp_path_factory.mktemp("trained") / "models")
    folder, url = web
    result = export_bundle(
        bundle.root, root / "models" / BUNDLE_NAME, overlays=["cpu_small.json"], weights=weights,
        weights_url=f"{url}/{BUNDLE_NAME}/model.pt",
    )  # fmt: skip
    export_bundle(bundle.repo / "bundle" / AVMNIST, root / "models" / AVMNIST)  # checked by the code-format test
    return root, result


def _run(command: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, " ".join(command) + "\n" + result.stdout[-3000:] + result.stderr[-3000:]
    return result


def test_code_format_checks_pass_as_the_zoo_runs_them(zoo):
    root, _ = zoo
    _run([sys.executable, "-m", "isort", "--check", str(root)], cwd=root)
    _run([sys.executable, "-m", "black", "--skip-magic-trailing-comma", "--check", str(root)], cwd=root)
    flake8 = _run([sys.executable, "-m", "flake8", str(root), "--count", "--statistics"], cwd=root)
    assert flake8.stdout.strip().splitlines()[-1] == "0"
    plugins = subprocess.run([sys.executable, "-m", "flake8", "--version"], capture_output=True, text=True).stdout
    for plugin in ("flake8-bugbear", "flake8-comprehensions", "flake8-executable", "pep8-naming"):
        assert plugin in plugins  # the zoo's plugins are active, so their checks ran


def test_the_bundles_own_scripts_are_kept_and_run_as_modules_of_the_bundle(zoo):
    root, _ = zoo
    out = root / "models" / AVMNIST
    compare = (out / "scripts" / "compare_kd.py").read_text()
    assert "from scripts.mckd import tables" in compare and "\nfrom mckd" not in compare
    assert (out / "scripts" / "mckd" / "avmnist" / "data.py").is_file()  # what it imports is vendored
    readme = (out / "docs" / "README.md").read_text()
    assert "python -m scripts.compare_kd" in readme and "python scripts/compare_kd.py" not in readme
    result = subprocess.run([sys.executable, "-m", "scripts.compare_kd", "--help"], cwd=out, capture_output=True)
    assert result.returncode == 0, result.stderr[-2000:]


def test_vendored_scripts_sort_with_the_third_party_imports(zoo):
    root, result = zoo
    handlers = (result.out / "scripts" / "mckd" / "handlers.py").read_text()
    block = re.search(r"^import torch\n(?:(?:import|from) .+\n)+", handlers, re.M).group(0)
    assert "from scripts.mckd.distillation import ModalityImportance" in block  # one block, no first-party block


def _download_large_files(bundle_path: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "monai.bundle", "download_large_files", "--bundle_path", str(bundle_path)]
    return subprocess.run(command, cwd=bundle_path, capture_output=True, text=True, timeout=300)


def test_large_files_download_with_monai_and_the_sha256_is_checked(zoo, web, tmp_path):
    _, result = zoo
    folder, _ = web
    copy = shutil.copytree(result.out, tmp_path / BUNDLE_NAME)
    shipped = copy / "models" / "model.pt"
    listed = re.search(r'hash_val: "(\w+)"', (copy / "large_files.yml").read_text()).group(1)
    assert listed == hashlib.sha256(shipped.read_bytes()).hexdigest()
    served = folder / BUNDLE_NAME / "model.pt"
    served.parent.mkdir(exist_ok=True)
    shutil.copyfile(shipped, served)  # what the contributor uploads to the address in large_files.yml
    shipped.unlink()
    download = _download_large_files(copy)
    assert download.returncode == 0, download.stderr[-3000:]
    assert hashlib.sha256(shipped.read_bytes()).hexdigest() == listed
    assert set(torch.load(shipped, weights_only=True)) == set(
        torch.load(result.out / "models" / "model.pt", weights_only=True)
    )
    # a file that is not the listed one is refused by the hash check
    served.write_bytes(b"not the weights")
    shipped.unlink()
    assert _download_large_files(copy).returncode != 0 and not shipped.exists()


def test_verification_steps_pass_on_the_plain_state_dict_without_key_in_ckpt(zoo, bundle, tmp_path):
    _, result = zoo
    schema = shutil.copyfile(bundle.schema, tmp_path / "schema.json")  # the zoo's CI downloads it there first
    cli = [sys.executable, "-m", "monai.bundle"]
    _run([*cli, "verify_metadata", "--meta_file", "configs/metadata.json", "--filepath", str(schema)], cwd=result.out)
    common = ["--meta_file", "configs/metadata.json", "--config_file", "configs/inference.json", "--bundle_root", "."]
    _run([*cli, "verify_net_in_out", "network_def", *common], cwd=result.out)
    exported = tmp_path / "model.ts"
    _run([*cli, "ckpt_export", "network_def", "--filepath", str(exported), "--ckpt_file", "models/model.pt", *common],
         cwd=result.out)  # fmt: skip
    assert isinstance(torch.jit.load(exported), torch.jit.ScriptModule)


def test_readme_has_the_zoo_template_shape_and_no_link_leaves_the_bundle(zoo):
    _, result = zoo
    readme = result.out / "docs" / "README.md"
    text = readme.read_text()
    assert text.startswith("# ")
    present = [h for h in TEMPLATE_HEADINGS if re.search(rf"^{re.escape(h)}$", text, re.M)]
    assert set(REQUIRED_HEADINGS) <= set(present)
    assert [text.index(h) for h in present] == sorted(text.index(h) for h in present)  # in the template's order
    other = [line for line in re.findall(r"^#{1,3} .*$", text, re.M) if line not in TEMPLATE_HEADINGS]
    assert other == [text.split("\n")[0]], other  # only the title; the card's own headings became #### subsections
    root = result.out.resolve()
    for target in re.findall(r"\]\(([^)\s]+)", text):
        if re.match(r"^(https?:|mailto:|#)", target):
            continue
        resolved = (readme.parent / target.split("#")[0]).resolve()
        assert root in resolved.parents and resolved.exists(), target
    assert "python -m scripts.data_prep.brats" in text and "ci/unit_tests/runner.py --b" in text
    assert "download_large_files" in text and "modality_weights.pt" in text  # the shipped weights are described
    assert "<!--" not in text


def test_readme_rendering_refuses_an_unplaced_section_and_unlinks_outside_targets(tmp_path):
    meta = {"name": "N", "authors": "A", "intended_use": "Research only."}
    card = "# T\n## Model overview\ntext\n```\n## not a heading\n```\n## Data\n<!-- note -->\nd\n### Sub\ns\n"
    rendered = render_readme(card, meta, "b", [])
    assert "## not a heading" in rendered and "#### **Sub**" in rendered and "<!--" not in rendered
    assert "## **System Configuration**\nNot stated in the model card." in rendered
    assert "## **Limitations**\nResearch only." in rendered
    _, sections = _card_sections(card)
    assert list(sections) == ["model overview", "data"]
    with pytest.raises(ExportError, match="Ideas"):
        render_readme(card + "## Ideas\nx\n", meta, "b", [])
    root = tmp_path / "bundle"
    (root / "docs").mkdir(parents=True)
    (root / "LICENSE").write_text("x")
    text = "[in](../LICENSE) [gone](../missing.md) [out](../../x.md) [web](https://a.b/c) ![img](../../i.png)"
    assert (
        unlink_outside(text, root / "docs" / "README.md", root) == "[in](../LICENSE) gone out [web](https://a.b/c) img"
    )


def test_pins_come_from_the_bundle_metadata_and_install_on_python_310(zoo, bundle):
    _, result = zoo
    source = json.loads((bundle.configs / "metadata.json").read_text())
    exported = json.loads((result.out / "configs" / "metadata.json").read_text())
    # one place: the export pins exactly what the bundle's metadata pins
    for key in ("monai_version", "pytorch_version", "numpy_version", "required_packages_version"):
        assert exported[key] == source[key], key
    for other in sorted(bundle.repo.glob("bundle/*/configs/metadata.json")):
        meta = json.loads(other.read_text())
        pins = {"monai": meta["monai_version"], "torch": meta["pytorch_version"], "numpy": meta["numpy_version"]}
        pins |= meta.get("required_packages_version", {}) | meta.get("optional_packages_version", {})
        for name, version in pins.items():
            assert re.fullmatch(r"\d+(\.\d+)*", version), f"{other}: {name} {version} is not an exact version"
            assert name.lower() in NEWEST_ON_PY310, f"{other}: {name} is not checked for Python 3.10"
            newest = NEWEST_ON_PY310[name.lower()]
            major_minor = tuple(int(part) for part in version.split(".")[:2])
            assert newest is None or major_minor <= newest, f"{other}: {name}=={version} needs Python 3.11+"


@pytest.mark.slow
def test_exported_dist_unit_test_trains_with_two_gloo_processes(zoo):
    _, result = zoo
    command = [sys.executable, "-m", "unittest", "discover", "-s", "ci/unit_tests", "-p", "test_*_dist.py", "-v"]
    run = _run(command, cwd=result.out, timeout=1200)
    assert "Ran 1 test" in run.stderr and "OK" in run.stderr


@pytest.mark.slow
def test_exported_avmnist_unit_test_trains_evaluates_and_infers(zoo):
    root, _ = zoo
    out = root / "models" / AVMNIST
    assert sorted(p.name for p in (out / "ci" / "unit_tests").iterdir()) == [f"test_{AVMNIST}.py"]
    run = _run([sys.executable, "-m", "unittest", "discover", "-s", "ci/unit_tests", "-v"], cwd=out, timeout=1200)
    assert "Ran 1 test" in run.stderr and "OK" in run.stderr
