"""Named instruments for slots: per-instrument timbre prototypes and General MIDI programs.

Models with a timbre head (2a..3c and their extensions) predict one 128-d timbre embedding per slot,
trained towards the timbre encoder's embedding of the slot's stem. The training run's
``results/<dataset>/timbre/embeddings.parquet`` holds those encoder embeddings for every labelled
stem (columns ``track_id, piece_id, split, instrument, family, e0..e127``).

* :func:`prototypes_from_embeddings` turns the *training split* of that file into one prototype per
  instrument: the mean of the L2-normalised stem embeddings, L2-normalised again. The result is a
  plain dict (``{"names", "families", "vectors", "source"}``) that travels inside ``model.pt``
  (``extra["instrument_prototypes"]``) and the ONNX export's metadata.
* :func:`score_slots` (and :func:`name_slots`, its ``(name, similarity)`` form) assigns each slot
  embedding the prototype of highest cosine similarity; below ``min_similarity`` (default
  :data:`DEFAULT_MIN_SIMILARITY`) the slot is :data:`UNKNOWN`.
* **Calibrated names** (issue 29): the cosine of the best prototype does not tell a right name
  from a wrong one (every slot of a trained model lies at 0.96-0.99). The name's *confidence* is
  therefore the temperature-scaled softmax over the cosines to all prototypes,
  ``p_j = exp(cos_j / tau) / sum_i exp(cos_i / tau)`` (:func:`name_probabilities`), whose maximum
  grows with the margin of the best prototype over the others. ``tau`` is fitted on validation
  slots by minimising the negative log-likelihood of their stems' instruments
  (:func:`fit_temperature`, temperature scaling), and a slot is :data:`UNKNOWN` below the confidence
  ``min_confidence`` tuned on the same slots (:func:`tune_min_confidence`: the cut that maximises
  right names minus wrong names, i.e. a name is written where it is more often right than
  wrong). Both are stored in the prototypes' optional ``"calibration"`` entry
  (:func:`calibrate`; :mod:`slotmpe.name_calibration` runs a model on the validation files and
  writes it into ``model.pt``), so they travel into the ONNX metadata with the prototypes.
  Prototypes without it name as before (no confidence).
* **Family fallback** (issue 30): a slot below the instrument cut is often right about its
  *family* (the head confuses violin with viola more than strings with brass). Calibrated with
  the stems' families, the entry also holds ``family_min_confidence``, tuned the same way on the
  family confidence (the instruments' probabilities summed per family,
  :func:`family_probabilities`) of the slots below the instrument cut; such a slot above it is
  named by its family (``"strings"``, with the family's GM program), the others stay
  :data:`UNKNOWN`.
* :func:`gm_program` gives the General MIDI program (0-based) of an instrument or family name:
  the program the embedded datasets render it with (:data:`slotmpe.datasets.render.GM_PROGRAMS`),
  else ``pretty_midi.instrument_name_to_program`` of the name, else :data:`EXTRA_PROGRAMS`
  (the project's own names that GM spells differently, electronic sources and the families).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from slotmpe.constants import EMBED_DIM, FAMILIES, INSTRUMENT_FAMILY, UNKNOWN_FAMILY

UNKNOWN: str = "unknown"
DEFAULT_MIN_SIMILARITY: float = 0.5
"""Cosine similarity below which a slot is named :data:`UNKNOWN`. Measured on the embedded datasets'
timbre-encoder embeddings (study run, 2025-12): the prototypes of different instruments have a
median pairwise cosine of 0.60 (chamber) / 0.74 (electro), and 90 % of the test-split stems have a
best similarity of at least 0.92 / 0.78; a slot below 0.5 is unlike every instrument of the
training run."""
PROTOTYPE_KEYS: tuple[str, ...] = ("names", "families", "vectors", "source")
CALIBRATION_KEY: str = "calibration"
"""Optional entry of a prototype dict: ``{"temperature", "min_confidence", ...}`` (:func:`calibrate`)."""
FAMILY_CUT_KEY: str = "family_min_confidence"
"""Optional key of the calibration: the family fallback's confidence cut (:func:`calibrate`)."""

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
    out: dict[str, Any] = {"names": names, "families": families,
                           "vectors": [[float(v) for v in row] for row in vec],
                           "source": str(protos["source"])}
    cal = protos.get(CALIBRATION_KEY)
    if cal is not None:
        out[CALIBRATION_KEY] = check_calibration(cal)
    return out


def check_calibration(cal: Mapping[str, Any]) -> dict[str, Any]:
    """A validated plain copy of a ``"calibration"`` entry: ``temperature`` finite and > 0,
    ``min_confidence`` in [0, 1]; other keys (what it was fitted on) are kept as they are.
    Raises :class:`ValueError` otherwise."""
    if not isinstance(cal, Mapping):
        raise ValueError("instrument prototypes: 'calibration' must be a mapping")
    try:
        tau, cut = float(cal["temperature"]), float(cal["min_confidence"])
    except (KeyError, TypeError, ValueError):
        raise ValueError("instrument prototypes: 'calibration' needs numeric 'temperature' and "
                         f"'min_confidence'; got {dict(cal)}") from None
    if not (np.isfinite(tau) and tau > 0) or not 0.0 <= cut <= 1.0:
        raise ValueError(f"instrument prototypes: calibration temperature {tau} must be > 0 and "
                         f"min_confidence {cut} in [0, 1]")
    out = {**dict(cal), "temperature": tau, "min_confidence": cut}
    fam = cal.get(FAMILY_CUT_KEY)
    if fam is not None:
        try:
            fam = float(fam)
        except (TypeError, ValueError):
            fam = float("nan")
        if not 0.0 <= fam <= 1.0:
            raise ValueError(f"instrument prototypes: calibration {FAMILY_CUT_KEY} "
                             f"{cal.get(FAMILY_CUT_KEY)!r} must be a number in [0, 1]")
        out[FAMILY_CUT_KEY] = fam
    return out


class SlotName(NamedTuple):
    """The name of one slot: ``instrument`` (or :data:`UNKNOWN`), the cosine ``similarity`` of
    the best prototype, the calibrated ``confidence`` (``None`` without calibration) and
    ``nearest``, the best prototype's instrument even where the slot is :data:`UNKNOWN`."""

    instrument: str
    similarity: float
    confidence: float | None
    nearest: str


def similarities(timbre: np.ndarray, protos: Mapping[str, Any]) -> np.ndarray:
    """Cosine similarity ``(K, n)`` of every slot embedding ``timbre`` ``(K, 128)`` to every
    prototype of ``protos``."""
    t = _l2(np.asarray(timbre, dtype=np.float64).reshape(-1, EMBED_DIM))
    vec = _l2(np.asarray(protos["vectors"], dtype=np.float64).reshape(-1, EMBED_DIM))
    return t @ vec.T


def name_probabilities(sim: np.ndarray, temperature: float) -> np.ndarray:
    """Softmax over prototypes of ``sim / temperature``: ``(N, n)`` cosines -> ``(N, n)``
    probabilities (rows sum to 1)."""
    z = np.asarray(sim, dtype=np.float64) / float(temperature)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


TEMPERATURE_BOUNDS: tuple[float, float] = (1e-3, 10.0)
"""Search interval of :func:`fit_temperature` (cosines lie in [-1, 1]: 1e-3 is nearly argmax,
10 nearly uniform)."""


def fit_temperature(sim: np.ndarray, labels: np.ndarray) -> float:
    """Temperature minimising the mean negative log-likelihood of the true prototypes.

    Args:
        sim: ``(N, n)`` cosine similarities of ``N`` validation slots to the ``n`` prototypes.
        labels: ``(N,)`` index of each slot's true prototype; ``-1`` (an instrument without a
            prototype) rows do not enter the fit.

    Raises :class:`ValueError` when no row has a prototype label.
    """
    from scipy.optimize import minimize_scalar

    sim = np.asarray(sim, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    keep = labels >= 0
    if not keep.any():
        raise ValueError("fit_temperature: no slot whose instrument has a prototype")
    s, y = sim[keep], labels[keep]

    def nll(log_tau: float) -> float:
        z = s / np.exp(log_tau)
        zmax = z.max(axis=1)
        lse = zmax + np.log(np.exp(z - zmax[:, None]).sum(axis=1))
        return float(np.mean(lse - z[np.arange(len(y)), y]))

    lo, hi = np.log(TEMPERATURE_BOUNDS[0]), np.log(TEMPERATURE_BOUNDS[1])
    res = minimize_scalar(nll, bounds=(lo, hi), method="bounded", options={"xatol": 1e-4})
    return float(np.exp(res.x))


def tune_min_confidence(confidence: np.ndarray, right: np.ndarray) -> float:
    """Confidence cut maximising (right names - wrong names) when slots below it are unknown.

    ``confidence`` ``(N,)`` of the best prototype, ``right`` ``(N,)`` bool (the best prototype is
    the true instrument). A slot is named where ``confidence >= cut``. Of equal optima the
    lowest cut wins (more names), and the cut lies midway between the lowest named confidence and
    the highest unnamed one (not on a validation slot, so that a test slot just below the last
    named validation slot is still named); where no cut gains anything (no right name, or wrong
    names everywhere) it lies just above the highest confidence (every slot unknown).
    """
    conf = np.asarray(confidence, dtype=np.float64).reshape(-1)
    ok = np.asarray(right, dtype=bool).reshape(-1)
    if conf.shape != ok.shape or conf.size == 0:
        raise ValueError(f"tune_min_confidence: {conf.size} confidences and {ok.size} labels "
                         "(need equal, non-zero numbers)")
    order = np.argsort(-conf, kind="stable")
    c = conf[order]
    gain = np.cumsum(np.where(ok[order], 1.0, -1.0))
    ends = np.r_[c[1:] < c[:-1], True]  # last slot of each group of equal confidences
    cand_gain, cand_cut = gain[ends], c[ends]
    best = int(np.flatnonzero(cand_gain == cand_gain.max())[-1])
    if cand_gain[best] <= 0:
        return float(min(1.0, np.nextafter(c[0], np.inf)))
    if best + 1 < len(cand_cut):  # the next lower confidence is left unknown
        return float(0.5 * (cand_cut[best] + cand_cut[best + 1]))
    return float(cand_cut[best])


def calibrate(protos: Mapping[str, Any], sim: np.ndarray, labels: Sequence[str],
              source: str = "", families: Sequence[str] | None = None) -> dict[str, Any]:
    """``protos`` with a ``"calibration"`` entry fitted on validation slots.

    Args:
        protos: prototypes (:func:`prototypes_from_embeddings`).
        sim: ``(N, n)`` cosine similarities of ``N`` validation slots (matched to a stem) to the
            prototypes (:func:`similarities`).
        labels: ``(N,)`` the stems' instrument labels (names without a prototype count as wrong
            whatever the slot is named, and do not enter the temperature fit).
        source: what the slots come from (stored).
        families: ``(N,)`` the stems' family labels. Given, the family fallback is calibrated
            too: among the slots below the instrument cut, ``family_min_confidence`` is the cut on
            the family confidence (:func:`family_probabilities`) tuned like the instrument cut
            (:func:`tune_min_confidence`, right = the most probable family is the stem's); a slot
            below the instrument cut but above it is named by its family
            (:func:`names_from_similarities`). ``None`` (no fallback) where no slot is below the
            instrument cut.

    Returns:
        A copy of ``protos`` whose ``"calibration"`` holds ``temperature``
        (:func:`fit_temperature`), ``min_confidence`` (:func:`tune_min_confidence`), ``n_slots``,
        ``n_unseen`` (labels without a prototype), ``accuracy`` (best prototype right, all slots),
        ``named_accuracy`` and ``unknown_rate`` at the cut, ``source`` and, with ``families``,
        ``family_min_confidence``.
    """
    p = check_prototypes(protos)
    names = p["names"]
    sim = np.asarray(sim, dtype=np.float64).reshape(-1, len(names))
    if len(labels) != len(sim):
        raise ValueError(f"calibrate: {len(sim)} slots but {len(labels)} labels")
    if len(sim) == 0:
        raise ValueError("calibrate: no validation slot to calibrate the names on")
    idx = np.array([names.index(str(lab)) if str(lab) in names else -1 for lab in labels])
    tau = fit_temperature(sim, idx)
    prob = name_probabilities(sim, tau)
    best = prob.argmax(axis=1)
    conf = prob[np.arange(len(best)), best]
    right = best == idx
    cut = tune_min_confidence(conf, right)
    named = conf >= cut
    p[CALIBRATION_KEY] = {
        "temperature": tau, "min_confidence": cut, "n_slots": int(len(sim)),
        "n_unseen": int((idx < 0).sum()), "accuracy": float(right.mean()),
        "named_accuracy": float(right[named].mean()) if named.any() else None,
        "unknown_rate": float(1.0 - named.mean()), "source": str(source),
    }
    if families is not None:
        if len(families) != len(sim):
            raise ValueError(f"calibrate: {len(sim)} slots but {len(families)} family labels")
        below = ~named
        fam_cut = None
        if below.any():
            fams, fprob = family_probabilities(sim[below], p, tau)
            fbest = fprob.argmax(axis=1)
            fright = np.array([fams[j] == str(f) for j, f in
                               zip(fbest, np.asarray(families, dtype=object)[below], strict=True)])
            fam_cut = tune_min_confidence(fprob[np.arange(len(fbest)), fbest], fright)
        p[CALIBRATION_KEY][FAMILY_CUT_KEY] = fam_cut
    return p


def family_probabilities(sim: np.ndarray, protos: Mapping[str, Any], temperature: float
                         ) -> tuple[list[str], np.ndarray]:
    """``(families, probs)``: the sorted families of ``protos`` and ``(N, F)`` the name
    probabilities (:func:`name_probabilities` of ``sim`` ``(N, n)`` at ``temperature``) summed
    over each family's instruments."""
    fam = np.asarray(protos["families"], dtype=object)
    families = sorted({str(f) for f in fam})
    prob = name_probabilities(np.asarray(sim, dtype=np.float64).reshape(-1, len(fam)), temperature)
    return families, np.stack([prob[:, fam == f].sum(axis=1) for f in families], axis=1)


def score_slots(timbre: np.ndarray, protos: Mapping[str, Any],
                min_similarity: float = DEFAULT_MIN_SIMILARITY) -> list[SlotName]:
    """:class:`SlotName` per slot embedding ``timbre`` ``(K, 128)``
    (:func:`names_from_similarities` of their :func:`similarities`)."""
    t = np.asarray(timbre, dtype=np.float64).reshape(-1, EMBED_DIM)
    if not list(protos["names"]):
        return [SlotName(UNKNOWN, float("nan"), None, UNKNOWN)] * len(t)
    return names_from_similarities(similarities(t, protos), protos, min_similarity)


def names_from_similarities(sim: np.ndarray, protos: Mapping[str, Any],
                            min_similarity: float = DEFAULT_MIN_SIMILARITY) -> list[SlotName]:
    """:class:`SlotName` per row of ``sim`` ``(K, n)`` (cosines to the ``n`` prototypes).

    Each slot gets the prototype of highest cosine similarity. It is :data:`UNKNOWN` when that
    similarity is below ``min_similarity`` or, for calibrated prototypes (``"calibration"``), when
    its confidence (:func:`name_probabilities` at the stored temperature) is below the stored
    ``min_confidence``. A calibration with a ``family_min_confidence`` (:func:`calibrate` with
    families) names such a slot (above ``min_similarity``) by its most probable family instead
    (``"strings"``; its confidence is the family's, :func:`family_probabilities`) where that
    family's confidence reaches the cut. Several slots may get the same instrument (two violins in
    a quartet).
    """
    names = list(protos["names"])
    sim = np.asarray(sim, dtype=np.float64).reshape(-1, len(names))
    best = sim.argmax(axis=1)
    cal = protos.get(CALIBRATION_KEY)
    conf: np.ndarray | None = None
    cut = 0.0
    fam_cut: float | None = None
    families: list[str] = []
    fprob = np.zeros((len(sim), 0))
    if cal is not None:
        cal = check_calibration(cal)
        prob = name_probabilities(sim, cal["temperature"])
        conf, cut = prob[np.arange(len(best)), best], cal["min_confidence"]
        fam_cut = cal.get(FAMILY_CUT_KEY)
        if fam_cut is not None and len(sim):
            families, fprob = family_probabilities(sim, protos, cal["temperature"])
    out = []
    for k, j in enumerate(best):
        s = float(sim[k, j])
        c = None if conf is None else float(conf[k])
        ok = s >= min_similarity and (c is None or c >= cut)
        if not ok and fam_cut is not None and s >= min_similarity:
            f = int(fprob[k].argmax())
            if float(fprob[k, f]) >= fam_cut:
                out.append(SlotName(families[f], s, float(fprob[k, f]), str(names[j])))
                continue
        out.append(SlotName(str(names[j]) if ok else UNKNOWN, s, c, str(names[j])))
    return out


def name_slots(timbre: np.ndarray, protos: Mapping[str, Any],
               min_similarity: float = DEFAULT_MIN_SIMILARITY) -> list[tuple[str, float]]:
    """``(instrument, cosine similarity)`` per slot embedding ``timbre`` ``(K, 128)``: the first
    two fields of :func:`score_slots` (a slot below ``min_similarity`` or, with calibration,
    below the tuned confidence is :data:`UNKNOWN`; its similarity is still reported)."""
    return [(n.instrument, n.similarity) for n in score_slots(timbre, protos, min_similarity)]


def family_of(name: str, protos: Mapping[str, Any] | None = None) -> str:
    """Family of an instrument name: the prototypes' own label, else the package's table."""
    if protos is not None and name in protos.get("names", ()):
        return str(protos["families"][list(protos["names"]).index(name)])
    if name in FAMILIES:  # a slot named at the family level (the calibrated fallback, or 1b)
        return name
    return INSTRUMENT_FAMILY.get(name, UNKNOWN_FAMILY)


def is_family_name(name: str, protos: Mapping[str, Any] | None = None) -> bool:
    """Whether ``name`` names a family (the calibrated fallback), not one of the prototypes'
    instruments."""
    return name in FAMILIES and (protos is None or name not in protos.get("names", ()))


def name_is_right(name: str, instrument: str, family: str | None = None,
                  protos: Mapping[str, Any] | None = None) -> bool:
    """Whether a slot's written ``name`` is right for a source of ``instrument`` (and ``family``,
    default :func:`family_of` the instrument), at the level it is written: a family name (the
    calibrated fallback) is right when it is the source's family, an instrument name when it is
    the source's instrument; "unknown" never is."""
    if name == UNKNOWN:
        return False
    if is_family_name(name, protos):
        return name == (family or family_of(instrument, protos))
    return name == instrument


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


__all__ = ["CALIBRATION_KEY", "DEFAULT_MIN_SIMILARITY", "EXTRA_PROGRAMS", "FAMILY_CUT_KEY",
           "PROTOTYPE_KEYS", "TEMPERATURE_BOUNDS", "UNKNOWN", "SlotName", "calibrate",
           "check_calibration", "check_prototypes", "family_of", "family_probabilities",
           "fit_temperature", "gm_program", "name_probabilities", "name_slots",
           "names_from_similarities", "prototypes_from_embeddings", "score_slots", "similarities",
           "tune_min_confidence", "unique_track_names"]
