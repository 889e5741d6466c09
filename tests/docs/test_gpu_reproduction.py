"""docs/gpu_reproduction.md's command blocks, run on small synthetic data (rules: tests/docs/workspace.py)."""

import pytest

from tests.docs.markdown_blocks import evaluate, examples


@pytest.mark.slow
@pytest.mark.parametrize("example", examples("docs/gpu_reproduction.md"))
def test_gpu_reproduction_block(example, tmp_path_factory, request):
    evaluate(example, tmp_path_factory, request)
