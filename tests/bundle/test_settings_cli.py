"""Every user-facing setting is checked once, when a bundle run starts: a value the bundle cannot use ends the run
with exit status 2 and one line naming the setting, the value and what is accepted, before anything is written."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mckd.settings import SETTINGS, SettingValueError, check_settings, render_card, settings_table

BRATS_TRAIN = "['configs/train.json','configs/cpu_small.json']"
BRATS_INFER = "['configs/inference.json','configs/cpu_small.json']"
BRATS_EVAL = "['configs/train.json','configs/cpu_small.json','configs/evaluate.json']"
#: Config keys that are wiring, not settings: derived from the conventions, the run, or multi-GPU internals.
INTERNAL = {
    "imports",
    "num_modalities",
    "num_regions",
    "num_classes",
    "modality_names",
    "region_names",
    "is_not_rank0",
    "network",
    "network_def",
    "training",
    "dist_backend",
    "input_modalities",
    "initialize",
    "run",
    "finalize",
    "eval_list",
    "handlers",
    "+imports",
    "_desc_",
}

REFUSED = [
    (BRATS_TRAIN, "num_iterations", "abc", "an integer >= 1"),
    (BRATS_TRAIN, "batch_size", 0, "an integer >= 1"),
    (BRATS_TRAIN, "meta_interval", 0, "an integer >= 1"),
    (BRATS_TRAIN, "learning_rate", -0.1, "a number > 0"),
    (BRATS_TRAIN, "num_workers", -1, "an integer >= 0"),
    (BRATS_TRAIN, "device", "cuda", "CUDA is not available"),
    (BRATS_INFER, "threshold", 2, "a number > 0, < 1"),
    (BRATS_INFER, "save_probabilities", "no", "`True` or `False`"),
    (BRATS_INFER, "output_dir", "", "a non-empty text"),
    (BRATS_INFER, "output_convention", "brats2019", "one of `brats2018`"),
    (BRATS_INFER, "grid", "affine", "one of `same`, `resample`, `register`"),
    (BRATS_INFER, "sw_batch_size", 0, "an integer >= 1"),
    (BRATS_INFER, "sw_overlap", 1.0, "a number >= 0, < 1"),
    (BRATS_INFER, "sw_roi_size", [0, 0, 0], "3 integers >= 1"),
    (BRATS_INFER, "reference_modality", "T1Gd", "one of `auto`, `flair`"),
    (BRATS_EVAL, "report_order", "alphabetical", "one of `literature`, `evaluation`"),
]
#: One refusal per config set through ``python -m monai.bundle run`` itself (each run costs a process start).
THROUGH_THE_CLI = ["num_iterations", "device", "threshold", "save_probabilities", "output_dir", "report_order"]


@pytest.mark.parametrize("configs, key, value, accepted", REFUSED, ids=[f"{r[1]}={r[2]}" for r in REFUSED])
def test_a_refused_value_names_the_setting_the_value_and_what_is_accepted(configs, key, value, accepted):
    if key == "device" and __import__("torch").cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(SettingValueError, match=rf"^setting '{key}': {re.escape(repr(value))} is not accepted") as err:
        check_settings({key: value})
    assert accepted in str(err.value)


@pytest.mark.parametrize("key", THROUGH_THE_CLI)
def test_a_refused_setting_stops_the_run_at_start_in_one_line(bundle, tmp_path, key):
    configs, _, value, accepted = next(row for row in REFUSED if row[1] == key)
    if key == "device" and __import__("torch").cuda.is_available():
        pytest.skip("this machine has CUDA")
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", configs, "--bundle_root", str(tmp_path),
               f"--{key}", str(value)]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    result = subprocess.run(command, cwd=bundle.root, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    last = (result.stdout + result.stderr).strip().splitlines()[-1]
    assert f"setting '{key}'" in last and accepted in last, last
    assert "Traceback" not in result.stderr
    assert not any(tmp_path.iterdir())  # nothing written


def test_fire_spellings_of_valid_values_pass():
    check_settings(
        {
            "save_probabilities": True,
            "threshold": 0.4,
            "sw_roi_size": [32, 32, 32],
            "max_grad_norm": None,
            "device": "cpu",
            "output_dir": "out",
            "eval_list_key": None,
        }
    )


def test_expressions_and_references_are_left_to_monai():
    check_settings(
        {"device": "$torch.device('cuda:0')", "sw_roi_size": "@crop_size", "amp": "$torch.cuda.is_available()"}
    )


def test_a_boolean_typed_as_a_word_names_the_spelling_to_use():
    with pytest.raises(SettingValueError, match=r"'false' is not accepted; expected `True` or `False` \(fire reads"):
        check_settings({"save_probabilities": "false"})


def test_every_config_key_of_both_bundles_is_a_described_setting_or_internal_wiring(bundle):
    for config in sorted(Path(bundle.root).parent.glob("*/configs/*.json")):
        if config.name == "metadata.json":
            continue
        content = json.loads(config.read_text())
        settings = [k for k, v in content.items() if "#" not in k and not isinstance(v, dict)]
        undescribed = {k for k in settings if k not in SETTINGS and k not in INTERNAL}
        assert not undescribed, f"{config}: {sorted(undescribed)}"


def test_the_table_lists_each_setting_with_default_accepted_values_and_meaning(bundle):
    table = settings_table([bundle.configs / "inference.json"])
    assert "| `threshold` | `0.5` | a number > 0, < 1 | sigmoid threshold of each region channel |" in table
    assert "| `ckpt_path` | `bundle_root/models/model.pt` |" in table


@pytest.mark.parametrize("name", ["brats_mri_mckd_segmentation", "avmnist_mckd_classification"])
def test_the_model_cards_settings_tables_are_rendered_from_the_description(bundle, name):
    card = Path(bundle.root).parent / name / "docs" / "README.md"
    text, rendered = render_card(card)
    assert "<!-- settings: configs/train.json -->" in text
    assert text == rendered, f"run: python -m mckd.settings {card}"
