"""Split labelled cases into training / meta-validation / validation: the paper's split, k-fold, or a ratio.

A published protocol's name (``rfnet2018:1`` ..., see :mod:`mckd.brats.protocols`) parses to a ``published`` spec;
its lists are applied by :mod:`data_prep._published_splits`, which takes the meta-validation cases from the published
training list with :func:`meta_validation_from`.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from typing import Hashable, Sequence

import numpy as np

from mckd.brats.conventions import PAPER_META_VALIDATION_CASES
from mckd.brats.protocols import PROTOCOLS

__all__ = ["META_VALIDATION_SIZE", "SplitSpec", "split_cases", "meta_validation_from"]

logger = logging.getLogger(__name__)

#: Number of meta-validation cases (the published split holds 5).
META_VALIDATION_SIZE = len(PAPER_META_VALIDATION_CASES)


@dataclass(frozen=True)
class SplitSpec:
    """A parsed ``--split`` value: ``paper``, ``kfold:K:I`` (fold I of K, 0-based), ``ratio:R`` (0 < R < 1) or the
    name of a published protocol (``kind == "published"``, its name in ``protocol``)."""

    kind: str
    folds: int = 0
    fold: int = 0
    ratio: float = 0.0
    protocol: str = ""

    @classmethod
    def parse(cls, text: str) -> SplitSpec:
        """Parse ``text``.

        Raises:
            ValueError: naming the malformed value and the accepted forms.
        """
        parts = text.strip().split(":")
        usage = (
            f"malformed --split '{text}': expected paper, kfold:K:I (K >= 2, 0 <= I < K), ratio:R (0 < R < 1) or a "
            f"published protocol ({', '.join(PROTOCOLS)})"
        )
        if text.strip() in PROTOCOLS:
            return cls("published", protocol=text.strip())
        try:
            if parts == ["paper"]:
                return cls("paper")
            if parts[0] == "kfold" and len(parts) == 3:
                folds, fold = int(parts[1]), int(parts[2])
                if folds >= 2 and 0 <= fold < folds:
                    return cls("kfold", folds=folds, fold=fold)
            if parts[0] == "ratio" and len(parts) == 2 and 0 < float(parts[1]) < 1:
                return cls("ratio", ratio=float(parts[1]))
        except ValueError:
            pass
        raise ValueError(usage)

    def __str__(self) -> str:
        if self.kind == "kfold":
            return f"kfold:{self.folds}:{self.fold}"
        if self.kind == "ratio":
            return f"ratio:{self.ratio:g}"
        if self.kind == "published":
            return self.protocol
        return self.kind


def _by_stratum(cases: Sequence[tuple[str, Hashable]], rng: np.random.Generator) -> list[list[str]]:
    """Case ids grouped by stratum (strata in sorted order), each group shuffled."""
    groups: dict[str, list[str]] = defaultdict(list)
    for case_id, stratum in cases:
        groups[repr(stratum)].append(case_id)
    return [[ids[i] for i in rng.permutation(len(ids))] for _, ids in sorted(groups.items())]


def _stratified_pick(cases: Sequence[tuple[str, Hashable]], n: int, rng: np.random.Generator) -> list[str]:
    """``n`` case ids taken round-robin over the strata, so every stratum is represented as far as ``n`` allows."""
    groups, picked = _by_stratum(cases, rng), []
    for position in range(max((len(g) for g in groups), default=0)):
        picked += [group[position] for group in groups if position < len(group)]
    return picked[:n]


def _stratified_folds(cases: Sequence[tuple[str, Hashable]], folds: int, rng: np.random.Generator) -> list[list[str]]:
    """Deal the cases, stratum by stratum, into ``folds`` folds."""
    dealt = [case_id for group in _by_stratum(cases, rng) for case_id in group]
    return [dealt[fold::folds] for fold in range(folds)]


def _meta_validation(pool: Sequence[tuple[str, Hashable]], rng: np.random.Generator) -> tuple[list[str], list[str]]:
    """Take a stratified meta-validation set from ``pool`` (at most half of it); return (training, meta_validation)."""
    if len(pool) < 2:
        raise ValueError(f"need at least 2 labelled cases for training and meta-validation, got {len(pool)}.")
    size = min(META_VALIDATION_SIZE, len(pool) // 2)
    if size < META_VALIDATION_SIZE:
        logger.warning("only %d labelled cases left for training: meta-validation takes %d of them", len(pool), size)
    meta = _stratified_pick(pool, size, rng)
    chosen = set(meta)
    return [case_id for case_id, _ in pool if case_id not in chosen], meta


def meta_validation_from(training: Sequence[tuple[str, Hashable]], seed: int) -> tuple[list[str], list[str]]:
    """Take :data:`META_VALIDATION_SIZE` meta-validation cases from a published training list.

    The pick is stratified (round-robin over the strata, e.g. grade and presence of enhancing tumour, each shuffled
    by ``numpy.random.default_rng(seed)``), so the same cases and seed give the same split.

    Returns:
        ``(training, meta_validation)``: the rest of the list in its order, and the picked cases.

    Raises:
        ValueError: for fewer than 2 cases.
    """
    return _meta_validation(training, np.random.default_rng(seed))


def _paper_split(cases: Sequence[tuple[str, Hashable]], rng: np.random.Generator) -> tuple[list[str], list[str]]:
    """The published meta-validation cases when all are present, else a stratified pick."""
    ids = {case_id for case_id, _ in cases}
    present = [case_id for case_id in PAPER_META_VALIDATION_CASES if case_id in ids]
    if len(present) == len(PAPER_META_VALIDATION_CASES):
        return [case_id for case_id, _ in cases if case_id not in set(present)], present
    if present:
        logger.warning(
            "only %d of the %d published meta-validation cases are present (%s): using a stratified split instead",
            len(present),
            len(PAPER_META_VALIDATION_CASES),
            ", ".join(present),
        )
    return _meta_validation(cases, rng)


def split_cases(cases: Sequence[tuple[str, Hashable]], spec: SplitSpec, seed: int) -> dict[str, list[str]]:
    """Assign labelled cases to ``training``, ``meta_validation`` and ``validation``.

    Args:
        cases: ``(case_id, stratum)`` in a stable order; the stratum (e.g. grade and presence of enhancing tumour) is
            spread evenly over every subset.
        spec: ``paper``: the published 5 meta-validation cases when all are present (else 5 stratified ones), the
            rest training, no validation. ``kfold:K:I``: stratified fold I of K is validation, 5 meta-validation cases
            are taken from the other folds. ``ratio:R``: a stratified fraction R (at least one case) is validation,
            then 5 meta-validation cases.
        seed: the same seed and cases give the same split.

    Raises:
        ValueError: when there are too few cases for the requested split, or for a published protocol's spec.
    """
    if spec.kind == "published":
        raise ValueError(f"split {spec} is a published protocol: see data_prep._published_splits.assign_published.")
    rng = np.random.default_rng(seed)
    validation: list[str] = []
    if spec.kind == "kfold":
        if len(cases) < spec.folds:
            raise ValueError(f"split {spec} needs at least {spec.folds} labelled cases, got {len(cases)}.")
        validation = _stratified_folds(cases, spec.folds, rng)[spec.fold]
    elif spec.kind == "ratio":
        validation = _stratified_pick(cases, max(1, round(spec.ratio * len(cases))), rng)
    held_out = set(validation)
    pool = [case for case in cases if case[0] not in held_out]
    training, meta = _paper_split(pool, rng) if spec.kind == "paper" else _meta_validation(pool, rng)
    return {"training": training, "meta_validation": meta, "validation": [c for c, _ in cases if c in held_out]}
