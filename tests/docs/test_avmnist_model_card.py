"""The AV-MNIST bundle's model card's command blocks, run on small synthetic data (rules: tests/docs/workspace.py)."""

import pytest

from tests.docs.markdown_blocks import evaluate, examples


@pytest.mark.slow
@pytest.mark.parametrize("example", examples("bundle/avmnist_mckd_classification/docs/README.md"))
def test_avmnist_model_card_block(example, tmp_path_factory, request):
    evaluate(example, tmp_path_factory, request)
