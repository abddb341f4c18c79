"""The Snakemake workflow: dry runs of every profile, lint, config validation, and a tiny
end-to-end run of the whole DAG (raw data -> Table III and Fig. 2)."""

from __future__ import annotations

import math
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from slotmpe.config import ConfigError, apply_profile, load_config

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
ALL_STAGES = {
    "build_dataset", "cache_features", "train_timbre_encoder", "export_embeddings",
    "plot_umap", "fig2_umap", "train_model", "tune_thresholds", "evaluate_model", "table3",
}


def run_snakemake(args: list[str], workdir: Path, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    """Run snakemake on the repository's Snakefile in ``workdir`` (which holds config.yaml)."""
    cmd = [*SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(workdir), *args]
    return subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout)


@pytest.fixture()
def workdir(tmp_path: Path) -> Path:
    shutil.copy(REPO / "config.yaml", tmp_path / "config.yaml")
    return tmp_path


def job_counts(stdout: str) -> dict[str, int]:
    stats = stdout.split("Job stats:")[1]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", stats, re.M)}


_NOT_COPIED = {".git", ".snakemake", "data", "results", "logs", ".pytest_cache", ".ruff_cache"}


@pytest.fixture(scope="module")
def repo_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the repository's sources (no data, results, logs or git metadata)."""
    dst = tmp_path_factory.mktemp("repo") / "slotmpe"

    def ignore(folder: str, names: list[str]) -> set[str]:
        top = Path(folder).resolve() == REPO
        return {n for n in names if (top and n in _NOT_COPIED) or n == "__pycache__"
                or n.endswith(".log")}

    shutil.copytree(REPO, dst, ignore=ignore)
    return dst


def _declared_threads(stdout: str, rule: str) -> list[int]:
    """Threads of every job of ``rule`` in a dry run's job list (1 where Snakemake prints none)."""
    out = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", stdout):
        if re.match(rf"(?:local)?rule {rule}:", block.strip()):
            m = re.search(r"^\s+threads: (\d+)$", block, re.M)
            out.append(int(m.group(1)) if m else 1)
    return out


@pytest.mark.parametrize(
    "command", ["snakemake --cores 4 results/table3.csv", "snakemake results/fig2_umap.png"]
)
def test_mission_commands_work_verbatim(repo_copy: Path, command: str) -> None:
    """The README's commands, typed exactly so in a fresh copy of the repository (dry run): the
    default profile in profiles/default/ is picked up by Snakemake itself (cores: all), and
    --cores beyond the CPUs present never runs more torch threads than there are CPUs."""
    exe = shutil.which("snakemake")
    args = shlex.split(command)
    cmd = ([exe] if exe else SNAKEMAKE) + args[1:] + ["--dry-run"]
    env = {**os.environ, "PYTHONPATH": str(repo_copy / "src")}
    res = subprocess.run(cmd, cwd=repo_copy, capture_output=True, text=True, timeout=300, env=env)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    assert "Using workflow specific profile profiles/default" in out
    counts = job_counts(res.stdout)
    target = args[-1]
    assert counts["table3" if target.endswith("table3.csv") else "fig2_umap"] == 1
    cpus = os.cpu_count() or 1
    cores = 4 if "--cores" in args else cpus
    oversub = max(1, math.ceil(cores / cpus))
    for rule in ("train_model", "train_timbre_encoder", "evaluate_model", "cache_features"):
        for declared in _declared_threads(res.stdout, rule):
            concurrent = cores // min(declared, cores)
            assert concurrent * max(1, min(declared, cores) // oversub) <= max(cpus, 1), (
                rule, declared, cores, cpus)


def test_slurm_profile_replaces_the_default_one(repo_copy: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(repo_copy / "src")}
    res = subprocess.run([*SNAKEMAKE, "-n", "--workflow-profile", "profiles/slurm",
                          "results/table3.csv"], cwd=repo_copy, capture_output=True, text=True,
                         timeout=300, env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "profiles/slurm" in res.stdout + res.stderr
    assert "slurm_partition=main" in res.stdout and "mem_mb=4000" not in res.stdout


@pytest.mark.parametrize(
    ("profile", "n_rows", "n_seeds", "extra_stages"),
    [("default", 14, 3, set()), ("tiny", 14, 1, set()), ("paper", 15, 3, {"download_dataset"})],
)
def test_dry_run_lists_every_stage(
    workdir: Path, profile: str, n_rows: int, n_seeds: int, extra_stages: set[str]
) -> None:
    res = run_snakemake(["-n", "results/table3.csv", "results/fig2_umap.png",
                         "--config", f"profile={profile}"], workdir)
    assert res.returncode == 0, res.stderr + res.stdout
    counts = job_counts(res.stdout)
    assert ALL_STAGES | extra_stages | {"derive_model"} <= set(counts), counts
    n_3a = 2  # 3a rows (chamber/urmp, electro/mshoxxdb): derived from 2b, not trained
    assert counts["train_model"] == (n_rows - n_3a) * n_seeds
    assert counts["derive_model"] == n_3a * n_seeds
    for stage in ("tune_thresholds", "evaluate_model"):
        assert counts[stage] == n_rows * n_seeds


def test_derivation_can_be_switched_off(workdir: Path) -> None:
    res = run_snakemake(["-n", "results/table3.csv", "--config", "derive_experiments=false"], workdir)
    assert res.returncode == 0, res.stderr + res.stdout
    counts = job_counts(res.stdout)
    assert "derive_model" not in counts and counts["train_model"] == 14 * 3


def test_single_experiment_target_runs_only_its_chain(workdir: Path) -> None:
    res = run_snakemake(["-n", "results/chamber/2b/seed0/metrics.json"], workdir)
    assert res.returncode == 0, res.stderr + res.stdout
    counts = job_counts(res.stdout)
    assert counts["train_model"] == 1 and counts["evaluate_model"] == 1
    assert "table3" not in counts and "plot_umap" not in counts
    assert counts["train_timbre_encoder"] == 1  # 2b needs the chamber stem embeddings


def test_lint_is_clean() -> None:
    res = subprocess.run([*SNAKEMAKE, "--lint"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("train={max_epochs: 0}", "max_epochs"),
        ("seeds=[-1]", "seeds"),
        ("table3_rows=[[9z, chamber]]", "9z"),
    ],
)
def test_schema_rejects_malformed_config(workdir: Path, override: str, needle: str) -> None:
    res = run_snakemake(["-n", "results/table3.csv", "--config", override], workdir)
    assert res.returncode != 0
    assert needle in res.stderr + res.stdout


def test_unknown_profile_and_dataset_are_readable_errors(workdir: Path) -> None:
    with pytest.raises(ConfigError, match="unknown profile 'huge'"):
        apply_profile({"profile": "huge", "profiles": {"tiny": {}}})
    res = run_snakemake(["-n", "results/table3.csv", "--config", "profile=huge"], workdir)
    assert res.returncode != 0 and "unknown profile 'huge'" in res.stderr + res.stdout
    res = run_snakemake(["-n", "results/table3.csv", "--config", "table3_rows=[[1a, nowhere]]"], workdir)
    assert res.returncode != 0 and "nowhere" in res.stderr + res.stdout


def test_command_line_overrides_win_over_profile() -> None:
    cfg = load_config(REPO / "config.yaml", {"profile": "tiny", "train": {"max_epochs": 3}})
    assert cfg["train"]["max_epochs"] == 3
    assert cfg["train"]["windows_per_epoch"] == yaml.safe_load((REPO / "config.yaml").read_text())[
        "profiles"]["tiny"]["train"]["windows_per_epoch"]


@pytest.mark.slow
def test_tiny_end_to_end(workdir: Path) -> None:
    """The whole DAG on the tiny profile: a complete Table III and the Fig. 2 PNG."""
    res = run_snakemake(["--cores", "2", "results/table3.csv", "results/fig2_umap.png",
                         "results/table1.csv", "--config", "profile=tiny"], workdir, timeout=1800)
    if res.returncode != 0:
        logs = "\n".join(f"== {p}\n{p.read_text()[-3000:]}" for p in sorted((workdir / "logs").rglob("*.log")))
        pytest.fail(f"snakemake failed\n{res.stderr[-5000:]}\n{logs[-20000:]}")
    table = pd.read_csv(workdir / "results/table3.csv", dtype={"exp": str})
    cfg = load_config(workdir / "config.yaml", {"profile": "tiny"})
    assert list(zip(table["exp"], table["dataset"], strict=True)) == [tuple(r) for r in cfg["table3_rows"]]
    assert table[["std_ap", "std_f1", "std_p", "std_r"]].notna().all().all()
    slot_rows = table["exp"] != "1a"
    assert table.loc[slot_rows, ["slot_ap", "slot_f1", "slot_p", "slot_r"]].notna().all().all()
    timbre_rows = table["exp"].str[0].isin(["2", "3"])
    assert table.loc[timbre_rows, "timbre_cos"].notna().all()
    poly_rows = table["exp"].str[0] == "3"
    assert table.loc[poly_rows, ["poly_std_acc", "poly_stem_acc"]].notna().all().all()
    png = (workdir / "results/fig2_umap.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    for name in ("table3.md", "table3_vs_paper.md", "table1.csv"):
        assert (workdir / "results" / name).stat().st_size > 0


@pytest.mark.slow
def test_tiny_two_seeds_give_std_columns_and_findings(workdir: Path) -> None:
    """Two seeds on the tiny profile (the chamber rows the findings compare): Table III has mean
    and std per cell, 3a is derived from 2b, findings.csv has every chamber finding."""
    rows = "[[1b, chamber], [1c, chamber], [2a, chamber], [2b, chamber], [3a, chamber], [3b, chamber]]"
    res = run_snakemake(["--cores", "2", "results/table3.csv", "--config", "profile=tiny",
                         "seeds=[0, 1]", f"table3_rows={rows}"], workdir, timeout=3600)
    if res.returncode != 0:
        logs = "\n".join(f"== {p}\n{p.read_text()[-3000:]}" for p in sorted((workdir / "logs").rglob("*.log")))
        pytest.fail(f"snakemake failed\n{res.stderr[-5000:]}\n{logs[-20000:]}")
    counts = job_counts(res.stdout + res.stderr)  # a real run prints its job stats to stderr
    assert counts["train_model"] == 10 and counts["derive_model"] == 2
    table = pd.read_csv(workdir / "results/table3.csv", dtype={"exp": str})
    assert (table["n_seeds"] == 2).all()
    assert {"slot_f1_std", "std_f1_std", "slot_ap_std"} <= set(table.columns)
    assert table[["slot_f1_std", "std_f1_std"]].notna().all().all()
    assert "±" in (workdir / "results/table3.md").read_text()
    from slotmpe.models import load_checkpoint
    from slotmpe.results.findings import FINDINGS_COLUMNS, HOLDS, REVERSED, UNRESOLVED

    findings = pd.read_csv(workdir / "results/findings.csv", dtype={"exp_a": str, "exp_b": str})
    assert list(findings.columns) == list(FINDINGS_COLUMNS)
    assert set(zip(findings["exp_a"], findings["exp_b"], strict=True)) == {
        ("1c", "1b"), ("2b", "2a"), ("3b", "3a")}
    assert (findings["n_seeds"] == 2).all() and (findings["n_files"] >= 1).all()
    assert set(findings["verdict"]) <= {HOLDS, REVERSED, UNRESOLVED}
    assert (workdir / "results/findings.md").stat().st_size > 0
    for seed in (0, 1):
        _, meta = load_checkpoint(workdir / f"results/chamber/3a/seed{seed}/model.pt")
        assert meta["extra"]["derived_from"] == "2b" and meta["extra"]["seed"] == seed
        pf = pd.read_csv(workdir / f"results/chamber/3a/seed{seed}/per_file.csv")
        assert {"mix", "slot", "note_onset", "multi_instrument"} <= set(pf["output"])
    notes = pd.read_csv(workdir / "results/table3_notes.csv", dtype={"exp": str})
    assert len(notes) == len(table) and notes["note_onset_f1"].notna().all()


@pytest.mark.slow
def test_folder_dataset_runs_through_the_dag(workdir: Path) -> None:
    """A user's own multitrack folder (type: folder) goes through every stage like any dataset."""
    from test_folder import make_folder

    src = make_folder(workdir / "my_data")
    res = run_snakemake([
        "--cores", "2", "results/table3.csv", "results/fig2_umap.png",
        "--config", "profile=tiny", f"datasets={{mine: {{type: folder, path: {src}}}}}",
        "table3_rows=[[1a, mine], [2b, mine]]", "fig2_dataset=mine", "paper_aliases={}",
    ], workdir, timeout=1200)
    if res.returncode != 0:
        logs = "\n".join(f"== {p}\n{p.read_text()[-3000:]}" for p in sorted((workdir / "logs").rglob("*.log")))
        pytest.fail(f"snakemake failed\n{res.stderr[-5000:]}\n{logs[-20000:]}")
    table = pd.read_csv(workdir / "results/table3.csv", dtype={"exp": str})
    assert list(zip(table["exp"], table["dataset"], strict=True)) == [("1a", "mine"), ("2b", "mine")]
    assert table[["std_ap", "std_f1"]].notna().all().all()
    assert table.loc[table["exp"] == "2b", ["slot_f1", "timbre_cos"]].notna().all().all()
    assert (workdir / "data/mine/manifest.parquet").exists()


@pytest.mark.slow
def test_gpu_default_run_script_cpu_path(repo_copy: Path) -> None:
    """benchmarks/gpu_default_run.sh on the tiny profile: without a GPU it takes the CPU path,
    runs the DAG to Table III and prints the wall time and the time per rule."""
    script = repo_copy / "benchmarks" / "gpu_default_run.sh"
    env = {**os.environ, "PATH": os.environ.get("PATH", "")}
    res = subprocess.run(["bash", str(script), "--profile", "tiny", "--no-install", "--",
                          "--cores", "2"], cwd=repo_copy, capture_output=True, text=True,
                         timeout=1800, env=env)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-5000:]
    assert (repo_copy / "results" / "table3.csv").stat().st_size > 0
    assert "CPU:" in out and "snakemake results/table3.csv:" in out
    if shutil.which("nvidia-smi") is None:
        assert "no NVIDIA GPU found" in out
    rules = re.findall(r"^\s*(\w+)\s+(\d+)\s+[\d.]+", res.stdout, re.M)
    assert {"train", "timbre", "data", "features"} <= {r for r, _ in rules}, res.stdout[-3000:]
