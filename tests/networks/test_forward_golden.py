"""Refactorings and speed-ups of the networks leave their outputs where they were: recorded forwards, formula weights.

``forward_golden.json`` holds statistics of forwards of the light and ``resnet50_aspp`` networks, filled by the weight
formula of :mod:`tests.networks.formula_weights`, for availability masks that take every code path: all present
(no gather), one subset for the whole batch (one folded skip projection) and a different subset per sample. The
official fixture (``test_official_forward.py``) covers the published forward; this file covers what it cannot: the
default network with missing modalities and the light backbone. The small networks run in float64 and must match to
1e-9 of each field's range; the full ``resnet50_aspp`` runs in float32 at the official fixture's float32 tolerances.

The records were written before the skip decoder and the availability plan were refactored. Rewrite them only for
an intended change of the forward: ``python -m tests.networks.test_forward_golden``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Callable

import pytest
import torch

from mckd.networks import MultiModalSegNet
from tests.networks.formula_weights import field_errors, fill_by_rule, fixture_input, forward_records

GOLDEN = Path(__file__).with_name("forward_golden.json")
FIELDS = ("logit_sum", "logit_sumsq", "logit_at_positions", "feature_group_sum")
SMALL_RESNET = {"layers": (1, 1, 1, 1), "widths": (8, 8, 8, 16), "feature_channels": 32}
MASKS = {
    "all": [[True] * 4] * 2,
    "one_subset": [[True, True, True, False]] * 2,
    "per_sample": [[True, True, True, True], [False, False, True, False], [True, False, False, True]],
}
#: name -> (backbone, paper_exact, backbone options, spatial size, dtype, masks)
SPECS: dict[str, tuple[str, bool, dict[str, Any], tuple[int, ...], torch.dtype, tuple[str, ...]]] = {
    "light default": ("light", False, {}, (32, 32, 32), torch.float64, tuple(MASKS)),
    "light paper_exact": ("light", True, {}, (32, 32, 32), torch.float64, tuple(MASKS)),
    "small resnet50_aspp default": ("resnet50_aspp", False, SMALL_RESNET, (32, 64, 64), torch.float64, tuple(MASKS)),
    "small resnet50_aspp paper_exact": (
        "resnet50_aspp", True, SMALL_RESNET, (32, 64, 64), torch.float64, ("per_sample",)
    ),
    "resnet50_aspp default": ("resnet50_aspp", False, {}, (32, 64, 64), torch.float32, ("per_sample",)),
}
FLOAT32_TOLERANCE = {"logit_sum": 2e-4, "logit_sumsq": 2e-4, "logit_at_positions": 5e-3, "feature_group_sum": 3e-4}


def _records(spec: str, change: Callable[[MultiModalSegNet], None] | None = None) -> dict[str, dict[str, Any]]:
    backbone, paper_exact, options, size, dtype, masks = SPECS[spec]
    net = fill_by_rule(MultiModalSegNet(4, 3, backbone=backbone, paper_exact=paper_exact, **options).eval()).to(dtype)
    if change is not None:
        change(net)
    generator = torch.Generator().manual_seed(0)
    records = {}
    for name in masks:
        available = torch.tensor(MASKS[name], dtype=torch.bool)
        x = fixture_input((len(available), 4, *size)).to(dtype)
        positions = [[[int(torch.randint(n, (1,), generator=generator)) for n in size] for _ in range(4)]] * len(x)
        out = forward_records(net, x, available, positions, [[0, 0, 0, 0]])
        records[name] = {"positions": positions[0], **{field: out[field] for field in FIELDS}}
    return records


@pytest.fixture(scope="module")
def golden() -> dict[str, Any]:
    return json.loads(GOLDEN.read_text(encoding="utf-8"))


@pytest.mark.parametrize("spec", list(SPECS))
def test_forward_matches_the_recorded_outputs(golden: dict[str, Any], spec: str) -> None:
    tolerance = FLOAT32_TOLERANCE if SPECS[spec][4] == torch.float32 else dict.fromkeys(FIELDS, 1e-9)
    ours = _records(spec)
    assert set(ours) == set(golden[spec])
    for mask, recorded in golden[spec].items():
        assert ours[mask]["positions"] == recorded["positions"]
        errors = field_errors(ours[mask], {f: recorded[f] for f in FIELDS})
        failed = {f: f"{e:.2e}" for f, e in errors.items() if e > tolerance[f]}
        assert not failed, f"{spec}, mask {mask}: {failed}"


def test_a_change_of_one_part_per_million_is_caught(golden: dict[str, Any]) -> None:
    """The float64 records see one decoder norm bias moved by 1e-6: the comparison can fail."""

    def nudge(net: MultiModalSegNet) -> None:
        with torch.no_grad():
            net.decoder.stages[-1].project.adn.N.bias.add_(1e-6)

    ours = _records("light default", nudge)["per_sample"]
    errors = field_errors(ours, {f: golden["light default"]["per_sample"][f] for f in FIELDS})
    assert max(errors.values()) > 1e-8


def _round(values: Any) -> Any:
    if isinstance(values, dict):
        return {k: _round(v) for k, v in values.items()}
    if isinstance(values, list):
        return [_round(v) for v in values]
    return float(f"{values:.12g}") if isinstance(values, float) else values


if __name__ == "__main__":
    torch.set_num_threads(2)
    GOLDEN.write_text(json.dumps({s: _round(_records(s)) for s in SPECS}, separators=(",", ":")) + "\n")
    sys.exit(0)
