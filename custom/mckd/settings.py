"""The one typed description of every user-facing setting of both bundles: checked at start, rendered in the docs.

Each entry of :data:`SETTINGS` is a JSON Schema (validated with ``jsonschema``, which MONAI already depends on) and a
meaning. :func:`check_settings` runs from :func:`mckd.bundle_checks.check_command_line`, the first entry of every
bundle config's ``initialize`` list, on the merged configs and command-line overrides of a
``python -m monai.bundle run``: the first setting whose value the schema refuses ends the run before anything is
read or written (exit status 2, one line naming the setting, the value and what is accepted). A config expression
(``$...``) or reference (``@...``) is resolved later by MONAI and is not checked here.

:func:`settings_table` renders the same description as the Markdown tables of the model cards (``python -m
mckd.settings`` rewrites the marked tables of a card; the docs test checks they are current), so what the docs say is
accepted is what the check accepts.

Booleans: ``fire`` (MONAI's command line) parses ``True``/``False``; ``true``/``false``/``no`` arrive as strings,
which a config would treat as true, so they are refused with the spelling to use.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema

from mckd.brats.alignment import GRID_MODES
from mckd.brats.conventions import LABEL_CONVENTIONS, MODALITIES
from mckd.networks.segnet import BACKBONES
from mckd.fileio import write_text_atomic
from mckd.scoring import SCORING_CONVENTIONS

__all__ = [
    "Setting",
    "SETTINGS",
    "SettingValueError",
    "check_settings",
    "describe",
    "settings_table",
    "render_card",
    "main",
]

logger = logging.getLogger(__name__)

_INT = {"type": "integer"}
_BOOL = {"type": "boolean"}
_PATH = {"type": "string", "minLength": 1}
_WINDOW = {"type": "array", "items": {"type": "integer", "minimum": 1}, "minItems": 3, "maxItems": 3}


def _int(minimum: int) -> dict[str, Any]:
    return {**_INT, "minimum": minimum}


def _positive() -> dict[str, Any]:
    return {"type": "number", "exclusiveMinimum": 0}


def _choices(*values: Any) -> dict[str, Any]:
    return {"enum": list(values)}


def _optional(schema: Mapping[str, Any]) -> dict[str, Any]:
    return {"anyOf": [{"type": "null"}, dict(schema)]}


@dataclass(frozen=True)
class Setting:
    """One user-facing setting.

    Attributes:
        schema: the JSON Schema its value must satisfy.
        meaning: what it does, for the docs.
        default_text: how the docs show a default that is a config expression (e.g. the device).
    """

    schema: Mapping[str, Any]
    meaning: str
    default_text: str | None = None


_DEVICE = "`cuda:0` if CUDA is available, else `cpu`"

#: Every user-facing setting of both bundles' configs, by key (a key shared by configs means the same in each).
SETTINGS: Mapping[str, Setting] = {
    # paths
    "bundle_root": Setting(_PATH, "the run's folder (checkpoints in `models/`, logs and reports in `eval/`)"),
    "ckpt_dir": Setting(_PATH, "checkpoints and the deployable `model.pt`", "`bundle_root/models`"),
    "output_dir": Setting(_PATH, "logs, TensorBoard events and reports (inference: the predictions' folder)"),
    "dataset_dir": Setting(_PATH, "the data: the datalist's folder (training, evaluation) or the cases (inference)"),
    "data_list_file_path": Setting(
        _PATH, "the datalist JSON (paths in it relative to its folder)", "`dataset_dir/datalist.json`"
    ),
    "ckpt_path": Setting(_PATH, "the network's weights (the plain state dict training writes)", "`models/model.pt`"),
    "checkpoint_path": Setting(
        _PATH, "the network's weights (the plain state dict training writes)", "`models/model.pt`"
    ),
    "importance_path": Setting(
        _PATH, "the learned importance written beside `model.pt`", "`models/modality_weights.pt`"
    ),
    "resume_checkpoint": Setting({"type": "string"}, 'a training checkpoint to resume from (`""`: start anew)'),
    # hardware
    "device": Setting(
        {"type": "string", "pattern": r"^(cpu|cuda(:\d+)?)$"},
        "`cpu`, `cuda` or `cuda:N` (CUDA must be present)",
        _DEVICE,
    ),
    "amp": Setting(_BOOL, "mixed precision (autocast)", "on with CUDA"),
    "amp_dtype": Setting(
        {"type": "string"},
        'autocast type (`--amp True` on a CPU autocasts to `bfloat16`; `benchmarks/RESULTS.md`, "Inference options")',
        "`float16` with CUDA, else `bfloat16`",
    ),
    "compile": Setting(_BOOL, "`torch.compile` the network (no gain on the benchmark's CPU: `benchmarks/RESULTS.md`)"),
    "num_workers": Setting(_int(0), "data-loader worker processes"),
    "cache_rate": Setting(
        {"type": "number", "minimum": 0, "maximum": 1},
        "share of training cases cached after the deterministic transforms",
    ),
    "seed": Setting(_int(0), "`set_determinism`, the importance initialisation and the availability draw"),
    # network
    "backbone": Setting(
        _choices(*BACKBONES),
        "`resnet50_aspp`: the published 3D ResNet-50 (weight-standardised convolutions, instance "
        "norm, LeakyReLU) + ASPP, 43.7 M parameters; `light`: the CPU network; inference must match "
        "the training",
    ),
    "paper_exact": Setting(_BOOL, "the published forward (missing inputs zero-filled and encoded, skips not filled)"),
    "feature_size": Setting(_int(1), "size of each modality's feature"),
    "hidden_size": Setting(_int(1), "hidden units of the classifier"),
    # training
    "crop_size": Setting(_WINDOW, "D, H, W of training crops (and of the validation window)"),
    "batch_size": Setting(_int(1), "samples per iteration"),
    "num_iterations": Setting(_int(1), "training iterations (the published 115k: 80k warm-up + 35k random subsets)"),
    "epoch_length": Setting(
        _int(1), "iterations per ignite epoch: the unit of `val_interval`, `checkpoint_interval` and logging"
    ),
    "epochs": Setting(_int(1), "training epochs"),
    "val_interval": Setting(_int(1), "epochs between validations (skipped when the validation list is empty)"),
    "val_list_key": Setting(
        {"type": "string", "minLength": 1},
        "the datalist list that validates and selects `model.pt` (absent or empty: none)",
    ),
    "checkpoint_interval": Setting(_int(1), "epochs between training checkpoints"),
    "learning_rate": Setting(_positive(), "the network's learning rate"),
    "momentum": Setting(
        {"type": "number", "minimum": 0, "exclusiveMaximum": 1}, "SGD momentum (Nesterov, no weight decay)"
    ),
    "lr_power": Setting({"type": "number", "minimum": 0}, "power of the `PolynomialLR` decay, stepped per iteration"),
    "weight_decay": Setting({"type": "number", "minimum": 0}, "the network optimiser's weight decay"),
    "warmup_iterations": Setting(_int(0), "iterations with every modality before random subsets"),
    "min_keep": Setting(_int(1), "after the warm-up, k ~ U{`min_keep`..M} modalities are kept"),
    "per_sample_dropout": Setting(_BOOL, "draw the kept modalities per sample (`False`: per batch, as published)"),
    "kd_weight": Setting({"type": "number", "minimum": 0}, "weight λ of the distillation loss"),
    "kd_distance": Setting(_choices("l1", "l2", "mse"), "distance of the distillation loss"),
    "divergence_factor": Setting(
        {"type": "number", "exclusiveMinimum": 1},
        "training stops (one message, no final model) when the loss is not finite or exceeds this "
        "many times its starting level",
    ),
    "max_grad_norm": Setting(_optional(_positive()), "gradient-norm clipping (`None`: off; the CPU overlay sets 12)"),
    "meta_interval": Setting(_int(1), "iterations between meta-updates of the importance"),
    "meta_steps": Setting(_int(1), "Adam steps on the importance per meta-update"),
    "meta_batch_size": Setting(_int(1), "meta-validation samples per step"),
    "meta_learning_rate": Setting(_positive(), "Adam learning rate of the importance"),
    "meta_weight_decay": Setting({"type": "number", "minimum": 0}, "Adam weight decay of the importance"),
    # sliding window
    "sw_roi_size": Setting(_WINDOW, "sliding window D, H, W (multiples of the network's stride)", "`crop_size`"),
    "sw_batch_size": Setting(_int(1), "windows per forward pass"),
    "sw_overlap": Setting({"type": "number", "minimum": 0, "exclusiveMaximum": 1}, "overlap of adjacent windows"),
    "sw_mode": Setting(_choices("gaussian", "constant"), "blending of overlapping windows"),
    # evaluation
    "eval_list_key": Setting(
        _optional({"type": "string", "minLength": 1}),
        "the datalist list to score (`None`: `testing`, else `validation`, fully labelled)",
    ),
    "eval_subsets": Setting({}, "the modality subsets to score (`None`: all 15; forms in the model card)"),
    "threshold": Setting(
        {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1}, "sigmoid threshold of each region channel"
    ),
    "et_min_size": Setting(_int(0), "predicted ET below this many voxels becomes necrotic core (0: off)"),
    "report_order": Setting(
        _choices("literature", "evaluation"),
        "row order of the report: the missing-modality papers' order, or the evaluator's",
    ),
    "scoring_convention": Setting(
        _choices(*SCORING_CONVENTIONS), 'Dice and HD95 of empty regions (model card, "Scoring conventions")'
    ),
    "lesion_wise": Setting(_BOOL, "also the official package's lesion-wise metrics (`brats-eval` extra)"),
    "protocol": Setting(
        _optional({"type": "string", "minLength": 1}), "a published protocol: the report adds the peers' numbers for it"
    ),
    "eval_split": Setting(_choices("training", "meta_validation", "test"), "the AV-MNIST split to score"),
    "eval_batch_size": Setting(_int(1), "samples per evaluation batch"),
    # inference
    "output_convention": Setting(
        _choices(*LABEL_CONVENTIONS),
        "labels of the written map: `brats2018` (1 necrotic/non-enhancing core, 2 oedema, 4 ET), "
        "`brats2023` (1/2/3), `brats2024` (1/2/3, 4 resection cavity; a four-output model), `msd` "
        "(1 oedema, 2 non-enhancing tumour, 3 enhancing tumour)",
    ),
    "save_probabilities": Setting(_BOOL, "also write `<case>_prob.nii.gz` (the region probabilities)"),
    "grid": Setting(
        _choices(*GRID_MODES),
        "modalities on different grids: `resample` onto the reference, `register` rigidly first, "
        "`same` requires one grid",
    ),
    "reference_modality": Setting(
        _choices("auto", *MODALITIES), "the grid the others are brought onto (`auto`: the finest)"
    ),
    "save_native_grids": Setting(_BOOL, "also write the prediction on every input's own grid"),
    "inference_split": Setting(_choices("training", "meta_validation", "test"), "the AV-MNIST split to predict"),
    "load_pretrain": Setting(_BOOL, "load `models/model.pt` before predicting"),
    "image_intensity_range": Setting(
        {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2},
        "the digit image's intensity range (low, high), mapped onto `image_output_range`",
    ),
    "image_output_range": Setting(
        {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2},
        "the network's input range for the digit image (low, high)",
    ),
}


class SettingValueError(ValueError):
    """A setting has a value the bundle cannot use; the message names the setting, the value and what is accepted."""


def describe(schema: Mapping[str, Any]) -> str:
    """What ``schema`` accepts, in words (e.g. ``an integer >= 1``)."""
    if "anyOf" in schema:
        return " or ".join(describe(option) for option in schema["anyOf"])
    if "enum" in schema:
        return "one of " + ", ".join(f"`{value}`" for value in schema["enum"])
    kind = schema.get("type")
    if kind is None:
        return "see the model card"
    if kind == "null":
        return "`None`"
    if kind == "boolean":
        return "`True` or `False`"
    if kind == "array":
        items = schema["items"]
        plural = {"integer": "integers", "number": "numbers", "string": "texts"}[items["type"]]
        return " ".join([f"{schema['minItems']} {plural}", _bounds(items)]).strip()
    words = {
        "integer": "an integer",
        "number": "a number",
        "string": "a non-empty text" if schema.get("minLength") else "a text",
    }[kind]
    return " ".join([words, _bounds(schema)]).strip()


def _bounds(schema: Mapping[str, Any]) -> str:
    """The numeric bounds and pattern of ``schema`` in words (e.g. ``>= 0, < 1``)."""
    bounds = [
        f"{sign} {schema[key]:g}"
        for key, sign in (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="), ("exclusiveMaximum", "<"))
        if key in schema
    ]
    if "pattern" in schema:
        bounds.append(f"matching `{schema['pattern']}`")
    return ", ".join(bounds)


def _device_available(value: str) -> str:
    """Why ``value`` cannot be used here ('' when it can)."""
    if not value.startswith("cuda"):
        return ""
    import torch

    if not torch.cuda.is_available():
        return "CUDA is not available on this machine; use `cpu`"
    index = int(value.partition(":")[2] or 0)
    count = torch.cuda.device_count()
    return f"this machine has {count} CUDA device(s)" if index >= count else ""


def _is_expression(value: Any) -> bool:
    return isinstance(value, str) and value[:1] in ("$", "@", "%")


def check_settings(values: Mapping[str, Any]) -> None:
    """Check every known setting of ``values`` (a merged config with its overrides) against :data:`SETTINGS`.

    Raises:
        SettingValueError: for the first refused setting: ``setting 'KEY': VALUE is not accepted: expected ...``.
    """
    for key, setting in SETTINGS.items():
        if key not in values or _is_expression(values[key]):
            continue
        value = values[key]
        try:
            jsonschema.validate(value, setting.schema)
        except jsonschema.ValidationError:
            hint = ""
            if setting.schema.get("type") == "boolean" and isinstance(value, str):
                hint = " (fire reads `True` / `False`; other words arrive as text)"
            raise SettingValueError(
                f"setting '{key}': {value!r} is not accepted; expected {describe(setting.schema)}{hint}."
            ) from None
        reason = _device_available(value) if key == "device" else ""
        if reason:
            raise SettingValueError(f"setting 'device': {value!r} is not accepted: {reason}.")


#: ``$@bundle_root + '/models'``: a folder below another setting, shown as ``bundle_root/models``.
_BELOW = re.compile(r"^\$@(\w+) \+ '(.*)'$")


def _default(key: str, config: Mapping[str, Any]) -> str:
    """The default of ``key`` in ``config`` as the docs show it."""
    value = config.get(key)
    if _is_expression(value):
        below = _BELOW.match(value)
        if below:
            return f"`{below[1]}{below[2]}`"
        return SETTINGS[key].default_text or f"`{value}`"
    if isinstance(value, str):
        return f"`{value}`" if value else '`""`'
    if isinstance(value, (bool, type(None))) or not isinstance(value, (list, dict)):
        return f"`{value}`"
    return f"`{json.dumps(value)}`"


def settings_table(config_files: Sequence[str | Path]) -> str:
    """A Markdown table (key, default, accepted, meaning) of the user-facing settings the merged ``config_files``
    define, in the order they appear."""
    config: dict[str, Any] = {}
    for path in config_files:
        config.update(json.loads(Path(path).read_text(encoding="utf-8")))
    rows = ["| key | default | accepted | meaning |", "|---|---|---|---|"]
    for key in config:
        if key in SETTINGS:
            setting = SETTINGS[key]
            rows.append(f"| `{key}` | {_default(key, config)} | {describe(setting.schema)} | {setting.meaning} |")
    return "\n".join(rows) + "\n"


#: ``<!-- settings: configs/train.json configs/cpu_small.json -->`` ... ``<!-- /settings -->`` in a model card.
_MARKED = re.compile(r"(<!-- settings: (?P<files>[^>]+?) -->\n)(?P<table>.*?)(<!-- /settings -->)", re.DOTALL)


def render_card(card: str | Path) -> tuple[str, str]:
    """The text of the model card ``card`` and the same text with every marked settings table rendered anew (the
    config files of a marker are relative to the card's bundle, the folder above ``docs/``)."""
    card = Path(card)
    bundle = card.resolve().parent.parent
    text = card.read_text(encoding="utf-8")

    def _render(match: re.Match) -> str:
        files = [bundle / name for name in match["files"].split()]
        return match.group(1) + settings_table(files) + match.group(4)

    return text, _MARKED.sub(_render, text)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mckd.settings CARD [CARD ...]``: rewrite the marked settings tables of model cards."""
    parser = argparse.ArgumentParser(prog="python -m mckd.settings", description=main.__doc__)
    parser.add_argument("cards", nargs="+", type=Path, help="model cards (bundle/<name>/docs/README.md)")
    args = parser.parse_args(argv)
    for card in args.cards:
        old, new = render_card(card)
        if new != old:
            write_text_atomic(card, new)
            logger.info("updated %s", card)
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sys.exit(main())
