"""Seeded, deterministic train/val/test splits by work (a group of pieces that must stay together),
and the manifest-time check that no split is empty (:func:`fill_empty_splits`)."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PieceInfo:
    """What the splitter needs of a piece: its id, its work (group) and its pitched-source count."""

    piece_id: str
    work: str
    n_pitched: int


def assign_splits(
    pieces: Sequence[PieceInfo],
    seed: int,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    min_pieces_val: int = 2,
    min_pieces_test: int = 2,
    min_sources: int = 3,
    val_pieces: int = 0,
    test_pieces: int = 0,
) -> dict[str, str]:
    """Split pieces by work into train/val/test; returns ``{piece_id: split}``.

    All pieces of a work land in the same split. Works are visited in a seeded random order.
    First test, then val receive works holding pieces with at least ``min_sources`` pitched
    sources until each holds ``min_pieces_test`` / ``min_pieces_val`` such pieces; then each is
    topped up with whole works (any) while it stays within ``round(fraction * n_pieces)`` pieces;
    then, while a split holds fewer than ``test_pieces`` / ``val_pieces`` pieces in all, it gets
    further whole works, as long as val and test together stay within half of all pieces; every
    other work is train. Raises ``ValueError`` when the constraints cannot be met (too few
    works with enough sources, or nothing left for train).
    """
    if not pieces:
        raise ValueError("no pieces to split")
    ids = [p.piece_id for p in pieces]
    if len(set(ids)) != len(ids):
        raise ValueError("piece ids are not unique")
    works: dict[str, list[PieceInfo]] = {}
    for p in pieces:
        works.setdefault(p.work, []).append(p)
    names = sorted(works)
    order = [names[i] for i in np.random.default_rng(seed).permutation(len(names))]
    n = len(pieces)
    mins = {"test": int(min_pieces_test), "val": int(min_pieces_val)}
    targets = {
        "test": max(mins["test"], int(round(test_fraction * n))),
        "val": max(mins["val"], int(round(val_fraction * n))),
    }
    work_split: dict[str, str] = {}

    def count(split: str, eligible_only: bool = False) -> int:
        return sum(
            1
            for w, s in work_split.items()
            if s == split
            for p in works[w]
            if not eligible_only or p.n_pitched >= min_sources
        )

    for split in ("test", "val"):
        for w in order:
            if count(split, eligible_only=True) >= mins[split]:
                break
            if w not in work_split and any(p.n_pitched >= min_sources for p in works[w]):
                work_split[w] = split
        have = count(split, eligible_only=True)
        if have < mins[split]:
            raise ValueError(
                f"cannot put {mins[split]} pieces with >= {min_sources} pitched sources into "
                f"{split}: only {have} available in works not used elsewhere "
                f"({len(works)} works, {n} pieces); add pieces or lower min_pieces_{split}"
            )
    for split in ("test", "val"):
        for w in order:
            if w not in work_split and count(split) + len(works[w]) <= targets[split]:
                work_split[w] = split
    floors = {"test": int(test_pieces), "val": int(val_pieces)}
    for split in ("test", "val"):
        for w in order:
            if count(split) >= floors[split]:
                break
            # the floors never take train below half of all pieces (small builds keep a train split)
            if w not in work_split and count("test") + count("val") + len(works[w]) <= n // 2:
                work_split[w] = split
    for w in order:
        work_split.setdefault(w, "train")
    if "train" not in work_split.values():
        raise ValueError(f"no work left for train ({len(works)} works, {n} pieces); add pieces")
    return {p.piece_id: work_split[p.work] for p in pieces}


def fill_empty_splits(
    split_of: Mapping[str, str],
    where: str,
    fill: bool,
    seed: int,
    log: logging.Logger,
    work_of: Callable[[str], str] | None = None,
) -> dict[str, str]:
    """Check at manifest time that train, val and test each hold a piece; returns ``{piece: split}``.

    ``split_of``: ``{piece_id: split}`` of the pieces that will be in the manifest (a partial copy
    of a dataset may leave a split empty; training then has no validation windows, evaluation no
    test pieces). An empty split raises :class:`ManifestError` naming it (``where``: the dataset's
    folder), unless ``fill`` (the dataset option ``fill_empty_splits: true``): then, for each
    empty split in the order val, test, train, one work (``work_of(piece)``, default the piece
    itself; URMP: pieces sharing a title) drawn with ``random.Random(seed)`` from the fullest
    other split that keeps at least one work is moved into it, with a warning on ``log``.
    """
    from slotmpe.datasets.manifest import ManifestError

    work = work_of or (lambda p: p)
    out = dict(split_of)

    def works_in(split: str) -> list[str]:
        return sorted({work(p) for p, s in out.items() if s == split})

    empty = [s for s in ("val", "test", "train") if not works_in(s)]
    if not empty:
        return out
    counts = {s: sum(v == s for v in out.values()) for s in ("train", "val", "test")}
    if not fill:
        raise ManifestError(
            f"{where}: the {' and '.join(repr(s) for s in empty)} split(s) would be empty (pieces "
            f"per split: {counts}), e.g. in a partial copy; training needs validation pieces and "
            "evaluation test pieces. Add the missing pieces, use another split_file, or set "
            "fill_empty_splits: true in the dataset's config entry to move one seeded piece there"
        )
    rng = random.Random(seed)
    for split in empty:
        donors = [s for s in ("train", "val", "test") if s != split and len(works_in(s)) > 1]
        if not donors:
            now = {s: sum(v == s for v in out.values()) for s in ("train", "val", "test")}
            raise ManifestError(
                f"{where}: cannot fill the empty {split!r} split (fill_empty_splits): too few "
                f"pieces (per split: {now}; each split needs one)"
            )
        donor = max(donors, key=lambda s: (len(works_in(s)), s == "train"))
        moved_work = rng.choice(works_in(donor))
        moved = sorted(p for p, s in out.items() if s == donor and work(p) == moved_work)
        for p in moved:
            out[p] = split
        log.warning(
            "%s: the %r split was empty; moved %s from %r to it (fill_empty_splits, seed %d)",
            where,
            split,
            moved,
            donor,
            seed,
        )
    return out
