"""The training chain may share its cache with the random part (``copy_cache: false``): it never writes into it."""

from __future__ import annotations

import torch
from monai.bundle import ConfigParser
from monai.transforms import Randomizable


def _every_random_transform_always_applied(parser: ConfigParser) -> None:
    for i, transform in enumerate(parser["train#random_transforms"]):
        if "prob" in transform:
            parser[f"train#random_transforms#{i}#prob"] = 1.0


def _parser(bundle, brats_data) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(bundle.config_files("train.json", "cpu_small.json"))
    parser.update({"bundle_root": str(brats_data.root), "data_list_file_path": str(brats_data.datalist)})
    return parser


def test_the_cache_holds_the_regions_as_bytes_and_the_crop_gets_them_back_as_float(bundle, brats_data):
    dataset = _parser(bundle, brats_data).get_parsed_content("train#dataset")
    cached = dataset._cache[0]["label"]
    assert cached.dtype == torch.uint8 and set(cached.unique().tolist()) == {0, 1}
    assert dataset[0][0]["label"].dtype == torch.float32


def test_the_random_part_leaves_the_cached_cases_unchanged(bundle, brats_data):
    parser = _parser(bundle, brats_data)
    _every_random_transform_always_applied(parser)
    dataset = parser.get_parsed_content("train#dataset")
    assert parser.get_parsed_content("train#dataset#copy_cache") is False
    assert any(isinstance(t, Randomizable) for t in dataset.transform.transforms)
    snapshot = [{k: v.clone() for k, v in item.items() if isinstance(v, torch.Tensor)} for item in dataset._cache]

    for _ in range(3):
        for i in range(len(dataset)):
            sample = dataset[i]
            sample = sample[0] if isinstance(sample, list) else sample
            assert sample["image"].shape[1:] == torch.Size(parser.get_parsed_content("crop_size"))
            assert sample["label"].dtype == torch.float32 and set(sample["label"].unique().tolist()) <= {0.0, 1.0}

    for item, before in zip(dataset._cache, snapshot):
        for key, value in before.items():
            assert torch.equal(item[key], value), f"the random part modified the cached '{key}'"
