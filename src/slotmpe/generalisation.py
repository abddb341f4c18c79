"""Cross-dataset evaluation: a model trained on one dataset scored on another.

Layout (DESIGN.md, Round 2 contracts)::

    results/{train_ds}/{exp}/seed{seed}/metrics.json                     in-domain (evaluation.py)
    results/{train_ds}/{exp}/seed{seed}/on_{test_ds}/metrics.json         thresholds of train_ds val
    results/{train_ds}/{exp}/seed{seed}/on_{test_ds}/thresholds.json      (optional) tuned on test_ds val
    results/{train_ds}/{exp}/seed{seed}/on_{test_ds}/metrics_retuned.json (optional) with those
    results/{train_ds}/timbre/on_{test_ds}/embeddings.parquet             test_ds stems, train_ds encoder
    results/generalisation.csv / .md

Metrics are exactly those of :func:`slotmpe.evaluation.evaluate_model` (same code path), on the
full test files of ``test_ds``, plus ``train_dataset``, ``test_dataset`` and ``thresholds_from``:

* the default thresholds are the training dataset's (tuned on *its* validation split): the model
  is used as shipped; ``retune`` additionally tunes them on ``test_ds``'s validation split (a
  few labelled files of the new domain), written beside as ``*_retuned``;
* slot targets: stem-level experiments (2a-3c) are matched against ``test_ds``'s source rolls,
  family-level ones (1b, 1c) against its family rolls (instruments mapped to the four families by
  the manifest's ``family`` column); a test dataset without stems (``stem_path`` empty on every
  row, e.g. MusicNet) gives mixture metrics only (slot metrics and timbre cos ``null``);
* ``timbre_cos`` compares slot embeddings with the *training* dataset's encoder applied to the test
  stems (the space the timbre head was trained in), never with the test dataset's own encoder.

``generalisation.csv``: one row per ``(exp, train_dataset)`` in Table III order, then for every
test dataset ``{test}:std_f1``, ``{test}:slot_f1`` (and ``{test}:std_f1_retuned`` /
``{test}:slot_f1_retuned`` with re-tuned thresholds), and the note-level ``{test}:note_onoff_f1``,
``{test}:multi_instrument_f1`` (:mod:`slotmpe.metrics`), mean over seeds, percent; the in-domain
column (test = train) comes from the ordinary ``metrics.json``. ``generalisation.md`` shows
``mixture F1 / slot F1`` per cell, then a note-level table with ``note on-off F1 /
multi-instrument F1``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from slotmpe.utils import atomic_path, get_logger, set_threads

log = get_logger(__name__)

SLOT_KEYS: tuple[str, ...] = ("slot_ap", "slot_f1", "slot_p", "slot_r", "timbre_cos",
                              "poly_stem_acc", "slot_note_onset_f1", "slot_note_onoff_f1",
                              "multi_instrument_f1")
FRAME_METRICS: tuple[str, ...] = ("std_f1", "slot_f1")
NOTE_METRICS: tuple[str, ...] = ("note_onoff_f1", "multi_instrument_f1")
TABLE_METRICS: tuple[str, ...] = FRAME_METRICS + NOTE_METRICS
STEMLESS_TYPES: frozenset[str] = frozenset({"musicnet"})  # dataset types whose manifests have no stems


@dataclass(frozen=True)
class CrossRun:
    """One model (exp trained on ``train_ds``) scored on ``test_ds`` (``test_ds != train_ds``)."""

    exp: str
    train_ds: str
    test_ds: str


def generalisation_settings(config: Mapping[str, Any]) -> tuple[list[str], list[str], bool]:
    """``(train datasets, test datasets, retune)`` of ``config["generalisation"]`` (checked).

    Every named dataset must be configured. The models evaluated are those of ``table3_rows``, so a
    training dataset without Table III rows contributes none and is left out (e.g. the default
    profile's chamber/electro when ``table3_rows`` names only a user's own dataset). An absent
    section means no cross evaluation.
    """
    sec = config.get("generalisation") or {}
    train = [str(d) for d in sec.get("train", [])]
    test = [str(d) for d in sec.get("test", [])]
    known = set(config.get("datasets", {}))
    for role, names in (("train", train), ("test", test)):
        bad = sorted(set(names) - known)
        if bad:
            raise ValueError(f"generalisation.{role} names dataset(s) {bad} not in datasets: "
                             f"{sorted(known)}")
    rows_ds = {str(r[1]) for r in config.get("table3_rows", [])}
    train = [d for d in train if d in rows_ds]
    return train, test, bool(sec.get("retune", False))


def generalisation_rows(config: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(exp, train_ds)`` rows: the Table III rows whose dataset is a training dataset."""
    train, _, _ = generalisation_settings(config)
    return [(str(e), str(d)) for e, d in config.get("table3_rows", []) if str(d) in train]


def cross_runs(config: Mapping[str, Any]) -> list[CrossRun]:
    """Every (exp, train_ds, test_ds) with ``test_ds != train_ds`` the config asks for."""
    _, test, _ = generalisation_settings(config)
    return [CrossRun(e, d, t) for e, d in generalisation_rows(config) for t in test if t != d]


def metrics_paths(
    config: Mapping[str, Any], seeds: Sequence[int], root: str = "results"
) -> list[str]:
    """All ``metrics.json`` files the generalisation table reads (in-domain, cross, re-tuned)."""
    train, test, retune = generalisation_settings(config)
    out: list[str] = []
    for exp, ds in generalisation_rows(config):
        for seed in seeds:
            run = f"{root}/{ds}/{exp}/seed{seed}"
            for t in test:
                if t == ds:
                    out.append(f"{run}/metrics.json")
                    continue
                out.append(f"{run}/on_{t}/metrics.json")
                if retune:
                    out.append(f"{run}/on_{t}/metrics_retuned.json")
    return out


def has_stems(manifest_path: Path) -> bool:
    """Whether a dataset has separate stems (``stem_path`` set on at least one row)."""
    df = pd.read_parquet(Path(manifest_path), columns=["stem_path"])
    return bool(df["stem_path"].fillna("").astype(str).str.len().gt(0).any())


def _extra(train_ds: str, test_ds: str, thresholds_from: str, stems: bool) -> dict[str, Any]:
    extra: dict[str, Any] = {"train_dataset": train_ds, "test_dataset": test_ds,
                             "thresholds_from": thresholds_from, "test_has_stems": stems}
    if not stems:
        extra.update({k: None for k in SLOT_KEYS})
        extra["note"] = f"{test_ds} has no stems: mixture metrics only"
    return extra


def tune_cross(
    model_path: Path,
    test_feature_dir: Path,
    out_path: Path,
    train_ds: str,
    test_ds: str,
    max_frames: int | None,
    progress: bool = False,
    threads: int | None = None,
) -> dict[str, Any]:
    """Thresholds of a ``train_ds`` model re-tuned on ``test_ds``'s validation split."""
    from slotmpe.evaluation import tune_thresholds

    set_threads(threads)
    return tune_thresholds(
        model_path, test_feature_dir, out_path, split="val", max_frames=max_frames,
        extra={"train_dataset": train_ds, "test_dataset": test_ds}, progress=progress,
    )


def evaluate_cross(
    model_path: Path,
    thresholds_path: Path,
    test_feature_dir: Path,
    test_manifest: Path,
    out_path: Path,
    train_ds: str,
    test_ds: str,
    embeddings_path: Path | None = None,
    retuned: bool = False,
    max_frames: int | None = None,
    progress: bool = False,
    threads: int | None = None,
    per_file_path: Path | None = None,
) -> dict[str, Any]:
    """Score a model trained on ``train_ds`` on the test files of ``test_ds`` -> ``out_path``
    (and its per-file counts -> ``per_file_path``, default ``per_file.csv`` beside it).

    Args:
        model_path: ``results/{train_ds}/{exp}/seed{seed}/model.pt``.
        thresholds_path: its ``thresholds.json`` (``retuned``: the one tuned on ``test_ds`` val).
        test_feature_dir, test_manifest: ``data/{test_ds}/features`` and its ``manifest.parquet``.
        embeddings_path: ``test_ds`` stems embedded by ``train_ds``'s timbre encoder (or None).
    """
    from slotmpe.evaluation import evaluate_model

    set_threads(threads)
    stems = has_stems(Path(test_manifest))
    if not stems:
        log.warning("%s has no stems: only mixture metrics are scored", test_ds)
    source = f"{test_ds} val" if retuned else f"{train_ds} val"
    return evaluate_model(
        model_path, thresholds_path, test_feature_dir, out_path,
        embeddings_path=embeddings_path if stems else None, split="test", max_frames=max_frames,
        per_file_path=per_file_path, extra=_extra(train_ds, test_ds, source, stems),
        progress=progress,
    )


# --------------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------------


def _read(path: Path) -> dict[str, Any]:
    try:
        m = json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read metrics file {path}: {e}") from None
    if not isinstance(m, dict) or "exp" not in m or "dataset" not in m:
        raise ValueError(f"metrics file {path} lacks 'exp'/'dataset'")
    m.setdefault("train_dataset", m["dataset"])
    m.setdefault("test_dataset", m["dataset"])
    return m


def _mean(values: list[Any]) -> float | None:
    vals = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    return round(float(np.mean(vals)), 2) if vals else None


def build_generalisation(
    paths: Sequence[Path], rows: Sequence[tuple[str, str]], tests: Sequence[str]
) -> pd.DataFrame:
    """The wide table (see module docstring) from in-domain, cross and re-tuned metrics files."""
    groups: dict[tuple[str, str, str, bool], list[dict[str, Any]]] = {}
    for p in paths:
        m = _read(Path(p))
        retuned = Path(p).name == "metrics_retuned.json"
        key = (str(m["exp"]), str(m["train_dataset"]), str(m["test_dataset"]), retuned)
        groups.setdefault(key, []).append(m)
    any_retuned = any(k[3] for k in groups)
    from slotmpe.results.table3 import order_rows

    records = []
    for exp, ds in order_rows([(str(e), str(d)) for e, d in rows]):
        rec: dict[str, Any] = {"exp": exp, "train_dataset": ds}
        seeds = 0
        for t in tests:
            for retuned in (False, True) if any_retuned else (False,):
                runs = groups.get((exp, ds, t, retuned), [])
                if t == ds and retuned:
                    continue
                suffix = "_retuned" if retuned else ""
                for c in TABLE_METRICS:
                    rec[f"{t}:{c}{suffix}"] = _mean([r.get(c) for r in runs])
                seeds = max(seeds, len(runs))
        rec["n_seeds"] = seeds
        records.append(rec)
    return pd.DataFrame.from_records(records)


def render_generalisation_md(df: pd.DataFrame, tests: Sequence[str]) -> str:
    """Markdown: rows (exp, trained on), columns test datasets, cells ``mixture F1 / slot F1``."""

    def cell(r: pd.Series, t: str, suffix: str, metrics: Sequence[str]) -> str:
        vals = [r.get(f"{t}:{c}{suffix}") for c in metrics]
        if all(v is None or (isinstance(v, float) and math.isnan(v)) for v in vals):
            return "–"
        return " / ".join("–" if v is None or (isinstance(v, float) and math.isnan(v))
                          else f"{float(v):.2f}" for v in vals)

    def table(suffix: str, metrics: Sequence[str] = FRAME_METRICS) -> str:
        head = ["Exp", "Trained on"] + [f"on {t}" for t in tests] + ["Seeds"]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for _, r in df.iterrows():
            cells = [cell(r, t, suffix, metrics) if (suffix == "" or t != r["train_dataset"])
                     else "(in-domain)" for t in tests]
            lines.append("| " + " | ".join([str(r["exp"]), str(r["train_dataset"]), *cells,
                                            str(int(r["n_seeds"]))]) + " |")
        return "\n".join(lines) + "\n"

    text = (
        "# Generalisation: models scored on other datasets' test splits\n\n"
        "Each cell is `mixture F1 / slot F1` (percent, mean over seeds) on the test split of the "
        "column's dataset, with the thresholds tuned on the *training* dataset's validation "
        "split. The column of the training dataset itself is the in-domain result (Table III). "
        "Slot F1 is against the test set's stems (2a-3c) or its family rolls (1b, 1c); `–` where "
        "it does not apply (1a; a test set without stems).\n\n" + table("")
    )
    if any(c.endswith("_retuned") for c in df.columns):
        text += ("\n## Thresholds re-tuned on the test dataset's validation split\n\n"
                 + table("_retuned"))
    text += ("\n## Note level\n\nEach cell is `note on-off F1 / multi-instrument F1` (percent, "
             "mir_eval.transcription; the mixture's notes, and MT3's multi-instrument score of "
             "the slots' notes), thresholds as in the first table.\n\n" + table("", NOTE_METRICS))
    return text


def write_generalisation(
    paths: Sequence[Path],
    rows: Sequence[tuple[str, str]],
    tests: Sequence[str],
    out_csv: Path,
    out_md: Path,
) -> pd.DataFrame:
    """Write ``generalisation.csv`` and ``.md`` (atomically); returns the frame."""
    df = build_generalisation(paths, rows, tests)
    with atomic_path(out_csv) as tmp:
        df.to_csv(tmp, index=False, float_format="%.2f")
    with atomic_path(out_md) as tmp:
        tmp.write_text(render_generalisation_md(df, tests))
    return df


# --------------------------------------------------------------------------------------------
# Any model on any folder / manifest (``slotmpe evaluate``)
# --------------------------------------------------------------------------------------------


def _prepare_manifest(data: Path, work_dir: Path, split: str) -> tuple[Path, str]:
    """``work_dir/manifest.parquet`` for a folder dataset or a manifest, and the dataset name.

    A folder is adapted by the ``folder`` builder; a ``manifest.parquet`` is copied with its paths
    re-based onto ``work_dir`` (manifest paths are relative to the manifest's folder).
    ``split == "all"`` relabels every piece as ``test``. The file is rewritten only when its
    content changes; whether the feature cache is still valid is decided by :func:`_features`
    from the content of the files the manifest names, not from this file.
    """
    from slotmpe.datasets import build_dataset
    from slotmpe.datasets.manifest import read_manifest, relative_path, resolve_path

    data = Path(data)
    work_dir.mkdir(parents=True, exist_ok=True)
    if data.is_dir():
        name = data.resolve().name
        built = build_dataset(name, {"type": "folder", "path": str(data)}, work_dir / "folder", 0)
        df = read_manifest(built)
        base = Path(built).parent
    elif data.is_file() and data.suffix == ".parquet":
        df = read_manifest(data)
        base = data.parent
        name = str(df["dataset"].iloc[0]) if len(df) else data.parent.name
    else:
        raise FileNotFoundError(f"{data} is neither a dataset folder nor a manifest.parquet")
    df = df.copy()
    for col in ("stem_path", "mix_path", "notes_path"):
        df[col] = [relative_path(work_dir, resolve_path(base, p)) if isinstance(p, str) and p
                   else "" for p in df[col]]
    if split == "all":
        df["split"] = "test"
    elif not (df["split"] == split).any():
        raise ValueError(f"{data}: no piece in split {split!r} (splits: "
                         f"{sorted(set(df['split']))}); use --split all to score every piece")
    out = work_dir / "manifest.parquet"
    if out.is_file():
        old = pd.read_parquet(out)
        if old.shape == df.shape and old.astype(str).equals(df.astype(str)):
            return out, name
    with atomic_path(out) as tmp:
        df.to_parquet(tmp, index=False)
    return out, name


INPUTS_NAME: str = "inputs.json"  # fingerprint of what the feature cache was built from


def input_fingerprint(manifest: Path) -> dict[str, Any]:
    """What the feature cache of ``manifest`` depends on: the manifest's rows and the content of
    every file they name (audio, stems, notes), as a dict ``{"manifest": sha256, "files":
    {path: sha256}, "slotmpe": version}``.

    Content hashes rather than sizes and modification times: the folder adapter rewrites the
    notes converted from MIDI (and a summed mix) at every run, and an edit that keeps a file's
    size within the file system's time resolution would pass a stat check. Hashing reads the
    files once (~1 GB/s), far less than the features cost.
    """
    import hashlib

    import slotmpe
    from slotmpe.datasets.manifest import resolve_path

    df = pd.read_parquet(manifest)
    rows = df.astype(str).to_csv(index=False).encode()
    files: dict[str, str] = {}
    for col in ("stem_path", "mix_path", "notes_path"):
        for rel in df[col]:
            if isinstance(rel, str) and rel and rel not in files:
                path = resolve_path(manifest.parent, rel)
                try:
                    with open(path, "rb") as fh:
                        files[rel] = hashlib.file_digest(fh, "sha256").hexdigest()
                except OSError:
                    files[rel] = "missing"
    return {"manifest": hashlib.sha256(rows).hexdigest(), "files": dict(sorted(files.items())),
            "slotmpe": slotmpe.__version__}


def _features(manifest: Path, work_dir: Path) -> Path:
    """Feature cache of ``manifest`` under ``work_dir/features``, reused only when its inputs
    (the manifest and the content of every file it names, :func:`input_fingerprint`) are those
    it was built from; otherwise it is deleted and rebuilt."""
    import shutil

    from slotmpe.features import build_feature_cache

    cache = work_dir / "features"
    index, stamp = cache / "index.csv", cache / INPUTS_NAME
    fingerprint = input_fingerprint(manifest)
    if index.is_file() and stamp.is_file():
        try:
            same = json.loads(stamp.read_text()) == fingerprint
        except ValueError:
            same = False
        if same:
            log.info("reusing the feature cache %s (its inputs are unchanged)", cache)
            return cache
    if cache.exists():
        log.info("rebuilding the feature cache %s: its inputs changed", cache)
        shutil.rmtree(cache)
    out = Path(build_feature_cache(manifest, cache)).parent
    with atomic_path(stamp) as tmp:  # written last: an interrupted build is never reused
        tmp.write_text(json.dumps(fingerprint, indent=1) + "\n")
    return out


def evaluate_dataset(
    model_path: Path,
    data: Path,
    work_dir: Path | None = None,
    split: str = "test",
    thresholds_path: Path | None = None,
    tune: bool = False,
    encoder_path: Path | None = None,
    out_path: Path | None = None,
    device: str | None = None,
    max_frames: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Table III metrics of ``model_path`` on a folder dataset or manifest (``slotmpe evaluate``).

    Args:
        model_path: a trained ``model.pt``.
        data: a folder in the ``folder`` layout (:mod:`slotmpe.datasets.folder`) or a
            ``manifest.parquet``.
        work_dir: where the manifest copy and feature cache (shared by every model scored on the
            same data) and one folder of outputs per model go (:mod:`slotmpe.workdir`); default
            :func:`slotmpe.workdir.default_work_dir`. A folder inside ``data`` is refused.
        split: the split scored (``"all"``: every piece).
        thresholds_path: explicit thresholds; default ``thresholds.json`` beside the model
            (its training dataset's validation split), else 0.5 with a warning.
        tune: tune the thresholds on the data's ``val`` split instead (needs one).
        encoder_path: timbre encoder for ``timbre_cos``; default
            ``results/{train_ds}/timbre/encoder.pt`` found from the model's path, if present.
        out_path: ``metrics.json`` (default ``<work_dir>/<exp>_<model hash>/metrics.json``,
            :func:`slotmpe.workdir.model_run_dir`).

    Returns the metrics, plus ``metrics_path`` (where they were written; not in the file). The
    feature cache under ``work_dir`` is reused only while the data are unchanged (content
    hashes, :func:`input_fingerprint`). A run holds the work dir's lock throughout; a second
    run on the same work dir stops with :class:`slotmpe.workdir.WorkDirError`. ``out_path`` and
    its ``per_file.csv`` are deleted once the inputs are checked, so after a failed run no
    earlier result is left in their place.
    """
    from slotmpe.evaluation import _load_model
    from slotmpe.per_file import PER_FILE_NAME
    from slotmpe.workdir import (
        check_work_dir,
        default_work_dir,
        mark_cache_dir,
        model_run_dir,
        work_dir_lock,
    )

    model_path, data = Path(model_path), Path(data)
    work_dir = default_work_dir(data) if work_dir is None else Path(work_dir)
    check_work_dir(work_dir, data)
    _, exp, info = _load_model(model_path)
    run_dir = model_run_dir(work_dir, model_path, exp.name)
    mark_cache_dir(work_dir)
    with work_dir_lock(work_dir):
        # The outputs of an earlier run of this model go first: a run that fails leaves no
        # metrics.json that could be taken for its result (a successful run writes them anew,
        # atomically).
        out_path = Path(out_path or run_dir / "metrics.json")
        for old in (out_path, out_path.with_name(PER_FILE_NAME)):
            old.unlink(missing_ok=True)
        res = _evaluate_locked(model_path, data, work_dir, run_dir, exp, info, split,
                               thresholds_path, tune, encoder_path, out_path, device, max_frames,
                               progress)
    res["metrics_path"] = str(out_path)
    return res


def _evaluate_locked(
    model_path: Path,
    data: Path,
    work_dir: Path,
    run_dir: Path,
    exp: Any,
    info: dict[str, Any],
    split: str,
    thresholds_path: Path | None,
    tune: bool,
    encoder_path: Path | None,
    out_path: Path,
    device: str | None,
    max_frames: int | None,
    progress: bool,
) -> dict[str, Any]:
    """The body of :func:`evaluate_dataset`, run while it holds the work dir's lock."""
    from slotmpe.evaluation import evaluate_model, tune_thresholds
    from slotmpe.timbre import export_embeddings

    manifest, name = _prepare_manifest(data, work_dir, split)
    feature_dir = _features(manifest, work_dir)
    eval_split = "test" if split == "all" else split
    if tune:
        thresholds_path = run_dir / "thresholds.json"
        tune_thresholds(model_path, feature_dir, thresholds_path, split="val",
                        device=device, max_frames=max_frames, progress=progress)
        source = f"{name} val"
    elif thresholds_path is not None:
        source = str(thresholds_path)
    elif (model_path.parent / "thresholds.json").is_file():
        thresholds_path = model_path.parent / "thresholds.json"
        source = f"{info['dataset'] or 'training dataset'} val"
    else:
        log.warning("no thresholds.json beside %s: using 0.5 (pass --thresholds or --tune)",
                    model_path)
        thresholds_path = run_dir / "thresholds_default.json"
        with atomic_path(thresholds_path) as tmp:
            tmp.write_text(json.dumps({"mix": 0.5, "slots": None}) + "\n")
        source = "default 0.5"
    stems = has_stems(manifest)
    emb = None
    if exp.timbre_head and stems:
        if encoder_path is None:
            guess = model_path.resolve().parents[2] / "timbre" / "encoder.pt"
            encoder_path = guess if guess.is_file() else None
        if encoder_path is None:
            log.warning("no timbre encoder found for %s: timbre_cos is not scored "
                        "(pass --encoder)", model_path)
        else:
            emb = export_embeddings(Path(encoder_path), feature_dir, run_dir / "embeddings.parquet")
    extra = _extra(str(info["dataset"]), name, source, stems)
    extra["split"] = split
    return evaluate_model(
        model_path, thresholds_path, feature_dir, out_path,
        embeddings_path=emb, split=eval_split, device=device, max_frames=max_frames,
        extra=extra, progress=progress,
    )
