"""Importance-weighted pairwise cross-modal distillation (MCKD §1.4).

Two components, both independent of images or audio:

- :class:`ModalityImportance` holds the learnable importance logits ``w`` (one per modality); ``p = softmax(w)``.
  Only the meta-update (:class:`mckd.handlers.MetaImportanceUpdater`) trains ``w``.
- :class:`PairwiseDistillationLoss` distils every available modality into every other available one, weighting the
  ordered pair teacher ``i`` -> student ``j`` by ``p_i / p_j``. It works on any per-modality feature tensor
  ``[B, M, *F]`` together with the per-sample availability mask ``[B, M]``.
"""

from __future__ import annotations


import torch
from torch import nn

__all__ = ["ModalityImportance", "PairwiseDistillationLoss"]


class ModalityImportance(nn.Module):
    """Learnable importance logits ``w`` of ``M`` modalities; :meth:`probabilities` is ``softmax(w)``.

    The module is an ordinary ``state_dict`` object: put it (and the optimiser of ``w``) into the ``save_dict`` of
    MONAI's ``CheckpointSaver``/``CheckpointLoader`` so that a resumed run continues with the same weights.

    Args:
        num_modalities: number of modalities ``M``.
        init: ``"uniform"`` draws ``w ~ U[0, 1)`` as the published code does (``torch.rand``); ``"zeros"`` starts
            from equal importance. Default ``"uniform"``.
        seed: seed of the ``"uniform"`` draw; ``None`` (default) uses the global torch random state.

    Raises:
        ValueError: when ``num_modalities`` < 1 or ``init`` is not one of the supported names.
        TypeError: when ``seed`` is neither ``None`` nor an int.
    """

    def __init__(self, num_modalities: int, init: str = "uniform", seed: int | None = None) -> None:
        super().__init__()
        if num_modalities < 1:
            raise ValueError(f"num_modalities must be >= 1, got {num_modalities}.")
        if init not in ("uniform", "zeros"):
            raise ValueError(f"init must be 'uniform' or 'zeros', got {init!r}.")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise TypeError(f"seed must be None or an int, got {type(seed).__name__}.")
        self.num_modalities = num_modalities
        if init == "zeros":
            logits = torch.zeros(num_modalities)
        else:
            generator = None if seed is None else torch.Generator().manual_seed(seed)
            logits = torch.rand(num_modalities, generator=generator)
        self.w = nn.Parameter(logits)

    def probabilities(self) -> torch.Tensor:
        """The importance ``p = softmax(w)``, shape ``[M]``, differentiable with respect to ``w``."""
        return torch.softmax(self.w, dim=0)

    def forward(self) -> torch.Tensor:
        """Same as :meth:`probabilities`."""
        return self.probabilities()


class PairwiseDistillationLoss(nn.Module):
    """Sum over ordered pairs of available modalities of ``(p_i / p_j) * dist(f_i, f_j)``, averaged over the batch.

    For each sample ``b`` the loss is
    ``sum_{i != j, a[b, i] and a[b, j]} (p_i / p_j) * dist(f[b, i].detach(), f[b, j])``, and the result is
    the mean over the ``B`` samples. Teacher features ``f_i`` and the pair weights are detached, so gradients reach
    only the student features (never ``w``). Both directions of a pair are counted, with reciprocal
    weights. A sample with a single available modality contributes 0. Features of missing modalities are never read.

    Args:
        distance: per-pair distance, computed over all feature dimensions ``F`` of one sample:

            - ``"l1"`` (default, as published): ``mean(|f_i - f_j|)``.
            - ``"mse"``: ``mean((f_i - f_j) ** 2)``.
            - ``"l2"``: ``sqrt(mean((f_i - f_j) ** 2))``, the Euclidean distance divided by ``sqrt(numel(F))``
              (root mean square difference), so its size, like L1's, does not grow with the feature size. Its gradient
              at a zero difference is taken as 0.

    Raises:
        ValueError: when ``distance`` is not one of the supported names.
    """

    def __init__(self, distance: str = "l1") -> None:
        super().__init__()
        if distance not in ("l1", "l2", "mse"):
            raise ValueError(f"distance must be 'l1', 'l2' or 'mse', got {distance!r}.")
        self.distance = distance

    def _pair_distance(self, teacher: torch.Tensor, students: torch.Tensor) -> torch.Tensor:
        """Distance of ``teacher [B, 1, D]`` to each of ``students [B, M, D]`` -> ``[B, M]``."""
        diff = students - teacher
        if self.distance == "l1":
            return diff.abs().mean(dim=-1)
        if self.distance == "mse":
            return diff.square().mean(dim=-1)
        return torch.linalg.vector_norm(diff, ord=2, dim=-1) / diff.shape[-1] ** 0.5

    def forward(self, features: torch.Tensor, available: torch.Tensor, probabilities: torch.Tensor) -> torch.Tensor:
        """
        Args:
            features: per-modality features ``[B, M, *F]`` (any number of trailing dimensions, at least one).
            available: boolean availability ``[B, M]``.
            probabilities: modality importance ``p`` of shape ``[M]``, e.g. ``ModalityImportance.probabilities()``.

        Raises:
            ValueError: when the shapes of the three inputs do not agree.
        """
        if features.ndim < 3:
            raise ValueError(
                f"features must have shape [B, M, *F] with at least one feature dimension, got {tuple(features.shape)}."
            )
        if tuple(available.shape) != tuple(features.shape[:2]):
            raise ValueError(
                f"available must have shape [B, M] = {tuple(features.shape[:2])} matching features, "
                f"got {tuple(available.shape)}."
            )
        num_modalities = features.shape[1]
        if tuple(probabilities.shape) != (num_modalities,):
            raise ValueError(f"probabilities must have shape [{num_modalities}], got {tuple(probabilities.shape)}.")
        available = available.to(device=features.device, dtype=torch.bool)
        # missing modalities are replaced by zeros so that nothing about them (not even a NaN) reaches the loss
        flat = torch.where(available.unsqueeze(-1), features.flatten(2).float(), 0.0)
        logp = probabilities.detach().to(flat.device, torch.float32).log()
        pair_weight = (logp.unsqueeze(1) - logp.unsqueeze(0)).exp()  # [teacher i, student j] = p_i / p_j
        pair_mask = available.unsqueeze(2) & available.unsqueeze(1)  # [B, i, j]
        pair_mask = pair_mask & ~torch.eye(num_modalities, dtype=torch.bool, device=flat.device)
        teachers = flat.detach()
        distances = torch.stack(
            [self._pair_distance(teachers[:, i : i + 1], flat) for i in range(num_modalities)], dim=1
        )  # [B, i, j]
        weighted = torch.where(pair_mask, pair_weight * distances, 0.0)
        return weighted.sum(dim=(1, 2)).mean()
