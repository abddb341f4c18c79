"""Named instruments for slots: per-instrument timbre prototypes and General MIDI programs.

Models with a timbre head (2a..3c and their extensions) predict one 128-d timbre embedding per slot,
trained towards the timbre encoder's embedding of the slot's stem. The training run's
``results/<dataset>/timbre/embeddings.parquet`` holds those encoder embeddings for every labelled
stem (columns ``track_id, piece_id, split, instrument, family, e0..e127``).

* :func:`prototypes_from_embeddings` turns the *training split* of that file into one prototype per
  instrument: the mean of the L2-normalised stem embeddings, L2-normalised again. The result is a
  plain dict (``{"names", "families", "vectors", "source"}``) that travels inside ``model.pt``
  (``extra["instrument_prototypes"]``) and the ONNX export's metadata.
* :func:`name_slots` assigns each slot embedding the prototype of highest cosine similarity; below
  ``min_similarity`` (default :data:`DEFAULT_MIN_SIMILARITY`) the slot is :data:`UNKNOWN`.
* :func:`gm_program` gives the General MIDI program (0-based) of an instrument or family name:
  the program the embedded datasets render it with (:data:`slotmpe.datasets.render.GM_PROGRAMS`),
  else ``pretty_midi.instrument_name_to_program`` of the name, else :data:`EXTRA_PROGRAMS`
  (the project's own names that GM spells differently, electronic sources and the families).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from slotmpe.constants import EMBED_DIM, INSTRUMENT_FAMILY, UNKNOWN_FAMILY

UNKNOWN: str = "unknown"
DEFAULT_MIN_SIMILARITY: float = 0.5
"""Cosine similarity below which a slot is named :data:`UNKNOWN`. Measured on the embedded datasets'
timbre-encoder embeddings (study run, 2025-12): the prototypes of different instruments have a
median pairwise cosine of 0.60 (chamber) / 0.74 (electro), and 90 % of the test-split stems have a
best similarity of at least 0.92 / 0.78; a slot below 0.5 is unlike every instrument of the
training run."""
PROTOTYPE_KEYS: tuple[str, ...] = ("names", "families", "vectors", "source")

EXTRA_PROGRAMS: dict[str, int] = {
    # project names General MIDI spells differently (0-based programs)
    "double_bass": 43,  # Contrabass
    "horn": 60,  # French Horn
    "saxophone": 65,  # Alto Sax
    "guitar": 24,  # Acoustic Guitar (nylon)
    "electric_bass": 33,  # Electric Bass (finger)
    "harp": 46,  # Orchestral Harp
    "string_ensemble": 48,  # String Ensemble 1
    "bass_clarinet": 71,  # Clarinet
    "electric_piano": 4,  # Electric Piano 1
    "organ": 19,  # Church Organ
    # electronic sources of the electro dataset (render programs: leads 80-87, pads 88-95, bass 38/39)
    "synth_lead": 80,  # Lead 1 (square)
    "synth_pad": 88,  # Pad 1 (new age)
    "synth_bass": 38,  # Synth Bass 1
    "chiptune": 80,  # a square wave: Lead 1 (square)
    "synth": 81,  # Lead 2 (sawtooth)
    "vocals": 52,  # Choir Aahs
    # families (fixed-order family model 1b)
    "brass": 61,  # Brass Section
    "keyboards": 0,  # Acoustic Grand Piano
    "strings": 48,  # String Ensemble 1
    "woodwinds": 71,  # Clarinet
}
"""General MIDI programs of the project's names that neither the render table nor pretty_midi's
name table has."""


def gm_program(name: str) -> int:
    """General MIDI program (0..127) of an instrument or family name; 0 for unknown names."""
    from slotmpe.datasets.render import GM_PROGRAMS

    key = name.strip().lower().replace(" ", "_")
    if key in GM_PROGRAMS:
        return int(GM_PROGRAMS[key])
    if key in EXTRA_PROGRAMS:
        return EXTRA_PROGRAMS[key]
    import pretty_midi

    try:
        return int(pretty_midi.instrument_name_to_program(key.replace("_", " ").title()))
    except ValueError:
        return 0


def _l2(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def prototypes_from_embeddings(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Per-instrument prototypes of the training split of a stem-embedding table.

    ``path``: ``results/<dataset>/timbre/embeddings.parquet`` (``track_id, piece_id, split,
    instrument, family, e0..e127``). Each prototype is the mean of the instrument's L2-normalised
    training-split embeddings, L2-normalised. Returns exactly ``{"names": list[str],
    "families": list[str], "vectors": list[list[float]]`` (``(n, 128)``, unit rows) ``, "source":
    str}``, instruments sorted by name; the family is the instrument's most frequent one.

    Raises :class:`ValueError` naming the file when columns are missing or it has no training rows.
    """
    import pandas as pd

    p = Path(path)
    df = pd.read_parquet(p)
    cols = [f"e{i}" for i in range(EMBED_DIM)]
    missing = [c for c in ("split", "instrument", "family", *cols) if c not in df.columns]
    if missing:
        raise ValueError(f"{p}: embedding table lacks columns {missing[:5]}")
    train = df[df["split"] == "train"]
    if train.empty:
        raise ValueError(f"{p}: no training-split rows to build instrument prototypes from")
    emb = _l2(train[cols].to_numpy(dtype=np.float64))
    names: list[str] = []
    families: list[str] = []
    vectors: list[list[float]] = []
    inst = train["instrument"].astype(str).to_numpy()
    fam = train["family"].astype(str).to_numpy()
    for name in sorted(set(inst)):
        rows = inst == name
        names.append(name)
        families.append(str(pd.Series(fam[rows]).mode().iloc[0]))
        vectors.append([float(v) for v in _l2(emb[rows].mean(axis=0))])
    return {"names": names, "families": families, "vectors": vectors,
            "source": f"{p} (training split: {len(train)} stems, {len(names)} instruments)"}


def check_prototypes(protos: Mapping[str, Any]) -> dict[str, Any]:
    """A validated plain copy of a prototype dict (:func:`prototypes_from_embeddings`'s form).

    Raises :class:`ValueError` for missing keys, lengths that disagree or vectors that are not
    128-d and finite.
    """
    if not isinstance(protos, Mapping) or any(k not in protos for k in PROTOTYPE_KEYS):
        raise ValueError(f"instrument prototypes need the keys {PROTOTYPE_KEYS}")
    names = [str(n) for n in protos["names"]]
    families = [str(f) for f in protos["families"]]
    vec = np.asarray(protos["vectors"], dtype=np.float64)
    if vec.ndim != 2 or vec.shape != (len(names), EMBED_DIM) or len(families) != len(names):
        raise ValueError(f"instrument prototypes: {len(names)} names, {len(families)} families "
                         f"and vectors of shape {vec.shape} do not fit (expected (n, {EMBED_DIM}))")
    if not np.isfinite(vec).all():
        raise ValueError("instrument prototypes: vectors must be finite")
    return {"names": names, "families": families,
            "vectors": [[float(v) for v in row] for row in vec], "source": str(protos["source"])}


def name_slots(timbre: np.ndarray, protos: Mapping[str, Any],
               min_similarity: float = DEFAULT_MIN_SIMILARITY) -> list[tuple[str, float]]:
    """``(instrument, cosine similarity)`` per slot embedding ``timbre`` ``(K, 128)``.

    Each slot gets the prototype of highest cosine similarity; a slot whose best similarity is
    below ``min_similarity`` is :data:`UNKNOWN` (its similarity is still reported). Several slots
    may get the same instrument (two violins in a quartet).
    """
    t = _l2(np.asarray(timbre, dtype=np.float64).reshape(-1, EMBED_DIM))
    vec = _l2(np.asarray(protos["vectors"], dtype=np.float64))
    if vec.size == 0:
        return [(UNKNOWN, float("nan"))] * len(t)
    sim = t @ vec.T  # (K, n)
    best = sim.argmax(axis=1)
    out = []
    for k, j in enumerate(best):
        s = float(sim[k, j])
        out.append((str(protos["names"][j]) if s >= min_similarity else UNKNOWN, s))
    return out


def family_of(name: str, protos: Mapping[str, Any] | None = None) -> str:
    """Family of an instrument name: the prototypes' own label, else the package's table."""
    if protos is not None and name in protos.get("names", ()):
        return str(protos["families"][list(protos["names"]).index(name)])
    return INSTRUMENT_FAMILY.get(name, UNKNOWN_FAMILY)


def unique_track_names(names: Sequence[str]) -> list[str]:
    """Track names from instrument names: a name used once stays as it is; repeated names are
    numbered in order (``violin 1``, ``violin 2``)."""
    counts = {n: names.count(n) for n in names}
    seen: dict[str, int] = {}
    out = []
    for n in names:
        if counts[n] == 1:
            out.append(n)
        else:
            seen[n] = seen.get(n, 0) + 1
            out.append(f"{n} {seen[n]}")
    return out


__all__ = ["DEFAULT_MIN_SIMILARITY", "EXTRA_PROGRAMS", "PROTOTYPE_KEYS", "UNKNOWN",
           "check_prototypes", "family_of", "gm_program", "name_slots",
           "prototypes_from_embeddings", "unique_track_names"]
