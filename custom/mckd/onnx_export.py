"""ONNX export of the BraTS inference network (packed single-tensor input), checked against PyTorch with onnxruntime.

MONAI's ``python -m monai.bundle onnx_export`` cannot export :class:`~mckd.networks.segnet.MultiModalSegNet`: its
forward encodes only the available modalities (a gather whose size depends on the availability flags in the input),
which tracing freezes to the example's subset and ``torch.export`` refuses, and its convolutions call oneDNN
directly (``aten::mkldnn_convolution``), which has no ONNX operator. This module exports
:class:`DenseSegNet`, an equivalent graph built from the same trained modules: every modality is encoded and a
missing modality's features are replaced by the mean of the available ones with ``torch.where`` (the same fill rule
as :func:`mckd.networks.fusion.mean_fill`; the decoder's skip projections are linear, so filling before them equals
filling after them), with PyTorch's standard convolution. One ONNX file then serves every subset of modalities,
at the cost of encoding the missing ones too. The export is checked with onnxruntime on every subset of modalities.

TensorRT: not supported or measured by this project (no GPU here); the ONNX file is the input TensorRT's ONNX parser
would take (``trtexec --onnx=models/model.onnx``).

Usage::

    python -m mckd.onnx_export --config_file configs/inference.json [--config_file configs/cpu_small.json] \\
        --ckpt_file models/model.pt --filepath models/model.onnx [--input_shape 1 8 80 160 160]

``--config_file`` also takes the list form of ``python -m monai.bundle`` (``"['configs/inference.json',
'configs/cpu_small.json']"``). The ONNX file may not be one of the inputs (checkpoint, configs).
"""

from __future__ import annotations

import argparse
import ast
import copy
import itertools
import logging
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from monai.bundle import ConfigParser
from torch import nn

from mckd.availability import pack_available, split_available
from mckd.checkpoints import CheckpointError, load_objects
from mckd.fileio import atomic_path, ensure_not_input
from mckd.networks.conv import OneDNNConv3d
from mckd.networks.segnet import MultiModalSegNet

__all__ = ["DenseSegNet", "export_onnx", "max_difference", "main"]

logger = logging.getLogger("mckd.onnx_export")

#: ONNX operator set of the export (supported by onnxruntime >= 1.14 and TensorRT >= 8.6).
OPSET = 18


def _fill_missing(features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``features[B, M, *F]`` with each missing modality replaced by the mean of the sample's available ones."""
    flat = features.reshape(features.shape[0], features.shape[1], -1)
    keep = mask.unsqueeze(2)
    kept = torch.where(keep, flat, torch.zeros((1,), dtype=flat.dtype))
    counts = mask.sum(dim=1).to(flat.dtype).reshape(-1, 1, 1)
    return torch.where(keep, flat, kept.sum(dim=1, keepdim=True) / counts).reshape(features.shape)


class DenseSegNet(nn.Module):
    """Export graph of a trained :class:`MultiModalSegNet`: same modules and outputs, every modality encoded.

    Takes the packed ``[B, 2M, *S]`` input of :func:`mckd.availability.pack_available` and returns the region
    logits. The network is deep-copied and its convolutions switched to PyTorch's standard kernel (the same
    convolution). A ``paper_exact`` network keeps its published handling (zeroed missing inputs encoded, skips not
    filled, the bottleneck filled).

    Args:
        network: the trained network.

    Raises:
        TypeError: when ``network`` is not a ``MultiModalSegNet``.
    """

    def __init__(self, network: MultiModalSegNet) -> None:
        super().__init__()
        if not isinstance(network, MultiModalSegNet):
            raise TypeError(f"network must be a MultiModalSegNet, got {type(network).__name__}.")
        self.network = copy.deepcopy(network).eval()
        for module in self.network.modules():
            if isinstance(module, OneDNNConv3d):
                module.use_onednn = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        net = self.network
        image, mask = split_available(x, None, net.num_modalities)
        batch, num_modalities = mask.shape
        volumes = image.reshape([batch * num_modalities, 1] + list(image.shape[2:]))
        if net.paper_exact:  # the published handling: missing inputs encoded as zeros, skips not filled
            volumes = torch.where(mask.reshape(-1, 1, 1, 1, 1), volumes, torch.zeros((1,), dtype=volumes.dtype))
        per_modality = [f.reshape([batch, num_modalities] + list(f.shape[1:])) for f in net.encoder(volumes)]
        bottleneck = _fill_missing(net.feature_tap(per_modality[-1]), mask)
        skips = [(f if net.paper_exact else _fill_missing(f, mask)).flatten(1, 2) for f in per_modality[:-1]]
        return net.decoder(bottleneck.flatten(1, 2), skips, None)


def export_onnx(network: MultiModalSegNet, filepath: str | Path, input_shape: Sequence[int]) -> Path:
    """Write ``network`` as ONNX (input ``image`` of ``input_shape``, output ``pred``), atomically.

    Raises:
        ValueError: when ``input_shape`` is not ``[B, 2M, D, H, W]`` for the network's ``M``.
    """
    shape = [int(s) for s in input_shape]
    if len(shape) != 5 or shape[1] != 2 * network.num_modalities:
        raise ValueError(f"input_shape must be [B, {2 * network.num_modalities}, D, H, W], got {shape}.")
    dense = DenseSegNet(network)
    available = torch.ones(shape[0], network.num_modalities, dtype=torch.bool)
    example = pack_available(torch.zeros([shape[0], network.num_modalities] + shape[2:]), available)
    with atomic_path(filepath) as tmp, torch.no_grad():
        torch.onnx.export(
            dense, (example,), str(tmp), dynamo=True, opset_version=OPSET, input_names=["image"],
            output_names=["pred"], external_data=False,
        )  # fmt: skip
    logger.info("wrote %s (input %s)", filepath, shape)
    return Path(filepath)


def max_difference(network: MultiModalSegNet, filepath: str | Path, input_shape: Sequence[int], seed: int = 0) -> float:
    """Largest ``|onnxruntime - PyTorch|`` over random inputs under every non-empty subset of modalities, relative to
    the largest PyTorch logit when that exceeds 1 (float32 rounding grows with the depth and the logits' size).

    Raises:
        ImportError: when onnxruntime is not installed (``pip install onnxruntime``).
    """
    import onnxruntime  # noqa: PLC0415 - an optional extra ("mckd[onnx]"), needed only for the check

    session = onnxruntime.InferenceSession(str(filepath), providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(seed)
    shape = [int(s) for s in input_shape]
    worst = 0.0
    network = network.eval()
    for subset in itertools.product([True, False], repeat=network.num_modalities):
        if not any(subset):
            continue
        image = torch.randn([shape[0], network.num_modalities] + shape[2:], generator=generator)
        packed = pack_available(image, torch.tensor([subset] * shape[0]))
        with torch.no_grad():
            expected = network(packed).numpy()
        actual = session.run(["pred"], {"image": packed.numpy()})[0]
        worst = max(worst, float(np.abs(actual - expected).max()) / max(1.0, float(np.abs(expected).max())))
    return worst


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mckd.onnx_export", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config_file", action="append", required=True, help="inference config, then overlays")
    parser.add_argument("--ckpt_file", required=True, type=Path, help="checkpoint (models/model.pt)")
    parser.add_argument("--filepath", required=True, type=Path, help="ONNX file to write (models/model.onnx)")
    parser.add_argument("--key_in_ckpt", default="model", help="the network's entry in the checkpoint")
    parser.add_argument("--input_shape", nargs=5, type=int, help="B 2M D H W; default 1, 2M and sw_roi_size")
    parser.add_argument("--tolerance", type=float, default=1e-3, help="largest accepted (relative) difference")
    return parser


def _config_files(values: Sequence[str]) -> list[str]:
    """``--config_file`` values, each a path or the list form of ``python -m monai.bundle`` (``"['a','b']"``)."""
    files: list[str] = []
    for value in values:
        if value.strip().startswith("["):
            try:
                parsed = ast.literal_eval(value)
            except (ValueError, SyntaxError) as err:
                raise ValueError(f"--config_file {value!r} is neither a path nor a list of paths.") from err
            files += [str(item) for item in parsed]
        else:
            files.append(value)
    return files


def _check_shape(shape: Sequence[int], num_modalities: int, total_stride: Sequence[int]) -> None:
    """Refuse an input shape the network cannot take, naming what it needs.

    Raises:
        ValueError: unless ``shape`` is ``B, 2M, D, H, W`` with positive sizes divisible by the total stride.
    """
    batch, channels, *spatial = shape
    if (
        batch < 1
        or channels != 2 * num_modalities
        or any(size < 1 or size % stride for size, stride in zip(spatial, total_stride))
    ):
        raise ValueError(
            f"--input_shape {list(shape)}: expected B >= 1, {2 * num_modalities} channels (image and availability "
            f"of {num_modalities} modalities) and spatial sizes that are positive multiples of the network's total "
            f"stride {list(total_stride)}."
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Export and check; 0 on success, 1 for a bad checkpoint or an export outside the tolerance, 2 for bad
    arguments."""
    args = _parser().parse_args(argv)
    try:
        config_files = _config_files(args.config_file)
        ensure_not_input(args.filepath, [args.ckpt_file, *config_files])
        config = ConfigParser()
        config.read_config(config_files)
        network = config.get_parsed_content("network_def")
        shape = args.input_shape or [1, 2 * network.num_modalities, *config.get_parsed_content("sw_roi_size")]
        _check_shape(shape, network.num_modalities, network.total_stride)
    except (ValueError, FileNotFoundError) as err:
        logger.error("error: %s", err)
        return 2
    try:
        load_objects({args.key_in_ckpt: network}, args.ckpt_file, map_location="cpu")
    except CheckpointError as err:
        logger.error("error: %s", err)
        return 1
    export_onnx(network, args.filepath, shape)
    difference = max_difference(network, args.filepath, shape)
    logger.info("onnxruntime vs PyTorch, all subsets of modalities: max relative difference %.3g", difference)
    if difference > args.tolerance:
        logger.error(
            "error: the ONNX output differs by %.3g (tolerance %.3g); %s removed.",
            difference,
            args.tolerance,
            args.filepath,
        )
        args.filepath.unlink()
        return 1
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sys.exit(main())
