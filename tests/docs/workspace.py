"""Workspace and data of the docs test: every command block of README.md, docs/*.md and the model cards runs here on small data, or says why not.

Markdown is parsed by Sybil (``sybil.parsers.markdown``): fenced ``bash`` blocks are run by :func:`run_shell_block`,
fenced ``python`` blocks by Sybil's Python evaluator, and ``<!-- skip: next "reason" -->`` (Sybil's skip directive)
marks a block that is not run here; the reason is also in the text next to the block.

How a command block runs (each rule is visible in the Markdown source):

- In a workspace folder per document that mirrors the repository root (``bundle/`` holds copies of both bundles
  without their ``models/`` and ``eval/``; ``bundle/meta_schema_20240725.json`` is copied too, ``benchmarks/`` is a link
  to the repository's, for the profilers that only read it), so no command writes into the checkout. ``python`` on ``PATH`` is this interpreter.
- Absolute paths under ``/data/``, ``/runs/``, ``/tmp/`` and ``/path/to/`` are moved under the workspace
  (``/data/lists`` becomes ``<workspace>/data/lists``). ``<workspace>/data`` is prepared by :func:`write_inputs`:
  synthetic BraTS 2018 cases of 32^3 voxels in the folders the docs name (``MICCAI_BraTS_2018_Data_Training`` and so
  on, listed there).
- ``<!-- docs-test: KEY=VALUE, ... -->`` before a block sets, for that block only:
  ``cwd`` (folder relative to the workspace), ``append`` ({text: extra arguments}: a command line that contains
  ``text`` gets the arguments appended; the first matching text wins), ``replace`` ({old: new} text replacements),
  ``model`` (True: the tiny trained BraTS model is copied into the bundle copy's ``models/`` first, for documents that
  use a model without training one), ``requires`` (programs that must be on ``PATH``, else the block is skipped with
  that reason) and ``timeout`` (seconds). The names below (``TINY_BRATS`` ...) are the override strings they use.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from data_prep.synthetic_brats import write_dataset

REPO = Path(__file__).resolve().parents[2]
BRATS = "brats_mri_mckd_segmentation"
AVMNIST = "avmnist_mckd_classification"

#: Overrides that shrink any BraTS training run (the paper configuration too) to a few seconds: the CPU network, 32^3
#: crops and windows, 4 iterations in 2 epochs of 2 (random subsets from iteration 3), a meta round before iterations
#: 1 and 4, validation and a periodic checkpoint after every epoch.
TINY_BRATS = (
    "--backbone light --amp False --crop_size [32,32,32] --sw_roi_size [32,32,32] --sw_overlap 0.25 --batch_size 1"
    " --num_workers 0 --cache_rate 1.0 --num_iterations 4 --epoch_length 2 --val_interval 1 --checkpoint_interval 1"
    " --warmup_iterations 2 --meta_interval 3 --meta_steps 1"
)
#: Inference or export with the tiny model: the network it was trained with and its window.
LIGHT_INFER = "--backbone light --sw_roi_size [32,32,32] --num_workers 0"
#: The same for an evaluation run (train.json + evaluate.json), which builds the training chain too.
LIGHT_EVAL = "--backbone light --crop_size [32,32,32] --sw_roi_size [32,32,32] --num_workers 0 --cache_rate 0"
#: The AV-MNIST training, one epoch.
TINY_AVMNIST = "--epochs 1 --num_workers 0"

NAMESPACE = {
    "TINY_BRATS": TINY_BRATS,
    "LIGHT_INFER": LIGHT_INFER,
    "LIGHT_EVAL": LIGHT_EVAL,
    "TINY_AVMNIST": TINY_AVMNIST,
}

#: Moved under the workspace in every command (absolute placeholders of the docs).
MOVED_PREFIXES = ("/data/", "/runs/", "/tmp/", "/path/to/")

SHAPE = (32, 32, 32)


def _unlabelled(root: Path, n: int, seed: int, flat: bool = False) -> Path:
    """``n`` BraTS 2018 cases without label maps under ``root`` (``flat``: case folders directly under it)."""
    written = root.parent / f".{root.name}_src"
    write_dataset(written, n, "brats2018", SHAPE, seed=seed)
    root.mkdir(parents=True, exist_ok=True)
    for seg in written.rglob("*_seg.nii.gz"):
        seg.unlink()
    for case in sorted(p.parent for p in written.rglob("*_flair.nii.gz")):
        shutil.move(str(case), str(root / case.name) if flat else str(root / case.relative_to(written)))
    shutil.rmtree(written)
    return root


def write_inputs(data: Path) -> None:
    """The data folders the docs name, as small synthetic BraTS 2018 cases (32^3 voxels)."""
    write_dataset(data / "MICCAI_BraTS_2018_Data_Training", 8, "brats2018", SHAPE, seed=0)
    write_dataset(data / "clinic_labelled", 6, "brats2018", SHAPE, seed=3)
    _unlabelled(data / "MICCAI_BraTS_2018_Data_Validation", 2, seed=1, flat=True)
    my_cases = _unlabelled(data / "my_cases", 2, seed=2, flat=True)
    next(my_cases.rglob("*_t1.nii.gz")).unlink()  # one case without T1: inference with a subset
    _unlabelled(data / "clinic", 1, seed=4, flat=True)
    _unlabelled(data / "brats", 1, seed=5, flat=True)


def make_workspace(path: Path) -> Path:
    """A folder that mirrors the repository root for the commands of one document."""
    path.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("models", "eval", "data", "__pycache__", "logs")
    for name in (BRATS, AVMNIST):
        shutil.copytree(REPO / "bundle" / name, path / "bundle" / name, ignore=ignore)
    shutil.copy2(REPO / "bundle" / "meta_schema_20240725.json", path / "bundle")
    (path / "benchmarks").symlink_to(REPO / "benchmarks")  # run from the root: not an installed package; read only
    write_inputs(path / "data")
    return path


def shell_env() -> dict[str, str]:
    """This interpreter's folder first on PATH, one torch thread, no warnings noise."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.update(OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore", MPLBACKEND="Agg")
    return env
