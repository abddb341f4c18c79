"""Tests of slotmpe.midi.read_midi_notes against hand-computed times, with MIDI files written here
by mido (tempo on any track, tempo changes, overlaps, running notes, SMPTE, type 2)."""

from __future__ import annotations

import logging
from pathlib import Path

import mido
import numpy as np
import pretty_midi
import pytest

from slotmpe.midi import NOTE_COLUMNS, MidiError, read_midi_notes

TPB = 480
BPM60 = 1_000_000  # microseconds per beat
BPM120 = 500_000


def _track(
    events: list[tuple[int, mido.Message | mido.MetaMessage]], name: str = ""
) -> mido.MidiTrack:
    """A track from ``(absolute tick, message)`` pairs (stable-sorted by tick)."""
    tr = mido.MidiTrack()
    if name:
        tr.append(mido.MetaMessage("track_name", name=name, time=0))
    now = 0
    for tick, msg in sorted(events, key=lambda e: e[0]):
        tr.append(msg.copy(time=tick - now))
        now = tick
    return tr


def _on(note: int, vel: int = 90, ch: int = 0) -> mido.Message:
    return mido.Message("note_on", note=note, velocity=vel, channel=ch)


def _off(note: int, ch: int = 0) -> mido.Message:
    return mido.Message("note_off", note=note, velocity=0, channel=ch)


def _tempo(us: int) -> mido.MetaMessage:
    return mido.MetaMessage("set_tempo", tempo=us)


def _write(path: Path, tracks: list[mido.MidiTrack], type: int = 1, tpb: int = TPB) -> Path:
    mf = mido.MidiFile(type=type, ticks_per_beat=tpb)
    mf.tracks.extend(tracks)
    mf.save(str(path))
    return path


def _times(df) -> list[tuple[float, float, int]]:
    return [
        (round(a, 6), round(b, 6), int(m))
        for a, b, m in df[["onset_s", "offset_s", "midi"]].to_numpy()
    ]


@pytest.mark.filterwarnings("ignore:Tempo, Key or Time signature change events")
def test_tempo_on_the_note_track(tmp_path: Path) -> None:
    """Type 1, track 0 without tempo, 60 bpm on the note track: ticks 480-960 -> 1.0-2.0 s."""
    conductor = _track([(0, mido.MetaMessage("time_signature", numerator=4, denominator=4))])
    notes = _track([(0, _tempo(BPM60)), (480, _on(60)), (960, _off(60))], name="Lead")
    df = read_midi_notes(_write(tmp_path / "a.mid", [conductor, notes]))
    assert list(df.columns) == list(NOTE_COLUMNS)
    assert _times(df) == [(1.0, 2.0, 60)]
    assert df["track"].tolist() == [1] and df["track_name"].tolist() == ["Lead"]
    # pretty_midi reads tempo from track 0 only: this is the bug the module exists for
    pm = pretty_midi.PrettyMIDI(str(tmp_path / "a.mid"))
    assert pm.instruments[0].notes[0].start == pytest.approx(0.5)


def test_tempo_change_on_another_track_mid_note(tmp_path: Path) -> None:
    """Tempo 120 bpm, then 60 bpm at tick 960 on a third track; a note over the change."""
    t0 = _track([(0, _tempo(BPM120))])
    t1 = _track([(480, _on(64)), (1440, _off(64)), (1920, _on(65)), (2400, _off(65))])
    t2 = _track([(960, _tempo(BPM60))])
    df = read_midi_notes(_write(tmp_path / "b.mid", [t0, t1, t2]))
    # 480 ticks @120 = 0.5 s; 960 -> 1.0 s; 1440 -> 1.0 + 480 @60 = 2.0 s; 1920 -> 3.0; 2400 -> 4.0
    assert _times(df) == [(0.5, 2.0, 64), (3.0, 4.0, 65)]


def test_type0_and_default_tempo(tmp_path: Path) -> None:
    """Type 0: default 120 bpm until a tempo change at tick 960 to 60 bpm."""
    t = _track(
        [(0, _on(70)), (480, _off(70)), (960, _tempo(BPM60)), (960, _on(71)), (1440, _off(71))]
    )
    df = read_midi_notes(_write(tmp_path / "c.mid", [t], type=0))
    assert _times(df) == [(0.0, 0.5, 70), (1.0, 2.0, 71)]


def test_matches_pretty_midi_when_tempo_is_on_track_0(tmp_path: Path) -> None:
    """With every tempo on track 0 pretty_midi is right: both readers agree to 1 microsecond."""
    rng = np.random.default_rng(0)
    t0 = _track(
        [(int(k) * 960, _tempo(int(u))) for k, u in enumerate(rng.integers(300_000, 1_200_000, 6))]
    )
    ev = []
    for k in range(40):
        on = int(rng.integers(0, 5000))
        ev += [(on, _on(40 + k)), (on + int(rng.integers(1, 900)), _off(40 + k))]
    path = _write(tmp_path / "d.mid", [t0, _track(ev)])
    df = read_midi_notes(path)
    pm = sorted(
        ((n.start, n.end, n.pitch) for n in pretty_midi.PrettyMIDI(str(path)).instruments[0].notes),
        key=lambda n: (n[0], n[2]),
    )
    assert len(df) == 40
    np.testing.assert_allclose(
        df[["onset_s", "offset_s"]].to_numpy(), np.array(pm)[:, :2], atol=1e-6
    )
    assert df["midi"].tolist() == [n[2] for n in pm]


def test_overlapping_same_pitch_fifo(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """on 0 s, on 0.5 s, off 1 s, off 2 s -> notes 0-1 s and 0.5-2 s, one warning naming the file."""
    t = _track([(0, _on(60)), (480, _on(60)), (960, _off(60)), (1920, _off(60))])
    path = _write(tmp_path / "overlap.mid", [_track([(0, _tempo(BPM120))]), t])
    with caplog.at_level(logging.WARNING):
        df = read_midi_notes(path)
    assert _times(df) == [(0.0, 1.0, 60), (0.5, 2.0, 60)]
    msg = [r.getMessage() for r in caplog.records if "first-in first-out" in r.getMessage()]
    assert len(msg) == 1 and "overlap.mid" in msg[0] and ": 1 note(s)" in msg[0]


def test_velocity_zero_is_note_off_and_channels_are_separate(tmp_path: Path) -> None:
    t = _track(
        [
            (0, _on(60, ch=0)),
            (0, _on(60, ch=1)),
            (480, _on(60, vel=0, ch=0)),  # note-off of channel 0 only
            (960, _off(60, ch=1)),
        ]
    )
    df = read_midi_notes(_write(tmp_path / "v0.mid", [t]))
    assert sorted(zip(df["channel"], _times(df), strict=True)) == [
        (0, (0.0, 0.5, 60)),
        (1, (0.0, 1.0, 60)),
    ]


def test_unclosed_orphan_and_zero_length(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A note never closed ends at the file's last event; orphan note-offs and zero-length notes
    are dropped; each with a warning naming the file and the count."""
    t1 = _track([(0, _on(60)), (240, _off(61)), (480, _on(62)), (480, _off(62))])
    t2 = _track([(0, _on(50)), (1920, _off(50))])  # the file ends at tick 1920 = 2.0 s
    path = _write(tmp_path / "open.mid", [t1, t2])
    with caplog.at_level(logging.WARNING):
        df = read_midi_notes(path)
    assert _times(df) == [(0.0, 2.0, 50), (0.0, 2.0, 60)]
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert (
        "open.mid: 1 note(s) never closed by a note-off; ended at the end of the file (2.000 s)"
        in text
    )
    assert "open.mid: 1 note-off(s) with no sounding note ignored" in text
    assert "open.mid: dropped 1 zero-length note(s)" in text


def test_program_and_drums(tmp_path: Path) -> None:
    t = _track(
        [
            (0, mido.Message("program_change", program=40, channel=2)),
            (0, _on(67, ch=2)),
            (480, _off(67, ch=2)),
            (0, _on(36, ch=9)),
            (120, _off(36, ch=9)),
            (480, mido.Message("program_change", program=41, channel=2)),
            (480, _on(68, ch=2)),
            (960, _off(68, ch=2)),
        ]
    )
    df = read_midi_notes(_write(tmp_path / "prog.mid", [t]))
    by_pitch = df.set_index("midi")
    assert by_pitch.loc[67, "program"] == 40 and by_pitch.loc[68, "program"] == 41
    assert bool(by_pitch.loc[36, "is_drum"]) and not by_pitch.loc[67, "is_drum"]


def test_smpte_time_division(tmp_path: Path) -> None:
    """25 fps x 40 ticks per frame = 1000 ticks/s; tempo events are ignored."""
    t = _track([(0, _tempo(BPM60)), (500, _on(60)), (1500, _off(60))])
    tpb = -(25 << 8) + 40  # header bytes 0xE7 0x28
    df = read_midi_notes(_write(tmp_path / "smpte.mid", [t], type=0, tpb=tpb))
    assert _times(df) == [(0.5, 1.5, 60)]


def test_errors_name_the_file(tmp_path: Path) -> None:
    t = _track([(0, _on(60)), (480, _off(60))])
    with pytest.raises(MidiError, match=r"type2\.mid: type-2 MIDI file"):
        read_midi_notes(_write(tmp_path / "type2.mid", [t, t], type=2))
    (tmp_path / "bad.mid").write_bytes(b"MThd nonsense")
    with pytest.raises(MidiError, match=r"bad\.mid: cannot read MIDI file"):
        read_midi_notes(tmp_path / "bad.mid")
    with pytest.raises(MidiError, match=r"gone\.mid: MIDI file does not exist"):
        read_midi_notes(tmp_path / "gone.mid")


def test_empty_file(tmp_path: Path) -> None:
    df = read_midi_notes(_write(tmp_path / "empty.mid", [_track([(0, _tempo(BPM60))])]))
    assert len(df) == 0 and list(df.columns) == list(NOTE_COLUMNS)
