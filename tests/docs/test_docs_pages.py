"""The other pages of docs/'s command blocks, run on small synthetic data (rules: tests/docs/workspace.py)."""

import pytest

from tests.docs.markdown_blocks import evaluate, examples


@pytest.mark.slow
@pytest.mark.parametrize("example", examples("docs/data_prep.md", "docs/clinical_inputs.md", "docs/monailabel.md", "docs/performance.md", "docs/accuracy_study.md", "docs/bad_inputs.md"))
def test_docs_page_block(example, tmp_path_factory, request):
    evaluate(example, tmp_path_factory, request)
