"""Cross-dataset evaluation (slotmpe.generalisation) and ``slotmpe evaluate`` on a tiny folder."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from slotmpe import generalisation as G
from slotmpe.cli import main
from slotmpe.config import load_config

REPO = Path(__file__).resolve().parents[1]


def _checkpoint(root: Path, exp: str, dataset: str = "chamber") -> Path:
    from slotmpe.models import build_model, save_checkpoint

    torch.manual_seed(0)
    path = root / dataset / exp / "seed0" / "model.pt"
    save_checkpoint(path, build_model(exp), {"exp": exp, "dataset": dataset, "seed": 0})
    return path


def test_cross_runs_from_config() -> None:
    cfg = load_config(REPO / "config.yaml")
    runs = G.cross_runs(cfg)
    rows = [tuple(r) for r in cfg["table3_rows"]]
    assert len(runs) == len(rows)  # chamber <-> electro: one other dataset per row
    assert {(r.exp, r.train_ds) for r in runs} == set(rows)
    assert all(r.test_ds != r.train_ds for r in runs)
    paths = G.metrics_paths(cfg, [0, 1])
    assert "results/chamber/3c/seed1/on_electro/metrics.json" in paths
    assert "results/electro/1a/seed0/metrics.json" in paths  # the in-domain column
    cfg["generalisation"]["retune"] = True
    assert "results/chamber/3c/seed0/on_electro/metrics_retuned.json" in G.metrics_paths(cfg, [0])
    cfg["generalisation"]["test"] = ["nowhere"]
    with pytest.raises(ValueError, match="nowhere"):
        G.cross_runs(cfg)


def _metrics(path: Path, exp: str, train: str, test: str | None, f1: float, slot: float | None) -> Path:
    m = {"exp": exp, "dataset": train, "seed": 0, "std_f1": f1, "slot_f1": slot,
         "note_onoff_f1": f1 / 2, "multi_instrument_f1": None if slot is None else slot / 2}
    if test is not None:
        m.update(train_dataset=train, test_dataset=test)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(m))
    return path


def test_generalisation_table_means_over_seeds(tmp_path: Path) -> None:
    r = tmp_path / "results"
    paths = [
        _metrics(r / "chamber/2b/seed0/metrics.json", "2b", "chamber", None, 60.0, 40.0),
        _metrics(r / "chamber/2b/seed1/metrics.json", "2b", "chamber", None, 50.0, 30.0),
        _metrics(r / "chamber/2b/seed0/on_electro/metrics.json", "2b", "chamber", "electro", 20.0, 10.0),
        _metrics(r / "chamber/2b/seed1/on_electro/metrics.json", "2b", "chamber", "electro", 30.0, 20.0),
        _metrics(r / "electro/1a/seed0/on_chamber/metrics.json", "1a", "electro", "chamber", 25.0, None),
        _metrics(r / "electro/1a/seed0/metrics.json", "1a", "electro", None, 70.0, None),
    ]
    df = G.write_generalisation(paths, [("1a", "electro"), ("2b", "chamber")], ["chamber", "electro"],
                                tmp_path / "g.csv", tmp_path / "g.md")
    row = df.set_index(["exp", "train_dataset"]).loc[("2b", "chamber")]
    assert row["chamber:std_f1"] == 55.0 and row["electro:std_f1"] == 25.0
    assert row["electro:slot_f1"] == 15.0 and row["n_seeds"] == 2
    md = (tmp_path / "g.md").read_text()
    assert "| 2b | chamber | 55.00 / 35.00 | 25.00 / 15.00 | 2 |" in md
    assert "| 1a | electro | 25.00 / – | 70.00 / – | 1 |" in md
    # note level: note on-off F1 / multi-instrument F1, means over seeds
    assert row["electro:note_onoff_f1"] == 12.5 and row["chamber:multi_instrument_f1"] == 17.5
    notes = md.split("## Note level")[1]
    assert "| 2b | chamber | 27.50 / 17.50 | 12.50 / 7.50 | 2 |" in notes
    assert "| 1a | electro | 12.50 / – | 35.00 / – | 1 |" in notes
    assert pd.read_csv(tmp_path / "g.csv").shape == (2, 11)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from test_folder import make_folder

    root = make_folder(tmp_path_factory.mktemp("mine") / "quartets")
    (root / "split.csv").write_text("piece,split\nsong_a,test\nsong_b,val\nsong_c,test\n")
    return root


def test_evaluate_cli_on_folder(tmp_path: Path, folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = _checkpoint(tmp_path / "results", "1c")
    out = tmp_path / "m.json"
    rc = main(["evaluate", str(model), str(folder), "--work-dir", str(tmp_path / "wd"),
               "--tune", "-o", str(out), "--no-progress", "--threads", "1"])
    assert rc == 0
    m = json.loads(out.read_text())
    assert m["exp"] == "1c" and m["train_dataset"] == "chamber" and m["test_dataset"] == "quartets"
    assert m["n_files"] == 2 and m["thresholds_from"] == "quartets val"
    for k in ("std_ap", "std_f1", "slot_ap", "slot_f1"):
        assert 0.0 <= m[k] <= 100.0, k
    text = capsys.readouterr().out
    assert "slot_f1" in text and "quartets" in text
    # the same data again reuses the feature cache; --split all scores all three pieces
    rc = main(["evaluate", str(model), str(folder), "--work-dir", str(tmp_path / "wd"),
               "--split", "all", "-o", str(out), "--no-progress"])
    assert rc == 0
    m = json.loads(out.read_text())
    assert m["n_files"] == 3 and m["thresholds_from"] == "default 0.5"


def test_evaluate_cli_errors(tmp_path: Path, folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", str(tmp_path / "none.pt"), str(folder)]) == 1
    assert "does not exist" in capsys.readouterr().err
    model = _checkpoint(tmp_path / "results", "1a")
    assert main(["evaluate", str(model), str(tmp_path / "nowhere")]) == 1
    assert "nowhere" in capsys.readouterr().err


def test_manifest_without_stems_gives_mixture_metrics_only(tmp_path: Path, folder: Path) -> None:
    """A dataset without stems (like MusicNet): slot metrics and timbre cos are null."""
    wd = tmp_path / "wd"
    manifest, _ = G._prepare_manifest(folder, wd, "all")
    df = pd.read_parquet(manifest)
    df["stem_path"] = ""
    nostem = wd / "nostem.parquet"  # beside the first: manifest paths are relative to its folder
    df.to_parquet(nostem, index=False)
    assert not G.has_stems(nostem) and G.has_stems(manifest)
    model = _checkpoint(tmp_path / "results", "2b")
    m = G.evaluate_dataset(model, nostem, tmp_path / "wd2", split="test", progress=False)
    assert m["std_f1"] is not None and m["slot_f1"] is None and m["timbre_cos"] is None
    assert m["test_has_stems"] is False
