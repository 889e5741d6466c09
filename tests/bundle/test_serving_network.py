"""The inference network loads weights strictly whatever its caller asks (MONAI Label's stock app asks non-strict)."""

from __future__ import annotations

import pytest
import torch

from mckd.networks.segnet import MultiModalSegNet
from mckd.serving import StrictLoadingSegNet


def test_a_checkpoint_with_missing_or_unexpected_keys_fails_even_with_strict_false():
    network = StrictLoadingSegNet(backbone="light")
    state = network.state_dict()
    missing = dict(state)
    missing.pop("encoder.levels.0.conv.weight")
    with pytest.raises(RuntimeError, match=r"Missing key\(s\) in state_dict: \"encoder.levels.0.conv.weight\""):
        network.load_state_dict(missing, strict=False)
    with pytest.raises(RuntimeError, match=r"Unexpected key\(s\) in state_dict: \"extra\""):
        network.load_state_dict({**state, "extra": torch.zeros(1)}, strict=False)


def test_it_is_the_segmentation_network_with_the_same_weights_and_outputs_scripted_too():
    torch.manual_seed(0)
    plain = MultiModalSegNet(backbone="light").eval()
    strict = StrictLoadingSegNet(backbone="light").eval()
    strict.load_state_dict(plain.state_dict(), strict=False)
    x = torch.randn(1, 8, 32, 32, 32)
    x[:, 4:] = torch.tensor([1.0, 0.0, 1.0, 1.0]).view(1, 4, 1, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(strict(x), plain(x))
        torch.testing.assert_close(torch.jit.script(strict)(x), plain(x))
