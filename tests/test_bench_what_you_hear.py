"""benchmarks/bench_what_you_hear.py (issue 29 item 4): how a transcription's tracks are put
beside the sources, on hand-made notes."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_what_you_hear as wyh  # noqa: E402

from slotmpe.notes import Note, Track, notes_to_roll  # noqa: E402

T = 100  # frames (3.2 s)


def _track(slot: int, name: str, pitches: list[int], t0: float = 0.0, t1: float = 3.0,
           program: int = 0, instrument: str | None = None) -> Track:
    """A slot track as ``transcribe`` names it: ``instrument`` (default: ``name``) is what the
    track was named after, ``name`` the track name (numbered where repeated)."""
    return Track(slot, name, [Note(slot, t0, t1, p, 0.9) for p in pitches], program=program,
                 instrument=name if instrument is None else instrument)


def _source(name: str, instrument: str, pitches: list[int]) -> wyh.Source:
    return wyh.Source(name, instrument, notes_to_roll([Note(0, 0.0, 3.0, p, 1.0) for p in pitches],
                                                      T))


def test_found_duplicate_extra_and_missed() -> None:
    sources = [_source("00_violin", "violin", [72]), _source("01_cello", "cello", [48]),
               _source("02_flute", "flute", [84])]
    tracks = [
        _track(1, "violin", [72], program=40),       # the violin
        _track(2, "slot 2 (unknown)", [72], t0=0.0, t1=2.0, instrument="unknown"),  # a copy
        _track(3, "viola", [48]),                    # the cello, named wrong
        _track(4, "slot 4 (unknown)", [60], instrument="unknown"),  # nothing of the piece
    ]
    rows, missed = wyh.classify(tracks, sources, T)
    assert [r["verdict"] for r in rows] == ["source", "duplicate", "source", "extra"]
    assert rows[0]["stem"] == "00_violin" and rows[0]["f1"] == 1.0 and rows[0]["program"] == 40
    assert rows[1]["stem"] == "copies violin" and rows[1]["instrument"] == "violin"
    assert rows[2]["instrument"] == "cello"
    assert missed == ["02_flute"]
    s = wyh.summary(rows, missed, len(sources))
    assert s == {"tracks": 4, "sources": 3, "found": 2, "duplicates": 1, "extra": 1, "missed": 1,
                 "named_right": 1}
    md = wyh.markdown("3c", rows, missed, s)
    assert "2 found, 1 duplicate, 1 extra, 1 missed (02_flute)" in md


def test_family_names_count_at_the_level_written() -> None:
    """A track named by its family ("strings 2", the calibrated fallback) is right when the
    stem's family is that family; an instrument name must be the instrument; what counts is
    what the track was named after, not its numbered track name."""
    sources = [_source("00_viola", "viola", [60]), _source("01_cello", "cello", [48]),
               _source("02_flute", "flute", [84])]
    tracks = [_track(1, "strings 1", [60], instrument="strings"), _track(2, "woodwinds", [48]),
              _track(3, "flute 2", [84], instrument="flute")]
    rows, missed = wyh.classify(tracks, sources, T)
    assert [r["family"] for r in rows] == ["", "", ""]  # from the instrument (no manifest)
    assert wyh.summary(rows, missed, len(sources))["named_right"] == 2  # strings, flute


def test_a_pair_without_shared_cells_is_no_pair() -> None:
    """Hungarian matching pairs every track with some stem; one sharing no cell is not a find."""
    rows, missed = wyh.classify([_track(1, "violin", [60])], [_source("00_violin", "violin", [72])],
                                T)
    assert rows[0]["verdict"] == "extra" and missed == ["00_violin"]


def test_no_tracks_misses_every_source() -> None:
    rows, missed = wyh.classify([], [_source("a", "violin", [72]), _source("b", "cello", [48])], T)
    assert rows == [] and missed == ["a", "b"]
    assert np.isclose(wyh.summary(rows, missed, 2)["missed"], 2)


def test_totals_over_pieces_and_split_pieces(tmp_path: Path) -> None:
    import pandas as pd

    a = {"sources": 3, "tracks": 4, "found": 2, "duplicates": 1, "extra": 1, "missed": 1,
         "named_right": 1}
    b = {"sources": 2, "tracks": 2, "found": 2, "duplicates": 0, "extra": 0, "missed": 0,
         "named_right": 2}
    tot = wyh.totals([{"3c": a, "4m": b}, {"3c": b, "4m": b}], ["3c", "4m"])
    assert tot["3c"] == {"pieces": 2, "sources": 5, "tracks": 6, "found": 4, "duplicates": 1,
                         "extra": 1, "missed": 1, "named_right": 3}
    assert "| 4m | 2 | 4 | 4 | 4 | 0 | 0 | 0 | 4 (4) |" in wyh.totals_markdown(tot)
    m = tmp_path / "manifest.parquet"
    pd.DataFrame({"piece_id": ["b", "a", "a", "c"], "split": ["test", "test", "test", "val"]}
                 ).to_parquet(m)
    assert wyh.split_pieces(m, "test") == [tmp_path / "audio" / "a", tmp_path / "audio" / "b"]
    with pytest.raises(ValueError, match="no pieces in split 'train'"):
        wyh.split_pieces(m, "train")
