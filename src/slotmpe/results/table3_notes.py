"""``results/table3_notes.{csv,md}``: the note-level companion of Table III.

The paper reports frame-level metrics only; note-level scores sit in a second table (Table III's
columns stay exactly the paper's). One row per Table III row, same order (the paper's, through
``dataset_aliases``), from the same ``metrics.json`` files. Columns: ``exp, dataset``, then
:data:`NOTE_COLUMNS` (percent, mean over seeds; definitions in :mod:`slotmpe.metrics`), ``n_seeds``
and, when any row has several seeds, ``<col>_std`` (sample std over seeds). A metric absent from a
run (``null``: no slots, or a run evaluated before note metrics existed) is left empty; one that
is NaN in any seed (a failed computation) is written ``NaN``. The Markdown ends with
:data:`MT3_FOOTNOTE`: the published note-level figures these compare with, and why they differ.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from slotmpe.results.stats import mean_std
from slotmpe.results.table3 import NAN_FLAG, ReportError, order_rows
from slotmpe.utils import atomic_path

NOTE_COLUMNS: tuple[str, ...] = (
    "note_onset_f1", "note_onoff_f1", "slot_note_onset_f1", "slot_note_onoff_f1",
    "multi_instrument_f1",
)
TITLES: dict[str, str] = {
    "note_onset_f1": "Note onset F1", "note_onoff_f1": "Note on-off F1",
    "slot_note_onset_f1": "Slot note onset F1", "slot_note_onoff_f1": "Slot note on-off F1",
    "multi_instrument_f1": "Multi-instrument F1",
}
# Sources: MT3 = Gardner et al., "MT3: Multi-Task Multitrack Music Transcription", ICLR 2022
# (arXiv 2111.03017); the URMP multi-instrument figure as listed on the public leaderboard
# https://beta.hyper.ai/en/papers/2111.03017 ("multi-instrument-music-transcription-on-urmp,
# MT3, Multi F1: 59.0"). YourMT3+ = Chang et al., arXiv 2407.04822 (2024). No other figure of
# either paper could be confirmed from reference text, so none is quoted.
MT3_FOOTNOTE = (
    "**Published note-level figures these compare with (different data).** MT3 (Gardner et al., "
    "ICLR 2022) reports onset F1, onset-offset F1 and its multi-instrument F1 (the score of the "
    "Multi-instrument column) on MAESTRO, Slakh2100, Cerberus4, GuitarSet, MusicNet and URMP; "
    "a public leaderboard (hyper.ai, for arXiv 2111.03017) lists MT3's URMP multi-instrument F1 "
    "as 59.0. YourMT3+ (Chang et al., 2024, arXiv 2407.04822) reports the same three scores on "
    "ten public datasets (its results tables; no figure quoted here). Those are trained on large "
    "multi-dataset mixtures and tested on those datasets' splits; our rows are the paper's "
    "slot models on the embedded stand-in datasets (chamber ~ URMP, electro ~ mshoxxDB: "
    "rendered locally, not the same recordings), so the figures differ in data, training and "
    "model and show the scale only, not a ranking.\n"
)


def _runs(metrics_paths: Iterable[Path]) -> dict[tuple[str, str], list[dict]]:
    by_row: dict[tuple[str, str], list[dict]] = {}
    for p in metrics_paths:
        try:
            m = json.loads(Path(p).read_text())
        except (FileNotFoundError, json.JSONDecodeError) as e:
            raise ReportError(f"cannot read metrics file {p}: {e}") from None
        if not isinstance(m, dict):
            raise ReportError(f"metrics file {p} does not hold a JSON object")
        parts = Path(p).parts
        key = (str(m.get("exp", parts[-3])), str(m.get("dataset", parts[-4])))
        by_row.setdefault(key, []).append(m)
    return by_row


def build_table3_notes(
    metrics_paths: Iterable[Path],
    rows: Sequence[tuple[str, str]],
    dataset_aliases: dict[str, str] | None = None,
) -> pd.DataFrame:
    """The note table as a frame (module docstring); ``ReportError`` if a row has no file."""
    by_row = _runs(metrics_paths)
    wanted = [(str(e), str(d)) for e, d in rows]
    missing = [f"{e}/{d}" for e, d in wanted if (e, d) not in by_row]
    if missing:
        raise ReportError(f"no metrics file for the note table rows {', '.join(missing)}")
    ordered = order_rows(wanted, dataset_aliases)
    several = any(len(by_row[r]) > 1 for r in ordered)
    recs = []
    nan_cells: set[tuple[int, str]] = set()
    for i, (exp, ds) in enumerate(ordered):
        runs = by_row[(exp, ds)]
        rec: dict[str, object] = {"exp": exp, "dataset": ds}
        stds: dict[str, object] = {}
        for c in NOTE_COLUMNS:
            values = [r.get(c) for r in runs]
            if any(isinstance(v, float) and v != v for v in values):  # NaN in some seed
                nan_cells.update({(i, c), (i, f"{c}_std")})
            mean, std = mean_std(values)
            rec[c] = None if mean is None else round(mean, 2)
            stds[f"{c}_std"] = None if std is None else round(std, 2)
        rec["n_seeds"] = len(runs)
        if several:
            rec.update(stds)
        recs.append(rec)
    cols = ["exp", "dataset", *NOTE_COLUMNS, "n_seeds",
            *([f"{c}_std" for c in NOTE_COLUMNS] if several else [])]
    df = pd.DataFrame.from_records(recs, columns=cols)
    for c in cols[2:]:
        df[c] = pd.to_numeric(df[c]) if c != "n_seeds" else df[c].astype(int)
    df.attrs["nan_cells"] = nan_cells
    return df


def _cell(r: pd.Series, c: str, flagged: bool = False) -> str:
    if flagged:
        return NAN_FLAG
    v = r[c]
    if v is None or pd.isna(v):
        return "–"
    s = r.get(f"{c}_std")
    return f"{v:.2f}" + ("" if s is None or pd.isna(s) else f" ± {s:.2f}")


def render_table3_notes_md(df: pd.DataFrame) -> str:
    """Markdown of :func:`build_table3_notes`'s frame."""
    head = ["Exp", "Dataset", *(TITLES[c] for c in NOTE_COLUMNS), "Seeds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    nan_cells = df.attrs.get("nan_cells", set())
    for i, (_, r) in enumerate(df.iterrows()):
        cells = [str(r["exp"]), str(r["dataset"]),
                 *(_cell(r, c, (i, c) in nan_cells) for c in NOTE_COLUMNS),
                 str(int(r["n_seeds"]))]
        lines.append("| " + " | ".join(cells) + " |")
    intro = (
        "# Table III, note level (our runs)\n\n"
        "F1 in percent with mir_eval.transcription (onset within 50 ms; on-off: offset within "
        "max(20 % of the note, 50 ms)), counts pooled over the test files. Notes are made from the "
        "outputs at the tuned thresholds by the note step of `slotmpe transcribe`. Note: the "
        "mixture's notes vs all reference notes. Slot note: each matched slot's notes vs its "
        "target's (stem; family for 1b/1c), over the notes of all slots and all targets. "
        "Multi-instrument: MT3's score, a note counts when its slot is matched to a stem of the "
        "instrument that played it. Mean ± sample std over seeds; – does not apply; "
        f"{NAN_FLAG}: the metric came out NaN (a failed computation).\n\n"
    )
    return intro + "\n".join(lines) + "\n\n" + MT3_FOOTNOTE


def write_table3_notes(
    metrics_paths: Iterable[Path],
    rows: Sequence[tuple[str, str]],
    out_csv: Path,
    out_md: Path,
    dataset_aliases: dict[str, str] | None = None,
) -> pd.DataFrame:
    """Write ``table3_notes.csv`` and ``.md`` atomically; returns the frame."""
    df = build_table3_notes(list(metrics_paths), rows, dataset_aliases)
    text = df.copy()
    flagged = df.attrs["nan_cells"]
    for c in sorted({c for _, c in flagged if c in df.columns}):
        text[c] = [NAN_FLAG if (i, c) in flagged else "" if pd.isna(v) else f"{v:.2f}"
                   for i, v in enumerate(df[c])]
    with atomic_path(Path(out_csv)) as tmp:
        text.to_csv(tmp, index=False, float_format="%.2f")
    with atomic_path(Path(out_md)) as tmp:
        tmp.write_text(render_table3_notes_md(df))
    return df
