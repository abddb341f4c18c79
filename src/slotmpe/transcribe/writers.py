"""Output files of a transcription: MIDI, notes CSV and piano-roll PNG, written as one set.

Tracks. Slots are an unordered set, so no instrument name is known per slot: MIDI tracks are named
``"slot 1"`` .. ``"slot K"`` (1-based slot index of the model; for the fixed-order family model 1b the
family is appended, e.g. ``"slot 1 (brass)"``), plus a ``"mixture"`` track holding the mixture-branch
notes. Every track uses the neutral General MIDI program 0 (Acoustic Grand Piano); the mixture track
doubles the slot tracks' notes, so mute it when listening to the separated parts.

CSV columns: ``slot, onset_s, offset_s, midi, confidence``; ``slot`` is the 1-based slot number
(as in the MIDI track names) or the string ``"mix"`` for mixture notes. Rows are ordered by track
(slots, then mixture), onset, then pitch.

:func:`write_output_set` writes the files of one input to temporary names in the output folder and
renames them into place only when all were written, restoring the previous files if a rename fails:
either all outputs of an input are new, or none changed. matplotlib is imported only for a PNG.
"""

from __future__ import annotations

import csv
import os
import tempfile
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path

import numpy as np

from slotmpe.constants import MIDI_MAX, MIDI_MIN
from slotmpe.transcribe.notes import Note, Track
from slotmpe.transcribe.options import FRAME_SECONDS, MIX, TranscriptionError
from slotmpe.utils import atomic_path, ordinary_mode

MIDI_RESOLUTION: int = 1000  # ticks per beat
MIDI_TEMPO: float = 120.0  # bpm; with MIDI_RESOLUTION one tick is 0.5 ms
DEFAULT_PROGRAM: int = 0  # General MIDI Acoustic Grand Piano, for every track
_NO_FONT_FAMILIES = ("Last Resort",)  # placeholder-glyph fonts: they "have" every character


def velocity_of(confidence: float) -> int:
    """MIDI velocity 1..127 from a confidence in [0, 1]."""
    return int(min(127, max(1, round(127 * confidence))))


def write_midi(path: str | os.PathLike[str], tracks: Sequence[Track]) -> Path:
    """Write one MIDI track per :class:`Track` (program 0, named as the track), atomically."""
    import pretty_midi

    # 1000 ticks per beat at 120 bpm = 0.5 ms per tick: frame times (multiples of 32 ms) are exact.
    pm = pretty_midi.PrettyMIDI(resolution=MIDI_RESOLUTION, initial_tempo=MIDI_TEMPO)
    for tr in tracks:
        inst = pretty_midi.Instrument(program=DEFAULT_PROGRAM, is_drum=False, name=tr.name)
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
    """Write ``slot,onset_s,offset_s,midi,confidence`` rows (slot 1..K or ``mix``), atomically."""
    out = Path(path)
    with atomic_path(out) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["slot", "onset_s", "offset_s", "midi", "confidence"])
        for tr in tracks:
            for n in tr.notes:
                w.writerow([n.slot, f"{n.onset_s:.3f}", f"{n.offset_s:.3f}", n.midi,
                            f"{n.confidence:.4f}"])
    return out


def read_notes_csv(path: str | os.PathLike[str]) -> list[Note]:
    """Read a file written by :func:`write_notes_csv` back into notes."""
    notes: list[Note] = []
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            slot: int | str = row["slot"] if row["slot"] == MIX else int(row["slot"])
            notes.append(Note(slot, float(row["onset_s"]), float(row["offset_s"]),
                              int(row["midi"]), float(row["confidence"])))
    return notes


def plot_pianoroll(
    path: str | os.PathLike[str],
    tracks: Sequence[Track],
    duration_s: float,
    title: str = "",
) -> Path:
    """Piano-roll PNG: one colour per slot (tab10 by slot number), mixture notes as grey boxes.

    Within a pitch row every slot track has its own thin lane, so notes that several slots share
    (unisons, or a slot duplicating another) stay visible.

    x axis in seconds, y axis MIDI pitch labelled with note names (every C, or every pitch for a
    narrow range). The width grows with the duration (capped), so long files stay readable.
    """
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch
    from pretty_midi import note_number_to_name

    all_notes = [n for tr in tracks for n in tr.notes]
    if all_notes:
        lo = max(0, min(n.midi for n in all_notes) - 2)
        hi = min(127, max(n.midi for n in all_notes) + 2)
    else:
        lo, hi = MIDI_MIN, MIDI_MAX
    width = float(np.clip(duration_s / 4.0, 8.0, 60.0))
    height = float(np.clip((hi - lo) * 0.12 + 1.5, 3.5, 10.0))
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    cmap = colormaps["tab10"]
    handles = []
    for tr in tracks:  # mixture first as background boxes, then slots on top
        if tr.slot != MIX or not tr.notes:
            continue
        ax.barh([n.midi for n in tr.notes], [n.offset_s - n.onset_s for n in tr.notes],
                left=[n.onset_s for n in tr.notes], height=1.0, facecolor="none",
                edgecolor="0.45", linewidth=0.8, zorder=1)
        handles.append(Patch(facecolor="none", edgecolor="0.45", label=tr.name))
    slot_tracks = [tr for tr in tracks if tr.slot != MIX]
    lane = 0.9 / max(1, len(slot_tracks))  # each slot gets its own lane inside a pitch row
    for i, tr in enumerate(slot_tracks):
        colour = cmap((int(tr.slot) - 1) % 10)
        y0 = -0.45 + (i + 0.5) * lane
        ax.barh([n.midi + y0 for n in tr.notes], [n.offset_s - n.onset_s for n in tr.notes],
                left=[n.onset_s for n in tr.notes], height=lane * 0.9, color=colour, alpha=0.9,
                linewidth=0, zorder=2)
        handles.append(Patch(color=colour, label=f"{tr.name} ({len(tr.notes)} notes)"))
    ax.set_xlim(0.0, max(duration_s, FRAME_SECONDS))
    ax.set_ylim(lo - 0.5, hi + 0.5)
    step = 1 if hi - lo <= 14 else 12
    ticks = [m for m in range(lo, hi + 1) if step == 1 or m % 12 == 0]
    ax.set_yticks(ticks, [note_number_to_name(m) for m in ticks])
    ax.set_yticks(range(lo, hi + 1), minor=True)
    ax.grid(axis="y", which="major", linewidth=0.5, alpha=0.4)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("pitch")
    if title:
        text, family = title_font(title)
        ax.set_title(text, fontfamily=family)
    if handles:
        ax.legend(handles=handles, loc="upper right", fontsize="small", framealpha=0.8)
    else:
        ax.text(0.5, 0.5, "no notes above threshold", transform=ax.transAxes, ha="center")
    fig.tight_layout()
    out = Path(path)
    with atomic_path(out) as tmp:
        fig.savefig(str(tmp), format="png")
    return out


@cache
def _font_has(font_path: str, text: str) -> bool:
    from matplotlib.ft2font import FT2Font

    try:
        font = FT2Font(font_path)
    except (OSError, RuntimeError):
        return False
    return all(font.get_char_index(ord(c)) != 0 for c in text if not c.isspace())


def title_font(title: str) -> tuple[str, str | None]:
    """``(text, font family)`` for a PNG title: the title in matplotlib's default font when it has
    every glyph, else in an installed font that has them (e.g. a CJK font), else the title with
    the characters no font shows replaced by ``?`` (so matplotlib never warns about glyphs)."""
    from matplotlib import font_manager, rcParams

    default = font_manager.findfont(font_manager.FontProperties(family=rcParams["font.family"]))
    if _font_has(default, title):
        return title, None
    for entry in font_manager.fontManager.ttflist:
        if entry.name.startswith(_NO_FONT_FAMILIES):
            continue
        if _font_has(entry.fname, title):
            return title, entry.name
    text = "".join(c if c.isspace() or _font_has(default, c) else "?" for c in title)
    return text, None


# --------------------------------------------------------------------------------------------
# one input's outputs as a set


def check_writable(outdir: str | os.PathLike[str]) -> Path:
    """Check, before the model runs, that files can be written into ``outdir``: a probe file is
    created and removed when it exists, else its nearest existing parent must be a writable folder
    (``outdir`` is created when the first outputs are written). Raises
    :class:`TranscriptionError` naming the folder otherwise."""
    out = Path(outdir)
    if out.exists() and not out.is_dir():
        raise TranscriptionError(f"{out}: output folder is a file")
    if out.is_dir():
        try:
            fd, probe = tempfile.mkstemp(prefix=".slotmpe-write-test-", dir=out)
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise TranscriptionError(
                f"{out}: output folder is not writable ({exc.strerror or exc})"
            ) from exc
        return out
    parent = out.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise TranscriptionError(f"{out}: output folder cannot be created ({parent} is not a "
                                 "writable folder)")
    return out


def write_output_set(outputs: Sequence[tuple[Path, Callable[[Path], object]]]) -> list[Path]:
    """Write several files as one set: all or none.

    ``outputs`` lists ``(destination, writer)`` pairs; each writer writes its file to the path it
    is given. All are first written to temporary names beside their destinations; only when all
    succeeded are they renamed into place (previous files are kept aside and restored if a rename
    fails). Raises :class:`TranscriptionError` naming the output that failed; then no destination
    has changed and no temporary file is left.
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


def write_outputs(outdir: Path, base: str, tracks: Sequence[Track], duration_s: float,
                  title: str, write_png: bool = True) -> tuple[Path, Path, Path | None]:
    """Write ``base.mid``, ``base.notes.csv`` (and ``base.png``) into ``outdir`` as one set
    (:func:`write_output_set`); returns their paths (``None`` for the PNG when not written)."""
    midi_path, csv_path = outdir / f"{base}.mid", outdir / f"{base}.notes.csv"
    png_path = outdir / f"{base}.png" if write_png else None
    outputs: list[tuple[Path, Callable[[Path], object]]] = [
        (midi_path, lambda p: write_midi(p, tracks)),
        (csv_path, lambda p: write_notes_csv(p, tracks)),
    ]
    if png_path is not None:
        outputs.append((png_path, lambda p: plot_pianoroll(p, tracks, duration_s, title=title)))
    write_output_set(outputs)
    return midi_path, csv_path, png_path

