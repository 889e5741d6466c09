"""MultiModalSegNet: any modality subset, never-read missing inputs, single-tensor path, scripting, KD features."""

from __future__ import annotations

import pytest
import torch
from monai.inferers import SlidingWindowInferer

from mckd.availability import all_subsets, pack_available
from mckd.networks import MultiModalSegNet, capture_features

M = 4
SIZE = (16, 32, 32)  # a multiple of the light backbone's total stride (16)


def _net(paper_exact: bool = False, seed: int = 0) -> MultiModalSegNet:
    torch.manual_seed(seed)
    return MultiModalSegNet(M, out_channels=3, backbone="light", paper_exact=paper_exact).eval()


def _all_subsets_mask() -> torch.Tensor:
    return torch.tensor(all_subsets(M), dtype=torch.bool)


def _count_encoder_pairs(net: MultiModalSegNet, *args: torch.Tensor) -> int:
    seen: list[int] = []
    handle = net.encoder.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].shape[0]))
    try:
        with torch.no_grad():
            net(*args)
    finally:
        handle.remove()
    return sum(seen)


def test_every_subset_in_one_batch_matches_each_sample_alone() -> None:
    net = _net()
    available = _all_subsets_mask()
    torch.manual_seed(1)
    x = torch.randn(len(available), M, *SIZE)
    with torch.no_grad():
        batched = net(x, available)
        assert batched.shape == (15, 3, *SIZE)
        for i in range(len(available)):
            alone = net(x[i : i + 1], available[i : i + 1])
            assert torch.allclose(batched[i : i + 1], alone, atol=1e-5), f"subset {i} differs"


def test_missing_modality_input_is_never_read() -> None:
    net = _net()
    available = torch.tensor([[True, False, True, False], [False, False, False, True]])
    torch.manual_seed(2)
    x = torch.randn(2, M, *SIZE)
    missing = ~available[:, :, None, None, None]
    with torch.no_grad():
        zeros = net(torch.where(missing, torch.zeros_like(x), x), available)
        noise = net(torch.where(missing, torch.randn_like(x) * 5, x), available)
        nans = net(torch.where(missing, torch.full_like(x, float("nan")), x), available)
    assert torch.equal(zeros, noise)
    assert torch.equal(zeros, nans)


def test_paper_exact_zeroes_missing_inputs_and_differs_from_default() -> None:
    default, paper = _net(), _net(paper_exact=True)
    paper.load_state_dict(default.state_dict())
    available = torch.tensor([[True, False, True, False]])
    torch.manual_seed(3)
    x = torch.randn(1, M, *SIZE)
    missing = ~available[:, :, None, None, None]
    with torch.no_grad():
        zeros = paper(torch.where(missing, torch.zeros_like(x), x), available)
        noise = paper(torch.where(missing, torch.randn_like(x), x), available)
        reference = default(x, available)
    assert torch.allclose(zeros, noise)
    assert not torch.allclose(zeros, reference, atol=1e-4)


@pytest.mark.parametrize("paper_exact, expected_pairs", [(False, 3), (True, 8)])
def test_encoder_runs_on_available_pairs_only(paper_exact: bool, expected_pairs: int) -> None:
    net = _net(paper_exact)
    available = torch.tensor([[True, False, True, False], [False, False, False, True]])
    assert _count_encoder_pairs(net, torch.randn(2, M, *SIZE), available) == expected_pairs
    packed = pack_available(torch.randn(2, M, *SIZE), available)
    assert _count_encoder_pairs(net, packed) == expected_pairs


@pytest.mark.parametrize("paper_exact", [False, True])
def test_packed_input_matches_two_argument_forward(paper_exact: bool) -> None:
    net = _net(paper_exact)
    available = _all_subsets_mask()[[0, 5, 11, 14]]
    torch.manual_seed(4)
    x = torch.randn(4, M, *SIZE)
    with torch.no_grad():
        assert torch.allclose(net(pack_available(x, available)), net(x, available), atol=1e-6)


def test_sliding_window_keeps_case_level_availability() -> None:
    net = _net()
    available = torch.tensor([[True, True, False, True]])
    torch.manual_seed(5)
    x = torch.randn(1, M, 24, 40, 20)
    x[:, 1] = 0.0  # present but background everywhere: every window of it is background-only
    inferer = SlidingWindowInferer(roi_size=(16, 32, 32), sw_batch_size=2, overlap=0.25)
    with torch.no_grad():
        packed = inferer(pack_available(x, available), net)
        two_argument = inferer(x, lambda window: net(window, available.expand(window.shape[0], -1)))
        without_second = torch.tensor([[True, False, False, True]])
        as_if_missing = inferer(x, lambda window: net(window, without_second.expand(window.shape[0], -1)))
    assert packed.shape == (1, 3, 24, 40, 20)
    assert torch.allclose(packed, two_argument, atol=1e-5)
    assert not torch.allclose(packed, as_if_missing, atol=1e-4)


@pytest.mark.parametrize("paper_exact", [False, True])
def test_scripted_network_matches_eager_for_every_subset(paper_exact: bool) -> None:
    net = _net(paper_exact)
    scripted = torch.jit.script(net)
    available = _all_subsets_mask()
    torch.manual_seed(6)
    packed = pack_available(torch.randn(len(available), M, *SIZE), available)
    with torch.no_grad():
        assert torch.allclose(scripted(packed), net(packed), atol=1e-5)
    with pytest.raises(torch.jit.Error, match="needs 4 channels .* or 8"):
        scripted(torch.randn(1, 5, *SIZE))


@pytest.mark.parametrize("scripted", [False, True])
def test_plain_input_without_a_mask_has_every_modality(scripted: bool) -> None:
    """``available=None`` means what it means for every MCKD network: all present unless the input is packed."""
    net = _net()
    model = torch.jit.script(net) if scripted else net
    torch.manual_seed(8)
    x = torch.randn(2, M, *SIZE)
    everything = torch.ones(2, M, dtype=torch.bool)
    with torch.no_grad():
        plain = model(x)
        torch.testing.assert_close(plain, net(x, everything), rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(plain, net(pack_available(x, everything)), rtol=1e-6, atol=1e-6)
        assert not torch.allclose(plain, net(x, torch.tensor([[True, True, True, False]] * 2)), atol=1e-4)


def test_modality_scale_gradient_reaches_scale_and_ones_are_neutral() -> None:
    net = _net()
    available = torch.ones(2, M, dtype=torch.bool)
    torch.manual_seed(7)
    x = torch.randn(2, M, *SIZE)
    weights = torch.zeros(M, requires_grad=True)
    logits = net(x, available, modality_scale=torch.softmax(weights, dim=0))
    logits.square().mean().backward()
    assert weights.grad is not None and weights.grad.abs().sum() > 0
    with torch.no_grad():
        plain = net(x, available)
        assert torch.allclose(net(x, available, modality_scale=torch.ones(M)), plain)
        assert torch.allclose(net(x, available, modality_scale=torch.ones(2, M)), plain)
        assert not torch.allclose(net(x, available, modality_scale=torch.full((M,), 0.25)), plain)


@pytest.mark.parametrize("paper_exact", [False, True])
def test_capture_features_returns_per_modality_bottlenecks_with_zeros_for_missing(paper_exact: bool) -> None:
    net = _net(paper_exact)
    available = torch.tensor([[True, False, True, False], [False, False, False, True]])
    with capture_features(net) as captured, torch.no_grad():
        logits = net(torch.randn(2, M, *SIZE), available)
    features = captured.features
    assert logits.shape == (2, 3, *SIZE)
    assert features is not None and features.shape == (2, M, 64, 1, 2, 2)
    assert (features[~available] == 0).all()
    assert (features[available].abs().sum(dim=(1, 2, 3, 4)) > 0).all()


def test_light_training_step_from_scratch_with_single_modality_stays_finite() -> None:
    for paper_exact in (False, True):
        net = _net(paper_exact).train()
        available = torch.tensor([[False, False, True, False]])
        logits = net(torch.randn(1, M, 32, 32, 32), available)
        logits.mean().backward()
        assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)


@pytest.mark.parametrize(
    "args, message",
    [
        ((torch.randn(1, 5, *SIZE),), r"needs 4 channels \(one per modality\) or 8 \(packed"),
        ((torch.randn(1, 3, *SIZE), torch.ones(1, 3, dtype=torch.bool)), "needs 4 channels"),
        ((torch.randn(1, 4, *SIZE), torch.ones(2, 4, dtype=torch.bool)), "available must be"),
        ((torch.randn(1, 4, *SIZE), torch.zeros(1, 4, dtype=torch.bool)), "at least one available"),
        ((torch.randn(1, 4, 16, 24, 32), torch.ones(1, 4, dtype=torch.bool)), "divisible"),
    ],
)
def test_bad_inputs_raise_clear_errors(args: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _net()(*args)


def test_unknown_backbone_is_rejected() -> None:
    with pytest.raises(ValueError, match="backbone"):
        MultiModalSegNet(backbone="resnet18")
