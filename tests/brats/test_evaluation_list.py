"""Which datalist list evaluation scores, and the message when there is none."""

from __future__ import annotations

import json

import pytest

from mckd.brats.datalist import DatalistError, evaluation_list_key


def _datalist(tmp_path, **lists):
    path = tmp_path / "datalist.json"
    path.write_text(json.dumps({key: [{"image": "x", "label": "y"}] * size for key, size in lists.items()}))
    return path


def test_the_published_test_list_comes_before_the_validation_list(tmp_path):
    assert evaluation_list_key(_datalist(tmp_path, training=4, validation=2, testing=3)) == "testing"
    assert evaluation_list_key(_datalist(tmp_path, training=4, validation=2, testing=0)) == "validation"


def test_a_paper_split_has_nothing_to_evaluate_and_the_message_names_its_lists(tmp_path):
    path = _datalist(tmp_path, training=280, meta_validation=5, validation=0)
    with pytest.raises(DatalistError, match=r"training \(280 cases\), meta_validation \(5 cases\), validation \(0"):
        evaluation_list_key(path)


def test_a_named_list_must_exist_and_hold_cases(tmp_path):
    path = _datalist(tmp_path, training=4, meta_validation=2)
    assert evaluation_list_key(path, "meta_validation") == "meta_validation"
    with pytest.raises(DatalistError, match="list 'validation' is absent; it has training"):
        evaluation_list_key(path, "validation")


def test_an_unlabelled_testing_list_is_passed_over(tmp_path):
    path = tmp_path / "datalist.json"
    path.write_text(json.dumps({"testing": [{"image": "x"}], "validation": [{"image": "y", "label": "z"}]}))
    assert evaluation_list_key(path) == "validation"
