"""Tests of slotmpe.results.table3 / table1: Table III from synthetic metrics files, Table I."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from slotmpe.results import table1, table3
from slotmpe.results.table3 import METRIC_COLUMNS, ReportError

ALIASES = {"chamber": "urmp", "electro": "mshoxxdb"}


def _metrics(exp: str, ds: str, seed: int, base: float) -> dict:
    uses_slots = exp != "1a"
    m: dict[str, object] = {c: None for c in METRIC_COLUMNS}
    m.update(std_ap=base, std_f1=base + 1, std_p=base + 2, std_r=base + 3)
    if uses_slots:
        m.update(slot_ap=base / 2, slot_f1=base / 2 + 1, slot_p=base / 2 + 2, slot_r=base / 2 + 3)
    if exp[0] in "23":
        m["timbre_cos"] = 0.5 + base / 1000
    if exp[0] == "3":
        m.update(poly_std_acc=30.0 + base / 10, poly_stem_acc=40.0)
    m.update(exp=exp, dataset=ds, seed=seed, split="test", n_files=2, n_frames=100)
    return m


def _write(root: Path, m: dict) -> Path:
    p = root / str(m["dataset"]) / str(m["exp"]) / f"seed{m['seed']}" / "metrics.json"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(m))
    return p


ROWS = [("2b", "electro"), ("1c", "chamber"), ("1a", "electro"), ("1a", "chamber"),
        ("1b", "chamber"), ("3c", "chamber"), ("1a", "mydata")]
EXPECTED_ORDER = [("1a", "electro"), ("1a", "chamber"), ("1b", "chamber"), ("1c", "chamber"),
                  ("2b", "electro"), ("3c", "chamber"), ("1a", "mydata")]


def _outputs(tmp_path: Path) -> tuple[Path, Path, Path]:
    return tmp_path / "t3.csv", tmp_path / "t3.md", tmp_path / "t3_vs.md"


def test_order_rows_follows_paper() -> None:
    assert table3.order_rows(ROWS, ALIASES) == EXPECTED_ORDER
    assert table3.order_rows([("1a", "urmp"), ("1a", "musicnet")]) == [("1a", "musicnet"), ("1a", "urmp")]


def test_table3_single_seed(tmp_path: Path) -> None:
    paths = [_write(tmp_path / "results", _metrics(e, d, 0, 10.0 + i)) for i, (e, d) in enumerate(ROWS)]
    out_csv, out_md, out_vs = _outputs(tmp_path)
    df = table3.write_table3(paths, ROWS, out_csv, out_md, out_vs, ALIASES)
    assert list(zip(df["exp"], df["dataset"], strict=True)) == EXPECTED_ORDER
    csv = pd.read_csv(out_csv, dtype={"exp": str})
    assert list(csv.columns) == table3.paper_table3_columns() + ["n_seeds", "seeds"]
    assert (csv["n_seeds"] == 1).all() and (csv["seeds"] == 0).all()
    # 1c chamber was written with base 11.0
    row = csv[(csv.exp == "1c") & (csv.dataset == "chamber")].iloc[0]
    assert row["std_ap"] == pytest.approx(11.0) and row["slot_f1"] == pytest.approx(6.5)
    assert pd.isna(row["timbre_cos"])
    text = out_csv.read_text().splitlines()
    # percent with two decimals, cos with four
    line_3c = next(t for t in text if t.startswith("3c,chamber"))
    assert ",15.00," in line_3c and ",0.5150," in line_3c
    md = out_md.read_text()
    assert "| 1a | electro |" in md
    vs = out_vs.read_text()
    assert "chamber (ours) vs URMP (paper)" in vs and "electro (ours) vs mshoxxDB (paper)" in vs
    assert "74.78" in vs  # the paper's 1a URMP AP beside ours
    assert "mydata (ours; no paper counterpart)" in vs


def test_table3_multiple_seeds(tmp_path: Path) -> None:
    rows = [("1a", "chamber"), ("3c", "electro")]
    paths = []
    for seed, base in ((0, 10.0), (1, 12.0), (2, 14.0)):
        paths += [_write(tmp_path, _metrics(e, d, seed, base)) for e, d in rows]
    out_csv, out_md, out_vs = _outputs(tmp_path)
    df = table3.write_table3(paths, rows, out_csv, out_md, out_vs, ALIASES)
    cols = table3.paper_table3_columns()
    assert list(df.columns) == (cols + ["n_seeds", "seeds"] + [f"{c}_std" for c in cols[2:]]
                                + [f"{c}_spread" for c in cols[2:]])
    r = df.iloc[0]
    assert r["n_seeds"] == 3 and r["seeds"] == "0;1;2"
    assert r["std_ap"] == pytest.approx(12.0)
    assert r["std_ap_std"] == pytest.approx(2.0)  # sample std of 10, 12, 14
    assert r["std_ap_spread"] == pytest.approx(4.0)  # max - min of 10, 12, 14
    assert pd.isna(r["slot_ap"]) and pd.isna(r["slot_ap_std"]) and pd.isna(r["slot_ap_spread"])
    assert df.iloc[1]["timbre_cos"] == pytest.approx(0.512)
    assert "12.00 ± 2.00 (Δ 4.00)" in out_md.read_text()


def test_table3_missing_metrics_file_is_an_error(tmp_path: Path) -> None:
    paths = [_write(tmp_path, _metrics("1a", "chamber", 0, 10.0))]
    with pytest.raises(ReportError, match="1c/chamber"):
        table3.write_table3(paths, [("1a", "chamber"), ("1c", "chamber")], *_outputs(tmp_path), ALIASES)
    with pytest.raises(ReportError, match="does not exist"):
        table3.write_table3([tmp_path / "nope.json"], [("1a", "chamber")], *_outputs(tmp_path), ALIASES)
    assert not (tmp_path / "t3.csv").exists()


def test_table3_duplicate_seed_is_an_error(tmp_path: Path) -> None:
    p1 = _write(tmp_path / "a", _metrics("1a", "chamber", 0, 10.0))
    p2 = _write(tmp_path / "b", _metrics("1a", "chamber", 0, 11.0))
    with pytest.raises(ReportError, match="two metrics files"):
        table3.build_table3([p1, p2], [("1a", "chamber")], ALIASES)


def test_table1(tmp_path: Path) -> None:
    pytest.importorskip("slotmpe.models")
    df = table1.write_table1(tmp_path / "table1.csv")
    assert list(df.columns) == ["exp", "task", "slots", "matching", "flags", "params",
                                "paper_params", "delta_pct", "widths", "trunk", "global_branch",
                                "slot_branch", "slot_attention", "ffn", "decoder", "heads",
                                "grad_params", "mflops"]
    assert list(df["exp"]) == ["1a", "1b", "1c", "2a", "2b", "3a", "3b", "3c"]
    assert df.loc[df.exp == "1a", "slots"].item() == 0
    assert df.loc[df.exp == "3c", "paper_params"].item() == 1_684_875
    r = df.iloc[3]
    assert r["delta_pct"] == pytest.approx(round(100 * (r["params"] - r["paper_params"]) / r["paper_params"], 2))
    assert (tmp_path / "table1.csv").exists()


# ------------------------------------------------------------------------------------------
# Findings (slotmpe.results.findings) from synthetic per-file tables
# ------------------------------------------------------------------------------------------


def _per_file_csv(root: Path, exp: str, ds: str, seed: int, recall: float) -> Path:
    """per_file.csv of 12 test files whose slot recall is ``recall`` (no false positives)."""
    import zlib

    import numpy as np

    rng = np.random.default_rng(zlib.crc32(f"{exp}/{ds}/{seed}".encode()))
    rows = []
    for f in range(12):
        pos = int(rng.integers(500, 900))
        tp = int(rng.binomial(pos, recall))
        rows.append((f"f{f}", "slot", tp, 0, pos - tp, 50, 0.5))
        rows.append((f"f{f}", "mix", pos, 5, 0, 50, 0.5))
    p = root / ds / exp / f"seed{seed}" / "per_file.csv"
    p.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=["file", "output", "tp", "fp", "fn", "n_frames", "threshold"]
                 ).to_csv(p, index=False)
    return p


def test_findings_effects_ci_and_verdicts(tmp_path: Path) -> None:
    from slotmpe.results.findings import (
        FINDINGS_COLUMNS,
        HOLDS,
        REVERSED,
        UNRESOLVED,
        write_findings,
    )

    recall = {"1b": 0.3, "1c": 0.7, "2a": 0.6, "2b": 0.4, "3a": 0.5, "3b": 0.5, "3c": 0.8}
    cells = {}
    for exp, r in recall.items():
        for ds in ("chamber", "electro"):
            if ds == "electro" and exp[0] == "1":
                continue
            cells[(exp, ds)] = [_per_file_csv(tmp_path, exp, ds, s, r) for s in (0, 1)]
    df = write_findings(cells, tmp_path / "findings.csv", tmp_path / "findings.md", ALIASES,
                        n_resamples=300)
    assert list(pd.read_csv(tmp_path / "findings.csv").columns) == list(FINDINGS_COLUMNS)
    got = {(r.finding, r.dataset, r.exp_a, r.exp_b, r.metric): r for r in df.itertuples()}
    m = got[("matching", "chamber", "1c", "1b", "slot_f1")]
    assert m.effect > 20 and m.ci_low > 0 and m.verdict == HOLDS
    assert m.paper_effect == pytest.approx(65.91 - 33.91)
    assert (m.n_seeds, m.n_files) == (2, 12)
    assert got[("film", "chamber", "2b", "2a", "slot_f1")].verdict == REVERSED
    poly = got[("polyphony", "chamber", "3b", "3a", "slot_f1")]
    assert poly.ci_low <= 0 <= poly.ci_high and poly.verdict == UNRESOLVED
    assert got[("polyphony", "chamber", "3c", "3a", "slot_f1")].verdict == HOLDS
    # timbre head alone vs FiLM on the electronic set: the paper has FiLM ahead (negative effect)
    tv = got[("timbre_vs_film", "electro", "2a", "2b", "slot_f1")]
    assert tv.paper_effect == pytest.approx(10.58 - 18.57) and tv.verdict == REVERSED
    assert ("timbre_vs_film", "electro", "2a", "2b", "std_f1") in got
    assert not any(k[1] == "chamber" and k[0] == "timbre_vs_film" for k in got)
    md = (tmp_path / "findings.md").read_text()
    assert "chamber (~urmp)" in md and "not resolved: " in md
    assert set(df["ci_method"]) == {"two-level paired bootstrap (seeds, files)"}
    assert bool(m.seeds_agree) and len(m.seed_effects.split(";")) == 2
    assert m.min_detectable == pytest.approx((m.ci_high - m.ci_low) / 2, abs=0.011)
    assert "Detectable" in md and f"±{m.min_detectable:.2f}" in md


def test_findings_need_two_seeds_that_agree(tmp_path: Path) -> None:
    """One seed: the CI is over files only and says so; no verdict. Seeds of opposite sign: no
    verdict either, even where the interval alone would exclude 0."""
    from slotmpe.results.findings import HOLDS, UNRESOLVED, verdict, write_findings

    one = {(e, "chamber"): [_per_file_csv(tmp_path / "one", e, "chamber", 0, r)]
           for e, r in (("1b", 0.3), ("1c", 0.7))}
    df = write_findings(one, tmp_path / "f1.csv", tmp_path / "f1.md", ALIASES, n_resamples=300)
    r = df.iloc[0]
    assert r["n_seeds"] == 1 and "1 seed" in r["ci_method"] and r["ci_low"] > 0
    assert r["verdict"] == UNRESOLVED
    assert "files only: 1 seed" in (tmp_path / "f1.md").read_text()
    assert verdict(2.0, 5.0, 3.0, seeds_agree=True, n_seeds=3, n_files=15) == HOLDS
    assert verdict(2.0, 5.0, 3.0, seeds_agree=False, n_seeds=3, n_files=15) == UNRESOLVED
    assert verdict(2.0, 5.0, 3.0, seeds_agree=True, n_seeds=1, n_files=15) == UNRESOLVED
    assert verdict(2.0, 5.0, 3.0, seeds_agree=True, n_seeds=3, n_files=4) == UNRESOLVED
    assert r["reason"] == "1 seed (at least 2 needed)"
    assert "not resolved: 1 seed (at least 2 needed) |" in (tmp_path / "f1.md").read_text()


def test_every_unresolved_finding_says_why() -> None:
    from slotmpe.results.findings import HOLDS, verdict, verdict_reason

    assert verdict_reason(2.0, 5.0, 3.0, True, 3, 15) == ""
    assert verdict(2.0, 5.0, 3.0, True, 3, 15) == HOLDS
    assert verdict_reason(-1.0, 5.0, 3.0, True, 3, 15) == "the 95 % CI covers 0"
    assert verdict_reason(2.0, 5.0, 3.0, False, 3, 15) == "the seeds disagree in sign"
    assert verdict_reason(-1.0, 5.0, 3.0, False, 3, 15) == ("the seeds disagree in sign; "
                                                           "the 95 % CI covers 0")
    assert verdict_reason(2.0, 5.0, 3.0, True, 3, 4) == "4 test files (at least 5 needed)"
    assert verdict_reason(2.0, 5.0, float("nan"), True, 3, 15) == \
        "the paper has no effect to compare with"
    assert verdict_reason(float("nan"), float("nan"), 3.0, True, 1, 1).endswith("no CI")


def test_table3_uses_the_stats_module_for_std(tmp_path: Path) -> None:
    from slotmpe.results.stats import mean_std

    paths = [_write(tmp_path, _metrics("1c", "chamber", s, b)) for s, b in ((0, 40.0), (1, 50.0),
                                                                            (2, 66.0))]
    df = table3.build_table3(paths, [("1c", "chamber")], ALIASES)
    mean, std = mean_std([41.0, 51.0, 67.0])
    assert df.loc[0, "std_f1"] == pytest.approx(round(mean, 2))
    assert df.loc[0, "std_f1_std"] == pytest.approx(round(std, 2)) and df.loc[0, "n_seeds"] == 3
