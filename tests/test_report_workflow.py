"""The generalisation jobs and the Snakemake report: dry run of the default profile, and the tiny
profile end to end (cross-dataset targets, generalisation table, curves, ``snakemake --report``)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from test_workflow import REPO, job_counts, run_snakemake

from slotmpe.config import load_config


@pytest.fixture()
def workdir(tmp_path: Path) -> Path:
    shutil.copy(REPO / "config.yaml", tmp_path / "config.yaml")
    return tmp_path


def test_default_dry_run_lists_generalisation_and_report_jobs(workdir: Path) -> None:
    res = run_snakemake(["-n"], workdir)
    assert res.returncode == 0, res.stderr + res.stdout
    counts = job_counts(res.stdout)
    n_seeds = len(load_config(workdir / "config.yaml")["seeds"])
    assert counts["evaluate_cross"] == 14 * n_seeds  # 14 Table III models, on the other dataset
    assert counts["export_cross_embeddings"] == 2  # chamber encoder on electro stems and back
    assert counts["training_curves"] == 14 * n_seeds
    for rule in ("generalisation_table", "report_table3", "report_table1", "report_generalisation",
                 "report_findings", "table1"):
        assert counts[rule] == 1, rule
    assert "tune_thresholds_cross" not in counts  # retune is off by default
    res = run_snakemake(["-n", "--config", "generalisation={train: [chamber], test: [chamber, "
                         "electro], retune: true}"], workdir)
    assert res.returncode == 0, res.stderr + res.stdout
    counts = job_counts(res.stdout)
    assert counts["evaluate_cross"] == 8 * n_seeds  # chamber rows
    assert counts["tune_thresholds_cross"] == 8 * n_seeds
    assert counts["evaluate_cross_retuned"] == 8 * n_seeds


def test_generalisation_config_errors(workdir: Path) -> None:
    res = run_snakemake(["-n", "--config", "generalisation={train: [nowhere], test: []}"], workdir)
    assert res.returncode != 0 and "nowhere" in res.stderr + res.stdout


@pytest.mark.slow
def test_tiny_cross_dataset_and_report(workdir: Path) -> None:
    """Tiny profile, three Table III rows: every cross-dataset target, the generalisation table,
    the training curves and an HTML report that holds them."""
    rows = "table3_rows=[[1a, electro], [1c, chamber], [2b, chamber]]"
    res = run_snakemake(["--cores", "2", "--config", "profile=tiny", rows], workdir, timeout=3000)
    if res.returncode != 0:
        logs = "\n".join(f"== {p}\n{p.read_text()[-3000:]}" for p in sorted((workdir / "logs").rglob("*.log")))
        pytest.fail(f"snakemake failed\n{res.stderr[-5000:]}\n{logs[-20000:]}")
    m = json.loads((workdir / "results/chamber/2b/seed0/on_electro/metrics.json").read_text())
    assert m["train_dataset"] == "chamber" and m["test_dataset"] == "electro"
    assert m["thresholds_from"] == "chamber val"
    th = json.loads((workdir / "results/chamber/2b/seed0/thresholds.json").read_text())
    assert m["threshold_mix"] == th["mix"]  # the training dataset's thresholds
    assert m["slot_f1"] is not None and m["timbre_cos"] is not None
    m1a = json.loads((workdir / "results/electro/1a/seed0/on_chamber/metrics.json").read_text())
    assert m1a["std_f1"] is not None and m1a["slot_f1"] is None
    table = pd.read_csv(workdir / "results/generalisation.csv", dtype={"exp": str})
    assert list(zip(table["exp"], table["train_dataset"], strict=True)) == [
        ("1a", "electro"), ("1c", "chamber"), ("2b", "chamber")]
    assert table[["chamber:std_f1", "electro:std_f1"]].notna().all().all()
    assert "| 2b | chamber |" in (workdir / "results/generalisation.md").read_text()
    assert (workdir / "results/chamber/1c/seed0/curves.png").read_bytes()[:4] == b"\x89PNG"
    t1 = pd.read_csv(workdir / "results/table1.csv", dtype={"exp": str})
    assert {"trunk", "ffn", "grad_params", "mflops"} <= set(t1.columns)

    res = run_snakemake(["--report", "report.html", "--config", "profile=tiny", rows], workdir)
    assert res.returncode == 0, res.stderr + res.stdout
    html = (workdir / "report.html").read_text()
    assert (workdir / "results/report/findings.html").read_text().count("<table>") >= 1
    for needle in ("Table III", "Findings", "Generalisation", "4. Training curves", "Fig. 2", "Table I",
                   "curves.png", "fig2_umap.png", "generalisation.html", "table1.html"):
        assert needle in html, needle
