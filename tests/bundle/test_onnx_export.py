"""ONNX export of the inference network: one file for every subset of modalities, equal to PyTorch in onnxruntime."""

from __future__ import annotations

import itertools

import numpy as np
import onnxruntime
import pytest
import torch
from monai.bundle import ConfigParser

from mckd.availability import pack_available
from mckd.onnx_export import DenseSegNet, export_onnx, main, max_difference
from mckd.serving import StrictLoadingSegNet

SHAPE = [1, 8, 32, 32, 32]


def _subsets() -> list[tuple[bool, ...]]:
    return [s for s in itertools.product([True, False], repeat=4) if any(s)]


def test_the_export_graph_equals_the_network_under_every_subset():
    torch.manual_seed(0)
    network = StrictLoadingSegNet(backbone="light").eval()
    dense = DenseSegNet(network)
    image = torch.randn(2, 4, 32, 32, 32)
    for subset in _subsets():
        packed = pack_available(image, torch.tensor([subset, (True, True, True, True)]))
        with torch.no_grad():
            torch.testing.assert_close(dense(packed), network(packed), atol=1e-5, rtol=1e-5)


def test_the_command_exports_the_bundle_network_and_onnxruntime_matches_pytorch(bundle, tmp_path):
    configs = bundle.config_files("inference.json", "cpu_small.json")
    parser = ConfigParser()
    parser.read_config(configs)
    network = parser.get_parsed_content("network_def").eval()
    torch.save({"model": network.state_dict()}, tmp_path / "model.pt")
    target = tmp_path / "model.onnx"
    argv = [a for c in configs for a in ("--config_file", c)]
    argv += ["--ckpt_file", str(tmp_path / "model.pt"), "--filepath", str(target), "--input_shape", *map(str, SHAPE)]
    assert main(argv) == 0
    session = onnxruntime.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"] and session.get_inputs()[0].shape == SHAPE
    image = torch.randn(SHAPE[0], 4, *SHAPE[2:])
    for subset in _subsets():
        packed = pack_available(image, torch.tensor([subset]))
        with torch.no_grad():
            expected = network(packed).numpy()
        np.testing.assert_allclose(session.run(["pred"], {"image": packed.numpy()})[0], expected, atol=1e-4, rtol=1e-4)
    assert max_difference(network, target, SHAPE) < 1e-4


def test_a_checkpoint_of_another_network_is_refused_before_anything_is_written(bundle, tmp_path, caplog):
    light = StrictLoadingSegNet(backbone="light")
    torch.save({"model": light.state_dict()}, tmp_path / "model.pt")  # the default config builds resnet50_aspp
    argv = ["--config_file", bundle.config_files("inference.json")[0], "--ckpt_file", str(tmp_path / "model.pt")]
    assert main([*argv, "--filepath", str(tmp_path / "model.onnx")]) == 1
    assert "does not fit" in caplog.text and not (tmp_path / "model.onnx").exists()


def test_a_wrong_input_shape_is_refused():
    with pytest.raises(ValueError, match=r"input_shape must be \[B, 8, D, H, W\]"):
        export_onnx(StrictLoadingSegNet(backbone="light"), "unused.onnx", [1, 4, 32, 32, 32])
