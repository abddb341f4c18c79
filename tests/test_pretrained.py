"""Tests of the shipped-model mechanism (issue 30): ``slotmpe transcribe`` without ``--model``,
the release metadata and model card of ``results/pretrained/``, the package data, the example
piece and the clean-install check.

The model used here is the 3c test fixture of ``test_transcribe_features`` (trained for 40 steps on
a duet, with instrument prototypes whose first two are its own slot embeddings, exported to ONNX),
given to the CLI through ``SLOTMPE_PRETRAINED_MODEL``; no test model is ever put into
``src/slotmpe/pretrained/``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from test_transcribe import trained_3c, two_instrument_excerpt  # noqa: F401
from test_transcribe_features import named_3c  # noqa: F401
from test_workflow import job_counts, run_snakemake, workdir  # noqa: F401

import slotmpe.pretrained as pre
from slotmpe.cli import main
from slotmpe.constants import SAMPLE_RATE

ROOT = Path(__file__).resolve().parents[1]


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep
            + os.environ.get("PYTHONPATH", ""), **extra}


@pytest.fixture(scope="module")
def named_onnx(named_3c: Path) -> Path:  # noqa: F811
    """The ONNX export (with thresholds and instrument prototypes) of the named 3c fixture."""
    return named_3c.with_suffix(".onnx")


# ------------------------------------------------------------------ default model lookup


def test_no_shipped_model_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """Without --model and without a shipped model: one line that says how to get a model."""
    monkeypatch.delenv(pre.MODEL_ENV, raising=False)
    monkeypatch.setattr(pre, "PACKAGE_DIR", tmp_path / "pkg")  # a package folder with no model
    wav = tmp_path / "duet.wav"
    sf.write(wav, two_instrument_excerpt()[0], SAMPLE_RATE)
    assert main(["transcribe", str(wav), "-o", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("slotmpe: error: no model ships with this install")
    assert "--model" in err[0] and "results/pretrained/model.onnx" in err[0]
    assert not (tmp_path / "out").exists()  # nothing written
    with pytest.raises(pre.NoShippedModel):
        pre.default_model_path()
    assert pre.shipped_model_identity() is None
    assert pre.identity_line(None).startswith("none shipped")


def test_env_override_naming_a_missing_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(pre.MODEL_ENV, str(tmp_path / "nope.onnx"))
    with pytest.raises(pre.NoShippedModel, match=f"{pre.MODEL_ENV}=.*nope.onnx: no such model"):
        pre.default_model_path()


def test_package_dir_model_is_the_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          named_onnx: Path) -> None:
    monkeypatch.delenv(pre.MODEL_ENV, raising=False)
    monkeypatch.setattr(pre, "PACKAGE_DIR", tmp_path)
    shutil.copy2(named_onnx, tmp_path / pre.MODEL_FILE)
    assert pre.default_model_path() == tmp_path / pre.MODEL_FILE


def test_transcribe_without_model_uses_the_shipped_one_without_torch(
    named_onnx: Path, tmp_path: Path
) -> None:
    """`slotmpe transcribe duet.wav -o out/` (no --model) in a fresh process: MIDI, CSV and PNG are
    written with the default model, torch is never imported, and the slot tracks carry the
    instrument names of the model's prototypes with their General MIDI programs."""
    import pretty_midi

    from slotmpe.instruments import gm_program

    wav = tmp_path / "duet.wav"
    sf.write(wav, two_instrument_excerpt()[0], SAMPLE_RATE)
    out = tmp_path / "out"
    example = ROOT / "examples" / "two_voices.wav"  # the README's example, in the same batch
    code = (
        "import sys\n"
        "from slotmpe.cli import main\n"
        f"rc = main(['transcribe', {str(wav)!r}, {str(example)!r}, '-o', {str(out)!r}])\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "sys.exit(rc)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=600, env=_env(**{pre.MODEL_ENV: str(named_onnx)}))
    assert res.returncode == 0, res.stderr
    assert str(named_onnx) in res.stderr  # the model line names the file that ran
    for name in ("duet", "two_voices"):
        for suffix in (".mid", ".notes.csv", ".png"):
            assert (out / f"{name}{suffix}").stat().st_size > 0
    pm = pretty_midi.PrettyMIDI(str(out / "duet.mid"))
    tracks = {i.name: i.program for i in pm.instruments}
    assert "mixture" in tracks
    named = {n: p for n, p in tracks.items() if n in ("flute", "cello")}
    assert named, tracks  # the fixture's prototypes 1 and 2 are its own slot embeddings
    for name, program in named.items():
        assert program == gm_program(name) and program != 0


def test_explicit_model_still_wins(named_onnx: Path, tmp_path: Path) -> None:
    """--model takes any user model even when the default one is unusable."""
    wav = tmp_path / "duet.wav"
    sf.write(wav, two_instrument_excerpt()[0], SAMPLE_RATE)
    res = subprocess.run(
        [sys.executable, "-m", "slotmpe.cli", "transcribe", str(wav), "-m", str(named_onnx),
         "-o", str(tmp_path / "out"), "--no-png"],
        capture_output=True, text=True, timeout=600,
        env=_env(**{pre.MODEL_ENV: str(tmp_path / "missing.onnx")}))
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "out" / "duet.mid").is_file()


# ------------------------------------------------------------------ release build and model card


def _run_dir(tmp_path: Path, named_onnx: Path) -> Path:
    """A run folder as the pipeline leaves it: model.onnx, train_log.csv, metrics.json,
    on_electro/metrics.json (figures of a fixture, not of a trained run)."""
    run = tmp_path / "results" / "chamber" / "3c" / "seed0"
    (run / "on_electro").mkdir(parents=True)
    shutil.copy2(named_onnx, run / "model.onnx")
    (run / "train_log.csv").write_text(
        "epoch,train_total,val_total,lr,seconds,precision,cpu\n"
        "1,0.9,0.8,0.001,21.5,fp32,Test CPU [avx2]\n"
        "2,0.7,0.6,0.001,20.25,fp32,Test CPU [avx2]\n")
    (run / "metrics.json").write_text(json.dumps(
        {"std_f1": 93.84, "slot_f1": 59.03, "note_onset_f1": 77.78, "note_onoff_f1": 61.66,
         "multi_instrument_f1": 34.39, "timbre_cos": 0.9628, "n_files": 15, "split": "test"}))
    (run / "on_electro" / "metrics.json").write_text(json.dumps(
        {"std_f1": 51.5, "slot_f1": 20.25, "n_files": 15}))
    return run


def test_snakemake_target_reuses_the_configured_run(workdir: Path) -> None:  # noqa: F811
    """`snakemake results/pretrained/model.onnx` (dry run) builds the configured run's chain once,
    its cross-dataset evaluation, name accuracy per test split and the release; another run is one
    --config away."""
    res = run_snakemake(["-n", "results/pretrained/model.onnx"], workdir)
    assert res.returncode == 0, res.stderr + res.stdout
    counts = job_counts(res.stdout)
    assert counts["pretrained_model"] == 1 and counts["pretrained_naming"] == 2
    assert counts["train_model"] == 1 and counts["export_onnx"] == 1
    assert counts["evaluate_model"] == 1 and counts["evaluate_cross"] == 1
    assert "results/chamber/3c/seed0/on_electro/metrics.json" in res.stdout
    res = run_snakemake(["-n", "results/pretrained/model.onnx", "--config",
                         "pretrained={exp: 1a, dataset: electro, seed: 1, test_on: []}"], workdir)
    assert res.returncode == 0, res.stderr + res.stdout
    counts = job_counts(res.stdout)
    assert "pretrained_naming" not in counts and "evaluate_cross" not in counts  # 1a names nothing
    assert "results/electro/1a/seed1/model.onnx" in res.stdout


def test_build_pretrained_stamps_release_and_renders_card(
    named_onnx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from slotmpe.pretrained.card import build_pretrained, write_card
    from slotmpe.transcribe.onnx_runner import read_onnx_metadata

    run = _run_dir(tmp_path, named_onnx)
    bench = tmp_path / "bench.tsv"
    bench.write_text("s\th:m:s\tmax_rss\tcpu_time\n600.5\t0:10:00\t900\t598.25\n")
    out = tmp_path / "results" / "pretrained"
    data = build_pretrained(
        export=run / "model.onnx", run={"exp": "3c", "dataset": "chamber", "seed": 0},
        train_log=run / "train_log.csv",
        metrics={"chamber": run / "metrics.json", "electro": run / "on_electro" / "metrics.json"},
        out_model=out / "model.onnx", out_json=out / "card.json", out_card=out / "MODEL_CARD.md",
        train_config={"max_epochs": 32, "patience": 6}, benchmark=bench, repo=ROOT)

    # the export's own metadata is kept (thresholds, prototypes), the release entry is added
    assert read_onnx_metadata(out / "model.onnx") == read_onnx_metadata(named_onnx)
    ident = pre.model_identity(out / "model.onnx")
    assert (ident["exp"], ident["dataset"], ident["seed"]) == ("3c", "chamber", 0)
    assert ident["commit"] == data["release"]["commit"] and len(ident["commit"] or "") == 40
    assert ident["sha256"] == data["model"]["sha256"] == pre.file_sha256(out / "model.onnx")
    line = pre.identity_line(ident)
    assert line.startswith("3c chamber seed 0, commit ") and ident["sha256"][:12] in line

    tr = data["training"]
    assert tr["epochs"] == 2 and tr["epoch_seconds_total"] == 41.8
    assert (tr["job_wall_s"], tr["job_cpu_s"]) == (600.5, 598.2)  # rounded to 0.1 s
    assert tr["precision"] == ["fp32"] and tr["cpu"] == ["Test CPU [avx2]"]
    assert data["model"]["instruments"] == ["flute", "cello", "violin"]
    assert data["model"]["thresholds"] == {"mix": 0.4, "slots": 0.4}
    assert list(data["test"]) == ["chamber", "electro"]
    assert data["test"]["electro"]["slot_f1"] == 20.25 and data["test"]["electro"]["std_ap"] is None

    card = (out / "MODEL_CARD.md").read_text()
    assert data["model"]["sha256"] in card and data["release"]["commit"] in card
    assert "| slot F1 (frames, matched slots) | 59.03 | 20.25 |" in card
    assert "| timbre cos (0..1) | 0.963 | – |" in card
    assert "never seen a real recording" in card
    assert "598.2" in card and "flute, cello, violin" in card
    # the card renders from the JSON alone, the same way
    assert write_card(out / "card.json", tmp_path / "again.md").read_text() == card

    # and the stamped model transcribes as the default model
    monkeypatch.setenv(pre.MODEL_ENV, str(out / "model.onnx"))
    wav = tmp_path / "duet.wav"
    sf.write(wav, two_instrument_excerpt()[0], SAMPLE_RATE)
    assert main(["transcribe", str(wav), "-o", str(tmp_path / "t"), "--no-png"]) == 0


def test_card_cli_renders_markdown(named_onnx: Path, tmp_path: Path) -> None:
    from slotmpe.pretrained.card import build_pretrained

    run = _run_dir(tmp_path, named_onnx)
    out = tmp_path / "p"
    build_pretrained(run / "model.onnx", {"exp": "3c", "dataset": "chamber", "seed": 0},
                     run / "train_log.csv", {"chamber": run / "metrics.json"},
                     out / "model.onnx", out / "card.json", repo=tmp_path)  # not a git checkout
    res = subprocess.run([sys.executable, "-m", "slotmpe.pretrained.card", str(out / "card.json"),
                          "-o", str(out / "MODEL_CARD.md")], capture_output=True, text=True,
                         env=_env(), timeout=120)
    assert res.returncode == 0, res.stderr
    text = (out / "MODEL_CARD.md").read_text()
    assert "commit `not recorded`" in text and "Instrument-name accuracy: not measured" in text


def test_training_summary_rejects_an_empty_log(tmp_path: Path) -> None:
    from slotmpe.pretrained.card import training_summary

    log = tmp_path / "train_log.csv"
    log.write_text("epoch,seconds\n")
    with pytest.raises(ValueError, match="train_log.csv: training log has no epochs"):
        training_summary(log)


def test_shipped_files_are_consistent() -> None:
    """What ships in src/slotmpe/pretrained/ is a model and its card together, the card naming
    the model's SHA-256 and the model carrying its release metadata (or neither file)."""
    model, card = pre.PACKAGE_DIR / pre.MODEL_FILE, pre.PACKAGE_DIR / pre.CARD_FILE
    assert model.is_file() == card.is_file(), "model.onnx and MODEL_CARD.md ship together"
    if model.is_file():
        ident = pre.model_identity(model)
        assert "error" not in ident and ident["release"].get("format") == "slotmpe-pretrained"
        assert ident["sha256"] in card.read_text()


# ------------------------------------------------------------------ packaging and the example


def test_wheel_ships_the_model_and_card(tmp_path: Path, named_onnx: Path) -> None:
    """pyproject's package data puts pretrained/model.onnx and MODEL_CARD.md into the wheel."""
    pytest.importorskip("setuptools")
    src = tmp_path / "repo"
    files = subprocess.run(["git", "-C", str(ROOT), "ls-files", "--cached", "--others",
                            "--exclude-standard", "pyproject.toml", "README.md", "src/slotmpe"],
                           capture_output=True, text=True, check=True).stdout.split()
    for f in files:
        (src / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, src / f)
    shutil.copy2(named_onnx, src / "src/slotmpe/pretrained/model.onnx")
    (src / "src/slotmpe/pretrained/MODEL_CARD.md").write_text("# test card\n")
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                          "--no-build-isolation", "-w", str(tmp_path / "dist"), str(src)],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    (wheel,) = (tmp_path / "dist").glob("slotmpe-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"slotmpe/pretrained/model.onnx", "slotmpe/pretrained/MODEL_CARD.md",
            "slotmpe/pretrained/__init__.py", "slotmpe/pretrained/card.py"} <= names


def test_example_piece_is_reproducible(tmp_path: Path) -> None:
    """examples/two_voices.wav is what examples/make_example.py writes (sample for sample), short,
    16 kHz mono and under 300 kB; its notes file lists both voices."""
    res = subprocess.run([sys.executable, str(ROOT / "examples/make_example.py"), "--out",
                          str(tmp_path / "two_voices.wav")], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    committed = ROOT / "examples/two_voices.wav"
    a, sr = sf.read(committed, dtype="int16")
    b, _ = sf.read(tmp_path / "two_voices.wav", dtype="int16")
    assert sr == SAMPLE_RATE and a.ndim == 1 and committed.stat().st_size < 300_000
    np.testing.assert_array_equal(a, b)
    notes = (ROOT / "examples/two_voices.notes.csv").read_text()
    assert notes == (tmp_path / "two_voices.notes.csv").read_text()
    assert "flute," in notes and "strings," in notes


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("SLOTMPE_CLEAN_INSTALL_TEST") != "1",
                    reason="downloads the dependencies from PyPI into a new virtualenv; "
                           "set SLOTMPE_CLEAN_INSTALL_TEST=1")
def test_clean_install_transcribes_with_the_shipped_model(named_onnx: Path) -> None:
    """benchmarks/check_clean_install.sh: `pip install .` into a new venv, then transcribe the
    example without --model and without importing torch (the fixture model ships in the copy
    when the checkout has none)."""
    shipped = pre.PACKAGE_DIR / pre.MODEL_FILE
    args = [] if shipped.is_file() else [str(named_onnx)]
    res = subprocess.run(["bash", str(ROOT / "benchmarks/check_clean_install.sh"), *args],
                         capture_output=True, text=True, timeout=3600)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    assert "clean install: OK (torch not imported)" in res.stdout
