"""Scores of the music21 corpus as note lists: the work pools, extraction and its JSON cache.

Everything here works in *quarter lengths* (ql, music21 offsets); :class:`TempoMap` converts to
seconds. Extraction (:func:`extract_score`) parses a corpus file once with music21 (the slow part:
0.05-6 s a file) and keeps, per part, ``(onset_ql, offset_ql, midi)`` triples with

* ties stripped (a tied chain is one note),
* grace notes skipped, zero-length notes skipped,
* chords kept as several pitches,
* overlapping notes of the same pitch within one part merged (so that a key is never struck twice
  at once, and the label is the union),

plus the score's metronome marks, barlines and time signature. Results are cached as JSON under a
cache folder (one file per corpus path, keyed by :data:`EXTRACT_VERSION` and music21's version).

Works: movements of one work share a *work key* (:func:`work_of`): the folder for multi-movement
works (``haydn/opus74no1``), the BWV number for Bach (``bach/bwv248`` for all Christmas Oratorio
chorales), else the file itself. Dataset splits are made by work key.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath

from slotmpe.utils import atomic_path, get_logger

log = get_logger(__name__)

EXTRACT_VERSION = 1
"""Bump when :func:`extract_score` changes; cached note lists of another version are re-extracted."""

# Quarter-note tempi outside this range in a score are treated as encoding artefacts and ignored.
VALID_QBPM = (40.0, 208.0)

_PREFERRED_EXT = (".mxl", ".xml", ".musicxml", ".krn")

STRING_WORK_DIRS = (
    "beethoven/opus18no1",
    "beethoven/opus59no1",
    "beethoven/opus59no2",
    "beethoven/opus59no3",
    "haydn/opus1no1",
    "haydn/opus74no1",
    "mozart/k155",
    "mozart/k156",
    "mozart/k458",
    "mozart/k80",
    "schumann_robert/opus41no1",
    "corelli/opus3no1",
)
"""Works for string ensemble (quartets, a trio sonata): their parts keep string instruments."""

STRING_WORK_FILES = (
    "beethoven/opus18no3",
    "beethoven/opus18no4",
    "beethoven/opus18no5",
    "beethoven/opus74",
    "beethoven/opus132",
    "beethoven/opus133",
)
"""Single-file quartets (several movements in one long file; only the opening is excerpted)."""

CATEGORIES = ("strings", "chorale", "madrigal", "trecento")


@dataclass
class ScoreData:
    """Note lists of one corpus score.

    ``parts``: one entry per score part, ``{"name": str, "notes": [[onset_ql, offset_ql, midi], ...]}``.
    ``tempi``: ``[[offset_ql, quarter_bpm], ...]`` from the score's metronome marks (may be empty).
    ``barlines``: offsets (ql) of the measures of the first part. ``bar_ql``/``beat_ql``: length of
    a bar and of a beat (ql) of the first time signature.
    """

    corpus_path: str
    work: str
    category: str
    parts: list[dict] = field(default_factory=list)
    tempi: list[list[float]] = field(default_factory=list)
    barlines: list[float] = field(default_factory=list)
    bar_ql: float = 4.0
    beat_ql: float = 1.0
    highest_ql: float = 0.0


@dataclass(frozen=True)
class TempoMap:
    """Piecewise-constant tempo: ``changes`` = ((offset_ql, quarter_bpm), ...) starting at offset 0."""

    changes: tuple[tuple[float, float], ...]

    def seconds(self, ql: float) -> float:
        """Time in seconds of the score offset ``ql`` (quarter lengths)."""
        t = 0.0
        for i, (start, bpm) in enumerate(self.changes):
            end = self.changes[i + 1][0] if i + 1 < len(self.changes) else float("inf")
            if ql <= end:
                return t + (ql - start) * 60.0 / bpm
            t += (end - start) * 60.0 / bpm
        return t  # pragma: no cover - the last segment is unbounded

    def offset(self, seconds: float) -> float:
        """Inverse of :meth:`seconds`: the score offset (ql) reached after ``seconds``."""
        t = 0.0
        for i, (start, bpm) in enumerate(self.changes):
            end = self.changes[i + 1][0] if i + 1 < len(self.changes) else float("inf")
            seg = (end - start) * 60.0 / bpm
            if seconds <= t + seg:
                return start + (seconds - t) * bpm / 60.0
            t += seg
        return float("inf")  # pragma: no cover


def corpus_root() -> Path:
    """Folder of the music21 corpus inside the installed music21 package."""
    from music21 import corpus

    return Path(corpus.__file__).parent


def work_of(rel_path: str) -> str:
    """Work key of a corpus path (relative, POSIX); movements of one work share it.

    ``haydn/opus74no1/movement2.mxl`` -> ``haydn/opus74no1``; ``bach/bwv248.12-2.mxl`` ->
    ``bach/bwv248``; ``monteverdi/madrigal.3.1.mxl`` -> ``monteverdi/madrigal.3.1``.
    """
    p = PurePosixPath(rel_path)
    if len(p.parts) >= 3:
        return str(p.parent)
    stem = p.name.split(".")[0] if p.parts[0] == "bach" else p.stem
    m = re.match(r"(bwv\d+)", stem)
    if p.parts[0] == "bach" and m:
        return f"bach/{m.group(1)}"
    return str(p.with_suffix(""))


def _variant_base(rel_path: str) -> str:
    """Name of a score without format and variant suffix (``bwv18.5-lz.mxl`` -> ``bach/bwv18.5``)."""
    p = PurePosixPath(rel_path)
    name = p.name
    for ext in _PREFERRED_EXT:
        if name.endswith(ext):
            name = name[: -len(ext)]
            break
    return str(p.parent / name.split("-")[0])


def list_pool(category: str) -> list[str]:
    """Relative corpus paths of one category, one file per score (variants and formats deduplicated).

    Categories: ``strings`` (string quartets and Corelli's trio sonata), ``chorale`` (Bach's
    four-part chorales), ``madrigal`` (Monteverdi), ``trecento`` (14th-century Italian songs).
    Sorted, so the pool is the same on every machine.
    """
    root = corpus_root()
    files: list[str] = []
    if category == "strings":
        for d in STRING_WORK_DIRS:
            files += [f.relative_to(root).as_posix() for f in (root / d).iterdir()]
        for f in STRING_WORK_FILES:
            files += [f + ext for ext in _PREFERRED_EXT if (root / (f + ext)).is_file()]
    elif category == "chorale":
        files = [f.relative_to(root).as_posix() for f in (root / "bach").glob("bwv*")]
    elif category == "madrigal":
        files = [f.relative_to(root).as_posix() for f in (root / "monteverdi").glob("madrigal.*")]
        files = [f for f in files if "_old" not in f]
    elif category == "trecento":
        files = [f.relative_to(root).as_posix() for f in (root / "trecento").iterdir()]
    else:
        raise ValueError(f"unknown score category {category!r}; known: {list(CATEGORIES)}")
    best: dict[str, tuple[int, str]] = {}
    for f in files:
        ext = PurePosixPath(f).suffix
        if ext not in _PREFERRED_EXT:
            continue
        base = _variant_base(f)
        key = (_PREFERRED_EXT.index(ext), f)
        if base not in best or key < best[base]:
            best[base] = key
    return sorted(v[1] for v in best.values())


def _cache_file(cache_dir: Path, rel_path: str) -> Path:
    """Cache file of one corpus path."""
    return cache_dir / (re.sub(r"[^A-Za-z0-9._-]+", "_", rel_path) + ".json")


def load_score(rel_path: str, category: str, cache_dir: Path | None) -> ScoreData:
    """Note lists of a corpus score, from the JSON cache if present, else extracted and cached."""
    import music21

    stamp = f"{EXTRACT_VERSION}/{music21.__version__}"
    if cache_dir is not None:
        cf = _cache_file(Path(cache_dir), rel_path)
        if cf.is_file():
            try:
                blob = json.loads(cf.read_text())
                if blob.get("stamp") == stamp:
                    return ScoreData(**blob["score"])
            except (json.JSONDecodeError, KeyError, TypeError):
                log.warning("ignoring unreadable score cache %s", cf)
    score = extract_score(rel_path, category)
    if cache_dir is not None:
        with atomic_path(_cache_file(Path(cache_dir), rel_path)) as tmp:
            tmp.write_text(json.dumps({"stamp": stamp, "score": asdict(score)}))
    return score


def extract_score(rel_path: str, category: str) -> ScoreData:
    """Parse one corpus file with music21 and extract its per-part note lists (see module doc)."""
    from music21 import chord, converter, meter, note, stream, tempo

    path = corpus_root() / rel_path
    s = converter.parse(str(path), forceSource=True)
    if not isinstance(s, stream.Score):
        raise ValueError(f"{path}: not a single score (got {type(s).__name__})")
    parts = []
    for k, part in enumerate(s.parts):
        # (onset, offset, midi, tie_continues) per sounding pitch, in score order
        raw: list[tuple[float, float, int, str | None]] = []
        for el in part.flatten().notes:
            if el.duration.isGrace or el.duration.quarterLength <= 0:
                continue
            if isinstance(el, chord.Chord):
                members = [n for n in el.notes if not isinstance(n, note.Unpitched)]
            elif isinstance(el, note.Note):
                members = [el]
            else:
                continue  # unpitched percussion
            on = float(el.offset)
            off = on + float(el.duration.quarterLength)
            for n in members:
                tie = n.tie.type if n.tie is not None else None
                raw.append((on, off, int(round(n.pitch.ps)), tie))
        parts.append({"name": str(part.partName or f"part{k + 1}"), "notes": _merge_notes(raw)})

    tempi: dict[float, float] = {}
    for mm in s.flatten().getElementsByClass(tempo.MetronomeMark):
        if mm.number is None and getattr(mm, "numberSounding", None) is None:
            continue  # text-only or default mark: no tempo stated in the score
        try:
            qbpm = float(mm.getQuarterBPM())
        except (TypeError, ValueError, AttributeError):
            continue
        if VALID_QBPM[0] <= qbpm <= VALID_QBPM[1]:
            tempi.setdefault(float(mm.offset), qbpm)
    first = s.parts[0] if len(s.parts) else s
    barlines = [float(m.offset) for m in first.getElementsByClass(stream.Measure)]
    ts = next(iter(first.flatten().getElementsByClass(meter.TimeSignature)), None)
    bar_ql = float(ts.barDuration.quarterLength) if ts is not None else 4.0
    beat_ql = float(ts.beatDuration.quarterLength) if ts is not None else 1.0
    return ScoreData(
        corpus_path=rel_path,
        work=work_of(rel_path),
        category=category,
        parts=parts,
        tempi=[[o, b] for o, b in sorted(tempi.items())],
        barlines=barlines,
        bar_ql=bar_ql,
        beat_ql=beat_ql,
        highest_ql=float(s.highestTime),
    )


def _merge_notes(raw: list[tuple[float, float, int, str | None]]) -> list[list[float]]:
    """Strip ties and merge overlapping same-pitch notes of one part.

    ``raw``: ``(onset_ql, offset_ql, midi, tie_type)`` with ``tie_type`` None/"start"/"continue"/
    "stop". A note whose tie continues or stops extends the previous note of the same pitch when
    that one ends at (or after) its onset. Returns sorted ``[onset_ql, offset_ql, midi]`` lists.
    """
    by_pitch: dict[int, list[list[float]]] = {}
    for on, off, midi, tie in sorted(raw, key=lambda r: (r[0], r[2])):
        spans = by_pitch.setdefault(midi, [])
        if spans and (
            on < spans[-1][1] - 1e-9 or (tie in ("stop", "continue") and on <= spans[-1][1] + 1e-6)
        ):
            spans[-1][1] = max(spans[-1][1], off)
        else:
            spans.append([on, off])
    notes = [[on, off, midi] for midi, spans in by_pitch.items() for on, off in spans]
    notes.sort()
    return notes


def tempo_map(score: ScoreData, fallback_qbpm: float) -> tuple[TempoMap, str]:
    """Tempo map of a score from its metronome marks, else a constant ``fallback_qbpm``.

    Returns ``(map, source)`` with ``source`` "score" or "drawn". The first mark's tempo applies
    from offset 0 when the first mark comes later.
    """
    if not score.tempi:
        return TempoMap(((0.0, float(fallback_qbpm)),)), "drawn"
    changes = [(0.0, float(score.tempi[0][1]))]
    for off, bpm in score.tempi[1:]:
        if bpm != changes[-1][1]:
            changes.append((float(off), float(bpm)))
    return TempoMap(tuple(changes)), "score"
