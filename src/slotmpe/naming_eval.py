"""How often ``slotmpe transcribe`` names a slot's instrument right (issue 24, named instruments).

For every file of a split of a feature cache (``data/<dataset>/features``) the model runs as
``slotmpe transcribe`` runs it (:func:`slotmpe.transcribe.runners.as_runner`, whole file, the
post-processing of its experiment), the slots are matched to the file's stems by the evaluation's
Hungarian matching (:func:`slotmpe.metrics.match_slots`), every slot is named by
:func:`slotmpe.instruments.name_slots`, and the name of each matched slot is compared with its
stem's instrument label (and the named instrument's family with the stem's family).

Prototypes: those the model carries (``extra["instrument_prototypes"]`` of ``model.pt`` or the
ONNX metadata), else built from ``embeddings`` (default: ``results/<dataset>/timbre/
embeddings.parquet`` of the model's run, i.e. ``MODEL/../../../timbre/embeddings.parquet``).

:func:`naming_accuracy` returns matched pairs, instrument accuracy, family accuracy and the share
named "unknown", over all matched slots and over the *written* ones (activity at least
``activity_threshold``, the slots that become MIDI tracks), plus a confusion count per (label,
named) pair. ``benchmarks/bench_instrument_names.py`` prints it; the shipped model's card
(:mod:`slotmpe.pretrained.card`) reports it.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np


def _protos(meta: dict[str, Any], model_path: Path, embeddings: Path | None) -> dict[str, Any]:
    from slotmpe.instruments import prototypes_from_embeddings
    from slotmpe.transcribe.naming import prototypes_of

    protos = prototypes_of(meta)
    if protos is not None:
        return protos
    path = embeddings or model_path.resolve().parents[2] / "timbre" / "embeddings.parquet"
    if not path.is_file():
        raise FileNotFoundError(f"{model_path}: the model carries no instrument prototypes and "
                                f"{path} does not exist (pass --embeddings)")
    return prototypes_from_embeddings(path)


def naming_accuracy(
    model_path: str | os.PathLike[str],
    feature_dir: str | os.PathLike[str],
    split: str = "test",
    embeddings: str | os.PathLike[str] | None = None,
    min_similarity: float | None = None,
    activity_threshold: float = 0.5,
    max_frames: int | None = 20000,
) -> dict[str, Any]:
    """Accuracy of the named instruments of ``model_path`` on ``split`` of ``feature_dir``
    (module docstring). Raises :class:`ValueError` for a model without a timbre head."""
    from slotmpe.data import load_piece, read_index
    from slotmpe.instruments import DEFAULT_MIN_SIMILARITY, UNKNOWN, family_of, name_slots
    from slotmpe.metrics import match_slots
    from slotmpe.transcribe import load_model
    from slotmpe.transcribe.notes import postprocess_probs
    from slotmpe.transcribe.runners import as_runner

    model_path, feature_dir = Path(model_path), Path(feature_dir)
    model, meta = load_model(model_path)
    runner = as_runner(model, meta)
    if not getattr(runner.experiment, "timbre_head", False):
        raise ValueError(f"{model_path}: experiment {getattr(runner.experiment, 'name', '?')} "
                         "has no timbre head, so its slots are not named by instrument")
    protos = _protos(meta, model_path, Path(embeddings) if embeddings else None)
    min_sim = DEFAULT_MIN_SIMILARITY if min_similarity is None else min_similarity
    index = read_index(feature_dir)
    pieces = index.loc[index["split"] == split, "piece_id"].astype(str).tolist()
    if not pieces:
        raise ValueError(f"{feature_dir}: no {split!r} pieces")
    counts = {"all": Counter(), "written": Counter()}
    confusion: Counter[tuple[str, str]] = Counter()
    for pid in pieces:
        piece = load_piece(feature_dir / f"{pid}.npz")
        probs = postprocess_probs(runner.predict(np.asarray(piece["cqt"], np.float32), max_frames),
                                  meta)
        targets = np.asarray(piece["source_rolls"]).astype(bool)
        if targets.shape[0] == 0 or "slots" not in probs:
            continue
        slots_idx, src_idx = match_slots(probs["slots"], targets, targets.any(axis=(1, 2)))
        named = name_slots(probs["timbre"], protos, min_sim)
        act = np.asarray(probs.get("activity", np.ones(len(named))))
        for k, s in zip(slots_idx, src_idx, strict=True):
            label = str(piece["instruments"][s])
            family = str(piece["families"][s])
            name = named[k][0]
            confusion[(label, name)] += 1
            for key in ("all", "written") if act[k] >= activity_threshold else ("all",):
                c = counts[key]
                c["pairs"] += 1
                c["instrument_right"] += name == label
                c["family_right"] += name != UNKNOWN and family_of(name, protos) == family
                c["unknown"] += name == UNKNOWN
    out: dict[str, Any] = {"model": str(model_path), "features": str(feature_dir), "split": split,
                           "n_files": len(pieces), "min_similarity": min_sim,
                           "prototypes": protos["source"], "instruments": protos["names"]}
    for key, c in counts.items():
        n = c["pairs"]
        out[key] = {"pairs": n,
                    "instrument_accuracy": c["instrument_right"] / n if n else None,
                    "family_accuracy": c["family_right"] / n if n else None,
                    "unknown_rate": c["unknown"] / n if n else None}
    out["confusion"] = [{"label": a, "named": b, "count": n}
                        for (a, b), n in sorted(confusion.items())]
    return out


__all__ = ["naming_accuracy"]
