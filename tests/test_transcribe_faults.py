"""Issue 24's transcription faults: stdin, the stream's noise floor, wrong model files, notes cut
by the end of the file. Each test failed on the code before its fix."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from test_transcribe import _tiny_widths, trained_3c, two_instrument_excerpt  # noqa: F401

from slotmpe.constants import SAMPLE_RATE
from slotmpe.transcribe import (
    TranscribeOptions,
    TranscriptionError,
    load_model,
    make_tracks,
    output_names,
    resolve_thresholds,
)
from slotmpe.transcribe.audio_input import open_audio

# ------------------------------------------------------------------ fault 2: stdin


@pytest.mark.parametrize("fmt", ["flac", "mp3", "wav"])
def test_stdin_pipe_reads_formats_that_seek(tmp_path: Path, fmt: str) -> None:
    """FLAC from a pipe failed ("flac decoder lost sync") and MP3 lost its end; both are read
    whole now, WAV as it arrives. ``-`` is named ``stdin``, not ``-``."""
    audio, _ = two_instrument_excerpt()
    y = np.concatenate([audio, audio, 0.5 * audio[: 2 * SAMPLE_RATE]])  # 8.0 s
    path = tmp_path / f"s.{fmt}"
    sf.write(path, y, SAMPLE_RATE)
    with subprocess.Popen(["cat", str(path)], stdout=subprocess.PIPE) as cat:
        assert cat.stdout is not None
        src = open_audio("-", stdin=cat.stdout)
        n = sum(len(b) for b in src.blocks(seconds=0.25))
    assert n / SAMPLE_RATE == pytest.approx(8.0, abs=0.01)
    assert output_names([Path("-")]) == ["stdin"]


# ------------------------------------------------------------------ fault 3: stream noise floor


def test_stream_keeps_an_absolute_noise_floor(trained_3c: Path) -> None:  # noqa: F811
    """-60 dBFS hiss before the music: whole-file mode gives no note in it, and the stream gave
    hundreds (it normalised the hiss to full scale). Now (almost) none."""
    from slotmpe.transcribe.stream import StreamTranscriber

    model, meta = load_model(trained_3c)
    opts = TranscribeOptions(mix_threshold=0.4, slot_threshold=0.4, write_png=False)
    audio, _ = two_instrument_excerpt()
    hiss = np.random.default_rng(0).standard_normal(8 * SAMPLE_RATE).astype(np.float32) * 1e-3
    y = np.concatenate([hiss, audio + hiss[: len(audio)]])
    st = StreamTranscriber(model, meta, opts)
    for a in range(0, len(y), 4000):
        st.push(y[a : a + 4000])
    st.finish()
    tracks = st.tracks(len(y) / SAMPLE_RATE)
    in_hiss = sum(1 for t in tracks for n in t.notes if n.offset_s < 7.5)
    assert in_hiss <= 2
    assert any(n.onset_s >= 8.0 for t in tracks for n in t.notes)  # the music still gives notes


# ------------------------------------------------------------------ fault 4: wrong model files


def test_wrong_model_files_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A timbre encoder.pt fails at loading, naming its kind, before any audio is read; a 1a
    export beside 3c's thresholds.json keeps its own thresholds."""
    import torch

    from slotmpe.cli import main
    from slotmpe.models import build_model, save_checkpoint
    from slotmpe.models.timbre_encoder import TimbreEncoder
    from slotmpe.transcribe.onnx_export import export_onnx

    torch.manual_seed(0)
    enc = tmp_path / "encoder.pt"
    save_checkpoint(enc, TimbreEncoder(), {})
    with pytest.raises(TranscriptionError, match="encoder.pt.*timbre encoder"):
        load_model(enc)
    # the audio does not exist: had it been read first, that would be the error
    assert main(["transcribe", str(tmp_path / "nowhere.wav"), "--model", str(enc),
                 "-o", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "timbre encoder" in err and "nowhere.wav" not in err

    a1 = tmp_path / "a1" / "model.pt"
    save_checkpoint(a1, build_model("1a", **_tiny_widths()), {"exp": "1a", "dataset": "d", "seed": 0})
    (a1.parent / "thresholds.json").write_text(json.dumps(
        {"mix": 0.3, "slots": None, "exp": "1a", "dataset": "d", "seed": 0}))
    c3 = tmp_path / "c3"
    c3.mkdir()
    (c3 / "thresholds.json").write_text(json.dumps(
        {"mix": 0.7, "slots": 0.6, "exp": "3c", "dataset": "d", "seed": 0}))
    onnx = export_onnx(a1, c3 / "1a.onnx")
    mix, slots, _ = resolve_thresholds(onnx)
    assert (mix, slots) == (pytest.approx(0.3), 0.5)  # its own, not 3c's 0.7 / 0.6
    # a thresholds.json of the same run (or one that records no run) is still used
    (c3 / "thresholds.json").write_text(json.dumps({"mix": 0.45, "exp": "1a", "seed": 0}))
    assert resolve_thresholds(onnx)[0] == pytest.approx(0.45)


# ------------------------------------------------------------------ fault 6: notes at the end


def test_notes_are_trimmed_to_the_end_before_the_length_filter() -> None:
    """A 0.09 s file (3 frames): a note on all frames lasts 90 ms, less than the 96 ms minimum."""
    from slotmpe.transcribe.stream import NoteTracker

    prob = np.zeros((72, 3), dtype=np.float32)
    prob[40] = 0.9  # 3 frames = 96 ms before trimming
    prob[50, :] = 0.9
    opts = TranscribeOptions(min_note_ms=96.0)
    tracks = make_tracks({"mix": prob}, opts, uses_slots=False, duration_s=0.09)
    assert tracks[-1].notes == []
    longer = make_tracks({"mix": prob}, opts, uses_slots=False, duration_s=0.096)
    assert len(longer[-1].notes) == 2
    tr = NoteTracker(0.5, 3, 2, "mix")  # the stream's online version: the same rule
    tr.push(prob)
    assert tr.finish(0.09) == []
