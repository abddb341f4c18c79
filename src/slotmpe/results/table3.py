"""Table III of the paper from our runs, with the paper's figures beside ours.

:func:`write_table3`
    One row per configured ``(exp, dataset)`` pair, aggregated over the seeds found in the given
    ``metrics.json`` files (written by :func:`slotmpe.evaluation.evaluate_model`). Rows follow the
    paper's Table III order; a dataset is placed (and compared) through ``dataset_aliases``
    (e.g. ``chamber -> urmp``, ``electro -> mshoxxdb``); rows without a counterpart in the paper
    follow in configured order. Columns are exactly those of ``reference/paper_table3.csv``
    followed by ``n_seeds``, ``seeds`` (the seeds averaged, ``;``-separated) and, when any row has
    more than one seed, one ``<col>_std`` column per metric (sample standard deviation, ``ddof=1``,
    :func:`slotmpe.results.stats.mean_std`; empty for single-seed rows) and one ``<col>_spread``
    column (the seed spread ``max - min``). Percentages have two decimals, ``timbre_cos`` four.
    A metric that does not apply (``null`` in every seed) is left empty (``–`` in Markdown); if
    only some seeds have it, the mean is over those seeds. A metric that is NaN in any seed (a
    failed computation, not "does not apply") is written ``NaN`` in every output.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path

import pandas as pd

from slotmpe.results.stats import mean_std
from slotmpe.utils import atomic_path, get_logger

log = get_logger(__name__)

METRIC_COLUMNS: tuple[str, ...] = (
    "std_ap", "std_f1", "std_p", "std_r",
    "slot_ap", "slot_f1", "slot_p", "slot_r",
    "timbre_cos", "poly_std_acc", "poly_stem_acc",
)
COS_COLUMNS: frozenset[str] = frozenset({"timbre_cos"})
PAPER_DATASET_NAMES: dict[str, str] = {"musicnet": "MusicNet", "mshoxxdb": "mshoxxDB", "urmp": "URMP"}
COLUMN_TITLES: dict[str, str] = {
    "std_ap": "Std AP", "std_f1": "Std F1", "std_p": "Std P", "std_r": "Std R",
    "slot_ap": "Slot AP", "slot_f1": "Slot F1", "slot_p": "Slot P", "slot_r": "Slot R",
    "timbre_cos": "cos mean", "poly_std_acc": "Poly std acc", "poly_stem_acc": "Poly stem acc",
}


class ReportError(RuntimeError):
    """A table cannot be built (missing or inconsistent metrics files)."""


def _reference_csv(name: str) -> pd.DataFrame:
    ref = resources.files("slotmpe") / "data" / "reference" / name
    with resources.as_file(ref) as path:
        return pd.read_csv(path, dtype={"exp": str, "dataset": str})


def paper_table3() -> pd.DataFrame:
    """The paper's Table III as a frame (columns of ``paper_table3.csv``, NaN where empty)."""
    return _reference_csv("paper_table3.csv")


def paper_table3_columns() -> list[str]:
    """Column names of the paper's Table III (``exp, dataset`` then the metric columns)."""
    cols = list(paper_table3().columns)
    if cols[:2] != ["exp", "dataset"] or tuple(cols[2:]) != METRIC_COLUMNS:
        raise ReportError(f"unexpected columns in paper_table3.csv: {cols}")
    return cols


NAN_FLAG = "NaN"  # a metric that is NaN in some seed; "–" / empty means "does not apply"


def _decimals(col: str) -> int:
    return 4 if col.removesuffix("_std").removesuffix("_spread") in COS_COLUMNS else 2


def _is_nan(v: object) -> bool:
    return isinstance(v, float) and math.isnan(v)


def seed_spread(values: Sequence[float | None]) -> float | None:
    """``max - min`` of the non-missing values; ``None`` below two values."""
    vals = [float(v) for v in values if v is not None and not _is_nan(v)]
    return max(vals) - min(vals) if len(vals) > 1 else None


def _read_metrics(path: Path) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ReportError(f"metrics file {path} does not exist") from None
    except json.JSONDecodeError as e:
        raise ReportError(f"metrics file {path} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise ReportError(f"metrics file {path} does not hold a JSON object")
    # Fall back to the path layout results/{dataset}/{exp}/seed{seed}/metrics.json
    parts = Path(path).parts
    if "exp" not in data and len(parts) >= 3:
        data["exp"] = parts[-3]
    if "dataset" not in data and len(parts) >= 4:
        data["dataset"] = parts[-4]
    if "seed" not in data and len(parts) >= 2:
        m = re.fullmatch(r"seed(\d+)", parts[-2])
        data["seed"] = int(m.group(1)) if m else None
    missing = [c for c in METRIC_COLUMNS if c not in data]
    if missing:
        raise ReportError(f"metrics file {path} lacks the keys {missing}")
    return data


def _row_key(exp: str, dataset: str, aliases: dict[str, str]) -> tuple[str, str]:
    return str(exp), aliases.get(dataset, dataset)


def order_rows(
    rows: Sequence[tuple[str, str]], dataset_aliases: dict[str, str] | None = None
) -> list[tuple[str, str]]:
    """``rows`` sorted into the paper's Table III order (datasets mapped through the aliases).

    Rows without a counterpart in the paper keep their configured order after the others.
    """
    aliases = dataset_aliases or {}
    paper = paper_table3()
    index = {(e, d): i for i, (e, d) in enumerate(zip(paper["exp"], paper["dataset"], strict=True))}
    keyed = []
    for j, (exp, ds) in enumerate(rows):
        i = index.get(_row_key(exp, ds, aliases))
        keyed.append(((0, i, j) if i is not None else (1, j, j), (str(exp), str(ds))))
    return [r for _, r in sorted(keyed)]


def build_table3(
    metrics_paths: Iterable[Path],
    rows: Sequence[tuple[str, str]],
    dataset_aliases: dict[str, str] | None = None,
) -> pd.DataFrame:
    """Table III of our runs as a frame (see module docstring); ``ReportError`` if a row has no file."""
    cols = paper_table3_columns()
    by_row: dict[tuple[str, str], dict[object, dict]] = {}
    for path in metrics_paths:
        m = _read_metrics(Path(path))
        key = (str(m["exp"]), str(m["dataset"]))
        seeds = by_row.setdefault(key, {})
        if m.get("seed") in seeds:
            raise ReportError(f"two metrics files for {key} seed {m.get('seed')} (second: {path})")
        seeds[m.get("seed")] = m
    wanted = [(str(e), str(d)) for e, d in rows]
    missing = [r for r in wanted if r not in by_row]
    if missing:
        raise ReportError(
            "no metrics file for the configured Table III rows "
            + ", ".join(f"{e}/{d}" for e, d in missing)
        )
    extra = sorted(set(by_row) - set(wanted))
    if extra:
        log.warning("ignoring metrics of unconfigured rows: %s", extra)
    ordered = order_rows(wanted, dataset_aliases)
    n_max = max((len(by_row[r]) for r in ordered), default=0)
    records = []
    nan_cells: set[tuple[int, str]] = set()
    for i, (exp, ds) in enumerate(ordered):
        runs = list(by_row[(exp, ds)].values())
        rec: dict[str, object] = {"exp": exp, "dataset": ds}
        extra_cols: dict[str, object] = {}
        for c in cols[2:]:
            values = [r.get(c) for r in runs]
            if any(_is_nan(v) for v in values):
                nan_cells.update((i, x) for x in (c, f"{c}_std", f"{c}_spread"))
                log.warning("%s/%s: %s is NaN in some seed; flagged %s", exp, ds, c, NAN_FLAG)
            mean, std = mean_std(values)
            spread = seed_spread(values)
            rec[c] = None if mean is None else round(mean, _decimals(c))
            extra_cols[f"{c}_std"] = None if std is None else round(std, _decimals(c))
            extra_cols[f"{c}_spread"] = None if spread is None else round(spread, _decimals(c))
        rec["n_seeds"] = len(runs)
        rec["seeds"] = ";".join(str(s) for s in sorted(by_row[(exp, ds)], key=str))
        if n_max > 1:
            rec.update(extra_cols)
        records.append(rec)
    out_cols = cols + ["n_seeds", "seeds"] + (
        [f"{c}_std" for c in cols[2:]] + [f"{c}_spread" for c in cols[2:]] if n_max > 1 else [])
    df = pd.DataFrame.from_records(records, columns=out_cols)
    for c in out_cols[2:]:
        if c == "n_seeds":
            df[c] = df[c].astype(int)
        elif c != "seeds":
            df[c] = pd.to_numeric(df[c])
    df.attrs["nan_cells"] = nan_cells
    return df


def _fmt(value: object, col: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{float(value):.{_decimals(col)}f}"


def _is_flagged(df: pd.DataFrame, i: int, col: str) -> bool:
    return (i, col) in df.attrs.get("nan_cells", set())


def _md_table(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell if cell else "–" for cell in row) + " |" for row in body]
    return "\n".join(lines) + "\n"


def _cell(row: pd.Series, col: str, with_std: bool, flagged: bool = False) -> str:
    """``mean ± std (Δ spread)`` of one cell; ``NaN`` where flagged, empty where n/a."""
    if flagged:
        return NAN_FLAG
    text = _fmt(row[col], col)
    if text and with_std:
        s = _fmt(row.get(f"{col}_std"), col)
        if s:
            text += f" ± {s}"
        d = _fmt(row.get(f"{col}_spread"), col)
        if d:
            text += f" (Δ {d})"
    return text


def render_table3_md(df: pd.DataFrame) -> str:
    """Markdown rendering of :func:`build_table3`'s frame (mean ± std with several seeds)."""
    with_std = any(c.endswith("_std") for c in df.columns)
    header = ["Exp", "Dataset"] + [COLUMN_TITLES[c] for c in METRIC_COLUMNS] + ["Seeds"]
    body = [
        [str(r["exp"]), str(r["dataset"])]
        + [_cell(r, c, with_std, _is_flagged(df, i, c)) for c in METRIC_COLUMNS]
        + [str(int(r["n_seeds"]))]
        for i, (_, r) in enumerate(df.iterrows())
    ]
    intro = (
        "# Table III (our runs)\n\n"
        "Standard MPE (mixture) and family/stem slot MPE: AP, F1, P, R in percent; timbre cos in "
        "0..1; polyphony accuracies in percent. Empty cells (–) do not apply to the experiment or "
        f"the dataset; {NAN_FLAG} marks a metric that came out NaN (a failed computation). Mean ± "
        "sample std over seeds where several seeds ran, with the seed spread (Δ = max - min over "
        "seeds) beside it.\n\n"
    )
    return intro + _md_table(header, body)


def render_vs_paper_md(df: pd.DataFrame, dataset_aliases: dict[str, str] | None = None) -> str:
    """Markdown table with ``ours / paper`` in every cell, labelling stand-in datasets."""
    aliases = dataset_aliases or {}
    paper = paper_table3().set_index(["exp", "dataset"])
    with_std = any(c.endswith("_std") for c in df.columns)
    header = ["Exp", "Dataset (ours vs paper)"] + [COLUMN_TITLES[c] for c in METRIC_COLUMNS]
    body = []
    for i, (_, r) in enumerate(df.iterrows()):
        exp, ds = str(r["exp"]), str(r["dataset"])
        pds = aliases.get(ds, ds)
        has_paper = (exp, pds) in paper.index
        pname = PAPER_DATASET_NAMES.get(pds, pds)
        if not has_paper:
            label = f"{ds} (ours; no paper counterpart)"
        elif pds != ds:
            label = f"**{ds} (ours) vs {pname} (paper) — different dataset**"
        else:
            label = f"{pname} (same dataset)"
        cells = []
        for c in METRIC_COLUMNS:
            ours = _cell(r, c, with_std, _is_flagged(df, i, c)) or "–"
            theirs = _fmt(paper.loc[(exp, pds), c], c) if has_paper else ""
            cells.append(f"{ours} / {theirs or '–'}")
        body.append([exp, label] + cells)
    intro = (
        "# Table III: ours / paper\n\n"
        "Each cell is `our figure / the paper's figure` (– where a figure does not apply or the "
        "paper has none). Rows on the embedded datasets are compared with the paper's counterpart "
        "dataset ("
        + ", ".join(f"{k} ~ {PAPER_DATASET_NAMES.get(v, v)}" for k, v in sorted(aliases.items()))
        + "): those are **different data**, rendered locally, and the comparison shows trends only.\n\n"
    )
    return intro + _md_table(header, body)


def write_table3(
    metrics_paths: Sequence[Path],
    rows: Sequence[tuple[str, str]],
    out_csv: Path,
    out_md: Path,
    out_vs_paper_md: Path,
    dataset_aliases: dict[str, str] | None = None,
) -> pd.DataFrame:
    """Write ``table3.csv``, ``table3.md`` and ``table3_vs_paper.md`` (atomically); returns the frame.

    Args:
        metrics_paths: ``metrics.json`` files (any seeds) of the configured rows.
        rows: configured ``(exp, dataset)`` pairs, any order; every one needs at least one file.
        out_csv, out_md, out_vs_paper_md: output paths.
        dataset_aliases: our dataset -> the paper's dataset it stands in for.
    """
    df = build_table3(metrics_paths, rows, dataset_aliases)
    text = df.copy()  # per-column decimals (pandas' float_format is global)
    for c in text.columns[2:]:
        if c not in ("n_seeds", "seeds"):
            text[c] = [NAN_FLAG if _is_flagged(df, i, c) else _fmt(v, c)
                       for i, v in enumerate(df[c])]
    with atomic_path(out_csv) as tmp:
        text.to_csv(tmp, index=False)
    with atomic_path(out_md) as tmp:
        tmp.write_text(render_table3_md(df))
    with atomic_path(out_vs_paper_md) as tmp:
        tmp.write_text(render_vs_paper_md(df, dataset_aliases))
    return df
