"""Output files of a transcription: MIDI, notes CSV, piano-roll PNG and the optional sonification
(WAV) and model outputs (NPZ), written as one set.

Tracks. A slot of a model with a timbre head and instrument prototypes is named after its nearest
instrument (``"violin"``; repeated names numbered, ``"violin 1"``, ``"violin 2"``) and gets that
instrument's General MIDI program (:mod:`slotmpe.instruments`); a slot below the similarity cut-off
is ``"slot k (unknown)"``. Slots of the fixed-order family model 1b are named by family. Other slots
are ``"slot 1"`` .. ``"slot K"`` (1-based slot index of the model) with program 0. A ``"mixture"``
track (program 0) holds the mixture-branch notes; it doubles the slot tracks' notes, so mute it
when listening to the separated parts.

CSV columns: ``slot, onset_s, offset_s, midi, confidence, instrument, similarity,
name_confidence``; ``slot`` is the 1-based slot number or the string ``"mix"`` for mixture notes;
``instrument`` the track's named instrument (or family; empty when the model names none; ``unknown``
below the model's tuned cut-off), ``similarity`` its cosine similarity and ``name_confidence`` the
calibrated probability of the nearest instrument (:func:`slotmpe.instruments.score_slots`; each
empty when there is none). Rows are ordered by track (slots, then mixture), onset, then pitch.

PNG: the piano roll drawn straight into an RGB array (no figure machinery; ~50x faster than
matplotlib for 60 s): one row of :data:`PNG_ROW_PX` pixels or more per MIDI pitch (high pitches at
the top), every slot track a coloured lane of its own inside the row (tab10 colours by slot
number), mixture notes as light grey behind them, a grey line under every C and vertical lines
every second (darker every 10 s; every 10 s / 60 s for long files, whose image is at most
:data:`PNG_MAX_WIDTH` pixels wide). The legend (colour per track, axes) is in the PNG's text
metadata (``Title``, ``Description``).

:func:`write_output_set` writes the files of one input to temporary names in the output folder and
renames them into place only when all were written, restoring the previous files if a rename fails:
either all outputs of an input are new, or none changed. The outputs of one name describe one
input: optional outputs of that name from an earlier run that this one does not write (``song.png``
after a rerun with ``--no-png``, ``song.sonified.wav`` of another ``song.wav``) are removed in the
same step (:func:`write_output_files`); a file of such a name that is not one of these outputs is
never removed, the set is refused instead.
"""

from __future__ import annotations

import contextlib
import csv
import math
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from slotmpe.constants import MIDI_MAX, MIDI_MIN
from slotmpe.notes import FRAME_SECONDS, MIX, Note, Track
from slotmpe.transcribe.errors import TranscriptionError
from slotmpe.utils import atomic_path, ordinary_mode

MIDI_RESOLUTION: int = 1000  # ticks per beat
MIDI_TEMPO: float = 120.0  # bpm; with MIDI_RESOLUTION one tick is 0.5 ms
DEFAULT_PROGRAM: int = 0  # General MIDI Acoustic Grand Piano: unnamed tracks and the mixture
CSV_COLUMNS: tuple[str, ...] = ("slot", "onset_s", "offset_s", "midi", "confidence", "instrument",
                                "similarity", "name_confidence")
PNG_ROW_PX: int = 6  # least pixel rows per pitch
PNG_LANE_PX: int = 2  # pixel rows per slot track inside a pitch row
PNG_PX_PER_S: float = 50.0
PNG_MAX_WIDTH: int = 4000
PNG_LEGEND_START: str = "x: time,"  # how the legend (the PNG's Description text) begins
SONIFY_SR: int = 22_050  # sample rate of the sonification WAV
#: The outputs of one input ``<name>``, by kind: ``<name><suffix>`` (always MIDI and CSV).
OUTPUT_SUFFIXES: dict[str, str] = {"midi": ".mid", "csv": ".notes.csv", "png": ".png",
                                   "sonify": ".sonified.wav", "npz": ".model_output.npz"}
TAB10: tuple[tuple[int, int, int], ...] = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))


def velocity_of(confidence: float) -> int:
    """MIDI velocity 1..127 from a confidence in [0, 1]."""
    return int(min(127, max(1, round(127 * confidence))))


def write_midi(path: str | os.PathLike[str], tracks: Sequence[Track]) -> Path:
    """Write one MIDI track per :class:`Track` (named as the track, with its GM program),
    atomically."""
    import pretty_midi

    # 1000 ticks per beat at 120 bpm = 0.5 ms per tick: frame times (multiples of 32 ms) are exact.
    pm = pretty_midi.PrettyMIDI(resolution=MIDI_RESOLUTION, initial_tempo=MIDI_TEMPO)
    for tr in tracks:
        inst = pretty_midi.Instrument(program=int(tr.program), is_drum=False, name=tr.name)
        for n in tr.notes:
            inst.notes.append(
                pretty_midi.Note(
                    velocity=velocity_of(n.confidence), pitch=n.midi, start=n.onset_s, end=n.offset_s
                )
            )
        pm.instruments.append(inst)
    out = Path(path)
    with atomic_path(out) as tmp:
        pm.write(str(tmp))
    return out


def write_notes_csv(path: str | os.PathLike[str], tracks: Sequence[Track]) -> Path:
    """Write :data:`CSV_COLUMNS` rows (slot 1..K or ``mix``), atomically."""
    out = Path(path)
    with atomic_path(out) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(CSV_COLUMNS)
        for tr in tracks:
            sim = "" if tr.similarity is None else f"{tr.similarity:.4f}"
            conf = "" if tr.name_confidence is None else f"{tr.name_confidence:.4f}"
            for n in tr.notes:
                w.writerow([n.slot, f"{n.onset_s:.3f}", f"{n.offset_s:.3f}", n.midi,
                            f"{n.confidence:.4f}", tr.instrument, sim, conf])
    return out


def read_notes_csv(path: str | os.PathLike[str]) -> list[Note]:
    """Read a file written by :func:`write_notes_csv` back into notes (extra columns ignored)."""
    notes: list[Note] = []
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            slot: int | str = row["slot"] if row["slot"] == MIX else int(row["slot"])
            notes.append(Note(slot, float(row["onset_s"]), float(row["offset_s"]),
                              int(row["midi"]), float(row["confidence"])))
    return notes


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#" + "".join(f"{c:02x}" for c in rgb)


def pianoroll_image(tracks: Sequence[Track], duration_s: float
                    ) -> tuple[np.ndarray, dict[str, str]]:
    """``(image, legend)``: the piano roll as an RGB array ``(H, W, 3)`` uint8 and its legend
    (text entries for the PNG metadata); see the module docstring for the layout."""
    all_notes = [n for tr in tracks for n in tr.notes]
    if all_notes:
        lo = max(0, min(n.midi for n in all_notes) - 2)
        hi = min(127, max(n.midi for n in all_notes) + 2)
    else:
        lo, hi = MIDI_MIN, MIDI_MAX
    slot_tracks = [tr for tr in tracks if tr.slot != MIX]
    row = max(PNG_ROW_PX, PNG_LANE_PX * len(slot_tracks) + 2)
    duration = max(duration_s, FRAME_SECONDS)
    pps = min(PNG_PX_PER_S, PNG_MAX_WIDTH / duration)
    width = max(1, math.ceil(duration * pps))
    height = (hi - lo + 1) * row
    img = np.full((height, width, 3), 255, dtype=np.uint8)

    def y_top(midi: int) -> int:
        return (hi - midi) * row

    def x_span(n: Note) -> tuple[int, int]:
        x0 = min(width - 1, int(n.onset_s * pps))
        return x0, max(x0 + 1, min(width, math.ceil(n.offset_s * pps)))

    sec = 1.0 if pps >= 20 else 10.0  # light vertical lines; darker every 10 of them
    for i in range(1, int(duration / sec) + 1):
        x = int(i * sec * pps)
        if x < width:
            img[:, x] = 200 if i % 10 == 0 else 238
    for m in range(lo, hi + 1):
        if m % 12 == 0:
            img[y_top(m) + row - 1, :] = 190
    for tr in tracks:  # mixture notes: light grey over the whole pitch row
        if tr.slot == MIX:
            for n in tr.notes:
                x0, x1 = x_span(n)
                img[y_top(n.midi):y_top(n.midi) + row, x0:x1] = 215
    legend = [f"{PNG_LEGEND_START} {pps:.4g} px per second from 0 s; y: MIDI pitch {hi} (top) to {lo}, "
              f"{row} px per pitch; grey line under every C; vertical lines every {sec:g} s"]
    for i, tr in enumerate(slot_tracks):
        colour = TAB10[(int(tr.slot) - 1) % len(TAB10)]
        off = 1 + i * PNG_LANE_PX
        for n in tr.notes:
            x0, x1 = x_span(n)
            y = y_top(n.midi) + off
            img[y:y + PNG_LANE_PX, x0:x1] = colour
        legend.append(f"{tr.name} ({len(tr.notes)} notes): {_hex(colour)}")
    mix = next((tr for tr in tracks if tr.slot == MIX), None)
    if mix is not None:
        legend.append(f"{mix.name} ({len(mix.notes)} notes): light grey rows")
    return img, {"Description": "; ".join(legend)}


def plot_pianoroll(
    path: str | os.PathLike[str],
    tracks: Sequence[Track],
    duration_s: float,
    title: str = "",
) -> Path:
    """Piano-roll PNG of ``tracks`` (:func:`pianoroll_image`), written atomically with PIL; the
    title and legend go into the PNG's text metadata."""
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    img, text = pianoroll_image(tracks, duration_s)
    info = PngInfo()
    if title:
        info.add_text("Title", title)  # iTXt (UTF-8) when not Latin-1
    for k, v in text.items():
        info.add_text(k, v)
    out = Path(path)
    with atomic_path(out) as tmp:
        Image.fromarray(img, mode="RGB").save(str(tmp), format="PNG", pnginfo=info,
                                              compress_level=3)
    return out


def sonify_tracks(tracks: Sequence[Track], duration_s: float, sr: int = SONIFY_SR) -> np.ndarray:
    """Mono float32 audio ``(n,)`` of the tracks as the MIDI file plays them, rendered with the
    soundfont the embedded datasets are rendered with (:func:`slotmpe.datasets.render.render_program`,
    each track with its GM program, 1 s of release appended). The mixture track doubles the slot
    tracks, so it is rendered only when there is no slot track. Peak-normalised to 0.9 when louder."""
    from slotmpe.datasets.render import render_program

    n = int(math.ceil((max(duration_s, 0.0) + 1.0) * sr))
    slot_tracks = [tr for tr in tracks if tr.slot != MIX]
    out = np.zeros(n, dtype=np.float32)
    for tr in slot_tracks or list(tracks):
        notes = [(x.onset_s, x.offset_s, x.midi, velocity_of(x.confidence)) for x in tr.notes]
        if notes:
            out += render_program(notes, int(tr.program), n, sr=sr)
    peak = float(np.max(np.abs(out))) if n else 0.0
    if peak > 0.9:
        out *= np.float32(0.9 / peak)
    return out


def write_sonification(path: str | os.PathLike[str], tracks: Sequence[Track], duration_s: float,
                       sr: int = SONIFY_SR) -> Path:
    """Write :func:`sonify_tracks` as a 16-bit WAV file, atomically.

    The WAV is encoded in memory (2 bytes a sample, 2.6 MB a minute) and written with Python's
    file I/O, so a full disk is an :class:`OSError` that says so ("No space left on device"),
    not libsndfile's "System error."."""
    import io

    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, sonify_tracks(tracks, duration_s, sr), sr, format="WAV", subtype="PCM_16")
    out = Path(path)
    with atomic_path(out) as tmp, open(tmp, "wb") as fh:
        fh.write(buf.getbuffer())
    return out


def write_model_outputs(path: str | os.PathLike[str], probs: Mapping[str, np.ndarray]) -> Path:
    """Write the model's probabilities as an uncompressed ``.npz`` (atomically): ``mix``
    ``(72, T)``, ``slots`` ``(K, 72, T)``, ``activity`` ``(K,)``, ``timbre`` ``(K, 128)``,
    ``poly`` ``(8, T)`` where the model has them, plus ``frame_times`` ``(T,)`` (s, frame
    centres) and ``midi`` ``(72,)`` (the pitch of each row)."""
    from slotmpe.constants import N_PITCHES

    n = int(np.asarray(probs["mix"]).shape[-1])
    arrays = {k: np.asarray(v) for k, v in probs.items()}
    arrays["frame_times"] = np.arange(n, dtype=np.float64) * FRAME_SECONDS
    arrays["midi"] = np.arange(MIDI_MIN, MIDI_MIN + N_PITCHES, dtype=np.int16)
    out = Path(path)
    with atomic_path(out) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    return out


# --------------------------------------------------------------------------------------------
# one input's outputs as a set


def check_writable(outdir: str | os.PathLike[str]) -> Path:
    """Check, before the model runs, that files can be written into ``outdir``: missing folders
    are created (and removed again), and a probe file is created and removed in it. So a folder
    that cannot be made (``-o /proc/new``, a read-only disk) fails here, not once per input.
    Raises :class:`TranscriptionError` naming the folder otherwise."""
    out = Path(outdir)
    if out.exists() and not out.is_dir():
        raise TranscriptionError(f"{out}: output folder is a file")
    created: list[Path] = []
    try:
        missing: list[Path] = []
        q = out.absolute()
        while not q.is_dir() and not q.exists() and q != q.parent:
            missing.append(q)
            q = q.parent
        if not q.is_dir():
            raise TranscriptionError(f"{out}: output folder cannot be created ({q} is not a "
                                     "folder)")
        for d in reversed(missing):
            try:
                d.mkdir()
            except FileExistsError:
                if not d.is_dir():
                    raise
                continue  # made meanwhile by someone else: not ours to remove
            except OSError as exc:
                raise TranscriptionError(f"{out}: output folder cannot be created in "
                                         f"{d.parent} ({exc.strerror or exc})") from exc
            created.append(d)
        fd, probe = tempfile.mkstemp(prefix=".slotmpe-write-test-", dir=out)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise TranscriptionError(
            f"{out}: output folder is not writable ({exc.strerror or exc})") from exc
    finally:
        for d in reversed(created):  # the outputs create them again when they are written
            with contextlib.suppress(OSError):
                d.rmdir()
    return out


def write_output_set(outputs: Sequence[tuple[Path, Callable[[Path], object]]],
                     remove: Sequence[Path] = ()) -> list[Path]:
    """Write several files as one set: all or none.

    ``outputs`` lists ``(destination, writer)`` pairs; each writer writes its file to the path it
    is given. All are first written to temporary names beside their destinations; only when all
    succeeded are they renamed into place (previous files are kept aside and restored if a rename
    fails). The files in ``remove`` (outputs of an earlier run that this set does not replace)
    are removed in the same step, and restored with the others if it fails. Raises
    :class:`TranscriptionError` naming the output that failed; then no destination has changed
    and no temporary file is left.
    """
    for dest, _ in outputs:
        if dest.is_dir():
            raise TranscriptionError(f"{dest}: cannot write output, a folder has this name")
    temps: list[Path] = []
    try:
        for dest, writer in outputs:
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
            os.close(fd)
            tmp = Path(name)
            temps.append(tmp)
            try:
                writer(tmp)
            except OSError as exc:
                raise TranscriptionError(f"{dest}: cannot write output ({exc})") from exc
            os.chmod(tmp, ordinary_mode(is_dir=False))
        backups: list[tuple[Path, Path]] = []
        done: list[Path] = []
        try:
            for old in remove:
                if old.exists() or old.is_symlink():
                    bak = old.with_name(f".{old.name}.{os.getpid()}.bak")
                    os.replace(old, bak)
                    backups.append((bak, old))
            for (dest, _), tmp in zip(outputs, temps, strict=True):
                if dest.exists() or dest.is_symlink():
                    bak = dest.with_name(f".{dest.name}.{os.getpid()}.bak")
                    os.replace(dest, bak)
                    backups.append((bak, dest))
                os.replace(tmp, dest)
                done.append(dest)
        except OSError as exc:
            for dest in done:
                dest.unlink(missing_ok=True)
            for bak, dest in backups:
                os.replace(bak, dest)
            raise TranscriptionError(f"cannot put outputs in place ({exc})") from exc
        for bak, _ in backups:
            bak.unlink(missing_ok=True)
    finally:
        for tmp in temps:
            tmp.unlink(missing_ok=True)
    return [dest for dest, _ in outputs]


def is_own_output(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` (an optional output's name: ``.png``, ``.sonified.wav``,
    ``.model_output.npz``) is a file these writers made: a PNG with their legend, a mono 16-bit
    WAV at :data:`SONIFY_SR`, an NPZ with ``mix``, ``frame_times`` and ``midi``. Anything
    unreadable is not."""
    p = Path(path)
    try:
        if p.name.endswith(OUTPUT_SUFFIXES["png"]):
            from PIL import Image

            with Image.open(p) as im:
                text = getattr(im, "text", {}) or {}
                return str(text.get("Description", "")).startswith(PNG_LEGEND_START)
        if p.name.endswith(OUTPUT_SUFFIXES["sonify"]):
            import soundfile as sf

            info = sf.info(str(p))
            return (info.format, info.subtype, info.channels, info.samplerate) == (
                "WAV", "PCM_16", 1, SONIFY_SR)
        if p.name.endswith(OUTPUT_SUFFIXES["npz"]):
            with np.load(p, allow_pickle=False) as z:
                return {"mix", "frame_times", "midi"} <= set(z.files)
    except Exception:  # PIL, libsndfile and zipfile raise their own types: not ours
        return False
    return False


def output_paths(outdir: str | os.PathLike[str], base: str) -> dict[str, Path]:
    """Every output of one input named ``base``, by kind (:data:`OUTPUT_SUFFIXES`)."""
    return {kind: Path(outdir) / f"{base}{suffix}" for kind, suffix in OUTPUT_SUFFIXES.items()}


def write_output_files(outdir: Path, base: str, tracks: Sequence[Track], duration_s: float,
                       title: str, write_png: bool = True, sonify: bool = False,
                       model_outputs: Mapping[str, np.ndarray] | None = None,
                       removed: list[Path] | None = None) -> dict[str, Path]:
    """Write ``base.mid``, ``base.notes.csv`` [, ``base.png``] [, ``base.sonified.wav``]
    [, ``base.model_output.npz``] into ``outdir`` as one set (:func:`write_output_set`); returns
    their paths by kind (``midi``, ``csv``, ``png``, ``sonify``, ``npz``).

    The set describes one input: an optional output of the same name that this call does not
    write (``base.png`` of an earlier run without ``--no-png``, ``base.sonified.wav`` of another
    input with the same stem, ...) is removed in the same step; its path is appended to
    ``removed`` when given. A file of such a name that these writers did not make
    (:func:`is_own_output`, e.g. the user's own ``song.png``) is never removed: the set is
    refused with a :class:`TranscriptionError` naming it, and nothing is written."""
    every = output_paths(outdir, base)
    writers: dict[str, Callable[[Path], object]] = {
        "midi": lambda p: write_midi(p, tracks),
        "csv": lambda p: write_notes_csv(p, tracks),
    }
    if write_png:
        writers["png"] = lambda p: plot_pianoroll(p, tracks, duration_s, title=title)
    if sonify:
        writers["sonify"] = lambda p: write_sonification(p, tracks, duration_s)
    if model_outputs is not None:
        writers["npz"] = lambda p: write_model_outputs(p, model_outputs)
    stale = [p for kind, p in every.items()
             if kind not in writers and (p.is_file() or p.is_symlink())]
    for p in stale:
        if p.is_file() and not is_own_output(p):  # a user's song.png is never removed
            raise TranscriptionError(
                f"{p}: exists, and was not written by slotmpe transcribe; it would lie beside "
                f"the new outputs of {base} as if it were one of them: move it, or write to "
                "another folder (-o)")
    write_output_set([(every[kind], w) for kind, w in writers.items()], remove=stale)
    if removed is not None:
        removed.extend(stale)
    return {kind: every[kind] for kind in writers}


def write_outputs(outdir: Path, base: str, tracks: Sequence[Track], duration_s: float,
                  title: str, write_png: bool = True) -> tuple[Path, Path, Path | None]:
    """Write ``base.mid``, ``base.notes.csv`` (and ``base.png``) into ``outdir`` as one set
    (:func:`write_output_files`); returns their paths (``None`` for the PNG when not written)."""
    paths = write_output_files(outdir, base, tracks, duration_s, title, write_png)
    return paths["midi"], paths["csv"], paths.get("png")
