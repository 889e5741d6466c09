"""The published case-split protocols of the missing-modality BraTS literature: their case lists and the peers' numbers.

A method's numbers can only stand in the peers' tables when it is trained and scored on the same cases. The lists
(facts, one case id per line; one ``case,mask`` row per case for the IM-Fuse files) ship with this package under
``mckd/brats/published/``, copied from the repositories named in :data:`PROTOCOLS`; the peers' published Dice are in
one data file there, ``peer_results.json``. :mod:`data_prep.brats` (``--split <protocol>``) turns a user's download into
a datalist with the published membership; :mod:`mckd.brats.protocol_report` scores an evaluation in the protocol.

Protocols (:data:`PROTOCOLS`):

- ``rfnet2018:1``, ``rfnet2018:2``, ``rfnet2018:3``: BraTS 2018 (285 cases), three random 199 / 29 / 57 splits of RFNet
  (test lists overlap: not a k-fold). Scoring: mean Dice over the 15 subsets on the test list; RFNet's table row is
  the mean of the three splits (peers' numbers keyed ``rfnet2018``; numbers on split 3 alone keyed ``rfnet2018:3``).
- ``rfnet2020``: BraTS 2020 (369 cases), 219 / 50 / 100. The list ids carry an ``HG_`` / ``LG_`` prefix that the
  release's folders (``BraTS20_Training_001``) do not: :meth:`Protocol.case_id` removes it.
- ``m2ftrans2021``: BraTS 2021 (1251 cases), 876 / 125 / 250.
- ``imfuse2023``: BraTS 2023 GLI (1251 cases), 875 / 125 / 251; every validation and test case is scored with one
  fixed modality subset, the ``mask`` column of its row: four booleans in the order :data:`IMFUSE_MASK_ORDER`
  (FLAIR, T1ce, T1, T2), which :func:`imfuse_mask` turns into :data:`~mckd.brats.conventions.MODALITIES` order.
"""

from __future__ import annotations

import ast
import csv
import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from types import MappingProxyType
from typing import Any, Mapping

from mckd.brats.conventions import MODALITIES

__all__ = [
    "ALL_SUBSETS",
    "PER_CASE_SUBSET",
    "IMFUSE_MASK_ORDER",
    "PROTOCOLS",
    "Protocol",
    "PublishedSplit",
    "PeerResult",
    "ProtocolError",
    "protocol",
    "published_split",
    "peer_results",
    "peers_dice_convention",
    "imfuse_mask",
]

#: Scoring of the RFNet family: every test case under each of the 15 subsets, the mean of the per-subset means.
ALL_SUBSETS = "all_subsets"
#: Scoring of IM-Fuse: every test case once, under its own published subset.
PER_CASE_SUBSET = "per_case_subset"
#: Modality order of the IM-Fuse ``mask`` column (``t2f, t1c, t1n, t2w`` in BraTS 2023 names; IM-Fuse ``test.py``).
IMFUSE_MASK_ORDER: tuple[str, ...] = ("flair", "t1ce", "t1", "t2")
#: The data folder of the published lists and the peers' numbers (package data of ``mckd``).
_DATA = "published"
_PEERS_FILE = "peer_results.json"


class ProtocolError(ValueError):
    """An unknown protocol, or a published list that cannot be read (the message names the protocol or file)."""


@dataclass(frozen=True)
class Protocol:
    """One published split protocol.

    Attributes:
        name: the ``--split`` value (``"rfnet2018:1"``, ``"imfuse2023"``, ...).
        release: the BraTS release it uses.
        layout: the key of :data:`~mckd.brats.conventions.LAYOUTS` of that release's files.
        stem: file-name stem of its lists under ``published/`` (``<stem>_train.txt`` ...).
        sizes: published (training, validation, testing) sizes.
        scoring: :data:`ALL_SUBSETS` or :data:`PER_CASE_SUBSET`.
        peers_key: the key of ``peer_results.json`` whose numbers this protocol's report prints.
        id_prefixes: prefixes of the list ids that the release's case folders do not carry.
        source: repository, commit and path the lists were copied from.
        used_by: methods whose published tables use it.
        aggregate: how the peers' table row is aggregated (e.g. the mean of three splits).
    """

    name: str
    release: str
    layout: str
    stem: str
    sizes: tuple[int, int, int]
    scoring: str
    peers_key: str
    source: str
    used_by: str
    aggregate: str
    id_prefixes: tuple[str, ...] = ()

    def case_id(self, listed: str) -> str:
        """The release's case id (folder name) of a list id."""
        for prefix in self.id_prefixes:
            if listed.startswith(prefix):
                return listed[len(prefix) :]
        return listed


_M2F = "Jun-Jie-Shi/M2FTrans 03a0b28"
_RFNET_USERS = "RFNet, mmFormer, M2FTrans, GSS, DeMoSeg, PASSION"
_RFNET_AGGREGATE = "mean Dice over the 15 subsets on the test list; RFNet's table row is the mean of the 3 splits"


def _rfnet2018(k: int) -> Protocol:
    return Protocol(
        name=f"rfnet2018:{k}",
        release="BraTS 2018",
        layout="brats2018",
        stem=f"brats2018_rfnet_split{k}",
        sizes=(199, 29, 57),
        scoring=ALL_SUBSETS,
        peers_key="rfnet2018",
        source=f"{_M2F}, BraTS/BRATS2018_Training_none_npy/ (train{k}, val{k}, test{k})",
        used_by=_RFNET_USERS,
        aggregate=_RFNET_AGGREGATE,
    )


PROTOCOLS: Mapping[str, Protocol] = MappingProxyType(
    {
        **{f"rfnet2018:{k}": _rfnet2018(k) for k in (1, 2, 3)},
        "rfnet2020": Protocol(
            name="rfnet2020",
            release="BraTS 2020",
            layout="brats2018",
            stem="brats2020_rfnet",
            sizes=(219, 50, 100),
            scoring=ALL_SUBSETS,
            peers_key="rfnet2020",
            source=f"{_M2F}, BraTS/BRATS2020_Training_none_npy/",
            used_by="RFNet, mmFormer, M3AE, DeMoSeg",
            aggregate="mean Dice over the 15 subsets on the test list",
            id_prefixes=("HG_", "LG_"),
        ),
        "m2ftrans2021": Protocol(
            name="m2ftrans2021",
            release="BraTS 2021",
            layout="brats2021",
            stem="brats2021_m2ftrans",
            sizes=(876, 125, 250),
            scoring=ALL_SUBSETS,
            peers_key="m2ftrans2021",
            source=f"{_M2F}, BraTS/BRATS2021_Training_none_npy/",
            used_by="M2FTrans",
            aggregate="mean Dice over the 15 subsets on the test list",
        ),
        "imfuse2023": Protocol(
            name="imfuse2023",
            release="BraTS 2023 GLI",
            layout="brats2023",
            stem="brats2023_imfuse",
            sizes=(875, 125, 251),
            scoring=PER_CASE_SUBSET,
            peers_key="imfuse2023",
            source="AImageLab-zip/IM-Fuse fbbd48e, IMFuse/datalist/",
            used_by="IM-Fuse (MICCAI 2025) and the 7 methods it re-implements",
            aggregate="each test case scored once with its published subset (about 1/15 of the cases per subset)",
        ),
    }
)


@dataclass(frozen=True)
class PublishedSplit:
    """The case lists of one protocol, as the release's case ids (:meth:`Protocol.case_id`).

    Attributes:
        protocol: the protocol.
        training: published training cases (list order).
        validation: published validation cases.
        testing: published test cases.
        subsets: case id -> its fixed subset (:data:`~mckd.brats.conventions.MODALITIES` order) for the validation
            and test cases of a :data:`PER_CASE_SUBSET` protocol; empty otherwise.
    """

    protocol: Protocol
    training: tuple[str, ...]
    validation: tuple[str, ...]
    testing: tuple[str, ...]
    subsets: Mapping[str, tuple[bool, ...]]

    def lists(self) -> dict[str, tuple[str, ...]]:
        """``{"training": ..., "validation": ..., "testing": ...}``."""
        return {"training": self.training, "validation": self.validation, "testing": self.testing}


@dataclass(frozen=True)
class PeerResult:
    """One peer's published mean Dice (%) on a protocol; see ``peer_results.json`` for the fields' sources."""

    method: str
    dice: Mapping[str, float]
    postprocessing: str
    note: str
    source: str


def protocol(name: str) -> Protocol:
    """The protocol named ``name``.

    Raises:
        ProtocolError: for an unknown name, listing the known ones.
    """
    if name not in PROTOCOLS:
        raise ProtocolError(f"unknown protocol '{name}'; choose one of {', '.join(PROTOCOLS)}.")
    return PROTOCOLS[name]


def _read(file_name: str) -> str:
    try:
        return resources.files(__package__).joinpath(_DATA, file_name).read_text(encoding="utf-8")
    except OSError as err:
        raise ProtocolError(
            f"the published list '{_DATA}/{file_name}' is missing beside {__name__} ({err}): the lists ship as package "
            "data of an installed mckd (pip install -e .); a model-zoo export of the bundle does not carry them."
        ) from err


def imfuse_mask(text: str) -> tuple[bool, ...]:
    """An IM-Fuse ``mask`` cell (``"[True, False, False, True]"``, :data:`IMFUSE_MASK_ORDER`) in ``MODALITIES`` order.

    Raises:
        ProtocolError: when the cell is not four booleans or selects no modality.
    """
    try:
        values = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError) as err:
        raise ProtocolError(f"malformed IM-Fuse mask {text!r}") from err
    if not isinstance(values, (list, tuple)) or len(values) != len(IMFUSE_MASK_ORDER):
        raise ProtocolError(f"an IM-Fuse mask holds {len(IMFUSE_MASK_ORDER)} booleans, got {text!r}")
    if not all(isinstance(v, bool) for v in values) or not any(values):
        raise ProtocolError(f"an IM-Fuse mask holds booleans, at least one true; got {text!r}")
    by_modality = dict(zip(IMFUSE_MASK_ORDER, values))
    return tuple(by_modality[m] for m in MODALITIES)


def _ids(proto: Protocol, part: str) -> tuple[str, ...]:
    lines = _read(f"{proto.stem}_{part}.txt").splitlines()
    return tuple(proto.case_id(line.strip()) for line in lines if line.strip())


def _csv_rows(proto: Protocol, part: str) -> dict[str, tuple[bool, ...]]:
    rows = csv.DictReader(_read(f"{proto.stem}_{part}15splits.csv").splitlines())
    return {proto.case_id(row["case"].strip()): imfuse_mask(row["mask"]) for row in rows}


@lru_cache(maxsize=None)
def published_split(name: str) -> PublishedSplit:
    """The published lists of protocol ``name`` (read once).

    Raises:
        ProtocolError: for an unknown protocol or a list that is missing, malformed or not of the published size.
    """
    proto = protocol(name)
    subsets: dict[str, tuple[bool, ...]] = {}
    if proto.scoring == PER_CASE_SUBSET:
        val, test = _csv_rows(proto, "val"), _csv_rows(proto, "test")
        subsets = {**val, **test}
        lists = (_ids(proto, "train"), tuple(val), tuple(test))
    else:
        lists = (_ids(proto, "train"), _ids(proto, "val"), _ids(proto, "test"))
    sizes = tuple(len(set(ids)) for ids in lists)
    if sizes != proto.sizes:
        raise ProtocolError(
            f"protocol {name}: the published lists hold {sizes} distinct cases, expected {proto.sizes}."
        )
    return PublishedSplit(proto, *lists, subsets=MappingProxyType(subsets))


@lru_cache(maxsize=1)
def _peers() -> dict[str, Any]:
    return json.loads(_read(_PEERS_FILE))


def peer_results(name: str) -> list[PeerResult]:
    """The peers' published numbers printed beside a protocol's report (possibly none).

    Args:
        name: a protocol name, or ``"rfnet2018"`` (the mean of the three 2018 splits). For ``rfnet2018:K`` the rows
            are the mean-of-three-splits ones (``rfnet2018``) followed by any numbers published on split K alone.

    Raises:
        ProtocolError: for an unknown name.
    """
    table = _peers()["protocols"]
    key = name if name in table and name not in PROTOCOLS else protocol(name).peers_key
    rows = list(table.get(key, []))
    if name != key:
        rows += table.get(name, [])
    return [
        PeerResult(
            r["method"],
            MappingProxyType({k: float(r[k]) for k in ("ET", "TC", "WT")}),
            r["postprocessing"],
            r["note"],
            r["source"],
        )
        for r in rows
    ]


def peers_dice_convention() -> str:
    """How the peers' Dice treats an empty prediction of an empty region (from ``peer_results.json``)."""
    return str(_peers()["dice_convention"])
