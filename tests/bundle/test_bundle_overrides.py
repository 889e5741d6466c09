"""Command-line overrides mean what the docs say: unknown keys stop the run, ``eval_subsets`` forms, datalist items.

Through ``python -m monai.bundle run`` (``run``, ``run training``, ``--config_file`` lists, ``--args_file``); the
parsing rules themselves are checked in-process.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from monai.bundle import ConfigParser, ConfigWorkflow

from mckd.brats.datalist import DatalistError, load_datalist
from mckd.bundle_checks import SettingError, parse_subsets, unknown_overrides

TRAIN = "['configs/train.json','configs/cpu_small.json']"
NAMES = ["FLAIR", "T1", "T1ce", "T2"]


def _run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def _small(bundle, brats_data, root: Path, **extra) -> list[str]:
    values = {**bundle.small_run, "bundle_root": str(root), "data_list_file_path": str(brats_data.datalist), **extra}
    return [token for key, value in values.items() for token in (f"--{key}", str(value).replace(" ", ""))]


@pytest.mark.parametrize("form", ["run", "run training", "args_file", "inference"])
def test_an_unknown_override_key_stops_the_run_naming_the_key_and_the_close_match(bundle, brats_data, tmp_path, form):
    base = [sys.executable, "-m", "monai.bundle", "run"]
    if form == "inference":
        command = base + ["--config_file", "configs/inference.json", "--dataset_dir", str(brats_data.root / "cases")]
        command += ["--output_dir", str(tmp_path / "out"), "--output_convension", "brats2023"]
        typo, match = "output_convension", "output_convention"
    elif form == "args_file":
        args = tmp_path / "args.json"
        args.write_text(json.dumps({"config_file": ["configs/train.json", "configs/cpu_small.json"],
                                    "lerning_rate": 0.1}))
        command = base + ["--args_file", str(args)] + _small(bundle, brats_data, tmp_path)
        typo, match = "lerning_rate", "learning_rate"
    else:
        command = base + (["training"] if form == "run training" else []) + ["--config_file", TRAIN]
        command += _small(bundle, brats_data, tmp_path, **{"val_intervall": 2})
        typo, match = "val_intervall", "val_interval"

    result = _run(command, bundle.root)

    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-3000:]
    assert f"unknown override '--{typo}'" in output and f"did you mean '--{match}'" in output
    assert "Traceback" not in output and not (tmp_path / "models").exists() and not (tmp_path / "out").exists()


def test_override_keys_are_known_when_an_entry_or_an_existing_component_defines_them(bundle):
    config = ConfigParser(ConfigParser.load_config_files(bundle.config_files("train.json", "multi_gpu_train.json")))
    known = ["learning_rate", "train#handlers#3#_disabled_", "network_def#activation_checkpointing", "_meta_#version",
             "train#checkpoint_saver#_target_"]
    unknown = unknown_overrides(config, [*known, "lerning_rate", "train#handlers#9#x", "network_deff#backbone"])
    assert unknown == {
        "lerning_rate": "; did you mean '--learning_rate' or '--meta_learning_rate'?",
        "train#handlers#9#x": "",
        "network_deff#backbone": "; did you mean '--network_def#backbone' or '--network#backbone'?",
    }


@pytest.mark.parametrize(
    "value, subsets",
    [
        (None, None),
        ("null", None),
        ([["true", "false", "true", "false"]], [(True, False, True, False)]),  # what fire makes of the model card's
        ("[[true,false,true,false]]", [(True, False, True, False)]),  # JSON text
        ([[True, False, False, True], [0, 1, 0, 0]], [(True, False, False, True), (False, True, False, False)]),
        ([["flair", "T1ce"], ["T2"]], [(True, False, True, False), (False, False, False, True)]),
        (["FLAIR+T1ce"], [(True, False, True, False)]),
    ],
)
def test_documented_eval_subsets_forms_are_parsed(value, subsets):
    assert parse_subsets(value, NAMES) == subsets


@pytest.mark.parametrize(
    "value, message",
    [
        ([["true", "false"]], "subset 0 (['true', 'false']) cannot be used: it has 2 entries, expected one per"),
        ([["yes", "no", "no", "no"]], "unknown modality name(s) yes, no, no, no"),
        ("[FLAIR+T1ce,T2]", "is not a list of modality subsets"),
        ([[False, False, False, False]], "selects no modality"),
        ([[1, 0, 2, 0]], "2 is neither true/false nor a modality name"),
        ([["T2"], ["t2"]], "subset 1 (['t2']) is listed twice"),
        (3, "is not a non-empty list"),
    ],
)
def test_other_eval_subsets_values_are_refused_with_the_accepted_forms(value, message):
    with pytest.raises(SettingError) as caught:
        parse_subsets(value, NAMES)
    assert message in str(caught.value)
    assert "is listed twice" in message or "[[true,false,true,false]] (one boolean per modality" in str(caught.value)


@pytest.fixture(scope="module")
def trained(bundle, brats_data, tmp_path_factory) -> Path:
    """A 2-iteration CPU training (in-process) with a validation, so that ``models/model.pt`` exists."""
    root = tmp_path_factory.mktemp("overrides_run")
    workflow = ConfigWorkflow(
        config_file=bundle.config_files("train.json", "cpu_small.json"), workflow_type="train", logging_file=False,
        bundle_root=str(root), data_list_file_path=str(brats_data.datalist),
        **dict(bundle.small_run, num_iterations=2),
    )
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    assert (root / "models" / "model.pt").is_file()
    return root


def _evaluate(bundle, brats_data, root: Path, subsets: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file",
               "['configs/train.json','configs/cpu_small.json','configs/evaluate.json']", "--eval_subsets", subsets]
    return _run(command + _small(bundle, brats_data, root), bundle.root)


def test_the_model_card_eval_subsets_form_evaluates_only_that_subset(bundle, brats_data, trained):
    result = _evaluate(bundle, brats_data, trained, "[[true,false,true,false]]")

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (summary,) = (trained / "eval").glob("*_summary.csv")
    with open(summary) as handle:
        subsets = {row["subset"] for row in csv.DictReader(handle)}
    assert {s for s in subsets if "mean" not in s.lower()} == {"FLAIR+T1ce"}


def test_a_malformed_eval_subsets_value_stops_the_evaluation_with_the_accepted_forms(bundle, brats_data, trained):
    result = _evaluate(bundle, brats_data, trained, "[[true,false]]")

    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("SettingError: eval_subsets: subset 0 (['true', 'false']) cannot be used: it has 2 entries")


def _bad_datalist(brats_data, tmp_path: Path, change: str) -> Path:
    lists = json.loads(brats_data.datalist.read_text())
    item = lists["training"][1]
    if change == "no label":
        del item["label"]
    else:
        item["available"] = ["yes", True, True, True]
    path = brats_data.datalist.parent / f"{tmp_path.name}.json"  # beside the original: its relative paths hold
    path.write_text(json.dumps(lists))
    return path


@pytest.mark.parametrize("change, problem", [
    ("no label", "has no 'label' (training and evaluation lists need a label map per case)"),
    ("malformed available", "has 'available': ['yes', True, True, True]; it must be a list of 4 booleans (true / "
                            "false)"),
])
def test_a_training_item_without_label_or_with_malformed_available_is_named_at_start(
    bundle, brats_data, tmp_path, change, problem
):
    datalist = _bad_datalist(brats_data, tmp_path, change)
    case = json.loads(datalist.read_text())["training"][1].get("case_id")
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", TRAIN]
    command += _small(bundle, brats_data, tmp_path, data_list_file_path=str(datalist))

    result = _run(command, bundle.root)

    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last == f"DatalistError: datalist '{datalist}': 'training': item 1 (case '{case}') {problem}."
    assert "Epoch: 1/" not in result.stdout  # before the first iteration


def test_unlabelled_lists_and_well_formed_items_pass_the_item_checks(tmp_path):
    def datalist(*items: dict) -> Path:
        path = tmp_path / "d.json"
        path.write_text(json.dumps({"testing": list(items), "training": list(items)}))
        return path

    item = {"image": ["a", "b", "c", "d"], "available": [True, False, True, True], "case_id": "x"}
    path = datalist(item)
    assert load_datalist(path, "testing", num_modalities=4, check_files=False)[0]["case_id"] == "x"
    with pytest.raises(DatalistError, match=r"item 0 \(case 'x'\) has no 'label'"):
        load_datalist(path, "training", require_label=True, num_modalities=4, check_files=False)
    with pytest.raises(DatalistError, match="lists 2 image files, expected one per modality"):
        load_datalist(datalist({"image": ["a", "b"], "label": "l"}), num_modalities=4, check_files=False)
    with pytest.raises(DatalistError, match="false for every modality"):
        load_datalist(datalist({"image": "4d.nii.gz", "label": "l", "available": [False] * 4}), num_modalities=4)
