"""A published run (slotmpe.results.publish) and ``slotmpe findings`` on it (slotmpe.results.build):
a tiny results tree from synthetic per-file counts, no training."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from slotmpe.cli import main
from slotmpe.per_file import OUTPUTS
from slotmpe.results.table3 import METRIC_COLUMNS
from slotmpe.results.table3_notes import NOTE_COLUMNS

ROWS = [("1b", "chamber"), ("1c", "chamber"), ("2a", "chamber"), ("2b", "chamber"),
        ("3a", "chamber"), ("3b", "chamber")]
EXT_ROWS = [("4a", "chamber")]
SEEDS = (0, 1, 2)
ALIASES = {"chamber": "urmp"}
RECALL = {"1b": 0.3, "1c": 0.7, "2a": 0.6, "2b": 0.62, "3a": 0.5, "3b": 0.55, "4a": 0.65}


def _run(results: Path, exp: str, ds: str, seed: int) -> Path:
    """A run folder: per_file.csv (every output, 15 files), metrics.json from its counts,
    thresholds.json and train_log.csv."""
    rng = np.random.default_rng(zlib.crc32(f"{exp}/{ds}/{seed}".encode()))
    run = results / ds / exp / f"seed{seed}"
    run.mkdir(parents=True)
    recall = RECALL[exp] + rng.normal(0, 0.03)  # training randomness per seed
    rows = []
    for f in range(15):
        for out in OUTPUTS:
            pos = int(rng.integers(100, 900))
            tp = int(rng.binomial(pos, recall if out != "mix" else 0.8))
            rows.append((f"piece{f:02d}", out, tp, int(rng.integers(0, 40)), pos - tp, 300, 0.4))
    pf = pd.DataFrame(rows, columns=["file", "output", "tp", "fp", "fn", "n_frames", "threshold"])
    pf.to_csv(run / "per_file.csv", index=False)
    sums = pf.groupby("output")[["tp", "fp", "fn"]].sum()

    def f1(out: str) -> float:
        tp, fp, fn = sums.loc[out]
        return 100 * 2 * tp / (2 * tp + fp + fn)

    m = {c: float(rng.uniform(20, 80)) for c in METRIC_COLUMNS}
    m.update(std_f1=f1("mix"), slot_f1=f1("slot"), dup_rate=1.0, dup_rate_target=0.5,
             **{c: f1(c.removesuffix("_f1")) for c in NOTE_COLUMNS},
             exp=exp, dataset=ds, seed=seed, split="test", n_files=15)
    (run / "metrics.json").write_text(json.dumps(m, indent=2) + "\n")
    (run / "thresholds.json").write_text(json.dumps({"mix": 0.4, "slots": 0.4}) + "\n")
    (run / "train_log.csv").write_text("epoch,train_total,val_total,lr\n1,0.5,0.6,0.001\n")
    return run


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """results/ of a 3-seed run with its tables built by the table3 and table3_ext rules' code."""
    from slotmpe.pipeline import table3
    from slotmpe.results.ext import ext_rows_with_bases, write_table3_ext

    root = tmp_path_factory.mktemp("work")
    res = root / "results"
    for exp, ds in [*ROWS, *EXT_ROWS]:
        for s in SEEDS:
            _run(res, exp, ds, s)
    metrics = [res / ds / exp / f"seed{s}" / "metrics.json" for exp, ds in ROWS for s in SEEDS]
    table3(metrics, ROWS, res / "table3.csv", res / "table3.md", res / "table3_vs_paper.md",
           ALIASES, [p.with_name("per_file.csv") for p in metrics], res / "findings.csv",
           res / "findings.md", res / "table3_notes.csv", res / "table3_notes.md")
    ext = [res / ds / exp / f"seed{s}" / "metrics.json" for exp, ds in ext_rows_with_bases(EXT_ROWS)
           for s in SEEDS]
    write_table3_ext(ext, EXT_ROWS, res / "table3_ext.csv", res / "table3_ext.md")
    # a checkpoint that records how it was trained, and a Snakemake benchmark file
    from slotmpe.models import build_model, save_checkpoint

    save_checkpoint(res / "chamber/2b/seed1/model.pt", build_model("1a"),
                    {"exp": "2b", "seed": 1, "threads": 2, "precision": "bf16",
                     "cpu_model": "Test CPU", "train_config": {"grad_clip": 1.0}})
    bench = root / "benchmarks/out/train"
    bench.mkdir(parents=True)
    (bench / "chamber_2b_seed1.tsv").write_text(
        "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
        "12.5\t0:00:12\t512.3\t900.1\t400.0\t450.0\t0.1\t0.2\t95.0\t11.9\n")
    cfg = root / "config.yaml"
    cfg.write_text("profile: default\nprofiles: {default: {}}\npaper_aliases: {chamber: urmp}\n")
    return res


TABLES = ("findings.csv", "findings.md", "table3.csv", "table3.md", "table3_vs_paper.md",
          "table3_notes.csv", "table3_notes.md", "table3_ext.csv", "table3_ext.md")


def test_publish_then_findings_reproduces_the_tables_exactly(results: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]
                                                              ) -> None:
    pub = tmp_path / "docs/runs/2025-01-01-abc1234"
    assert main(["publish-run", str(results), "-o", str(pub), "--config",
                 str(results.parent / "config.yaml")]) == 0
    assert capsys.readouterr().out.strip() == str(pub)
    for name in TABLES:
        assert (pub / name).read_bytes() == (results / name).read_bytes()
    run = pub / "chamber/2b/seed1"
    assert sorted(p.name for p in run.iterdir()) == ["metrics.json", "per_file.csv",
                                                    "thresholds.json", "train_log.csv"]
    assert not list(pub.rglob("*.pt"))  # models are not published

    env = json.loads((pub / "environment.json").read_text())
    assert env["seeds"] == [0, 1, 2] and env["paper_aliases"] == ALIASES
    assert env["cpu"]["model"] and isinstance(env["cpu"]["flags"], list)
    assert env["versions"]["torch"] and len(env["runs"]) == 3 * (len(ROWS) + 1)
    rec = next(r for r in env["runs"] if (r["exp"], r["seed"]) == ("2b", 1))
    assert (rec["precision"], rec["threads"], rec["cpu_model"], rec["grad_clip"]) == \
        ("bf16", 2, "Test CPU", 1.0)
    assert env["wall_time"] == [{"benchmark": "train/chamber_2b_seed1", "s": 12.5,
                                 "max_rss_mb": 512.3}]

    # slotmpe findings on the published folder (aliases from its environment.json, no --config)
    check = tmp_path / "check"
    assert main(["findings", str(pub), "-o", str(check)]) == 0
    assert "The paper's findings on our runs" in capsys.readouterr().out
    for name in TABLES:
        assert (check / name).read_bytes() == (pub / name).read_bytes(), name
    findings = pd.read_csv(pub / "findings.csv")
    assert (findings["n_seeds"] == 3).all() and (findings["n_files"] == 15).all()
    assert set(findings["ci_method"]) == {"two-level paired bootstrap (seeds, files)"}

    # a changed per-file count changes the recomputed findings: the comparison can fail
    pf = pub / "chamber/1c/seed0/per_file.csv"
    df = pd.read_csv(pf)
    df.loc[df["output"] == "slot", "tp"] //= 3
    df.to_csv(pf, index=False)
    assert main(["findings", str(pub), "-o", str(tmp_path / "changed")]) == 0
    assert (tmp_path / "changed/findings.csv").read_bytes() != (pub / "findings.csv").read_bytes()


def test_findings_on_a_results_tree_matches_the_rule(results: Path, tmp_path: Path) -> None:
    """On the results/ tree itself (aliases from --config) the rebuilt tables are the rule's."""
    out = tmp_path / "again"
    assert main(["findings", str(results), "-o", str(out), "--config",
                 str(results.parent / "config.yaml")]) == 0
    for name in TABLES:
        assert (out / name).read_bytes() == (results / name).read_bytes(), name


def test_errors_name_the_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    assert main(["findings", str(tmp_path / "empty")]) == 1
    assert "no run folder" in capsys.readouterr().err
    assert main(["publish-run", str(tmp_path / "empty"), "-o", str(tmp_path / "pub")]) == 1
    assert "empty" in capsys.readouterr().err


PUBLISHED = sorted((Path(__file__).resolve().parents[1] / "docs" / "runs").glob("*/findings.csv"))


@pytest.mark.parametrize("findings_csv", PUBLISHED, ids=lambda p: p.parent.name)
def test_findings_reproduces_every_committed_published_run(findings_csv: Path, tmp_path: Path
                                                           ) -> None:
    """`slotmpe findings docs/runs/<run>` rebuilds the committed findings and Table III exactly."""
    run = findings_csv.parent
    assert main(["findings", str(run), "-o", str(tmp_path)]) == 0
    for name in ("findings.csv", "table3.csv", "table3_notes.csv"):
        if (run / name).is_file():
            assert (tmp_path / name).read_bytes() == (run / name).read_bytes(), name


def test_a_published_run_is_committed() -> None:
    """The repository carries at least one published run (issue 22)."""
    assert PUBLISHED, "no docs/runs/<date>-<commit>/findings.csv"
