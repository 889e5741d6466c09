"""The BraTS bundle's model card's command blocks, run on small synthetic data (rules: tests/docs/workspace.py)."""

import pytest

from tests.docs.markdown_blocks import evaluate, examples


@pytest.mark.slow
@pytest.mark.parametrize("example", examples("bundle/brats_mri_mckd_segmentation/docs/README.md"))
def test_brats_model_card_block(example, tmp_path_factory, request):
    evaluate(example, tmp_path_factory, request)
