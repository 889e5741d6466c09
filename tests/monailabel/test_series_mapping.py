"""Series -> modality mapping of a PACS study (``mckd.brats.series_mapping``): pure unit tests, no server."""

from __future__ import annotations

import json

import pytest

from mckd.brats.series_mapping import (
    DEFAULT_RULES,
    ModalityRule,
    SeriesInfo,
    SeriesMappingError,
    map_series,
    rules_from_dict,
    rules_from_json,
    series_text,
)


def mr(uid: str, description: str, protocol: str = "", number: int | None = None, **extra: str) -> SeriesInfo:
    attributes = {"SeriesDescription": description, "ProtocolName": protocol, **extra}
    return SeriesInfo(uid=uid, modality="MR", number=number, attributes=attributes)


#: Scanner spellings -> the modality the default rules must give (None: unmatched).
SPELLINGS = [
    ("AX FLAIR", "flair"),
    ("t2_tirm_tra_dark-fluid", "flair"),
    ("AX T2 FLAIR", "flair"),
    ("Sag 3D FLAIR", "flair"),
    ("t1_mprage_sag_p2_iso", "t1"),
    ("AX T1 SE", "t1"),
    ("T1 FLAIR AX", "t1"),
    ("Sag T1 BRAVO", "t1"),
    ("T1 POST GAD", "t1ce"),
    ("t1_mprage_sag_p2_iso_POST", "t1ce"),
    ("AX T1 +C", "t1ce"),
    ("T1C", "t1ce"),
    ("T1-CE", "t1ce"),
    ("AX T1 GD", "t1ce"),
    ("T2W_TSE", "t2"),
    ("t2_tse_tra_512", "t2"),
    ("AX T2 FSE", "t2"),
    ("AX T2* GRE", None),
    ("SWI_Images", None),
    ("AAHead_Scout_64ch-head-coil", None),
    ("3 Plane Loc", None),
    ("DWI b1000", None),
]


@pytest.mark.parametrize("description, modality", SPELLINGS)
def test_default_rules_read_scanner_spellings(description: str, modality: str | None) -> None:
    hits = [rule.modality for rule in DEFAULT_RULES if rule.matches(mr("1.2", description))]
    assert hits == ([modality] if modality else [])


def test_contrast_agent_attribute_makes_a_t1_post_contrast() -> None:
    plain = mr("1", "t1_mprage_sag_p2_iso")
    agent = mr("2", "t1_mprage_sag_p2_iso", ContrastBolusAgent="GADOVIST")
    assert [r.modality for r in DEFAULT_RULES if r.matches(plain)] == ["t1"]
    assert [r.modality for r in DEFAULT_RULES if r.matches(agent)] == ["t1ce"]


def test_protocol_name_is_read_when_the_description_says_nothing() -> None:
    series = mr("1", "Series 5", protocol="T2W_TSE")
    assert series_text(series) == "series 5 | t2w tse"
    assert map_series([series]).assigned["t2"] is series


def test_full_study_with_extra_series() -> None:
    study = [
        mr("1", "AAHead_Scout", number=1),
        mr("2", "AX FLAIR", number=2),
        mr("3", "t1_mprage_sag_p2_iso", number=3),
        mr("4", "T1 POST GAD", number=4),
        mr("5", "T2W_TSE", number=5),
        SeriesInfo(uid="6", modality="SEG", number=100, attributes={"SeriesDescription": "MCKD FLAIR T1"}),
    ]
    mapping = map_series(study)
    assert {m: s.uid for m, s in mapping.assigned.items()} == {"flair": "2", "t1": "3", "t1ce": "4", "t2": "5"}
    assert mapping.missing == ()
    assert [s.uid for s in mapping.unmatched] == ["1"]
    assert [s.uid for s in mapping.ignored] == ["6"]
    assert mapping.series_uids() == ["2", "3", "4", "5"]
    result = json.loads(json.dumps(mapping.to_dict()))
    assert result["series"]["t1ce"]["SeriesDescription"] == "T1 POST GAD"
    assert result["unmatched"][0]["series_uid"] == "1" and result["ignored"][0]["modality"] == "SEG"


def test_missing_sequence_is_reported_not_an_error() -> None:
    mapping = map_series([mr("2", "AX FLAIR"), mr("4", "T1 POST GAD"), mr("5", "T2W_TSE")])
    assert mapping.missing == ("t1",)
    assert mapping.series_uids() == ["2", None, "4", "5"]


def test_two_candidates_for_one_modality_is_an_error_naming_both() -> None:
    with pytest.raises(SeriesMappingError, match=r"2 series .* candidates for flair: #2 'AX FLAIR' \(a\), #7 'FLAIR"):
        map_series([mr("a", "AX FLAIR", number=2), mr("b", "FLAIR_repeat", number=7), mr("c", "T2W_TSE")])


def test_series_matching_two_rules_is_an_error() -> None:
    loose = (ModalityRule("t1", include=("t1",)), ModalityRule("t1ce", include=("t1",)))
    with pytest.raises(SeriesMappingError, match=r"matches the rules of several modalities \['t1', 't1ce'\]"):
        map_series([mr("1", "T1 POST GAD")], rules=loose)


def test_no_recognised_series_is_an_error() -> None:
    with pytest.raises(SeriesMappingError, match="no series of the study is recognised.*'3 Plane Loc'"):
        map_series([mr("1", "3 Plane Loc"), SeriesInfo(uid="2", modality="SR")])


def test_rules_from_json_replace_the_defaults(tmp_path) -> None:
    path = tmp_path / "rules.json"
    config = {
        "fields": ["SeriesDescription"],
        "rules": {
            "flair": {"include": "^fl"},
            "t2": {"include": ["^t2"], "exclude": ["fl"], "fields": ["ProtocolName"]},
        },
    }
    path.write_text(json.dumps(config))
    rules = rules_from_json(path)
    assert [(r.modality, r.fields) for r in rules] == [("flair", ("SeriesDescription",)), ("t2", ("ProtocolName",))]
    mapping = map_series([mr("1", "fl3d"), mr("2", "x", protocol="t2 spc"), mr("3", "AX FLAIR")], rules=rules)
    assert {m: s.uid for m, s in mapping.assigned.items()} == {"flair": "1", "t2": "2"}
    assert [s.uid for s in mapping.unmatched] == ["3"]


@pytest.mark.parametrize(
    "config, message",
    [
        ({"rules": {"pd": {"include": "pd"}}}, "unknown modality 'pd'"),
        ({"rules": {"t1": {"include": "("}}}, "bad pattern '\\('"),
        ({"rules": {"t1": {"exclude": "x"}}}, "at least one 'include'"),
        ({"rules": {"t1": {"include": 3}}}, "must be a pattern or a list"),
        ({"rules": {"t1": {"include": "t1", "exlude": "x"}}}, "unknown keys \\['exlude'\\]"),
        ({"rule": {}}, "unknown keys \\['rule'\\]"),
        ({"rules": {}}, "need 'rules'"),
    ],
)
def test_bad_rules_are_refused_with_the_reason(config: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        rules_from_dict(config)


def test_bad_rules_file_names_the_file(tmp_path) -> None:
    path = tmp_path / "rules.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="series rules '.*rules.json'"):
        rules_from_json(path)


def test_two_rules_for_one_modality_are_refused() -> None:
    with pytest.raises(ValueError, match="two rules for one modality"):
        map_series([mr("1", "x")], rules=(ModalityRule("t1", ("a",)), ModalityRule("t1", ("b",))))


def test_series_from_dicom_json() -> None:
    item = {
        "0020000E": {"vr": "UI", "Value": ["1.2.3"]},
        "00080060": {"vr": "CS", "Value": ["MR"]},
        "00200011": {"vr": "IS", "Value": [4]},
        "0008103E": {"vr": "LO", "Value": ["T1 POST GAD"]},
        "00181030": {"vr": "LO"},
    }
    series = SeriesInfo.from_dicom_json(item)
    assert (series.uid, series.modality, series.number, series.description) == ("1.2.3", "MR", 4, "T1 POST GAD")
    assert "ProtocolName" not in series.attributes
    with pytest.raises(SeriesMappingError, match="without SeriesInstanceUID"):
        SeriesInfo.from_dicom_json({"00080060": {"vr": "CS", "Value": ["MR"]}})
