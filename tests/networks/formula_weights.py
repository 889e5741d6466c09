"""Weights and inputs defined by a formula, and the statistics recorded from a forward pass with them.

The rule is the one of ``../shared/reference/official_forward_fixture.md`` (its JSON's ``rule`` section is
normative): every state-dict entry gets a value computed from its name and flat index only, so outputs recorded
once (from the authors' network, or from ours before a refactoring) can be checked later without a weights file.
Any network can be filled this way; the official fixture uses it for ``resnet50_aspp``.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import nn

from mckd.networks import capture_features

__all__ = ["rule_tensor", "fill_by_rule", "fixture_input", "forward_records", "field_errors"]

FREQUENCY, MODULUS, GAIN, AMPLITUDE = 0.37, 997, math.sqrt(2.0), 0.1


def rule_tensor(name: str, shape: Sequence[int]) -> torch.Tensor:
    """The float32 value the rule gives the state-dict entry ``name`` of ``shape``."""
    numel = math.prod(shape)
    index = torch.arange(numel, dtype=torch.int64)
    quadratic = (index * index) % MODULUS
    phase = (sum(name.encode("utf-8")) % MODULUS) / MODULUS * 2 * math.pi
    t = torch.sin(FREQUENCY * index.double() + 2 * math.pi * quadratic.double() / MODULUS + phase)
    if len(shape) >= 2:
        value = GAIN * math.sqrt(2.0 / (numel / shape[0])) * t
    elif name.endswith("weight"):
        value = 1.0 + AMPLITUDE * t
    else:
        value = AMPLITUDE * t
    return value.float().reshape(list(shape))


def fill_by_rule(net: nn.Module) -> nn.Module:
    """Copy the rule's value into every state-dict entry of ``net`` (parameters and buffers); returns ``net``."""
    state = net.state_dict()
    net.load_state_dict({name: rule_tensor(name, list(t.shape)) for name, t in state.items()})
    return net


def fixture_input(shape: Sequence[int] = (2, 4, 32, 64, 64)) -> torch.Tensor:
    """``2 sin(0.11 d + 0.07 h (m + 1) + 0.05 w + 0.9 b + 0.3 m)``, zero outside the centred ellipsoid (float32).

    The ellipsoid's semi-axes are 7/16 of each spatial size: (14, 28, 28) for the fixture's 32 x 64 x 64.
    """
    b, m, d, h, w = (torch.arange(n, dtype=torch.float64) for n in shape)
    b, m, d, h, w = b[:, None, None, None, None], m[:, None, None, None], d[:, None, None], h[:, None], w
    x = 2 * torch.sin(0.11 * d + 0.07 * h * (m + 1) + 0.05 * w + 0.9 * b + 0.3 * m)
    centre = [(n - 1) / 2 for n in shape[2:]]
    radii = [7 * n / 16 for n in shape[2:]]
    inside = ((d - centre[0]) / radii[0]) ** 2 + ((h - centre[1]) / radii[1]) ** 2 + ((w - centre[2]) / radii[2]) ** 2
    return torch.where(inside <= 1, x, torch.zeros_like(x)).float()


def forward_records(
    net: nn.Module,
    x: torch.Tensor,
    available: torch.Tensor,
    positions: Sequence[Sequence[Sequence[int]]],
    feature_positions: Sequence[Sequence[int]],
) -> dict[str, Any]:
    """The fixture's six record fields of ``net(x, available)`` (logits and tapped per-modality features).

    Per sample, the features of its available modalities are listed in ascending modality order, in 8 channel groups.
    """
    with torch.no_grad(), capture_features(net) as captured:
        logits = net(x, available=available).double()
    assert captured.features is not None
    features = captured.features.double()
    present = [[int(m) for m in row.nonzero().flatten()] for row in available]
    batch = range(logits.shape[0])
    return {
        "logit_sum": logits.sum(dim=(2, 3, 4)).tolist(),
        "logit_sumsq": logits.square().sum(dim=(2, 3, 4)).tolist(),
        "logit_at_positions": [[logits[b, :, d, h, w].tolist() for d, h, w in positions[b]] for b in batch],
        "feature_group_sum": [[features[b, m].reshape(8, -1).sum(dim=1).tolist() for m in present[b]] for b in batch],
        "feature_group_sumsq": [
            [features[b, m].square().reshape(8, -1).sum(dim=1).tolist() for m in present[b]] for b in batch
        ],
        "feature_at_positions": [
            [[float(features[b, m, c, d, h, w]) for c, d, h, w in feature_positions] for m in present[b]]
            for b in batch
        ],
    }


def _flat(values: Any) -> list[float]:
    if isinstance(values, (list, tuple)):
        return [v for item in values for v in _flat(item)]
    return [float(values)]


def field_errors(ours: dict[str, Any], reference: dict[str, Any]) -> dict[str, float]:
    """Per field: ``max |ours - reference| / max |reference|`` (the fixture's comparison; fields may be ragged)."""
    errors = {}
    for field, expected in reference.items():
        ref = torch.tensor(_flat(expected), dtype=torch.float64)
        got = torch.tensor(_flat(ours[field]), dtype=torch.float64)
        assert got.shape == ref.shape, f"{field}: {got.numel()} values, the record has {ref.numel()}"
        errors[field] = float((got - ref).abs().max() / ref.abs().max())
    return errors
