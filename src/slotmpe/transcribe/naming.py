"""What follows note creation on every transcription path (:func:`finish_tracks`): Basic Pitch's
frequency range (``--minimum-frequency``/``--maximum-frequency``) and named instruments.

Named instruments (:func:`name_tracks`): a model with a timbre head carries per-instrument
prototypes of its training run (:mod:`slotmpe.instruments`; ``extra["instrument_prototypes"]`` of
``model.pt``, ``instrument_prototypes`` of the ONNX metadata). Each slot track gets the instrument of
the prototype nearest (cosine) to the slot's timbre embedding, the similarity, and the instrument's
General MIDI program; a slot less similar than ``min_similarity`` to every prototype is
``"slot k (unknown)"``. Prototypes calibrated on validation (issue 29, their ``"calibration"``
entry) also give each slot the name's confidence (``Track.name_confidence``, the temperature-scaled
softmax over the prototypes) and make a slot below the tuned ``min_confidence`` ``"slot k
(unknown)"`` too (:func:`slotmpe.instruments.score_slots`). The fixed-order family model 1b names its slots by family. The family
model 1c (Hungarian-matched, no timbre head) has no per-slot evidence of its family at inference,
so its slots stay ``"slot k"``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from slotmpe.constants import FAMILIES, midi_to_hz
from slotmpe.notes import MIX, Track
from slotmpe.transcribe.options import TranscribeOptions


def prototypes_of(meta: Mapping[str, Any]) -> dict[str, Any] | None:
    """The instrument prototypes a model carries: ``extra["instrument_prototypes"]`` of a
    checkpoint or ``instrument_prototypes`` of an ONNX export's metadata; None when absent."""
    from slotmpe.instruments import check_prototypes

    extra = meta.get("extra") if isinstance(meta.get("extra"), Mapping) else {}
    protos = meta.get("instrument_prototypes") or (extra or {}).get("instrument_prototypes")
    return check_prototypes(protos) if protos else None


def filter_frequency(tracks: Sequence[Track], minimum_hz: float | None,
                     maximum_hz: float | None) -> list[Track]:
    """Tracks without the notes whose pitch (its fundamental in Hz) lies outside
    ``[minimum_hz, maximum_hz]`` (None: no limit); slot tracks left without notes are dropped,
    the mixture track is kept."""
    if minimum_hz is None and maximum_hz is None:
        return list(tracks)
    lo = -np.inf if minimum_hz is None else minimum_hz
    hi = np.inf if maximum_hz is None else maximum_hz
    out = []
    for tr in tracks:
        notes = [n for n in tr.notes if lo <= midi_to_hz(n.midi) <= hi]
        if notes or tr.slot == MIX:
            out.append(replace(tr, notes=notes))
    return out


def _slot_names(slot_tracks: Sequence[Track], probs: Mapping[str, np.ndarray], exp: Any,
                meta: Mapping[str, Any], min_similarity: float
                ) -> dict[int, tuple[str, float | None, float | None]]:
    """``{slot: (instrument or family, similarity, name confidence)}`` of the slots the model can
    name."""
    from slotmpe.instruments import score_slots

    protos = prototypes_of(meta)
    timbre = probs.get("timbre")
    ks = [int(tr.slot) for tr in slot_tracks]
    if protos is not None and timbre is not None:
        emb = np.asarray(timbre)[[k - 1 for k in ks]]
        named = score_slots(emb, protos, min_similarity)
        return {k: (n.instrument, n.similarity, n.confidence)
                for k, n in zip(ks, named, strict=True)}
    if getattr(exp, "matching", None) == "fixed" and getattr(exp, "task", None) == "family":
        return {k: (FAMILIES[k - 1], None, None) for k in ks if k <= len(FAMILIES)}
    return {}


def name_tracks(tracks: Sequence[Track], probs: Mapping[str, np.ndarray], exp: Any,
                meta: Mapping[str, Any], options: TranscribeOptions) -> list[Track]:
    """Slot tracks named after their instrument (module docstring); ``probs["timbre"]`` is
    ``(K, 128)``. Repeated names are numbered (``violin 1``, ``violin 2``); the mixture track and
    slots the model cannot name are returned unchanged."""
    from slotmpe.instruments import UNKNOWN, gm_program, unique_track_names

    slot_tracks = [tr for tr in tracks if tr.slot != MIX]
    if not options.name_instruments or not slot_tracks:
        return list(tracks)
    named = _slot_names(slot_tracks, probs, exp, meta, options.min_similarity)
    known = [k for k, (n, _, _) in named.items() if n != UNKNOWN]
    unique = dict(zip(known, unique_track_names([named[k][0] for k in known]), strict=True))
    out = []
    for tr in tracks:
        if tr.slot == MIX or int(tr.slot) not in named:
            out.append(tr)
            continue
        inst, sim, conf = named[int(tr.slot)]
        if inst == UNKNOWN:
            out.append(replace(tr, name=f"slot {tr.slot} ({UNKNOWN})", instrument=UNKNOWN,
                               similarity=sim, program=0, name_confidence=conf))
        else:
            out.append(replace(tr, name=unique[int(tr.slot)], instrument=inst, similarity=sim,
                               program=gm_program(inst), name_confidence=conf))
    return out


def finish_tracks(tracks: Sequence[Track], probs: Mapping[str, np.ndarray], exp: Any,
                  meta: Mapping[str, Any], options: TranscribeOptions) -> list[Track]:
    """:func:`filter_frequency`, then :func:`name_tracks`."""
    tracks = filter_frequency(tracks, options.minimum_frequency, options.maximum_frequency)
    return name_tracks(tracks, probs, exp, meta, options)


__all__ = ["filter_frequency", "finish_tracks", "name_tracks", "prototypes_of"]
