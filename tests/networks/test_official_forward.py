"""``resnet50_aspp`` computes the authors' forward: outputs recorded from the official network under a weight formula.

The fixture (``official_forward_fixture.json``, explained in ``official_forward_fixture.md``) lives in the shared
reference folder beside the checkout (``../shared/reference``); ``MCKD_OFFICIAL_FIXTURE`` can point elsewhere. It holds
logit and bottleneck-feature statistics of the official ``DualNet`` for 5 availability cases, with every parameter
given by a closed-form rule of our state-dict names (:mod:`tests.networks.formula_weights`). ``paper_exact=True`` must
match every case; the default network (missing modalities not encoded, skips mean-filled) only the all-four case.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch

from mckd.networks import MultiModalSegNet
from tests.networks.formula_weights import field_errors, fill_by_rule, fixture_input, forward_records

FIXTURE = Path(__file__).resolve().parents[3] / "shared" / "reference" / "official_forward_fixture.json"


@pytest.fixture(scope="module")
def fixture() -> dict[str, Any]:
    path = Path(os.environ.get("MCKD_OFFICIAL_FIXTURE", FIXTURE))
    if not path.is_file():
        pytest.fail(f"official forward fixture not found at {path} (set MCKD_OFFICIAL_FIXTURE to its path).")
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def nets(fixture: dict[str, Any]) -> dict[bool, MultiModalSegNet]:
    """Both modes filled by the rule; the state-dict names are the ones the fixture's rule was recorded with."""
    paper = MultiModalSegNet(4, 3, backbone="resnet50_aspp", paper_exact=True).eval()
    state = paper.state_dict()
    assert len(state) == fixture["configuration"]["ours"]["state_dict_tensors"]
    assert sum(t.numel() for t in state.values()) == fixture["configuration"]["ours"]["state_dict_numel"]
    fill_by_rule(paper)
    default = MultiModalSegNet(4, 3, backbone="resnet50_aspp").eval()
    default.load_state_dict(paper.state_dict())
    built = {True: paper, False: default}
    return built


def _check(
    fixture: dict[str, Any], net: MultiModalSegNet, case: dict[str, Any], precision: str, x: torch.Tensor
) -> None:
    mask = torch.tensor([case["ours_available_mask_row"]] * x.shape[0], dtype=torch.bool)
    ours = forward_records(net, x, mask, fixture["positions"], fixture["feature_positions"])
    errors = field_errors(ours, fixture[f"records_{precision}"][case["name"]])
    tolerances = fixture["tolerances"][precision]
    failed = {field: f"{err:.2e} > {tolerances[field]:.0e}" for field, err in errors.items() if err > tolerances[field]}
    assert not failed, f"{case['name']} ({precision}): {failed}"


def _cases(fixture: dict[str, Any], paper_exact: bool, names: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """The cases a mode must match (``names`` narrows them further)."""
    cases = fixture["cases"] if paper_exact else [c for c in fixture["cases"] if c["name"] == "all_four"]
    return [c for c in cases if not names or c["name"] in names]


@pytest.mark.parametrize("paper_exact", [True, False], ids=["paper_exact", "default"])
def test_resnet50_aspp_matches_the_official_forward_in_float32(
    fixture: dict[str, Any], nets: dict[bool, MultiModalSegNet], paper_exact: bool
) -> None:
    x = fixture_input()
    for case in _cases(fixture, paper_exact):
        _check(fixture, nets[paper_exact], case, "float32", x)


@pytest.mark.parametrize("paper_exact", [True, False], ids=["paper_exact", "default"])
def test_resnet50_aspp_matches_the_official_forward_in_float64(
    fixture: dict[str, Any], nets: dict[bool, MultiModalSegNet], paper_exact: bool
) -> None:
    """The strict check (1e-9 of each field's range): sees eps and slope changes that float32 cannot.

    All four and one single modality (about 15 s each on two threads); float32 covers the other cases.
    """
    x = fixture_input().double()
    net = nets[paper_exact].double()
    try:
        for case in _cases(fixture, paper_exact, ("all_four", "t1ce_only")):
            _check(fixture, net, case, "float64", x)
    finally:
        net.float()


def test_the_comparison_fails_on_a_one_tensor_change(
    fixture: dict[str, Any], nets: dict[bool, MultiModalSegNet]
) -> None:
    """The records see a single re-drawn norm bias deep in the decoder (the fixture's own sensitivity check)."""
    net = nets[True]
    bias = net.decoder.stages[3].refine.conv2[1].bias
    saved = bias.detach().clone()
    try:
        with torch.no_grad():
            bias.copy_(saved.roll(1))
        with pytest.raises(AssertionError, match="all_four"):
            _check(fixture, net, fixture["cases"][0], "float32", fixture_input())
    finally:
        with torch.no_grad():
            bias.copy_(saved)
