"""Tests of slotmpe.targets: frame/label time agreement, rolls, union, polyphony."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from slotmpe.constants import FAMILIES, HOP_LENGTH, SAMPLE_RATE
from slotmpe.targets import (
    frame_centres,
    notes_to_roll,
    piece_targets,
    polyphony,
    targets_from_rolls,
)


def notes(rows: list[tuple[float, float, int]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["onset_s", "offset_s", "midi"])


def test_one_second_note_covers_frames_32_to_62() -> None:
    roll = notes_to_roll(notes([(1.0, 2.0, 60)]), 100)
    assert roll.shape == (72, 100) and roll.dtype == bool
    frames = np.flatnonzero(roll[60 - 23])
    assert frames[0] == 32 and frames[-1] == 62 and len(frames) == 31
    np.testing.assert_allclose(frame_centres(100)[[32, 62]], [1.024, 1.984])
    assert roll.sum() == 31  # nothing on other pitches


def test_frame_boundaries_are_half_open() -> None:
    t5 = 5 * HOP_LENGTH / SAMPLE_RATE
    t9 = 9 * HOP_LENGTH / SAMPLE_RATE
    roll = notes_to_roll(notes([(t5, t9, 23)]), 20)
    assert np.flatnonzero(roll[0]).tolist() == [5, 6, 7, 8]  # onset centre in, offset centre out
    # a note between two frame centres covers no frame
    short = notes_to_roll(notes([(t5 + 0.001, t5 + 0.01, 40)]), 20)
    assert not short.any()


def test_notes_cut_at_end_and_out_of_range_dropped(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        roll = notes_to_roll(
            notes([(0.0, 100.0, 94), (0.0, 1.0, 22), (0.0, 1.0, 95), (0.5, 0.6, 23)]), 10, name="x.csv"
        )
    assert roll[71].all()  # MIDI 94 kept, cut at T
    assert roll[0].sum() == 0  # 0.5 s is past frame 9 (0.288 s)
    assert roll.sum() == 10
    assert "dropped 2 of 4 notes" in caplog.text and "x.csv" in caplog.text


def test_missing_columns_raise() -> None:
    with pytest.raises(ValueError, match="midi"):
        notes_to_roll(pd.DataFrame({"onset_s": [0.0], "offset_s": [1.0]}), 10)


def test_empty_notes_give_empty_roll() -> None:
    assert not notes_to_roll(notes([]), 7).any()


def test_mixture_is_union_and_families() -> None:
    rng = np.random.default_rng(0)
    src = rng.random((3, 72, 50)) < 0.1
    tg = targets_from_rolls(src, ["strings", "woodwinds", "strings"])
    np.testing.assert_array_equal(tg.mix_roll, src[0] | src[1] | src[2])
    np.testing.assert_array_equal(tg.family_rolls[FAMILIES.index("strings")], src[0] | src[2])
    np.testing.assert_array_equal(tg.family_rolls[FAMILIES.index("woodwinds")], src[1])
    assert not tg.family_rolls[FAMILIES.index("brass")].any()
    np.testing.assert_array_equal(tg.poly, np.minimum(tg.mix_roll.sum(0), 7))
    np.testing.assert_array_equal(tg.source_poly, src.sum(1))
    assert tg.poly.dtype == np.uint8 and tg.source_poly.dtype == np.uint8 and tg.n_frames == 50


def test_polyphony_clipped_at_seven() -> None:
    chord = notes([(0.0, 1.0, 40 + i) for i in range(10)])
    tg = piece_targets([chord, notes([(0.0, 1.0, 80)])], ["keyboards", "brass"], 40)
    assert tg.mix_roll[:, 0].sum() == 11
    assert tg.poly[0] == 7 and tg.poly.max() == 7
    assert tg.source_poly[0, 0] == 10 and tg.source_poly[1, 0] == 1  # per source: not clipped
    assert tg.poly[-1] == 0  # frame 39 centre 1.248 s > 1 s
    assert polyphony(np.ones((72, 3), bool), clip=None).tolist() == [72, 72, 72]


def test_unknown_family_and_no_sources() -> None:
    with pytest.raises(ValueError, match="percussion"):
        targets_from_rolls(np.zeros((1, 72, 5), bool), ["percussion"])
    tg = piece_targets([], [], 5)
    assert tg.source_rolls.shape == (0, 72, 5) and not tg.mix_roll.any()
