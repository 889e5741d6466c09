"""Static checks of the BraTS bundle: formatting, metadata schema, workflow properties, network in/out."""

from __future__ import annotations

import json

import pytest
import torch
from monai.bundle import ConfigParser, ConfigWorkflow, verify_metadata, verify_net_in_out

from mckd.availability import pack_available
from mckd.brats.conventions import BRATS2018_LABELS, MODALITIES, REGIONS


def test_configs_are_json_indented_with_four_spaces_and_end_with_newline(bundle):
    for path in sorted(bundle.configs.glob("*.json")):
        text = path.read_text()
        assert text == json.dumps(json.loads(text), indent=4, ensure_ascii=False) + "\n", path.name


def test_metadata_validates_offline_against_the_shipped_schema(bundle, tmp_path):
    schema = tmp_path / "schema.json"
    schema.write_text(bundle.schema.read_text())  # verify_metadata skips the download when the file exists
    verify_metadata(meta_file=str(bundle.configs / "metadata.json"), filepath=str(schema))


def test_metadata_describes_the_packed_input_and_region_output_in_convention_order(bundle):
    meta = json.loads((bundle.configs / "metadata.json").read_text())
    image = meta["network_data_format"]["inputs"]["image"]
    pred = meta["network_data_format"]["outputs"]["pred"]
    assert image["num_channels"] == 2 * len(MODALITIES)
    names = [image["channel_def"][str(i)] for i in range(len(MODALITIES))]
    assert [n.lower() for n in names] == list(MODALITIES)
    assert all("available" in image["channel_def"][str(len(MODALITIES) + i)] for i in range(len(MODALITIES)))
    # the raw channels' order is stated in pred_classes; channel_def names the written label map (MONAI Label's labels)
    assert sorted(meta["pred_classes"].index(f"({region})") for region in REGIONS) == [
        meta["pred_classes"].index(f"({region})") for region in REGIONS
    ]
    label_map = meta["network_data_format"]["post_processed_outputs"]["pred"]["channel_def"]
    assert pred["channel_def"] == label_map
    assert {int(value) for value in label_map} == {0, *BRATS2018_LABELS.labels}
    assert "mckd" not in meta["required_packages_version"]  # not on PyPI: pins only what pip can install
    assert meta["version"] in meta["changelog"]


def test_train_workflow_has_every_required_and_optional_property(bundle, brats_data, tmp_path):
    workflow = ConfigWorkflow(
        config_file=bundle.config_files("train.json"),
        workflow_type="train",
        logging_file=False,
        bundle_root=str(tmp_path),
        data_list_file_path=str(brats_data.datalist),
        backbone="light",
    )
    workflow.initialize()
    assert workflow.check_properties() == []
    # the published schedule: 115k iterations in 500-iteration epochs, crop D x H x W = 80 x 160 x 160
    assert workflow.parser.get_parsed_content("train#trainer#max_epochs") == 230
    assert workflow.parser["crop_size"] == [80, 160, 160]
    assert workflow.parser["training"] == workflow.parser["run"]  # the legacy `run training` spelling


def test_inference_workflow_has_every_required_and_optional_property(bundle, brats_data, tmp_path):
    workflow = ConfigWorkflow(
        config_file=bundle.config_files("inference.json"),
        workflow_type="infer",
        logging_file=False,
        bundle_root=str(tmp_path),
        dataset_dir=str(brats_data.root / "cases"),
        backbone="light",
    )
    workflow.initialize()
    assert workflow.check_properties() == []
    assert len(workflow.dataset) == len(brats_data.cases)


@pytest.mark.parametrize("backbone", ["light", "resnet50_aspp"])
def test_network_passes_verify_net_in_out_with_the_metadata_shapes(bundle, backbone):
    verify_net_in_out(
        net_id="network_def",
        meta_file=str(bundle.configs / "metadata.json"),
        config_file=str(bundle.configs / "inference.json"),
        n=1,
        any=1,
        device="cpu",
        backbone=backbone,
    )


def test_network_reads_availability_from_the_packed_flags(bundle):
    workflow = ConfigWorkflow(
        config_file=bundle.config_files("inference.json"), workflow_type=None, logging_file=False, backbone="light"
    )
    network = workflow.parser.get_parsed_content("network_def").eval()
    image = torch.randn(1, len(MODALITIES), 16, 32, 32)
    only_t1ce = torch.tensor([[False, False, True, False]])
    with torch.no_grad():
        packed = network(pack_available(image, only_t1ce))
        explicit = network(image, available=only_t1ce)
        noisy_missing = image.clone()
        noisy_missing[:, 0] = 100.0  # content of a channel flagged missing must not matter
        repacked = network(pack_available(noisy_missing, only_t1ce))
    torch.testing.assert_close(packed, explicit)
    torch.testing.assert_close(packed, repacked)


def test_multi_gpu_overlay_silences_only_the_loggers_on_other_ranks(bundle):
    parser = ConfigParser()
    parser.read_config(bundle.config_files("train.json", "multi_gpu_train.json"))
    silenced = [h["_target_"] for h in parser["train"]["handlers"] if h.get("_disabled_") == "@is_not_rank0"]
    assert silenced == [
        "StatsHandler",
        "mckd.progress.TrainingProgress",
        "TensorBoardStatsHandler",
        "mckd.monitoring.ImportanceTrajectoryWriter",
        "mckd.checkpoints.DeployableModelSaver",
    ]
    # by name, not list position: train.json's switch is off, the overlay sets it per rank
    assert parser["is_not_rank0"] == "$dist.get_rank() > 0"
    single = ConfigParser()
    single.read_config(bundle.config_files("train.json"))
    assert single["is_not_rank0"] is False
    overlay = json.loads((bundle.configs / "multi_gpu_train.json").read_text())
    assert not any(key.startswith("train#handlers#") for key in overlay)
