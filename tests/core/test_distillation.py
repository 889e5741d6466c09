"""Importance-weighted pairwise distillation: numbers, gradients, missing modalities, variants."""

from __future__ import annotations

import math

import pytest
import torch

from mckd.distillation import ModalityImportance, PairwiseDistillationLoss

# Hand-computed example. Sample 0 has all three modalities, sample 1 lacks modality 2.
#   f0 = [0, 0], f1 = [1, 3], f2 = [2, 2];   p = [0.5, 0.25, 0.25]
#   pair weights p_i / p_j: (0,1)=2, (0,2)=2, (1,0)=0.5, (1,2)=1, (2,0)=0.5, (2,1)=1
#   L1:  d01 = (1 + 3) / 2 = 2,  d02 = (2 + 2) / 2 = 2,  d12 = (1 + 1) / 2 = 1
#        sample 0: 2*2 + 2*2 + 0.5*2 + 1*1 + 0.5*2 + 1*1 = 12;  sample 1: 2*2 + 0.5*2 = 5;  mean 8.5
#   MSE: d01 = (1 + 9) / 2 = 5,  d02 = (4 + 4) / 2 = 4,  d12 = 1
#        sample 0: 2*5 + 2*4 + 0.5*5 + 1*1 + 0.5*4 + 1*1 = 24.5;  sample 1: 2*5 + 0.5*5 = 12.5;  mean 18.5
#   L2 (root mean square): d01 = sqrt(5), d02 = 2, d12 = 1
#        sample 0: 2.5*sqrt(5) + 2*2 + 0.5*2 + 1 + 1 = 2.5*sqrt(5) + 7;  sample 1: 2.5*sqrt(5)
FEATURES = torch.tensor([[[0.0, 0.0], [1.0, 3.0], [2.0, 2.0]], [[0.0, 0.0], [1.0, 3.0], [2.0, 2.0]]])
AVAILABLE = torch.tensor([[True, True, True], [True, True, False]])
P = torch.tensor([0.5, 0.25, 0.25])


@pytest.mark.parametrize(
    "distance, expected",
    [("l1", 8.5), ("mse", 18.5), ("l2", (2.5 * math.sqrt(5) + 7 + 2.5 * math.sqrt(5)) / 2)],
)
def test_hand_computed_example_matches(distance, expected):
    loss = PairwiseDistillationLoss(distance)(FEATURES, AVAILABLE, P)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_loss_accepts_any_trailing_feature_shape():
    features = FEATURES.reshape(2, 3, 1, 2, 1)
    assert PairwiseDistillationLoss()(features, AVAILABLE, P).item() == pytest.approx(8.5)


def test_gradients_reach_student_features_only_and_never_the_importance():
    importance = ModalityImportance(2, seed=3)
    f = torch.tensor([[[0.0, 1.0, 2.0], [1.0, -1.0, 5.0]]], requires_grad=True)  # [B=1, M=2, D=3]
    loss = PairwiseDistillationLoss()(f, torch.ones(1, 2, dtype=torch.bool), importance.probabilities())
    loss.backward()
    p = importance.probabilities().detach()
    sign = torch.sign(f[0, 1] - f[0, 0]).detach()
    # student 1 is pulled towards teacher 0 with weight p0/p1, student 0 towards teacher 1 with weight p1/p0;
    # a gradient through the teacher side would add the other pair's term to each
    assert torch.allclose(f.grad[0, 1], (p[0] / p[1]) * sign / 3)
    assert torch.allclose(f.grad[0, 0], -(p[1] / p[0]) * sign / 3)
    assert importance.w.grad is None


def test_pairs_with_a_missing_modality_vanish():
    loss_fn = PairwiseDistillationLoss()
    features = FEATURES.clone()
    reference = loss_fn(features, AVAILABLE, P)
    features[1, 2] = torch.tensor([float("nan"), 1e6])  # sample 1 lacks modality 2
    features.requires_grad_(True)
    loss = loss_fn(features, AVAILABLE, P)
    loss.backward()
    assert loss.item() == reference.item()
    assert torch.all(features.grad[1, 2] == 0)


def test_a_single_available_modality_gives_zero():
    features = torch.randn(3, 4, 5, 2, requires_grad=True)
    available = torch.zeros(3, 4, dtype=torch.bool)
    available[torch.arange(3), torch.tensor([0, 2, 3])] = True
    loss = PairwiseDistillationLoss()(features, available, torch.full((4,), 0.25))
    loss.backward()
    assert loss.item() == 0.0
    assert torch.all(features.grad == 0)


def test_l2_has_a_finite_zero_gradient_for_identical_features():
    features = torch.ones(1, 2, 3, requires_grad=True)
    PairwiseDistillationLoss("l2")(features, torch.ones(1, 2, dtype=torch.bool), torch.tensor([0.5, 0.5])).backward()
    assert torch.all(features.grad == 0)


def test_importance_and_distillation_loss_reject_bad_arguments():
    with pytest.raises(ValueError, match="distance"):
        PairwiseDistillationLoss("cosine")
    with pytest.raises(ValueError, match="available"):
        PairwiseDistillationLoss()(FEATURES, AVAILABLE[:, :2], P)
    with pytest.raises(ValueError, match="probabilities"):
        PairwiseDistillationLoss()(FEATURES, AVAILABLE, P[:2])
    with pytest.raises(ValueError, match="num_modalities"):
        ModalityImportance(0)
    with pytest.raises(ValueError, match="init"):
        ModalityImportance(2, init="normal")


def test_importance_init_is_uniform_and_seedable_or_zeros():
    a, b = ModalityImportance(4, seed=7), ModalityImportance(4, seed=7)
    assert torch.equal(a.w, b.w) and torch.all((a.w >= 0) & (a.w < 1))
    assert torch.equal(a.w.detach(), torch.rand(4, generator=torch.Generator().manual_seed(7)))
    zeros = ModalityImportance(4, init="zeros")
    assert torch.allclose(zeros.probabilities(), torch.full((4,), 0.25))
    assert torch.allclose(a.probabilities().sum(), torch.tensor(1.0))
