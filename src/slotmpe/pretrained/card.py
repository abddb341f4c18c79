"""Building the shipped model: release metadata, the model-card data and ``MODEL_CARD.md``.

The pipeline's ``pretrained_model`` rule (``workflow/rules/pretrained.smk``) calls
:func:`build_pretrained` on one trained run (``results/<dataset>/<exp>/seed<seed>/``, named in the
config's ``pretrained:`` section). It

1. copies the run's ONNX export (``model.onnx``, written by the ``export_onnx`` rule with the tuned
   thresholds and the instrument prototypes in its metadata) to ``results/pretrained/model.onnx``,
   adding a :data:`~slotmpe.pretrained.RELEASE_KEY` metadata entry (commit, run, build date) that
   ``slotmpe --version`` shows;
2. writes ``results/pretrained/card.json``: everything the card states, read from the run's files
   (``train_log.csv``: epochs, per-epoch seconds, precision, CPU; the Snakemake benchmark of the
   training job: wall and CPU seconds; ``metrics.json`` on its own test split and
   ``on_<dataset>/metrics.json`` on the other datasets' test splits; the instrument-name accuracy
   when measured), the training configuration, the model file's size and SHA-256;
3. renders ``results/pretrained/MODEL_CARD.md`` from that JSON (:func:`render_card`; also
   ``python -m slotmpe.pretrained.card card.json -o MODEL_CARD.md``).

Copying ``results/pretrained/model.onnx`` and ``MODEL_CARD.md`` into ``src/slotmpe/pretrained/``
ships them (``docs/pretrained.md``). Nothing here needs torch.
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from slotmpe.pretrained import RELEASE_KEY, file_sha256
from slotmpe.utils import atomic_path

CARD_METRICS: tuple[tuple[str, str], ...] = (
    ("std_f1", "mixture F1 (frames)"),
    ("std_ap", "mixture AP (frames)"),
    ("slot_f1", "slot F1 (frames, matched slots)"),
    ("slot_ap", "slot AP (frames)"),
    ("note_onset_f1", "note F1, onset (mixture)"),
    ("note_onoff_f1", "note F1, onset + offset (mixture)"),
    ("slot_note_onoff_f1", "slot note F1, onset + offset"),
    ("multi_instrument_f1", "multi-instrument note F1"),
    ("timbre_cos", "timbre cos (0..1)"),
)
"""``metrics.json`` keys the card shows (percent unless said), with their row labels."""

NEVER_SEEN: tuple[str, ...] = (
    "real recordings: every training piece is a score rendered with one General MIDI soundfont "
    "(TimGM6mb.sf2), so room sound, microphones, expressive playing and real instruments' "
    "timbre are all new to it",
    "singing voice, drums as pitched sources, and instruments outside its training vocabulary "
    "(such a slot is written 'unknown' or with the nearest family of its training vocabulary, "
    "never with its own name; the test figures of the other dataset below show how often)",
    "more than 8 simultaneous sources, and pitches outside MIDI 23..94",
)

TRAINING_DATA: dict[str, str] = {
    "chamber": ("the embedded 'chamber' dataset (URMP-like): music21-corpus chamber works of 2-5 "
                "parts rendered part by part with the TimGM6mb.sf2 General MIDI soundfont"),
    "electro": ("the embedded 'electro' dataset (mshoxxDB-like): music21-corpus works played by "
                "synthesizer programs with per-stem effects and GM drums"),
}
LICENCES: str = ("scores: the music21 corpus (BSD-3-Clause software; per-work restrictions on "
                 "commercial use may apply); sounds: TimGM6mb.sf2 from the pretty_midi wheel; "
                 "see docs/DATA_LICENSES.md. The model weights are released with the code (MIT); "
                 "treat them as research material, like the rendered data.")


def git_commit(repo: str | os.PathLike[str]) -> dict[str, Any]:
    """``{"commit": full hash or None, "dirty": bool or None}`` of the git checkout at ``repo``."""
    from slotmpe.results.provenance import git

    commit = git(Path(repo), "rev-parse", "HEAD")
    status = git(Path(repo), "status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def training_summary(train_log: str | os.PathLike[str],
                     benchmark: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Epochs, summed per-epoch seconds, precision and CPU of a ``train_log.csv`` (one row an
    epoch; ``seconds``, ``precision``, ``cpu`` columns where recorded), plus the wall and CPU
    seconds of the training job from its Snakemake benchmark TSV (``s``, ``cpu_time``) when that
    file exists. Raises :class:`ValueError` naming the file when it has no rows."""
    p = Path(train_log)
    with open(p, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise ValueError(f"{p}: training log has no epochs")
    secs = [float(r["seconds"]) for r in rows if r.get("seconds") not in (None, "")]
    out: dict[str, Any] = {
        "epochs": len(rows),
        "epoch_seconds_total": round(sum(secs), 1) if secs else None,
        "precision": sorted({r["precision"] for r in rows if r.get("precision")}) or None,
        "cpu": sorted({r["cpu"] for r in rows if r.get("cpu")}) or None,
        "job_wall_s": None,
        "job_cpu_s": None,
    }
    if benchmark is not None and Path(benchmark).is_file():
        with open(benchmark, newline="") as fh:
            bench = list(csv.DictReader(fh, delimiter="\t"))
        if bench:
            for key, col in (("job_wall_s", "s"), ("job_cpu_s", "cpu_time")):
                try:
                    out[key] = round(float(bench[0][col]), 1)
                except (KeyError, TypeError, ValueError):
                    pass
    return out


def metric_figures(metrics: str | os.PathLike[str]) -> dict[str, Any]:
    """The :data:`CARD_METRICS` of one ``metrics.json`` (missing keys: None), plus ``n_files``,
    ``split`` and ``file`` (its path)."""
    p = Path(metrics)
    doc = json.loads(p.read_text())
    out = {key: doc.get(key) for key, _ in CARD_METRICS}
    out.update(n_files=doc.get("n_files"), split=doc.get("split", "test"), file=str(p))
    return out


def stamp_release(src: str | os.PathLike[str], dst: str | os.PathLike[str],
                  release: Mapping[str, Any]) -> Path:
    """Copy the ONNX file ``src`` to ``dst`` (atomically) with ``release`` as JSON in its
    :data:`~slotmpe.pretrained.RELEASE_KEY` metadata entry (other entries kept)."""
    import onnx

    model = onnx.load(str(src))
    props = {p.key: p.value for p in model.metadata_props}
    props[RELEASE_KEY] = json.dumps(dict(release), sort_keys=True)
    del model.metadata_props[:]
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    out = Path(dst)
    with atomic_path(out) as tmp:
        onnx.save(model, str(tmp))
    return out


def build_pretrained(
    export: str | os.PathLike[str],
    run: Mapping[str, Any],
    train_log: str | os.PathLike[str],
    metrics: Mapping[str, str | os.PathLike[str]],
    out_model: str | os.PathLike[str],
    out_json: str | os.PathLike[str],
    out_card: str | os.PathLike[str] | None = None,
    train_config: Mapping[str, Any] | None = None,
    benchmark: str | os.PathLike[str] | None = None,
    naming: Mapping[str, str | os.PathLike[str]] | None = None,
    repo: str | os.PathLike[str] = ".",
) -> dict[str, Any]:
    """Build the release of one run (module docstring); returns the card data.

    ``run``: ``{"exp", "dataset", "seed"}``; ``metrics``: test dataset -> ``metrics.json`` (the
    run's own dataset first); ``naming``: test dataset -> a JSON of
    ``benchmarks/bench_instrument_names.py`` (optional).
    """
    from slotmpe.experiments import get_experiment
    from slotmpe.pretrained import read_metadata_map

    git = git_commit(repo)
    run = {"exp": str(run["exp"]), "dataset": str(run["dataset"]), "seed": int(run["seed"])}
    built = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d")
    release = {"format": "slotmpe-pretrained", "run": run, "built": built, **git}
    model_path = stamp_release(export, out_model, release)
    info = json.loads(read_metadata_map(model_path).get("slotmpe", "{}"))
    protos = info.get("instrument_prototypes") or {}
    exp = get_experiment(run["exp"])
    tests: dict[str, Any] = {}
    for ds, path in metrics.items():
        tests[str(ds)] = metric_figures(path)
        if naming and ds in naming and Path(naming[ds]).is_file():
            doc = json.loads(Path(naming[ds]).read_text())
            tests[str(ds)]["naming"] = doc.get("written") or doc.get("all")
    data: dict[str, Any] = {
        "release": release,
        "model": {"file": Path(out_model).name, "size_bytes": model_path.stat().st_size,
                  "sha256": file_sha256(model_path), "format": "ONNX (slotmpe-onnx stage graphs)",
                  "experiment": run["exp"], "description": exp.description,
                  "thresholds": info.get("thresholds") or {},
                  "instruments": list(protos.get("names") or []),
                  "instrument_families": list(protos.get("families") or [])},
        "training": {"data": TRAINING_DATA.get(run["dataset"], f"the '{run['dataset']}' dataset"),
                     "licences": LICENCES, "config": dict(train_config or {}),
                     **training_summary(train_log, benchmark)},
        "test": tests,
        "never_seen": list(NEVER_SEEN),
    }
    with atomic_path(out_json) as tmp:
        tmp.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n")
    if out_card is not None:
        write_card(out_json, out_card)
    return data


def _fmt(value: Any, key: str = "") -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}" if key == "timbre_cos" else f"{value:.2f}"
    return str(value)


def render_card(data: Mapping[str, Any]) -> str:
    """``MODEL_CARD.md`` (Markdown) of the card data written by :func:`build_pretrained`."""
    rel, model, tr = data["release"], data["model"], data["training"]
    run = rel["run"]
    commit = rel.get("commit") or "not recorded"
    dirty = " (with uncommitted changes)" if rel.get("dirty") else ""
    lines = [
        "# slotmpe shipped model",
        "",
        f"`model.onnx`: experiment **{run['exp']}** ({model['description']}), trained on "
        f"**{run['dataset']}**, seed {run['seed']}, commit `{commit}`{dirty}, built "
        f"{rel.get('built', '?')} by `snakemake --cores 4 results/pretrained/model.onnx` "
        "(workflow/rules/pretrained.smk; `docs/pretrained.md` says how to rebuild and ship it).",
        "",
        f"- file: {model['size_bytes'] / 1e6:.2f} MB, SHA-256 `{model['sha256']}`; "
        f"{model['format']}, run by onnxruntime on the CPU without torch",
        "- tuned thresholds (validation split): "
        + (", ".join(f"{k} {v:.3g}" for k, v in model["thresholds"].items()) or "none (0.5)"),
        f"- instruments it can name ({len(model['instruments'])}): "
        + (", ".join(model["instruments"]) or "none (slots are 'slot k')"),
        "",
        "## Training",
        "",
        f"- data: {tr['data']}",
        f"- licences: {tr['licences']}",
        f"- epochs: {tr['epochs']}; summed epoch time {_fmt(tr.get('epoch_seconds_total'))} s "
        f"(train_log.csv); training job wall {_fmt(tr.get('job_wall_s'))} s, CPU "
        f"{_fmt(tr.get('job_cpu_s'))} s (Snakemake benchmark)",
        f"- precision: {', '.join(tr.get('precision') or ['not recorded'])}; CPU: "
        f"{'; '.join(tr.get('cpu') or ['not recorded'])}",
    ]
    if tr.get("config"):
        cfg = ", ".join(f"{k}={v}" for k, v in tr["config"].items())
        lines.append(f"- configuration (config.yaml `train:`): {cfg}")
    lines += ["", "## Test figures", "",
              "Test splits, percent (cos 0..1). The run's own dataset is in-domain; the others "
              "are scored with the thresholds of its own validation split.", ""]
    tests: Mapping[str, Any] = data["test"]
    names = list(tests)
    lines.append("| metric | " + " | ".join(
        f"{ds} ({tests[ds].get('n_files') or '?'} files)" for ds in names) + " |")
    lines.append("|---|" + "---|" * len(names))
    for key, label in CARD_METRICS:
        lines.append(f"| {label} | " + " | ".join(_fmt(tests[ds].get(key), key) for ds in names)
                     + " |")
    naming_rows = [(ds, tests[ds].get("naming")) for ds in names if tests[ds].get("naming")]
    if naming_rows:
        lines += ["", "Instrument names of the slots that become MIDI tracks, matched to a stem "
                  "(`benchmarks/bench_instrument_names.py`; a slot whose calibrated name "
                  "confidence is below the cut tuned on validation is written by its family "
                  "where the family's confidence passes its own cut tuned on validation, else "
                  "'unknown'; 'right among the named' counts a family name right when the family "
                  "is):", ""]

        def pct(v: object) -> str:
            return "–" if v is None else f"{100 * float(v):.1f} %"  # type: ignore[arg-type]

        for ds, nm in naming_rows:
            lines.append(f"- {ds}: {nm.get('pairs')} slots, instrument right "
                         f"{pct(nm.get('instrument_accuracy'))}, family right "
                         f"{pct(nm.get('family_accuracy'))}, named by family "
                         f"{pct(nm.get('family_named_rate'))}, 'unknown' "
                         f"{pct(nm.get('unknown_rate'))}, right among the named "
                         f"{pct(nm.get('named_accuracy'))}")
    else:
        lines += ["", "Instrument-name accuracy: not measured for this build."]
    lines += ["", "## What it has never seen", "",
              "It has never seen a real recording. Expect far lower figures on real audio than "
              "on the rendered test splits above.", ""]
    lines += [f"- {item}" for item in data.get("never_seen", NEVER_SEEN)]
    return "\n".join(lines) + "\n"


def write_card(json_path: str | os.PathLike[str], out: str | os.PathLike[str]) -> Path:
    """Render the card data ``json_path`` to the Markdown file ``out`` (atomically)."""
    data = json.loads(Path(json_path).read_text())
    dst = Path(out)
    with atomic_path(dst) as tmp:
        tmp.write_text(render_card(data))
    return dst


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m slotmpe.pretrained.card CARD.json -o MODEL_CARD.md``."""
    ap = argparse.ArgumentParser(prog="python -m slotmpe.pretrained.card",
                                 description="Render MODEL_CARD.md from the model-card data JSON.")
    ap.add_argument("data", type=Path, help="results/pretrained/card.json")
    ap.add_argument("-o", "--out", type=Path, default=Path("MODEL_CARD.md"))
    args = ap.parse_args(argv)
    print(write_card(args.data, args.out))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
