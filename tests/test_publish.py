"""A published run (slotmpe.results.publish) and ``slotmpe findings`` on it (slotmpe.results.build):
a tiny results tree from synthetic per-file counts, no training."""

from __future__ import annotations

import json
import shutil
import subprocess
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


def _tables(res: Path, seeds: tuple[int, ...]) -> None:
    """Table III, the note table, the findings and table3_ext of ``seeds`` as the rules write them."""
    from slotmpe.pipeline import table3
    from slotmpe.results.ext import ext_rows_with_bases, write_table3_ext

    metrics = [res / ds / exp / f"seed{s}" / "metrics.json" for exp, ds in ROWS for s in seeds]
    table3(metrics, ROWS, res / "table3.csv", res / "table3.md", res / "table3_vs_paper.md",
           ALIASES, [p.with_name("per_file.csv") for p in metrics], res / "findings.csv",
           res / "findings.md", res / "table3_notes.csv", res / "table3_notes.md")
    ext = [res / ds / exp / f"seed{s}" / "metrics.json" for exp, ds in ext_rows_with_bases(EXT_ROWS)
           for s in seeds]
    write_table3_ext(ext, EXT_ROWS, res / "table3_ext.csv", res / "table3_ext.md")


CONFIG = (
    "profile: default\nprofiles: {default: {}}\npaper_aliases: {chamber: urmp}\n"
    "datasets: {chamber: {}}\nseeds: [0, 1, 2, 3]\n"
    "table3_rows: [" + ", ".join(f"[{e}, {d}]" for e, d in ROWS) + "]\n"
)


def _tree(root: Path, seeds: tuple[int, ...], folders: tuple[int, ...] | None = None) -> Path:
    """``root/results`` with run folders of ``folders`` (default ``seeds``) and the tables of
    ``seeds``, and ``root/config.yaml``."""
    res = root / "results"
    for exp, ds in [*ROWS, *EXT_ROWS]:
        for s in folders or seeds:
            _run(res, exp, ds, s)
    _tables(res, seeds)
    (root / "config.yaml").write_text(CONFIG)
    return res


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """results/ of a 3-seed run with its tables built by the table3 and table3_ext rules' code."""
    root = tmp_path_factory.mktemp("work")
    res = _tree(root, SEEDS)
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
    return res


TABLES = ("findings.csv", "findings.md", "table3.csv", "table3.md", "table3_vs_paper.md",
          "table3_notes.csv", "table3_notes.md", "table3_ext.csv", "table3_ext.md")


def test_publish_then_findings_reproduces_the_tables_exactly(results: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]
                                                              ) -> None:
    pub = tmp_path / "docs/runs/2025-01-01-abc1234"
    (results / "fig2_umap.png").write_bytes(b"\x89PNG fig2")
    try:
        assert main(["publish-run", str(results), "-o", str(pub), "--config",
                     str(results.parent / "config.yaml")]) == 0
    finally:
        (results / "fig2_umap.png").unlink()
    assert capsys.readouterr().out.strip() == str(pub)
    assert (pub / "fig2_umap.png").read_bytes() == b"\x89PNG fig2"  # Fig. 2 travels too
    for name in TABLES:  # rebuilt from the published seeds: the rule's tables
        if name != "findings.md":
            assert (pub / name).read_bytes() == (results / name).read_bytes(), name
    # findings.md: the rule's, then a section on the seeds (commit, config, CPU, precision)
    md = (pub / "findings.md").read_text()
    assert md.startswith((results / "findings.md").read_text()) and "\n## Seeds\n" in md
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
                                 "cpu_s": 11.9, "max_rss_mb": 512.3}]
    assert env["seed_info"]["1"]["wall_s_total"] == 12.5
    assert env["seed_info"]["1"]["cpu_s_total"] == 11.9
    assert env["planned"] == {"seeds": [0, 1, 2, 3], "rows": [list(r) for r in ROWS]}
    assert len(env["config_sha256"]) == 64
    assert {r["commit"] for r in env["seed_info"].values()} == {env["commit"]}
    status = (pub / "STATUS.md").read_text()  # seed 3 is planned and still to run
    assert "| 3 | to run | 0/6 |" in status and "| 0 | done | 6/6 |" in status
    co = env["checkout"]  # the run's worktree of the pinned commit, and how to recreate it
    assert f"git -C {co['main']} worktree add --detach {co['worktree']} {env['commit']}" in status
    assert f"cd {co['worktree']}\nPYTHONPATH=$PWD/src snakemake --cores 2 results/table3.csv " \
        "--config seeds='[3]'\n" in status
    assert f"slotmpe publish-run {co['worktree']}/results --out {pub}\n" in status

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


# --------------------------------------------------------------------------------------------
# Seeds that add up (issue 28): one folder per commit + config, seeds merged, mixing refused
# --------------------------------------------------------------------------------------------


def _publish(res: Path, pub: Path) -> int:
    return main(["publish-run", str(res), "-o", str(pub)])


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def test_seeds_published_one_at_a_time_add_up(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """Seed 0 then seed 1, each from its own results/ tree, land in one folder whose tables are
    those of the rule over both seeds; STATUS.md says what is still to run."""
    pub = tmp_path / "docs/runs/2026-01-01-abc1234"
    assert _publish(_tree(tmp_path / "a", (0,)), pub) == 0
    assert json.loads((pub / "environment.json").read_text())["seeds"] == [0]
    (pub / "README.md").write_text("how this run was made\n")  # the run's own notes
    assert _publish(_tree(tmp_path / "b", (1,)), pub) == 0
    capsys.readouterr()
    assert (pub / "README.md").read_text() == "how this run was made\n"
    env = json.loads((pub / "environment.json").read_text())
    assert env["seeds"] == [0, 1] and sorted(env["seed_info"]) == ["0", "1"]
    assert len(env["runs"]) == 2 * (len(ROWS) + 1)
    both = _tree(tmp_path / "both", (0, 1))
    for name in TABLES:
        if name != "findings.md":
            assert (pub / name).read_bytes() == (both / name).read_bytes(), name
    assert pd.read_csv(pub / "table3.csv")["n_seeds"].eq(2).all()
    status = (pub / "STATUS.md").read_text()
    assert "| 1 | done | 6/6 |" in status and "| 2 | to run | 0/6 |" in status
    assert "seeds='[2]'" in status and "seeds='[3]'" in status and "seeds='[1]'" not in status
    # findings on the merged folder reproduces it
    assert main(["findings", str(pub), "-o", str(tmp_path / "check")]) == 0
    for name in TABLES:
        assert (tmp_path / "check" / name).read_bytes() == (pub / name).read_bytes(), name


def test_a_seed_of_another_commit_or_config_is_refused(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    pub = tmp_path / "docs/runs/2026-01-01-abc1234"
    assert _publish(_tree(tmp_path / "a", (0,)), pub) == 0
    env_path = pub / "environment.json"
    env = json.loads(env_path.read_text())
    before = _snapshot(pub)
    # another config (a changed setting): refused, naming both digests
    other = _tree(tmp_path / "b", (1,))
    (tmp_path / "b/config.yaml").write_text(CONFIG.replace("seeds:", "train: {lr: 0.1}\nseeds:"))
    capsys.readouterr()
    assert _publish(other, pub) == 1
    err = capsys.readouterr().err
    assert "different configs" in err and env["config_sha256"] in err
    assert _snapshot(pub) == before
    # another commit: refused, naming both
    env["commit"] = "f" * 40
    env_path.write_text(json.dumps(env))
    before = _snapshot(pub)
    (tmp_path / "b/config.yaml").write_text(CONFIG)
    assert _publish(other, pub) == 1
    err = capsys.readouterr().err
    assert "different commits" in err and "f" * 40 in err
    assert _snapshot(pub) == before


def test_findings_refuses_seeds_of_different_commits_and_reports_cpu_kinds(
        results: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pub = tmp_path / "pub"
    assert _publish(results, pub) == 0
    env = json.loads((pub / "environment.json").read_text())
    mixed = json.loads(json.dumps(env))
    mixed["seed_info"]["2"]["commit"] = "e" * 40
    (pub / "environment.json").write_text(json.dumps(mixed))
    capsys.readouterr()
    assert main(["findings", str(pub), "-o", str(tmp_path / "x")]) == 1
    err = capsys.readouterr().err
    assert "different commits" in err and "seed 0" in err and "seed 2" in err
    assert env["commit"] in err and "e" * 40 in err
    mixed = json.loads(json.dumps(env))
    mixed["seed_info"]["1"]["config_sha256"] = "0" * 64
    (pub / "environment.json").write_text(json.dumps(mixed))
    assert main(["findings", str(pub), "-o", str(tmp_path / "x")]) == 1
    assert "different configs" in capsys.readouterr().err
    # other CPU kinds and precisions are reported, in findings.md and on stdout
    mixed = json.loads(json.dumps(env))
    mixed["seed_info"]["2"]["cpu"] = {"model": "AMD EPYC Test", "flags": ["avx2", "avx512f"]}
    for r in mixed["runs"]:
        r["precision"] = "fp32" if r["seed"] == 2 else "bf16"
    (pub / "environment.json").write_text(json.dumps(mixed))
    assert main(["findings", str(pub), "-o", str(tmp_path / "y")]) == 0
    out, err = capsys.readouterr()
    md = (tmp_path / "y/findings.md").read_text()
    for text in (out, md):
        assert "different CPU kinds" in text and "AMD EPYC Test" in text
        assert "different precisions" in text and "seed 2: fp32" in text
    assert "different CPU kinds" in err


# --------------------------------------------------------------------------------------------
# The faults of issue 28, step 2: each fails on the code before it
# --------------------------------------------------------------------------------------------


def test_stale_seed_folders_are_not_mixed_in(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """seed1 folders left from an earlier seeds=[0,1] run beside a table3.csv of seed 0 only:
    neither findings nor publish-run takes them; republishing drops stale folders."""
    res = _tree(tmp_path / "w", (0,), folders=(0, 1))
    rule = _snapshot(res)
    assert main(["findings", str(res)]) == 0
    for name in TABLES:
        assert (res / name).read_bytes() == rule[name], name  # n_seeds 1, as the rule wrote
    pub = tmp_path / "pub"
    assert _publish(res, pub) == 0
    env = json.loads((pub / "environment.json").read_text())
    assert env["seeds"] == [0] and {r["seed"] for r in env["runs"]} == {0}
    assert not list(pub.glob("*/*/seed1"))
    # a stale folder in the published run (an older publish) is dropped on republishing
    shutil.copytree(pub / "chamber/2b/seed0", pub / "chamber/2b/seed7")
    capsys.readouterr()
    assert main(["findings", str(pub), "-o", str(tmp_path / "c")]) == 1
    assert "chamber/2b/seed7" in capsys.readouterr().err  # unrecorded: refused, not mixed in
    assert _publish(res, pub) == 0
    assert not (pub / "chamber/2b/seed7").exists()
    assert sorted({p.name for p in pub.glob("*/*/seed*")}) == ["seed0"]


def test_stale_folders_beside_an_old_table_without_a_seeds_column_are_an_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    res = _tree(tmp_path / "w", (0,), folders=(0, 1))
    t3 = pd.read_csv(res / "table3.csv", dtype=str, keep_default_na=False)
    t3.drop(columns=["seeds"]).to_csv(res / "table3.csv", index=False)
    before = (res / "table3.csv").read_bytes()
    assert main(["findings", str(res)]) == 1
    err = capsys.readouterr().err
    assert "table3.csv averaged 1 seed" in err and "[0, 1]" in err
    assert (res / "table3.csv").read_bytes() == before


def test_findings_from_another_directory_keeps_the_paper_values(
        results: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Run outside the project root: the config beside results/ is found; with no config at all
    the command fails naming --config and leaves the tables as they were."""
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "again"
    assert main(["findings", str(results), "-o", str(out)]) == 0
    for name in TABLES:
        assert (out / name).read_bytes() == (results / name).read_bytes(), name
    assert len(pd.read_csv(out / "findings.csv")) > 0
    lone = tmp_path / "lone/results"
    shutil.copytree(results, lone)
    before = _snapshot(lone)
    capsys.readouterr()
    assert main(["findings", str(lone)]) == 1
    assert "--config" in capsys.readouterr().err
    assert _snapshot(lone) == before
    assert main(["findings", str(lone), "--config", str(results.parent / "config.yaml")]) == 0


def test_publish_from_inside_another_git_repository_records_slotmpe_commit(
        results: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    other = tmp_path / "other"
    other.mkdir()
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(other)]
    subprocess.run([*git, "init", "-q"], check=True)
    (other / "x.txt").write_text("x")
    subprocess.run([*git, "add", "x.txt"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "x"], check=True)
    other_head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True,
                                check=True).stdout.strip()
    import slotmpe

    checkout = Path(slotmpe.__file__).resolve().parents[2]
    ours = subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
    monkeypatch.chdir(other)
    pub = tmp_path / "pub"
    assert main(["publish-run", str(results), "-o", str(pub)]) == 0
    env = json.loads((pub / "environment.json").read_text())
    assert env["commit"] == ours != other_head
    assert env["paper_aliases"] == ALIASES  # from the config beside results/, not the cwd


def test_a_cut_short_per_file_table_is_an_error_naming_it(
        results: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    res = tmp_path / "results"
    shutil.copytree(results, res)
    shutil.copy(results.parent / "config.yaml", tmp_path / "config.yaml")
    pf = res / "chamber/1c/seed0/per_file.csv"
    lines = pf.read_text().splitlines(keepends=True)
    pf.write_text("".join(lines[: len(lines) * 2 // 3]))  # whole rows lost
    # and a metrics change that would rewrite table3.* before the findings fail
    m = json.loads((res / "chamber/1b/seed0/metrics.json").read_text())
    m["std_ap"] = 1.0
    (res / "chamber/1b/seed0/metrics.json").write_text(json.dumps(m))
    before = _snapshot(res)
    assert main(["findings", str(res)]) == 1
    err = capsys.readouterr().err
    assert str(pf) in err and "15 test files" in err
    assert _snapshot(res) == before  # no table rewritten
    pf.write_text("".join(lines)[:-9])  # a row cut mid-line
    assert main(["findings", str(res)]) == 1
    assert str(pf) in capsys.readouterr().err
    # publish-run refuses it too, and leaves no folder behind
    assert _publish(res, tmp_path / "pub") == 1
    assert str(pf) in capsys.readouterr().err
    assert not (tmp_path / "pub").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".pub")]


def test_a_truncated_metrics_file_is_not_published(
        results: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pub = tmp_path / "pub"
    assert _publish(results, pub) == 0
    before = _snapshot(pub)
    res = tmp_path / "w/results"
    shutil.copytree(results, res)
    shutil.copy(results.parent / "config.yaml", tmp_path / "w/config.yaml")
    m = res / "chamber/3a/seed2/metrics.json"
    m.write_text(m.read_text()[:200])
    capsys.readouterr()
    assert _publish(res, pub) == 1
    assert str(m) in capsys.readouterr().err
    assert _snapshot(pub) == before  # the old published run, untouched
    assert _publish(res, tmp_path / "new") == 1
    assert not (tmp_path / "new").exists()
    assert main(["findings", str(res)]) == 1
    assert str(m) in capsys.readouterr().err


def test_a_nan_metric_is_flagged_not_shown_as_does_not_apply(tmp_path: Path) -> None:
    res = _tree(tmp_path / "w", (0, 1))
    m_path = res / "chamber/2b/seed1/metrics.json"
    m = json.loads(m_path.read_text())
    m["slot_ap"] = float("nan")
    m["poly_std_acc"] = None  # does not apply: "–" as before
    m["note_onset_f1"] = float("nan")
    m_path.write_text(json.dumps(m))
    assert main(["findings", str(res)]) == 0
    row = next(line for line in (res / "table3.md").read_text().splitlines()
               if line.startswith("| 2b |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2 + 4] == "NaN"  # slot_ap
    assert cells[2 + 0] != "NaN" and "–" not in cells[2 + 0]
    t3 = pd.read_csv(res / "table3.csv", dtype=str, keep_default_na=False).set_index("exp")
    assert t3.loc["2b", "slot_ap"] == "NaN" and t3.loc["2b", "slot_ap_spread"] == "NaN"
    assert t3.loc["2a", "slot_ap"] not in ("", "NaN")
    notes = (res / "table3_notes.md").read_text()
    note_row = next(line for line in notes.splitlines() if line.startswith("| 2b |"))
    assert note_row.split("|")[3].strip() == "NaN"
    nt = pd.read_csv(res / "table3_notes.csv", dtype=str, keep_default_na=False)
    assert nt.set_index("exp").loc["2b", "note_onset_f1"] == "NaN"
    vs = (res / "table3_vs_paper.md").read_text()
    assert "NaN / " in vs


# --------------------------------------------------------------------------------------------
# Seed spread and the note table's footnote
# --------------------------------------------------------------------------------------------


def test_table3_shows_the_seed_spread_beside_the_mean(results: Path) -> None:
    t3 = pd.read_csv(results / "table3.csv", dtype={"seeds": str}).set_index("exp")
    vals = [json.loads((results / f"chamber/2b/seed{s}/metrics.json").read_text())["slot_f1"]
            for s in SEEDS]
    assert t3.loc["2b", "slot_f1_spread"] == pytest.approx(max(vals) - min(vals), abs=0.006)
    assert t3.loc["2b", "seeds"] == "0;1;2" and t3.loc["2b", "n_seeds"] == 3
    row = next(line for line in (results / "table3.md").read_text().splitlines()
               if line.startswith("| 2b |"))
    slot_f1 = [c.strip() for c in row.strip("|").split("|")][2 + 5]
    mean, std = t3.loc["2b", "slot_f1"], t3.loc["2b", "slot_f1_std"]
    assert slot_f1 == f"{mean:.2f} ± {std:.2f} (Δ {t3.loc['2b', 'slot_f1_spread']:.2f})"
    assert "Δ = max - min" in (results / "table3.md").read_text()


def test_the_note_table_names_the_mt3_figures_and_says_the_data_differ(results: Path) -> None:
    notes = (results / "table3_notes.md").read_text()
    assert "MT3 (Gardner et al., ICLR 2022)" in notes and "YourMT3+" in notes
    assert "URMP" in notes and "different in data" in notes.replace("differ in data",
                                                                     "different in data")
