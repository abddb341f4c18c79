"""Tests of issue 24's transcription features: the sibling ONNX fast path, bounded-memory long files,
the array-drawn PNG, named instruments and Basic Pitch's options (frequency range, sonification,
model outputs)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from test_transcribe import trained_3c, two_instrument_excerpt  # noqa: F401

from slotmpe.constants import FAMILIES, INSTRUMENT_FAMILY, MIDI_MIN, N_PITCHES, SAMPLE_RATE
from slotmpe.transcribe import MIX, Note, Track, TranscribeOptions, probs_to_notes, read_notes_csv

ROOT = Path(__file__).resolve().parents[1]


def _protos(names: tuple[str, ...] = ("cello", "flute", "violin"), seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((len(names), 128))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return {"names": list(names), "families": [INSTRUMENT_FAMILY[n] for n in names],
            "vectors": v.tolist(), "source": "test prototypes"}


@pytest.fixture(scope="module")
def named_3c(trained_3c: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
    """The trained 3c fixture re-saved with instrument prototypes whose first two vectors are the
    model's own slot-1 and slot-2 timbre embeddings on the duet (so the names are known), plus its
    ONNX export beside it."""
    from slotmpe.models import load_checkpoint, save_checkpoint
    from slotmpe.transcribe import audio_cqt
    from slotmpe.transcribe.onnx_export import export_onnx
    from slotmpe.transcribe.runners import as_runner

    model, meta = load_checkpoint(trained_3c)
    timbre = as_runner(model, meta).predict(audio_cqt(two_instrument_excerpt()[0]), None)["timbre"]
    protos = _protos(("flute", "cello", "violin"))
    protos["vectors"][0] = (timbre[0] / np.linalg.norm(timbre[0])).tolist()
    protos["vectors"][1] = (timbre[1] / np.linalg.norm(timbre[1])).tolist()
    out = tmp_path_factory.mktemp("named") / "model.pt"
    save_checkpoint(out, model, {"note": "test fixture", "instrument_prototypes": protos})
    (out.parent / "thresholds.json").write_text('{"mix": 0.4, "slots": 0.4}')
    export_onnx(out, out.with_suffix(".onnx"))
    return out


def _duet(tmp_path: Path, repeat: int = 1) -> Path:
    wav = tmp_path / "duet.wav"
    sf.write(wav, np.tile(two_instrument_excerpt()[0], repeat), SAMPLE_RATE)
    return wav


# ------------------------------------------------------------------ fast path: sibling .onnx


def test_export_records_identity_and_prototypes(named_3c: Path) -> None:
    from slotmpe.instruments import check_prototypes
    from slotmpe.models import load_checkpoint
    from slotmpe.transcribe.onnx_runner import read_onnx_metadata
    from slotmpe.transcribe.runners import checkpoint_identity

    info = read_onnx_metadata(named_3c.with_suffix(".onnx"))
    assert info["source"]["identity"] == checkpoint_identity(named_3c)
    _, meta = load_checkpoint(named_3c)
    assert info["instrument_prototypes"] == check_prototypes(meta["extra"]["instrument_prototypes"])


def _cli(args: list[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "slotmpe.cli", "transcribe", *args],
                          capture_output=True, text=True, env=env, timeout=600)


def test_pt_runs_its_up_to_date_sibling_onnx(named_3c: Path, tmp_path: Path) -> None:
    """``--model model.pt`` runs model.onnx when it is up to date and says so once; a stale or
    foreign export, or --no-onnx, runs the checkpoint with torch."""
    import shutil

    from slotmpe.transcribe.runners import load_model_fast

    wav = _duet(tmp_path)
    res = _cli([str(wav), "-m", str(named_3c), "-o", str(tmp_path / "a"), "--no-png"])
    assert res.returncode == 0, res.stderr
    assert res.stderr.count("model.onnx") == 1 and "onnxruntime" in res.stderr
    onnx_rows = read_notes_csv(tmp_path / "a" / "duet.notes.csv")
    res = _cli([str(wav), "-m", str(named_3c), "-o", str(tmp_path / "b"), "--no-png", "--no-onnx"])
    assert res.returncode == 0 and "model.onnx" not in res.stderr
    torch_rows = read_notes_csv(tmp_path / "b" / "duet.notes.csv")
    assert [(n.slot, n.onset_s, n.offset_s, n.midi) for n in onnx_rows] == [
        (n.slot, n.onset_s, n.offset_s, n.midi) for n in torch_rows] and onnx_rows

    d = tmp_path / "copy"
    d.mkdir()
    pt, ox = d / "model.pt", d / "model.onnx"
    shutil.copy2(named_3c, pt)
    shutil.copy2(named_3c.with_suffix(".onnx"), ox)
    os.utime(pt, (ox.stat().st_mtime + 10, ox.stat().st_mtime + 10))  # checkpoint newer: stale
    model, _, used, note = load_model_fast(pt)
    assert used == pt and "older" in note and not hasattr(model, "session")
    os.utime(ox, (pt.stat().st_mtime + 10, pt.stat().st_mtime + 10))
    assert load_model_fast(pt)[2] == ox
    with open(pt, "ab") as fh:  # another checkpoint under the same name, export newer
        fh.write(b"\0")
    os.utime(ox, (pt.stat().st_mtime + 10, pt.stat().st_mtime + 10))
    _, _, used, note = load_model_fast(pt)
    assert used == pt and "another checkpoint" in note


def test_workflow_exports_every_model(tmp_path: Path) -> None:
    """rule all asks for model.onnx beside every model.pt (dry run, tiny profile), planned in an
    empty working directory: in the checkout, outputs of a run already made there (the README's
    first command) would leave some exports out of the plan."""
    import re

    res = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--config", "profile=tiny",
                          "--snakefile", str(ROOT / "Snakefile"),
                          "--configfile", str(ROOT / "config.yaml"), "--directory", str(tmp_path)],
                         capture_output=True, text=True, cwd=tmp_path, timeout=600,
                         env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", out, flags=re.M))
    n_models = int(counts.get("train_model", 0)) + int(counts.get("derive_model", 0))
    assert int(counts["export_onnx"]) == n_models > 0


# ------------------------------------------------------------------ bounded memory


def test_stitched_blocks_equal_stitch() -> None:
    from slotmpe.stitching import chunk_bounds, stitch
    from slotmpe.transcribe.chunked import stitched_blocks

    rng = np.random.default_rng(1)
    n, mf, k = 137, 40, 3
    cqt = rng.random((5, n)).astype(np.float32)

    def predict(x: np.ndarray) -> dict[str, np.ndarray]:  # a deterministic "model" of its input
        t = x.shape[1]
        slots = np.stack([np.tile(x[j % 5], (N_PITCHES, 1)) * (j + 1) / 4 for j in range(k)])
        slots = slots[rng.permutation(k)]  # slot order differs per chunk
        return {"mix": slots.max(axis=0), "slots": slots,
                "activity": slots.mean(axis=(1, 2)), "timbre": slots[:, :4, :4].reshape(k, 16),
                "poly": np.tile(x[0], (8, 1))[:, :t]}

    rng_state = rng.bit_generator.state
    bounds = chunk_bounds(n, mf)
    ref = stitch([predict(cqt[:, s:e]) for s, e in bounds], bounds, n)
    rng.bit_generator.state = rng_state
    blocks = list(stitched_blocks(predict, n, mf, lambda a, b: cqt[:, a:b]))
    assert [b[0] for b in blocks][0] == 0 and len(blocks) == len(bounds)
    for key in ("mix", "slots", "poly"):
        got = np.concatenate([b[1][key] for b in blocks], axis=-1)
        np.testing.assert_allclose(got, ref[key], rtol=1e-6, atol=1e-7, err_msg=key)
    whole = blocks[-1][2]
    np.testing.assert_array_equal(whole["activity"], ref["activity"])
    np.testing.assert_allclose(whole["timbre"], ref["timbre"], atol=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_block_notes_equal_whole_map_notes(seed: int) -> None:
    from slotmpe.transcribe.chunked import BlockNotes

    rng = np.random.default_rng(seed)
    prob = (rng.random((N_PITCHES, 400)) ** 3).astype(np.float32)
    prob[10, 50:300] = 0.9  # a long note across several blocks
    ref = probs_to_notes(prob, 0.5, 3, 2, slot=1)
    bn = BlockNotes(0.5, 3, 2, slot=1)
    cuts = np.sort(rng.choice(np.arange(1, 400), 6, replace=False))
    for a, b in zip([0, *cuts], [*cuts, 400], strict=True):
        bn.push(prob[:, a:b])
    got = bn.finish()
    assert [(n.onset_s, n.offset_s, n.midi) for n in got] == [
        (n.onset_s, n.offset_s, n.midi) for n in ref]
    np.testing.assert_allclose([n.confidence for n in got], [n.confidence for n in ref], rtol=1e-9)


def test_long_file_in_chunks_equals_in_memory(named_3c: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A file of several model chunks is transcribed with the CQT spilled to disk and notes made
    block by block, giving the notes of the in-memory path (same chunks, stitched)."""
    from slotmpe.transcribe import chunked, load_model, transcribe_cqt, transcribe_file

    wav = _duet(tmp_path, repeat=4)  # 12 s = 375 frames
    audio = sf.read(wav, dtype="float32")[0]
    spilled = []
    real_append = chunked.CqtStore.append

    def spy(self: chunked.CqtStore, mag: np.ndarray) -> None:
        real_append(self, mag)
        spilled.append(self.spilled)

    monkeypatch.setattr(chunked.CqtStore, "append", spy)
    from slotmpe.transcribe import audio_cqt

    for path in (named_3c, named_3c.with_suffix(".onnx")):
        model, meta = load_model(path)
        opts = TranscribeOptions(mix_threshold=0.4, slot_threshold=0.4, max_frames=100)
        res = transcribe_file(wav, model, meta, tmp_path / path.suffix[1:], opts)
        ref, _ = transcribe_cqt(audio_cqt(audio), model, meta, opts, len(audio) / SAMPLE_RATE)
        got = [(t.slot, t.name, [(n.onset_s, n.offset_s, n.midi) for n in t.notes])
               for t in res.tracks]
        want = [(t.slot, t.name, [(n.onset_s, n.offset_s, n.midi) for n in t.notes]) for t in ref]
        assert got == want and sum(len(t.notes) for t in res.tracks) > 10
        # confidences: float32 round-off of two computation orders (the CQT in blocks against
        # at once); 1e-5 absolute held with AVX-512 kernels, AVX2 ones gave 1.9e-5 relative
        np.testing.assert_allclose([n.confidence for t in res.tracks for n in t.notes],
                                   [n.confidence for t in ref for n in t.notes], rtol=1e-4)
    assert spilled and spilled[-1]  # the CQT went to the temporary file


def test_trim_notes_drops_what_is_short_after_clipping() -> None:
    from slotmpe.transcribe.chunked import trim_notes

    notes = [Note(1, 0.0, 0.5, 60, 0.9), Note(1, 0.9, 1.1, 62, 0.9), Note(1, 1.0, 1.2, 64, 0.9)]
    got = trim_notes(notes, 0.96, 96.0)
    assert got == [Note(1, 0.0, 0.5, 60, 0.9)]  # 0.9..0.96 is 60 ms < 96 ms; 1.0 starts after


# ------------------------------------------------------------------ PNG


def test_png_is_drawn_from_arrays(tmp_path: Path) -> None:
    from PIL import Image

    from slotmpe.transcribe.writers import PNG_PX_PER_S, TAB10, plot_pianoroll

    tracks = [Track(2, "violin", [Note(2, 1.0, 2.0, 60, 0.9)]),
              Track(MIX, "mixture", [Note(MIX, 1.0, 2.0, 60, 0.9), Note(MIX, 3.0, 3.5, 64, 0.5)])]
    out = plot_pianoroll(tmp_path / "r.png", tracks, 4.0, title="ヴァイオリン.wav")
    img = Image.open(out)
    assert img.text["Title"] == "ヴァイオリン.wav" and "violin (1 notes): #ff7f0e" in img.text[
        "Description"]
    arr = np.asarray(img.convert("RGB"))
    assert arr.shape[1] == int(4.0 * PNG_PX_PER_S)
    assert (arr == TAB10[1]).all(axis=-1).sum() > 0  # slot 2's colour
    x = int(3.2 * PNG_PX_PER_S)
    assert (arr[:, x] == 215).all(axis=-1).any()  # the mixture-only note, light grey


# ------------------------------------------------------------------ named instruments


def test_prototypes_from_embeddings(tmp_path: Path) -> None:
    import pandas as pd

    from slotmpe.instruments import name_slots, prototypes_from_embeddings

    rng = np.random.default_rng(0)
    base = {"violin": rng.standard_normal(128), "flute": rng.standard_normal(128)}
    rows = []
    for i, (inst, split) in enumerate([("violin", "train"), ("violin", "train"), ("flute", "train"),
                                       ("flute", "test"), ("cello", "val")]):
        e = base.get(inst, rng.standard_normal(128)) + 0.1 * rng.standard_normal(128)
        e = e / np.linalg.norm(e)
        rows.append({"track_id": f"t{i}", "piece_id": "p", "split": split, "instrument": inst,
                     "family": INSTRUMENT_FAMILY[inst], **{f"e{j}": e[j] for j in range(128)}})
    path = tmp_path / "embeddings.parquet"
    pd.DataFrame(rows).to_parquet(path)
    protos = prototypes_from_embeddings(path)
    assert set(protos) == {"names", "families", "vectors", "source"}
    assert protos["names"] == ["flute", "violin"] and protos["families"] == ["woodwinds", "strings"]
    v = np.asarray(protos["vectors"])
    assert v.shape == (2, 128) and np.allclose(np.linalg.norm(v, axis=1), 1.0)
    named = name_slots(np.stack([base["violin"], base["flute"], rng.standard_normal(128)]), protos,
                       min_similarity=0.5)
    assert [n for n, _ in named] == ["violin", "flute", "unknown"]
    assert named[0][1] > 0.9 and named[2][1] < 0.5
    pd.DataFrame(rows[3:]).to_parquet(path)
    with pytest.raises(ValueError, match="no training-split rows"):
        prototypes_from_embeddings(path)


def test_gm_programs_of_project_names() -> None:
    from slotmpe.instruments import gm_program

    assert gm_program("violin") == 40 and gm_program("double_bass") == 43
    assert gm_program("horn") == 60 and gm_program("synth_bass") == 38
    assert gm_program("piccolo") == 72  # through pretty_midi's name table
    for name in [*INSTRUMENT_FAMILY, *FAMILIES]:
        if name not in ("drums",):
            assert 0 <= gm_program(name) <= 127
    named = [n for n in INSTRUMENT_FAMILY if n not in ("piano", "drums")]
    assert all(gm_program(n) != 0 for n in named)


def test_named_tracks_in_midi_and_csv(named_3c: Path, tmp_path: Path) -> None:
    """Slots are named after the nearest prototype (flute, cello: GM 73, 42) on both paths; the
    CSV has instrument and similarity columns."""
    import pretty_midi

    from slotmpe.transcribe import load_model, transcribe_file

    wav = _duet(tmp_path)
    for path in (named_3c, named_3c.with_suffix(".onnx")):
        model, meta = load_model(path)
        res = transcribe_file(wav, model, meta, tmp_path / path.suffix[1:],
                              TranscribeOptions(mix_threshold=0.4, slot_threshold=0.4))
        pm = pretty_midi.PrettyMIDI(str(res.midi_path))
        by_name = {i.name: i.program for i in pm.instruments}
        assert by_name.get("flute") == 73 and by_name.get("cello") == 42, by_name
        assert by_name["mixture"] == 0
        lines = res.csv_path.read_text().splitlines()
        assert lines[0] == ("slot,onset_s,offset_s,midi,confidence,instrument,similarity,"
                            "name_confidence")
        rows = [ln.split(",") for ln in lines[1:]]
        slot1 = [r for r in rows if r[0] == "1"]
        assert slot1 and all(r[5] == "flute" and float(r[6]) > 0.999 for r in slot1)
        assert all(r[5] == "" and r[6] == "" for r in rows if r[0] == MIX)


def test_unknown_below_the_similarity_cut_off() -> None:
    from slotmpe.transcribe.naming import name_tracks

    protos = _protos(("violin", "violin", "flute"))
    v = np.asarray(protos["vectors"])
    timbre = np.stack([v[0], -v[2], v[0]])  # slot 2 points away from every prototype
    tracks = [Track(k, f"slot {k}", [Note(k, 0, 1, 60, 0.9)]) for k in (1, 2, 3)]
    out = name_tracks(tracks, {"timbre": timbre}, None,
                      {"extra": {"instrument_prototypes": protos}}, TranscribeOptions())
    assert [t.name for t in out] == ["violin 1", "slot 2 (unknown)", "violin 2"]
    assert [t.program for t in out] == [40, 0, 40]
    assert out[1].instrument == "unknown" and out[1].similarity < 0.5
    off = name_tracks(tracks, {"timbre": timbre}, None, {"extra": {"instrument_prototypes": protos}},
                      TranscribeOptions(name_instruments=False))
    assert [t.name for t in off] == ["slot 1", "slot 2", "slot 3"]


def test_family_model_1b_names_slots_by_family() -> None:
    from slotmpe.experiments import get_experiment
    from slotmpe.transcribe.naming import name_tracks

    tracks = [Track(1, "slot 1 (brass)", [Note(1, 0, 1, 60, 0.9)]),
              Track(3, "slot 3 (strings)", [Note(3, 0, 1, 50, 0.9)]), Track(MIX, "mixture", [])]
    out = name_tracks(tracks, {}, get_experiment("1b"), {}, TranscribeOptions())
    assert [(t.name, t.program, t.instrument) for t in out] == [
        ("brass", 61, "brass"), ("strings", 48, "strings"), ("mixture", 0, "")]
    plain = name_tracks(tracks, {}, get_experiment("1c"), {}, TranscribeOptions())
    assert [t.name for t in plain] == [t.name for t in tracks]


# ------------------------------------------------------------------ Basic Pitch's options


def test_frequency_range_sonify_and_model_outputs(named_3c: Path, tmp_path: Path) -> None:
    """--minimum-frequency/--maximum-frequency drop notes outside the range; --sonify writes a
    WAV of the MIDI; --save-model-outputs an .npz with the mixture and slot probabilities."""
    from slotmpe.constants import midi_to_hz

    wav = _duet(tmp_path)
    full = tmp_path / "full"
    assert _cli([str(wav), "-m", str(named_3c), "-o", str(full), "--no-png"]).returncode == 0
    all_notes = read_notes_csv(full / "duet.notes.csv")
    assert {n.midi for n in all_notes} >= {55, 72}
    cut = tmp_path / "cut"
    res = _cli([str(wav), "-m", str(named_3c), "-o", str(cut), "--no-png", "--sonify",
                "--save-model-outputs", "--minimum-frequency", str(midi_to_hz(60)),
                "--maximum-frequency", "1000"])
    assert res.returncode == 0, res.stderr
    kept = read_notes_csv(cut / "duet.notes.csv")
    assert kept and all(60 <= n.midi <= 83 for n in kept)
    assert kept == [n for n in all_notes if 60 <= n.midi <= 83]

    audio, sr = sf.read(cut / "duet.sonified.wav")
    assert sr == 22_050 and audio.ndim == 1 and len(audio) >= 3.0 * sr
    assert np.abs(audio).max() > 0.01  # the notes sound

    out = np.load(cut / "duet.model_output.npz")
    assert {"mix", "slots", "activity", "timbre", "frame_times", "midi"} <= set(out.files)
    t = out["mix"].shape[1]
    assert out["mix"].shape == (N_PITCHES, t) and out["slots"].shape == (8, N_PITCHES, t)
    assert out["midi"][0] == MIDI_MIN and len(out["frame_times"]) == t
    assert 0.0 <= out["slots"].min() and out["slots"].max() <= 1.0

    bad = _cli([str(wav), "-m", str(named_3c), "-o", str(cut), "--minimum-frequency", "900",
                "--maximum-frequency", "100"])
    assert bad.returncode == 1 and "exceeds maximum_frequency" in bad.stderr
    bad = _cli([str(wav), "-m", str(named_3c), "-o", str(cut), "--stream", "--sonify"])
    assert bad.returncode == 1 and "not with --stream" in bad.stderr
