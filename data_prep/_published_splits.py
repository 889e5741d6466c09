"""Apply a published case-split protocol (``--split rfnet2018:1`` ...) to the cases found in a user's folder.

The lists are facts shipped with ``mckd`` (:func:`mckd.brats.protocols.published_split`). The datalist keeps their
membership exactly: ``validation`` and ``testing`` are the published lists, and ``training`` plus ``meta_validation``
together are the published training list, the :data:`~data_prep._brats_splits.META_VALIDATION_SIZE` meta-validation
cases MCKD needs being taken from it by :func:`~data_prep._brats_splits.meta_validation_from` (stratified by grade and
enhancing tumour, seeded by ``--seed``). So the network never sees a published validation or test case.

A listed case that is absent, unusable or unlabelled in the user's folder is an error naming it; cases the lists do not
name are left out with a warning naming them. For a per-case-subset protocol (``imfuse2023``) each validation and test
item carries its published subset as ``available`` (:data:`~mckd.brats.conventions.MODALITIES` order).
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

from mckd.brats.cases import CaseError
from mckd.brats.protocols import PublishedSplit, published_split

from ._brats_splits import meta_validation_from

__all__ = ["PublishedSplitError", "PublishedAssignment", "select_listed", "assign_published"]

logger = logging.getLogger(__name__)

#: How many case ids a message or warning lists before "and N more".
_SHOWN = 10


class PublishedSplitError(ValueError):
    """The user's folder does not hold every case a published protocol lists (the message names them)."""


@dataclass(frozen=True)
class PublishedAssignment:
    """Case ids per datalist list, and the fixed subsets of a per-case-subset protocol.

    Attributes:
        lists: ``training``, ``meta_validation``, ``validation``, ``testing`` -> case ids.
        subsets: case id -> published subset (``MODALITIES`` order); empty unless the protocol fixes one per case.
        left_out: cases found but not listed, in discovery order.
    """

    lists: dict[str, list[str]]
    subsets: Mapping[str, tuple[bool, ...]]
    left_out: list[str]


def _named(ids: Sequence[str]) -> str:
    more = f" and {len(ids) - _SHOWN} more" if len(ids) > _SHOWN else ""
    return ", ".join(ids[:_SHOWN]) + more


def _check_listed(
    split: PublishedSplit, labelled: Mapping[str, Hashable], unlabelled: Sequence[str], problems: Sequence[CaseError]
) -> None:
    """Raise when a listed case is not a usable labelled case, naming the cases and why."""
    listed = [case_id for ids in split.lists().values() for case_id in ids]
    broken = {p.case_id: p.reason for p in problems}
    no_label = set(unlabelled)
    faults = []
    for case_id in listed:
        if case_id in labelled:
            continue
        if case_id in broken:
            faults.append(f"{case_id} (unusable: {broken[case_id]})")
        elif case_id in no_label:
            faults.append(f"{case_id} (no label file)")
        else:
            faults.append(case_id)
    if faults:
        proto = split.protocol
        raise PublishedSplitError(
            f"--split {proto.name}: {len(faults)} of the {len(set(listed))} {proto.release} cases it lists are missing "
            f"or unusable: {_named(faults)}"
        )


def select_listed(name: str, found: Sequence[str], unreadable: Sequence[str] = ()) -> tuple[set[str], list[str]]:
    """Before any case is read: the listed cases among those found, and the found cases the lists do not name.

    Args:
        name: a protocol of :data:`mckd.brats.protocols.PROTOCOLS`.
        found: ids of the cases discovery found.
        unreadable: ids of the cases discovery reported problems for (present, so not "missing").

    Raises:
        PublishedSplitError: naming every listed case that is not in the folder at all.
    """
    split = published_split(name)
    listed = list(dict.fromkeys(case_id for ids in split.lists().values() for case_id in ids))
    present = set(found) | set(unreadable)
    missing = [case_id for case_id in listed if case_id not in present]
    if missing:
        raise PublishedSplitError(
            f"--split {name}: {len(missing)} of the {len(listed)} {split.protocol.release} cases it lists are missing "
            f"from the folder: {_named(missing)}"
        )
    chosen = set(listed)
    left_out = list(dict.fromkeys(case_id for case_id in found if case_id not in chosen))
    if left_out:
        logger.warning("%d case(s) are not in the %s lists and are left out: %s", len(left_out), name, _named(left_out))
    return chosen, left_out


def assign_published(
    name: str,
    labelled: Sequence[tuple[str, Hashable]],
    unlabelled: Sequence[str] = (),
    problems: Sequence[CaseError] = (),
    seed: int = 0,
) -> PublishedAssignment:
    """The datalist lists of protocol ``name`` for the cases found.

    Args:
        name: a protocol of :data:`mckd.brats.protocols.PROTOCOLS`.
        labelled: ``(case_id, stratum)`` of the usable labelled cases found.
        unlabelled: ids of the usable cases without a label map.
        problems: the problems of the cases found but unusable.
        seed: seed of the meta-validation pick.

    Raises:
        PublishedSplitError: when a listed case is absent, unusable or unlabelled.
        mckd.brats.protocols.ProtocolError: for an unknown protocol.
    """
    split = published_split(name)
    strata = dict(labelled)
    _check_listed(split, strata, unlabelled, problems)
    listed = {case_id for ids in split.lists().values() for case_id in ids}
    left_out = [case_id for case_id, _ in labelled if case_id not in listed]
    left_out += [case_id for case_id in unlabelled if case_id not in listed]
    if left_out:
        logger.warning("%d case(s) are not in the %s lists and are left out: %s", len(left_out), name, _named(left_out))
    training, meta = meta_validation_from([(case_id, strata[case_id]) for case_id in split.training], seed)
    lists = {
        "training": training,
        "meta_validation": meta,
        "validation": list(split.validation),
        "testing": list(split.testing),
    }
    return PublishedAssignment(lists, split.subsets, left_out)
