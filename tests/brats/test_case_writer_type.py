"""The bundle's case writers are ``SaveImaged`` by type, so tools that drop MONAI's writer drop them too."""

from __future__ import annotations

import pytest
from monai.bundle import ConfigParser
from monai.transforms import Compose, SaveImaged

from mckd.brats.writing import CaseWriterd, SaveAlignmentd, SaveCasePredictiond, SaveOnNativeGridsd

BUNDLE_CONFIGS = "bundle/brats_mri_mckd_segmentation/configs"


def _filter_like_monai_label(transforms: list, filters: list) -> list:
    """MONAI Label's ``BundleInferTask._filter_transforms``: keep what is an instance of none of ``filters``."""
    return [t for t in transforms if not any(isinstance(t, f) for f in filters)]


def test_every_writer_of_the_inference_postprocessing_is_dropped_by_a_save_imaged_filter(tmp_path):
    parser = ConfigParser()
    parser.read_config(f"{BUNDLE_CONFIGS}/inference.json")
    parser.update({"save_probabilities": True, "save_native_grids": True, "output_dir": str(tmp_path)})
    post = parser.get_parsed_content("postprocessing")
    transforms = list(post.transforms) if isinstance(post, Compose) else list(post)
    writers = [t for t in transforms if isinstance(t, CaseWriterd)]
    assert {type(t) for t in writers} == {SaveCasePredictiond, SaveAlignmentd, SaveOnNativeGridsd}
    kept = _filter_like_monai_label(transforms, [SaveImaged])
    assert kept and not any(isinstance(t, CaseWriterd) for t in kept)


def test_a_case_writer_refuses_save_image_options(tmp_path):
    writer = SaveCasePredictiond(keys="pred", output_dir=tmp_path)
    assert isinstance(writer, SaveImaged)
    with pytest.raises(TypeError, match="SaveCasePredictiond writes with its own settings"):
        writer.set_options(init_kwargs={"output_dtype": "float32"})
