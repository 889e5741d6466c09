"""A briefly trained network of the CPU configuration, so that a viewer shows a tumour-shaped segmentation.

Untrained weights (``servers.untrained_weights``) make every served request valid, but their label map covers nearly
the whole field of view. For the PACS and viewer test the network is fitted (120 Adam steps, about 15 s on 2 idle
cores) to the very synthetic case the study is made from (all four modalities, weighted binary cross-entropy of the
three region channels ET, TC, WT): a smoke test of the path, not a measure of accuracy. The input follows what the
served bundle makes of the study: the case's ``(x, y, z)`` arrays in LPS order turned to RAS (``Orientationd``: x and
y flipped), then ``(z, x, y)`` (``Transposed``), non-zero channel-wise normalisation; the checkpoint has the layout
training writes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from monai.bundle import ConfigParser

from data_prep.synthetic_brats import SyntheticCase
from mckd.availability import pack_available
from mckd.brats.conventions import MODALITIES, REGIONS
from tests.monailabel.servers import BUNDLE, TRAINED_WITH


def _normalised(volume: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance over the non-zero voxels (``NormalizeIntensityd(nonzero=True)``)."""
    out = volume.astype(np.float32).copy()
    inside = out != 0
    out[inside] = (out[inside] - out[inside].mean()) / max(float(out[inside].std()), 1e-8)
    return out


def briefly_trained_weights(path: Path, case: SyntheticCase, steps: int = 120, seed: int = 0) -> Path:
    """Fit the CPU configuration's network to ``case`` (voxel ``(x, y, z)`` at LPS ``(x, y, z)``, as
    ``tests.dicom_builders.write_mr_study`` places it) for ``steps`` Adam steps; save it as training does."""
    threads = torch.get_num_threads()
    # one thread: a module-scoped fixture runs before the suite's per-test single-thread fixture, and two torch
    # threads on busy shared cores are many times slower than one
    torch.set_num_threads(1)
    try:
        return _fit(path, case, steps, seed)
    finally:
        torch.set_num_threads(threads)


def _fit(path: Path, case: SyntheticCase, steps: int, seed: int) -> Path:
    torch.manual_seed(seed)
    parser = ConfigParser()
    parser.read_config([str(BUNDLE / "configs" / name) for name in TRAINED_WITH])
    network = parser.get_parsed_content("network_def")
    # LPS -> RAS flips x and y; (x, y, z) -> (z, x, y) is the bundle's Transposed(indices=[0, 3, 1, 2])
    image = np.stack([_normalised(case.images[m]) for m in MODALITIES])[:, ::-1, ::-1].transpose(0, 3, 1, 2)
    target = np.stack([case.regions[r] for r in REGIONS])[:, ::-1, ::-1].transpose(0, 3, 1, 2)
    inputs = pack_available(torch.as_tensor(image.copy())[None], torch.ones(1, len(MODALITIES), dtype=torch.bool))
    labels = torch.as_tensor(target.astype(np.float32))[None]
    # the regions are small (WT under 1 % of the voxels, ET under 0.1 %): positives weigh more
    weight = (
        (labels.numel() / labels.shape[1] / labels.sum(dim=(0, 2, 3, 4)).clamp(min=1)).sqrt().reshape(1, -1, 1, 1, 1)
    )
    optimiser = torch.optim.Adam(network.parameters(), lr=1e-2)
    network.train()
    for _ in range(steps):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(network(inputs), labels, pos_weight=weight)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    network.eval()
    torch.save({"model": network.state_dict(), "modality_weights": {"w": torch.zeros(len(MODALITIES))}}, path)
    return path
