"""Which DICOM series of a study is which BraTS modality: documented, configurable rules on series attributes.

A PACS study holds one series per acquired sequence, named by the scanner's protocol ("AX FLAIR",
"t1_mprage_sag_p2_iso", "T1 POST GAD", "T2W_TSE"), often with extra series (localisers, derived maps, earlier
segmentations) and often without one of the four BraTS sequences. :func:`map_series` assigns series to the
modalities of :data:`~mckd.brats.conventions.MODALITIES` with one :class:`ModalityRule` per modality:

- only image series count (DICOM ``Modality`` in ``image_modalities``, default ``MR``); the others (a DICOM SEG, a
  structured report) are listed as ignored;
- a rule matches a series when **every** ``include`` pattern and **no** ``exclude`` pattern is found in the series'
  text: its ``fields`` (default ``SeriesDescription``, ``ProtocolName``, ``ContrastBolusAgent``) lower-cased, with
  ``_`` and ``-`` read as spaces, joined by ``" | "`` (Python regular expressions, searched anywhere);
- a series no rule matches is listed as unmatched; a series two rules match, or two series one rule matches, is a
  :class:`SeriesMappingError` naming the series (the study must be sorted out by a person, or the rules made
  stricter); a modality no series matches is missing, which the model handles.

The default rules (:data:`DEFAULT_RULES`) read the usual spellings: FLAIR by ``flair``/``dark fluid``; T1 by ``t1``,
``mprage``, ``spgr``, ``bravo``, ``vibe`` without a contrast word; T1ce the same with a contrast word (``post``,
``gad...``, ``gd``, ``contrast``, ``ce``, ``+c``, ``t1c``, ``enhanced``; also a ``ContrastBolusAgent`` such as
"GADOVIST"); T2 by ``t2`` but not FLAIR, T2* or susceptibility-weighted sequences. A T1-weighted FLAIR ("T1 FLAIR")
is T1, not the T2-FLAIR BraTS calls FLAIR. Other sites' spellings go into a JSON file (:func:`rules_from_json`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from os import PathLike
from typing import Any

from mckd.brats.conventions import MODALITIES

__all__ = [
    "DEFAULT_FIELDS",
    "DEFAULT_RULES",
    "IMAGE_MODALITIES",
    "DICOM_JSON_TAGS",
    "SeriesInfo",
    "ModalityRule",
    "SeriesMapping",
    "SeriesMappingError",
    "series_text",
    "map_series",
    "rules_from_dict",
    "rules_from_json",
]

#: Series attributes (DICOM keywords) whose values the rules read, in this order.
DEFAULT_FIELDS: tuple[str, ...] = ("SeriesDescription", "ProtocolName", "ContrastBolusAgent")
#: DICOM ``Modality`` values of the series that can be a BraTS input.
IMAGE_MODALITIES: tuple[str, ...] = ("MR",)
#: DICOM JSON model tags (QIDO-RS, WADO-RS metadata) of the attributes :meth:`SeriesInfo.from_dicom_json` reads.
DICOM_JSON_TAGS: Mapping[str, str] = {
    "SeriesInstanceUID": "0020000E",
    "Modality": "00080060",
    "SeriesNumber": "00200011",
    "SeriesDescription": "0008103E",
    "ProtocolName": "00181030",
    "ContrastBolusAgent": "00180010",
    "StudyInstanceUID": "0020000D",
}

_T1 = r"\bt1|mp ?rage|\bspgr\b|\bbravo\b|\bvibe\b"
_CONTRAST = r"\b(post|gad\w*|gd|contrast|ce|c|enh\w*)\b|\+ ?c\b|\bt1 ?(c|ce|gd)\b"
_FLAIR = r"flair|dark ?fluid"


class SeriesMappingError(ValueError):
    """The study's series cannot be mapped to modalities without a person's decision (the message says why)."""


@dataclass(frozen=True)
class SeriesInfo:
    """The attributes of one series that the mapping reads.

    Attributes:
        uid: SeriesInstanceUID.
        modality: DICOM ``Modality`` (``"MR"``, ``"SEG"``, ...).
        number: SeriesNumber, or None.
        attributes: DICOM keyword -> value (``SeriesDescription``, ``ProtocolName``, ...); absent keys are empty.
    """

    uid: str
    modality: str = "MR"
    number: int | None = None
    attributes: Mapping[str, str] = field(default_factory=dict)

    @property
    def description(self) -> str:
        return str(self.attributes.get("SeriesDescription", "") or "")

    @classmethod
    def from_dicom_json(cls, item: Mapping[str, Any]) -> SeriesInfo:
        """A series from its DICOM JSON model (a QIDO-RS series result or one instance's WADO-RS metadata).

        Raises:
            SeriesMappingError: when the item has no SeriesInstanceUID.
        """
        values = {keyword: _json_value(item, tag) for keyword, tag in DICOM_JSON_TAGS.items()}
        uid = values.pop("SeriesInstanceUID")
        if not uid:
            raise SeriesMappingError(f"a series without SeriesInstanceUID (0020000E): {dict(item)!r:.300}")
        number = values.pop("SeriesNumber")
        modality = values.pop("Modality")
        attributes = {k: v for k, v in values.items() if v}
        return cls(uid=uid, modality=modality, number=int(float(number)) if number else None, attributes=attributes)

    def summary(self) -> dict[str, Any]:
        """What the result JSON says about the series."""
        out: dict[str, Any] = {"series_uid": self.uid, "series_number": self.number, "modality": self.modality}
        for keyword in ("SeriesDescription", "ProtocolName"):
            out[keyword] = self.attributes.get(keyword, "")
        return out

    def __str__(self) -> str:
        number = f"#{self.number} " if self.number is not None else ""
        return f"{number}'{self.description}' ({self.uid})"


def _json_value(item: Mapping[str, Any], tag: str) -> str:
    """The first value of ``tag`` in a DICOM JSON item as text ('' when absent); person names by their Alphabetic."""
    element = item.get(tag) or item.get(tag.lower()) or {}
    values = element.get("Value") or []
    if not values:
        return ""
    value = values[0]
    if isinstance(value, Mapping):
        value = value.get("Alphabetic", "")
    return str(value).strip()


def series_text(series: SeriesInfo, fields: Sequence[str] = DEFAULT_FIELDS) -> str:
    """The text the rules search: the ``fields`` values, lower-cased, ``_``/``-`` as spaces, joined by ``" | "``."""
    parts = []
    for keyword in fields:
        value = str(series.attributes.get(keyword, "") or "")
        value = re.sub(r"\s+", " ", re.sub(r"[_\-]", " ", value.lower())).strip()
        if value:
            parts.append(value)
    return " | ".join(parts)


@dataclass(frozen=True)
class ModalityRule:
    """How one modality's series is recognised.

    Attributes:
        modality: a key of :data:`~mckd.brats.conventions.MODALITIES`.
        include: regular expressions that must all be found in the series text (at least one).
        exclude: regular expressions none of which may be found.
        fields: the series attributes whose text is searched (see :func:`series_text`).

    Raises:
        ValueError: for an unknown modality, no ``include`` pattern or a pattern that does not compile.
    """

    modality: str
    include: tuple[str, ...]
    exclude: tuple[str, ...] = ()
    fields: tuple[str, ...] = DEFAULT_FIELDS

    def __post_init__(self) -> None:
        if self.modality not in MODALITIES:
            raise ValueError(f"rule for unknown modality '{self.modality}'; expected one of {list(MODALITIES)}.")
        if not self.include:
            raise ValueError(f"the rule for '{self.modality}' needs at least one 'include' pattern.")
        if not self.fields:
            raise ValueError(f"the rule for '{self.modality}' reads no series attribute ('fields' is empty).")
        for pattern in (*self.include, *self.exclude):
            try:
                re.compile(pattern)
            except re.error as err:
                raise ValueError(f"the rule for '{self.modality}' has a bad pattern {pattern!r}: {err}.") from err

    def matches(self, series: SeriesInfo) -> bool:
        """Whether every ``include`` and no ``exclude`` pattern is found in the series' text."""
        text = series_text(series, self.fields)
        if not text:
            return False
        return all(re.search(p, text) for p in self.include) and not any(re.search(p, text) for p in self.exclude)


#: The default rules, one per modality (see the module docstring).
DEFAULT_RULES: tuple[ModalityRule, ...] = (
    ModalityRule("flair", include=(_FLAIR,), exclude=(r"\bt1",)),
    ModalityRule("t1", include=(_T1,), exclude=(_CONTRAST,)),
    ModalityRule("t1ce", include=(_T1, _CONTRAST)),
    ModalityRule("t2", include=(r"\bt2",), exclude=(_FLAIR, r"t2 ?\*|t2 ?star|\bswi\b|\bswan\b|\bgre\b")),
)


@dataclass(frozen=True)
class SeriesMapping:
    """The outcome of :func:`map_series`.

    Attributes:
        assigned: modality key -> its series, for the modalities found (in :data:`MODALITIES` order).
        unmatched: image series no rule matched.
        ignored: series that are not images (``Modality`` not in the image modalities).
    """

    assigned: Mapping[str, SeriesInfo]
    unmatched: tuple[SeriesInfo, ...] = ()
    ignored: tuple[SeriesInfo, ...] = ()

    @property
    def missing(self) -> tuple[str, ...]:
        """The modalities without a series."""
        return tuple(m for m in MODALITIES if m not in self.assigned)

    def series_uids(self) -> list[str | None]:
        """One entry per modality in :data:`MODALITIES` order: the series' UID, or None when missing."""
        return [self.assigned[m].uid if m in self.assigned else None for m in MODALITIES]

    def to_dict(self) -> dict[str, Any]:
        """The mapping for a result JSON: series per modality, missing modalities, unmatched and ignored series."""
        return {
            "series": {m: s.summary() for m, s in self.assigned.items()},
            "missing": list(self.missing),
            "unmatched": [s.summary() for s in self.unmatched],
            "ignored": [s.summary() for s in self.ignored],
        }


def map_series(
    series: Iterable[SeriesInfo],
    rules: Sequence[ModalityRule] = DEFAULT_RULES,
    image_modalities: Sequence[str] = IMAGE_MODALITIES,
) -> SeriesMapping:
    """Assign the study's ``series`` to modalities with ``rules`` (see the module docstring).

    Raises:
        SeriesMappingError: when two rules match one series, when two series match one modality, or when no image
            series matches any rule.
        ValueError: when two rules are for the same modality.
    """
    modalities = [rule.modality for rule in rules]
    if len(set(modalities)) != len(modalities):
        raise ValueError(f"two rules for one modality: {modalities}.")
    wanted = {m.upper() for m in image_modalities}
    candidates: dict[str, list[SeriesInfo]] = {m: [] for m in modalities}
    unmatched: list[SeriesInfo] = []
    ignored: list[SeriesInfo] = []
    images = 0
    for item in series:
        if item.modality.upper() not in wanted:
            ignored.append(item)
            continue
        images += 1
        hits = [rule.modality for rule in rules if rule.matches(item)]
        if len(hits) > 1:
            raise SeriesMappingError(
                f"series {item} matches the rules of several modalities {hits}; make the rules stricter "
                "(series_rules) or remove the series from the study."
            )
        if hits:
            candidates[hits[0]].append(item)
        else:
            unmatched.append(item)
    for modality, found in candidates.items():
        if len(found) > 1:
            names = ", ".join(str(s) for s in found)
            raise SeriesMappingError(
                f"{len(found)} series of the study are candidates for {modality}: {names}; keep one in the study, or "
                "make the series rules tell them apart."
            )
    assigned = {m: candidates[m][0] for m in MODALITIES if candidates.get(m)}
    if not assigned:
        names = ", ".join(str(s) for s in unmatched) or "none"
        raise SeriesMappingError(
            f"no series of the study is recognised as one of {list(MODALITIES)} ({images} image series: {names}); "
            "adapt the series rules to this site's protocol names."
        )
    return SeriesMapping(assigned=assigned, unmatched=tuple(unmatched), ignored=tuple(ignored))


def rules_from_dict(config: Mapping[str, Any]) -> tuple[ModalityRule, ...]:
    """Rules from a configuration such as ``{"fields": [...], "rules": {"flair": {"include": [...], "exclude": [...]},
    ...}}``; ``fields`` (optional, default :data:`DEFAULT_FIELDS`) applies to every rule that names none.

    Raises:
        ValueError: for an unknown key, an unknown modality, a pattern that does not compile, or no rule at all.
    """
    unknown = set(config) - {"fields", "rules"}
    if unknown:
        raise ValueError(f"unknown keys {sorted(unknown)} in the series rules; expected 'fields' and 'rules'.")
    fields = tuple(config.get("fields") or DEFAULT_FIELDS)
    rules = config.get("rules")
    if not isinstance(rules, Mapping) or not rules:
        raise ValueError("the series rules need 'rules': {modality: {'include': [...], 'exclude': [...]}}.")
    out = []
    for modality, rule in rules.items():
        extra = set(rule) - {"include", "exclude", "fields"}
        if extra:
            raise ValueError(f"unknown keys {sorted(extra)} in the rule for '{modality}'.")
        out.append(
            ModalityRule(
                modality=modality,
                include=_patterns(rule.get("include"), modality, "include"),
                exclude=_patterns(rule.get("exclude"), modality, "exclude"),
                fields=tuple(rule.get("fields") or fields),
            )
        )
    return tuple(out)


def _patterns(value: Any, modality: str, key: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, Sequence) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ValueError(f"'{key}' of the rule for '{modality}' must be a pattern or a list of patterns, got {value!r}.")


def rules_from_json(path: str | PathLike) -> tuple[ModalityRule, ...]:
    """Rules from a JSON file in the format of :func:`rules_from_dict`.

    Raises:
        ValueError: for a file that is not JSON or not a valid configuration (the message names the file).
    """
    try:
        with open(path) as fp:
            config = json.load(fp)
        return rules_from_dict(config)
    except (ValueError, TypeError, AttributeError) as err:
        raise ValueError(f"series rules '{path}': {err}") from err
