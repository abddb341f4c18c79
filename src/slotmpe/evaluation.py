"""Threshold tuning on validation files and Table III metrics on test files (Section V-B).

Both functions run :func:`slotmpe.inference.predict` on every whole file of one split (batch size
1) and pool cells as defined in :mod:`slotmpe.metrics`, whose module docstring has the exact
metric definitions. Slot targets are the four family rolls for the family task (1b, 1c) and the
source rolls for the stem task (2a-3c); 1b is evaluated in its fixed family order as trained,
every other slot experiment after per-file Hungarian matching.

``thresholds.json``: ``{"mix": float, "slots": float | null, "val_f1_mix": %, "val_f1_slots": %,
"exp", "dataset", "seed", "split", "n_files", "n_frames"}``.

``metrics.json``: ``std_ap, std_f1, std_p, std_r, slot_ap, slot_f1, slot_p, slot_r`` (percent),
``timbre_cos`` (0..1), ``poly_std_acc, poly_stem_acc`` (percent), each ``null`` where it does not
apply: slot metrics for 1a or when no test file has an active target; ``timbre_cos`` without a
timbre head or without any known source embedding (e.g. a dataset without stems);
``poly_*`` without a polyphony head (and ``poly_stem_acc`` outside the stem task). Plus ``exp``,
``dataset``, ``seed``, ``split``, ``n_files``, ``n_frames``, ``n_matched_pairs``, ``n_cos_pairs``
and the thresholds used. Slot experiments also get ``dup_rate`` and ``dup_rate_target`` (percent,
defined in :mod:`slotmpe.postprocess`). Slot outputs are post-processed as the experiment says
(:attr:`~slotmpe.experiments.Experiment.postprocess`) before thresholds are tuned and before every
metric.

Note-level metrics (percent, defined in :mod:`slotmpe.metrics`): ``note_onset_f1``,
``note_onoff_f1`` (mixture), ``slot_note_onset_f1``, ``slot_note_onoff_f1`` (matched slots, pooled)
and ``multi_instrument_f1``, plus ``n_ref_notes`` / ``n_est_notes`` (mixture). Estimated notes are
made from the test probabilities at the tuned thresholds by the frame-to-note step of ``slotmpe
transcribe`` (:func:`slotmpe.notes.make_tracks`, default :class:`~slotmpe.notes.NoteOptions`); reference
notes are read from the notes files of the manifest beside the feature cache
(``{feature_dir}/../manifest.parquet``, :class:`NoteReference`). Without that manifest the note
metrics are ``null`` (logged); slot note metrics are ``null`` wherever slot metrics are.

``per_file.csv`` (beside ``metrics.json``): per test file and output the counts ``tp, fp, fn`` at
the tuned thresholds (see :func:`per_file_counts`): cells for ``mix`` and ``slot``, notes for the
note outputs (``note_onset``, ``note_onoff``, ``slot_note_onset``, ``slot_note_onoff``,
``multi_instrument``; layout in :mod:`slotmpe.per_file`), so that :mod:`slotmpe.results.stats`
computes seed and file statistics without rerunning inference.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from slotmpe import metrics as M
from slotmpe.constants import MAX_SLOTS
from slotmpe.experiments import Experiment, get_experiment
from slotmpe.inference import DEFAULT_MAX_FRAMES, inference_frames, predict
from slotmpe.notes import MIX, NoteOptions, activity_is_trained, make_tracks
from slotmpe.per_file import NOTE_OUTPUTS, PER_FILE_COLUMNS, PER_FILE_NAME
from slotmpe.postprocess import DuplicateCounter, postprocess_prediction, target_duplicate_counts
from slotmpe.utils import atomic_path, get_logger, resolve_device

if TYPE_CHECKING:
    import pandas as pd

log = get_logger(__name__)


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def _run_info(model: torch.nn.Module, meta: dict[str, Any], model_path: Path) -> dict[str, Any]:
    """Experiment, dataset and seed of a checkpoint: from the model / checkpoint metadata / path.

    The training writes ``extra={"exp", "dataset", "seed", ...}``; older or foreign checkpoints
    fall back to the layout ``results/{dataset}/{exp}/seed{seed}/model.pt``.
    """
    extra = meta.get("extra", meta) if isinstance(meta, dict) else {}
    extra = extra if isinstance(extra, dict) else {}
    parts = Path(model_path).resolve().parts
    exp = getattr(getattr(model, "exp", None), "name", None) or extra.get("exp")
    exp = exp or meta.get("exp") or meta.get("experiment")
    if exp is None and len(parts) >= 3:
        exp = parts[-3]
    dataset = extra.get("dataset") or meta.get("dataset")
    if dataset is None and len(parts) >= 4:
        dataset = parts[-4]
    seed = extra.get("seed", meta.get("seed"))
    if seed is None and len(parts) >= 2:
        m = re.fullmatch(r"seed(\d+)", parts[-2])
        seed = int(m.group(1)) if m else None
    if exp is None:
        raise ValueError(f"cannot tell the experiment of checkpoint {model_path}")
    return {"exp": str(exp), "dataset": None if dataset is None else str(dataset),
            "seed": None if seed is None else int(seed),
            "train_precision": str(extra.get("precision", "fp32"))}


def _load_model(model_path: Path) -> tuple[torch.nn.Module, Experiment, dict[str, Any]]:
    from slotmpe.models import load_checkpoint

    if not Path(model_path).is_file():
        raise FileNotFoundError(f"model checkpoint {model_path} does not exist")
    model, meta = load_checkpoint(model_path, map_location="cpu")
    info = _run_info(model, meta if isinstance(meta, dict) else {}, Path(model_path))
    return model, get_experiment(info["exp"]), info


def load_embeddings(path: Path | None) -> dict[str, np.ndarray] | None:
    """``track_id -> (E,)`` float32 from ``embeddings.parquet`` (columns ``track_id, e0..``)."""
    if path is None:
        return None
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"embeddings file {path} does not exist")
    df = pd.read_parquet(path)
    ecols = sorted((c for c in df.columns if re.fullmatch(r"e\d+", str(c))), key=lambda c: int(c[1:]))
    if "track_id" not in df.columns or not ecols:
        raise ValueError(f"embeddings file {path} needs columns track_id, e0..e{{n}}")
    emb = df[ecols].to_numpy(np.float32)
    return {str(t): emb[i] for i, t in enumerate(df["track_id"])}


def _file_dataset(feature_dir: Path, split: str, embeddings: dict[str, np.ndarray] | None):
    """``FileDataset`` of ``split`` padded to all sources of its largest piece (at least ``K``=8),
    so that no source is dropped: sources beyond the slot count are unmatched targets (misses)."""
    from slotmpe.data import FileDataset, read_index

    index = read_index(Path(feature_dir))
    n_src = index.loc[index["split"] == split, "n_sources"] if "n_sources" in index else []
    max_sources = max([MAX_SLOTS, *(int(v) for v in n_src)])
    ds = FileDataset(Path(feature_dir), split, embeddings=embeddings, max_sources=max_sources)
    if len(ds) == 0:
        raise ValueError(f"no {split!r} files in the feature cache {feature_dir}")
    return ds


def _np(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


# --------------------------------------------------------------------------------------------
# Collection over one split
# --------------------------------------------------------------------------------------------


@dataclass
class SplitResults:
    """Everything pooled over the files of one split (inputs of the Table III metrics)."""

    mix: M.PooledCells = field(default_factory=M.PooledCells)
    slots: M.PooledCells = field(default_factory=M.PooledCells)
    cosines: list[np.ndarray] = field(default_factory=list)
    poly_std: list[int] = field(default_factory=lambda: [0, 0])  # correct, total
    poly_stem: list[int] = field(default_factory=lambda: [0, 0])
    n_files: int = 0
    n_frames: int = 0
    n_matched: int = 0
    n_target_cells: int = 0  # active cells of present slot targets
    dups: DuplicateCounter = field(default_factory=DuplicateCounter)  # slot cells claimed twice
    target_dups: list[int] = field(default_factory=lambda: [0, 0])  # target cells: >= 1, >= 2
    files: list[str] = field(default_factory=list)  # piece id of each file, in order
    file_frames: list[int] = field(default_factory=list)  # frames of each file
    slot_files: list[int] = field(default_factory=list)  # file index of each ``slots`` entry
    notes: list[dict[str, M.Counts]] = field(default_factory=list)  # per file: output -> counts


def slot_targets(exp: Experiment, item: dict[str, Any]) -> tuple[np.ndarray, np.ndarray | None]:
    """Slot target rolls ``(S, 72, T)`` bool and presence flags ``(S,)`` of one file item."""
    if exp.target_kind == "family":
        return _np(item["family"]) > 0.5, None
    tg = _np(item["sources"]) > 0.5
    present = _np(item["source_present"]).astype(bool) if "source_present" in item else None
    return tg, present


@dataclass
class NoteReference:
    """Reference notes of the pieces of one feature cache (notes files of its manifest)."""

    feature_dir: Path
    manifest_dir: Path
    rows: dict[str, Any]  # piece_id -> manifest rows (DataFrame)

    @classmethod
    def open(cls, feature_dir: Path, manifest_path: Path | None = None) -> NoteReference | None:
        """The reference of ``feature_dir`` (manifest default ``feature_dir/../manifest.parquet``);
        ``None`` with a warning when there is no manifest."""
        from slotmpe.datasets.manifest import read_manifest

        path = Path(manifest_path) if manifest_path else Path(feature_dir).parent / "manifest.parquet"
        if not path.is_file():
            log.warning("no manifest %s beside the feature cache: note metrics are null", path)
            return None
        df = read_manifest(path, check_files=False)
        return cls(Path(feature_dir), path.parent,
                   {str(k): g for k, g in df.groupby("piece_id", sort=False)})

    def piece(self, piece_id: str) -> tuple[list[M.NoteSet], list[str], list[str], float]:
        """Notes of the piece's pitched tracks in feature-cache order, their instruments and
        families, and the audio duration (s). Notes are clipped to the audio and kept in MIDI
        23..94 (the rolls' range). Raises ``ValueError`` naming the file on a mismatch."""
        from slotmpe.constants import MIDI_MAX, MIDI_MIN
        from slotmpe.data import load_piece
        from slotmpe.datasets.manifest import clip_notes, read_notes, resolve_path

        cached = load_piece(self.feature_dir / f"{piece_id}.npz")
        rows = self.rows.get(str(piece_id))
        if rows is None:
            raise ValueError(f"piece {piece_id} of {self.feature_dir} is not in the manifest "
                             f"{self.manifest_dir / 'manifest.parquet'}")
        by_track = {str(r.track_id): r for r in rows.itertuples()}
        duration = float(rows["duration_s"].min())
        notes: list[M.NoteSet] = []
        for tid in (str(t) for t in cached["track_ids"]):
            r = by_track.get(tid)
            if r is None:
                raise ValueError(f"track {tid} of piece {piece_id} is not in the manifest")
            if not r.notes_path:
                notes.append(M.NoteSet.empty())
                continue
            df = clip_notes(read_notes(resolve_path(self.manifest_dir, r.notes_path)), duration)
            df = df[(df["midi"] >= MIDI_MIN) & (df["midi"] <= MIDI_MAX)]
            notes.append(M.NoteSet.from_arrays(df["onset_s"], df["offset_s"], df["midi"]))
        return (notes, [str(x) for x in cached["instruments"]],
                [str(x) for x in cached["families"]], duration)


@dataclass(frozen=True)
class NoteSettings:
    """How estimated notes are made at test time: the tuned thresholds with the default note
    options of :class:`slotmpe.notes.NoteOptions` (those of ``slotmpe transcribe``), and the
    reference."""

    reference: NoteReference
    mix_threshold: float
    slot_threshold: float


def file_note_counts(
    pred: dict[str, np.ndarray],
    exp: Experiment,
    assignment: M.Assignment | None,
    n_targets: int,
    piece_id: str,
    settings: NoteSettings,
) -> dict[str, M.Counts]:
    """Note counts of one file for every note output (slot outputs only with an assignment).

    Args:
        pred: post-processed probabilities (``mix`` ``(72, T)``, ``slots`` ``(K, 72, T)``,
            ``activity`` ``(K,)``); assignment: the evaluation's slot matching, or ``None``;
        n_targets: ``S``, rows of the slot targets the assignment indexes (padded sources or the
            four families); piece_id: the file; settings: thresholds and reference.
    """
    from slotmpe.constants import FAMILIES

    ref_tracks, instruments, families, duration = settings.reference.piece(piece_id)
    opts = NoteOptions(mix_threshold=settings.mix_threshold,
                       slot_threshold=settings.slot_threshold)
    with_slots = assignment is not None and "slots" in pred
    tracks = make_tracks(pred, opts, with_slots, exp, activity_is_trained(exp), duration)

    def as_set(notes: list[Any]) -> M.NoteSet:
        return M.NoteSet.from_arrays([n.onset_s for n in notes], [n.offset_s for n in notes],
                                     [n.midi for n in notes])

    est_mix = next(as_set(t.notes) for t in tracks if t.slot == MIX)
    ref_mix = M.NoteSet.concat(ref_tracks, dedupe=True)
    out = {"note_onset": M.note_counts(ref_mix, est_mix, offsets=False),
           "note_onoff": M.note_counts(ref_mix, est_mix, offsets=True)}
    if not with_slots:
        return out
    est_by_slot = [M.NoteSet.empty() for _ in range(pred["slots"].shape[0])]
    for t in tracks:
        if t.slot != MIX:
            est_by_slot[int(t.slot) - 1] = as_set(t.notes)
    if exp.target_kind == "family":
        labels = list(FAMILIES)
        ref_by_target = [M.NoteSet.concat([n for n, f in zip(ref_tracks, families, strict=True)
                                           if f == fam], dedupe=True) for fam in FAMILIES]
    else:
        if len(ref_tracks) > n_targets:
            raise ValueError(f"piece {piece_id}: {len(ref_tracks)} tracks but {n_targets} targets")
        pad = n_targets - len(ref_tracks)
        ref_by_target = ref_tracks + [M.NoteSet.empty()] * pad
        labels = instruments + [""] * pad
    out["slot_note_onset"] = M.slot_note_counts(ref_by_target, est_by_slot, assignment, False)
    out["slot_note_onoff"] = M.slot_note_counts(ref_by_target, est_by_slot, assignment, True)
    out["multi_instrument"] = M.multi_instrument_counts(ref_by_target, labels, est_by_slot,
                                                        assignment)
    return out


def eval_precision(info: dict[str, Any], device: str) -> str:
    """Precision of evaluation inference: bf16 for a model trained in bf16 where this device
    computes bf16 natively (:func:`slotmpe.precision.native_bf16`), else fp32 (thresholds are tuned
    and applied at the same precision)."""
    from slotmpe.precision import native_bf16

    return "bf16" if info.get("train_precision") == "bf16" and native_bf16(device) else "fp32"


def collect(
    model: torch.nn.Module,
    exp: Experiment,
    dataset: Any,
    device: str,
    max_frames: int | None,
    progress: bool = False,
    notes: NoteSettings | None = None,
    precision: str = "fp32",
) -> SplitResults:
    """Run the model on every file of ``dataset`` (a ``FileDataset``) and pool the metric inputs
    (``progress``: a tqdm bar over the files on stderr; ``notes``: also count notes per file,
    :func:`file_note_counts`; ``precision``: resolved, see :func:`eval_precision`)."""
    from tqdm.auto import tqdm

    if exp.target_kind == "family":
        from slotmpe.data import check_family_labels

        check_family_labels(dataset.feature_dir, (dataset.split,), f"experiment {exp.name}")
    res = SplitResults()
    for i in tqdm(range(len(dataset)), desc=f"{exp.name} files", unit="file", disable=not progress):
        item = dataset[i]
        pred = predict(model, item["x"], device=device,
                       max_frames=inference_frames(exp, max_frames), precision=precision)
        pred = postprocess_prediction(pred, exp.postprocess)
        mix_t = _np(item["mix"]) > 0.5  # (72, T)
        res.mix.add(mix_t, pred["mix"])
        res.files.append(str(item.get("piece_id", i)))
        res.file_frames.append(int(mix_t.shape[-1]))
        res.n_files += 1
        res.n_frames += int(mix_t.shape[-1])
        if exp.poly_head and "poly" in pred:
            c, n = M.poly_std_correct(pred["poly"], _np(item["poly"]))
            res.poly_std[0] += c
            res.poly_std[1] += n
        if not exp.uses_slots or "slots" not in pred:
            if notes is not None:
                res.notes.append(file_note_counts(pred, exp, None, 0, res.files[-1], notes))
            continue
        targets, present = slot_targets(exp, item)
        if exp.matching == "fixed":
            assign = M.fixed_assignment(pred["slots"].shape[0], targets.shape[0])
        else:
            assign = M.match_slots(pred["slots"], targets, present)
        if notes is not None:
            res.notes.append(file_note_counts(pred, exp, assign, targets.shape[0], res.files[-1],
                                              notes))
        res.slots.add(*M.slot_cells(pred["slots"], targets, assign, present))
        res.slot_files.append(len(res.files) - 1)
        res.n_matched += len(assign[0])
        active = targets.reshape(targets.shape[0], -1).any(axis=1)
        if present is not None:
            active &= present
        res.n_target_cells += int(targets[active].sum())
        res.dups.add(pred["slots"])
        for j, v in enumerate(target_duplicate_counts(targets, active)):
            res.target_dups[j] += v
        if exp.timbre_head and "timbre" in pred and "source_emb" in item:
            res.cosines.append(M.matched_cosines(pred["timbre"], _np(item["source_emb"]), assign))
        if exp.poly_head and exp.target_kind == "source" and "source_poly" in item:
            c, n = M.poly_stem_correct(pred["slots"], _np(item["source_poly"]), assign,
                                       present=present, targets=targets)
            res.poly_stem[0] += c
            res.poly_stem[1] += n
    return res


def per_file_counts(res: SplitResults, t_mix: float, t_slot: float | None) -> pd.DataFrame:
    """One row per (file, output) of the pooled cells at the thresholds (``per_file.csv``).

    Columns :data:`slotmpe.per_file.PER_FILE_COLUMNS`: ``file`` (piece id), ``output`` ``"mix"`` or
    ``"slot"`` (slot rows only for experiments with slots and a slot threshold), ``tp, fp, fn``
    (cells at the threshold; their sums over all files are the pooled Table III counts),
    ``n_frames`` and the ``threshold`` used.
    """
    import pandas as pd

    rows = []
    for i, (y, s) in enumerate(zip(res.mix.labels, res.mix.scores, strict=True)):
        rows.append((res.files[i], "mix", *M.counts_at_threshold(y, s, t_mix),
                     res.file_frames[i], t_mix))
    if t_slot is not None:
        for fi, y, s in zip(res.slot_files, res.slots.labels, res.slots.scores, strict=True):
            rows.append((res.files[fi], "slot", *M.counts_at_threshold(y, s, t_slot),
                         res.file_frames[fi], t_slot))
    for i, counts in enumerate(res.notes):
        for out in NOTE_OUTPUTS:
            if out in counts and (t_slot is not None or not out.startswith(("slot", "multi"))):
                thr = t_mix if out.startswith("note") else t_slot
                rows.append((res.files[i], out, *counts[out], res.file_frames[i], thr))
    return pd.DataFrame.from_records(rows, columns=list(PER_FILE_COLUMNS))


def note_metrics(res: SplitResults, with_slots: bool) -> dict[str, float | int | None]:
    """Pooled note F1s (percent) of ``metrics.json`` from the per-file note counts (``None``
    without note counts, and for the slot outputs without ``with_slots``)."""
    out: dict[str, float | int | None] = {f"{o}_f1": None for o in NOTE_OUTPUTS}
    out.update(n_ref_notes=None, n_est_notes=None)
    if not res.notes:
        return out
    for o in NOTE_OUTPUTS:
        rows = [c[o] for c in res.notes if o in c]
        if rows and (with_slots or o.startswith("note")):
            tp, fp, fn = (int(v) for v in np.sum(rows, axis=0))
            out[f"{o}_f1"] = _pct(M.prf_from_counts(tp, fp, fn)["f1"])
    tp, fp, fn = (int(v) for v in np.sum([c["note_onset"] for c in res.notes], axis=0))
    out.update(n_ref_notes=tp + fn, n_est_notes=tp + fp)
    return out


def _pct(x: float | None) -> float | None:
    return None if x is None else 100.0 * float(x)


# --------------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------------


def tune_thresholds(
    model_path: Path,
    feature_dir: Path,
    out_path: Path,
    split: str = "val",
    device: str | None = None,
    max_frames: int | None = DEFAULT_MAX_FRAMES,
    extra: dict[str, Any] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Pick the F1-optimal mixture and slot thresholds on the full ``split`` files.

    Writes ``out_path`` (``thresholds.json``, atomically) and returns its content; ``slots`` is
    ``None`` for 1a and when no file of the split has an active slot target (0.5 is then used at
    test time). ``extra`` keys are added to the file (e.g. the dataset tuned on, for a model
    trained on another one); ``progress`` shows a bar over the files.
    """
    model, exp, info = _load_model(Path(model_path))
    dev = resolve_device(device)
    ds = _file_dataset(Path(feature_dir), split, None)
    res = collect(model, exp, ds, dev, max_frames, progress,
                  precision=eval_precision(info, dev))
    t_mix, f1_mix = res.mix.best_threshold()
    t_slot: float | None = None
    f1_slot: float | None = None
    if exp.uses_slots and res.n_target_cells > 0:
        t_slot, f1_slot = res.slots.best_threshold()
    out = {
        "mix": t_mix, "slots": t_slot, "val_f1_mix": _pct(f1_mix), "val_f1_slots": _pct(f1_slot),
        **info, "split": split, "n_files": res.n_files, "n_frames": res.n_frames,
        "max_frames": max_frames, **(extra or {}),
    }
    with atomic_path(out_path) as tmp:
        tmp.write_text(json.dumps(out, indent=2) + "\n")
    log.info("%s: thresholds mix %.4f (val F1 %.2f), slots %s on %d %s files", info["exp"],
             t_mix, 100 * f1_mix, "-" if t_slot is None else f"{t_slot:.4f}", res.n_files, split)
    return out


def _read_thresholds(path: Path) -> dict[str, Any]:
    """``thresholds.json`` checked by the one validator that ``transcribe`` uses too."""
    from slotmpe.thresholds import read_thresholds_file

    return read_thresholds_file(path)


def evaluate_model(
    model_path: Path,
    thresholds_path: Path,
    feature_dir: Path,
    out_path: Path,
    embeddings_path: Path | None = None,
    split: str = "test",
    device: str | None = None,
    max_frames: int | None = DEFAULT_MAX_FRAMES,
    per_file_path: Path | None = None,
    extra: dict[str, Any] | None = None,
    progress: bool = False,
    manifest_path: Path | None = None,
) -> dict[str, Any]:
    """Table III metrics of one trained model on the full ``split`` files -> ``metrics.json``.

    Also writes the per-file counts (:func:`per_file_counts`) to ``per_file_path`` (default:
    ``per_file.csv`` beside ``out_path``), the input of :mod:`slotmpe.results.stats`.

    Args:
        model_path: ``model.pt``; thresholds_path: ``thresholds.json`` from :func:`tune_thresholds`.
        feature_dir: the dataset's feature cache; out_path: ``metrics.json`` (written atomically).
        embeddings_path: ``embeddings.parquet`` of the timbre encoder (for ``timbre_cos``).
        split: evaluated split; device: ``None`` = CUDA if available else CPU.
        max_frames: whole-file inference up to this length, chunked beyond (see inference).
        extra: keys set last (override computed ones), e.g. the test dataset of a model trained
            on another dataset (:mod:`slotmpe.generalisation`); progress: a bar over the files.
        manifest_path: the manifest whose notes files are the note metrics' reference (default
            ``manifest.parquet`` beside the feature cache's folder).
    """
    model, exp, info = _load_model(Path(model_path))
    th = _read_thresholds(Path(thresholds_path))
    t_mix = float(th["mix"])
    t_slot = th.get("slots")
    t_slot = M.DEFAULT_THRESHOLD if t_slot is None else float(t_slot)
    dev = resolve_device(device)
    emb = load_embeddings(embeddings_path) if exp.timbre_head else None
    ds = _file_dataset(Path(feature_dir), split, emb)
    ref = NoteReference.open(Path(feature_dir), manifest_path)
    notes = None if ref is None else NoteSettings(ref, t_mix, t_slot)
    res = collect(model, exp, ds, dev, max_frames, progress, notes,
                  precision=eval_precision(info, dev))

    mix_prf = res.mix.prf(t_mix)
    out: dict[str, Any] = {
        "std_ap": _pct(res.mix.ap()),
        "std_f1": _pct(mix_prf["f1"]), "std_p": _pct(mix_prf["p"]), "std_r": _pct(mix_prf["r"]),
        "slot_ap": None, "slot_f1": None, "slot_p": None, "slot_r": None,
        "dup_rate": None, "dup_rate_target": None,
        "timbre_cos": None, "poly_std_acc": None, "poly_stem_acc": None,
    }
    if exp.uses_slots and res.n_target_cells > 0:
        sp = res.slots.prf(t_slot)
        out.update(slot_ap=_pct(res.slots.ap()), slot_f1=_pct(sp["f1"]), slot_p=_pct(sp["p"]),
                   slot_r=_pct(sp["r"]), dup_rate=_pct(res.dups.rate(t_slot)),
                   dup_rate_target=_pct(M.safe_ratio(res.target_dups[1], res.target_dups[0])))
    elif exp.uses_slots:
        log.warning("%s: no active slot target in the %s files; slot metrics are null",
                    exp.name, split)
    out.update(note_metrics(res, with_slots=exp.uses_slots and res.n_target_cells > 0))
    cos = np.concatenate(res.cosines) if res.cosines else np.zeros(0)
    if exp.timbre_head:
        out["timbre_cos"] = M.mean_or_none(cos)
    if exp.poly_head:
        out["poly_std_acc"] = _pct(M.safe_ratio(*res.poly_std))
        if exp.target_kind == "source":
            out["poly_stem_acc"] = _pct(M.safe_ratio(*res.poly_stem))
    out.update(info)
    out.update(
        split=split, n_files=res.n_files, n_frames=res.n_frames, n_matched_pairs=res.n_matched,
        n_cos_pairs=int(cos.size), threshold_mix=t_mix,
        threshold_slots=t_slot if exp.uses_slots else None, max_frames=max_frames,
        device=dev,
    )
    out.update(extra or {})
    slot_rows = exp.uses_slots and res.n_target_cells > 0
    per_file = per_file_counts(res, t_mix, t_slot if slot_rows else None)
    per_file_path = Path(out_path).with_name(PER_FILE_NAME) if per_file_path is None else per_file_path
    with atomic_path(Path(per_file_path)) as tmp:
        per_file.to_csv(tmp, index=False)
    with atomic_path(out_path) as tmp:
        tmp.write_text(json.dumps(out, indent=2) + "\n")
    log.info("%s on %s %s: std AP %.2f F1 %.2f, slot F1 %s, note onset F1 %s, multi-instrument "
             "F1 %s", info["exp"], info["dataset"], split, out["std_ap"] or float("nan"),
             out["std_f1"], "-" if out["slot_f1"] is None else f"{out['slot_f1']:.2f}",
             "-" if out["note_onset_f1"] is None else f"{out['note_onset_f1']:.2f}",
             "-" if out["multi_instrument_f1"] is None else f"{out['multi_instrument_f1']:.2f}")
    return out
