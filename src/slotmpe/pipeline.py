"""Typed entry points of the Snakemake rules: one function per rule, called by the thin adapters
in ``workflow/scripts/``. They turn config sections into the package's typed settings and call the
logic modules; nothing here knows about the ``snakemake`` object.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import shutil
import sys
import traceback
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

from slotmpe.utils import LOG_FORMAT, atomic_path, get_logger, set_threads

log = get_logger(__name__)
REAL_DATASET_TYPES = ("urmp", "mshoxxdb", "musicnet", "slakh")

T = TypeVar("T")


@contextlib.contextmanager
def log_to(path: str | Path) -> Iterator[None]:
    """Send logging records and stderr (progress bars, warnings) of the block to ``path``.

    An exception is written to the log with its traceback and re-raised, so Snakemake marks the
    job failed and its outputs are removed.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "a", encoding="utf-8", buffering=1) as fh:
        handler = logging.StreamHandler(fh)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        root = logging.getLogger()
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        old_stderr = sys.stderr
        sys.stderr = fh
        try:
            yield
        except BaseException:
            fh.write(traceback.format_exc())
            raise
        finally:
            sys.stderr = old_stderr
            root.removeHandler(handler)


def settings_to(cls: type[T], settings: Mapping[str, Any], **fixed: Any) -> T:
    """Build dataclass ``cls`` from a config section; unknown keys raise a clear ``KeyError``.

    ``None`` values keep the dataclass default only where the field has no ``None`` meaning; here
    they are passed through (dataclasses in this package accept ``None`` for "use all").
    """
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(settings) - names)
    if unknown:
        raise KeyError(
            f"unknown {cls.__name__} setting(s) {unknown} in config; valid: {sorted(names)}"
        )
    kwargs = {k: v for k, v in settings.items()}
    kwargs.update(fixed)
    return cls(**kwargs)


def download_dataset(name: str, dscfg: Mapping[str, Any], raw_root: Path) -> Path:
    """Download, verify and unpack real dataset ``name`` into ``raw_root/name`` (or use its ``path``)."""
    from slotmpe.download import ensure_dataset

    out = ensure_dataset(dict(dscfg), raw_root, name=name)
    log.info("dataset %s ready at %s", name, out)
    return out


def build_dataset(
    name: str,
    dscfg: Mapping[str, Any],
    manifest_path: Path,
    raw_root: Path | None = None,
    seed: int = 0,
) -> Path:
    """Build ``data/{name}/manifest.parquet`` for any dataset type (embedded, folder or real).

    Real datasets are located with :func:`slotmpe.download.ensure_dataset` (already run by the
    download rule, so this only resolves the configured ``path`` or ``raw_root/name``).
    """
    from slotmpe import datasets

    cfg = dict(dscfg)
    if cfg["type"] in REAL_DATASET_TYPES:
        from slotmpe.download import ensure_dataset

        if raw_root is None:
            raise ValueError(f"dataset {name!r} of type {cfg['type']} needs its download folder")
        cfg["raw_dir"] = str(ensure_dataset(cfg, Path(raw_root), name=name))
    cfg.setdefault("name", name)
    out = datasets.build_dataset(name, cfg, manifest_path.parent, seed)
    if Path(out).resolve() != manifest_path.resolve():
        raise RuntimeError(f"dataset builder wrote {out}, expected {manifest_path}")
    return manifest_path


def cache_features(manifest_path: Path, index_path: Path, threads: int = 1) -> Path:
    """Compute the feature cache of one dataset; ``index_path`` is its ``index.csv``."""
    from slotmpe.features import build_feature_cache

    out = build_feature_cache(manifest_path, index_path.parent, threads=threads)
    if Path(out).resolve() != index_path.resolve():
        raise RuntimeError(f"feature cache wrote {out}, expected {index_path}")
    return index_path


def train_timbre(
    index_path: Path, encoder_path: Path, settings: Mapping[str, Any], seed: int, threads: int
) -> Path:
    """Train the timbre encoder on the stems of one dataset (writes encoder.pt + metrics.json)."""
    from slotmpe.timbre import TimbreConfig, train_encoder

    cfg = settings_to(TimbreConfig, settings, seed=seed, threads=set_threads(threads))
    return train_encoder(index_path.parent, encoder_path.parent, cfg)


def export_embeddings(encoder_path: Path, index_path: Path, out_path: Path, seed: int) -> Path:
    """Export one L2-normalised embedding per pitched stem to ``embeddings.parquet``."""
    from slotmpe.timbre import export_embeddings as _export

    return _export(encoder_path, index_path.parent, out_path, seed=seed)


def plot_umap(embeddings_path: Path, out_png: Path, dataset: str, seed: int) -> Path:
    """UMAP plot of the test-split stem embeddings of ``dataset``."""
    from slotmpe.timbre import plot_umap as _plot

    return _plot(
        embeddings_path, out_png, split="test", seed=seed,
        title=f"Timbre embeddings, {dataset} test split (UMAP)",
    )


def copy_file(src: Path, dest: Path) -> Path:
    """Atomically copy ``src`` to ``dest``."""
    with atomic_path(dest) as tmp:
        shutil.copyfile(src, tmp)
    return dest


def train_model(
    exp: str,
    dataset: str,
    seed: int,
    index_path: Path,
    model_path: Path,
    embeddings_path: Path | None,
    settings: Mapping[str, Any],
    threads: int,
) -> Path:
    """Train one slot model; writes ``model.pt`` and ``train_log.csv`` beside it. Models with a
    timbre head get their instrument names calibrated on the validation split
    (:func:`slotmpe.name_calibration.calibrate_checkpoint`)."""
    from slotmpe.experiments import get_experiment
    from slotmpe.training import TrainConfig, train_experiment

    cfg = settings_to(TrainConfig, settings, seed=seed, threads=set_threads(threads))
    log.info("training %s on %s (seed %d)", exp, dataset, seed)
    out = train_experiment(exp, index_path.parent, model_path.parent, cfg,
                           embeddings_path=embeddings_path, dataset=dataset)
    if embeddings_path is not None and get_experiment(exp).timbre_head:
        # instrument names: temperature and "unknown" cut fitted on the validation split
        from slotmpe.name_calibration import calibrate_checkpoint

        try:
            cal = calibrate_checkpoint(out, index_path.parent, split="val")
            log.info("instrument names of %s calibrated on val: %s", out, cal)
        except ValueError as e:  # no matched slot on val (tiny data): names stay uncalibrated
            log.warning("instrument names of %s not calibrated: %s", out, e)
    return Path(out)


def derive_model(
    exp: str, base_model_path: Path, base_log_path: Path, model_path: Path, log_path: Path
) -> Path:
    """Build derived experiment ``exp`` (3a) from its base run; its ``train_log.csv`` is the base's
    (the run that produced the weights)."""
    from slotmpe.derive import derive_checkpoint

    derive_checkpoint(base_model_path, exp, model_path)
    copy_file(base_log_path, log_path)
    return model_path


def tune_thresholds(
    model_path: Path, index_path: Path, out_path: Path, max_frames: int | None, threads: int
) -> dict[str, float]:
    """Tune the mixture and slot thresholds on the full validation files."""
    from slotmpe.evaluation import tune_thresholds as _tune

    set_threads(threads)
    return _tune(model_path, index_path.parent, out_path, split="val", max_frames=max_frames)


def evaluate_model(
    model_path: Path,
    thresholds_path: Path,
    index_path: Path,
    out_path: Path,
    embeddings_path: Path | None,
    max_frames: int | None,
    threads: int,
    per_file_path: Path | None = None,
) -> dict[str, Any]:
    """Evaluate a trained model on the test files with the tuned thresholds (``metrics.json`` and
    ``per_file.csv``, by default beside it)."""
    from slotmpe.evaluation import evaluate_model as _evaluate

    set_threads(threads)
    return _evaluate(model_path, thresholds_path, index_path.parent, out_path,
                     embeddings_path=embeddings_path, split="test", max_frames=max_frames,
                     per_file_path=per_file_path)


def table3(
    metrics_paths: list[Path],
    rows: list[tuple[str, str]],
    out_csv: Path,
    out_md: Path,
    out_vs_paper: Path,
    aliases: Mapping[str, str],
    per_file_paths: list[Path] | None = None,
    findings_csv: Path | None = None,
    findings_md: Path | None = None,
    notes_csv: Path | None = None,
    notes_md: Path | None = None,
) -> None:
    """Aggregate per-run metrics into Table III, its Markdown rendering and the paper comparison,
    the note-level table (``notes_csv``/``notes_md``) and, with ``per_file_paths``
    (``results/{ds}/{exp}/seed{s}/per_file.csv``), the findings
    (:func:`slotmpe.results.build.write_table3_outputs`, which ``slotmpe findings`` reruns)."""
    from slotmpe.results.build import Table3Outputs, write_table3_outputs

    out = Table3Outputs(out_csv, out_md, out_vs_paper, notes_csv, notes_md, findings_csv,
                        findings_md)
    write_table3_outputs(metrics_paths, rows, out, aliases, per_file_paths)


def table1(out_csv: Path, widths: str = "efficient") -> None:
    """Write Table I: the eight configurations with our and the paper's parameter counts, the
    parameters per component, those that train and the MFLOPs per window (``widths`` preset)."""
    from slotmpe.results.table1 import write_table1

    write_table1(out_csv, widths)
