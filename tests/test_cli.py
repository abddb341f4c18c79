"""Tests of the ``slotmpe`` command line: help texts, info, params, transcribe and its errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from slotmpe.cli import build_parser, main


def _stderr_lines(err: str) -> list[str]:
    return [ln for ln in err.splitlines() if ln.strip()]


# ------------------------------------------------------------------ help


def test_top_level_help_lists_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("transcribe", "params", "info"):
        assert cmd in out


@pytest.mark.parametrize(
    ("cmd", "expected"),
    [
        ("transcribe", ["--model", "--outdir", "--threshold", "--activity-threshold",
                        "--min-note-ms", "--merge-gap-ms", "--device", "--max-frames", "AUDIO"]),
        ("params", ["--out", "--widths", "--config", "print only"]),
        ("info", ["versions"]),
    ],
)
def test_subcommand_help(cmd: str, expected: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main([cmd, "--help"])
    assert e.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    for word in expected:
        assert word in out, (cmd, word)


def test_console_entry_runs_as_a_process() -> None:
    proc = subprocess.run([sys.executable, "-m", "slotmpe.cli", "--help"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "transcribe" in proc.stdout


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main([])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        main(["transcribe", "a.wav", "--model", "m.pt", "--threshold", "1.5"])
    assert e.value.code == 2
    assert "[0, 1]" in capsys.readouterr().err
    args = build_parser().parse_args(["transcribe", "a.wav", "b", "-m", "m.pt", "--max-frames", "0"])
    assert args.audio == ["a.wav", "b"] and args.max_frames == 0 and args.device == "auto"


# ------------------------------------------------------------------ info and params


def test_info(capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert f"torch {torch.__version__}" in out
    assert "16000 Hz" in out and "MIDI 23..94" in out and "3c" in out


def test_params_writes_and_prints_table1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    torch.set_num_threads(1)
    out_csv = tmp_path / "t1.csv"
    assert main(["params", "-o", str(out_csv), "--widths", "wide"]) == 0
    text = capsys.readouterr().out
    assert out_csv.exists()
    lines = out_csv.read_text().splitlines()
    assert len(lines) == 9  # header + eight configurations
    printed = [ln.split()[0] for ln in text.splitlines() if ln.strip()]
    assert printed[0] == "exp"
    assert printed[1:9] == ["1a", "1b", "1c", "2a", "2b", "3a", "3b", "3c"]
    assert f"written to {out_csv}" in text and "width preset wide (--widths)" in text
    import pandas as pd

    assert set(pd.read_csv(out_csv)["widths"]) == {"wide"}


def test_params_prints_only_and_takes_the_projects_preset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`slotmpe params` overwrote the pipeline's results/table1.csv (model: {widths: wide}) with
    the default preset, and created ./results/table1.csv anywhere; now it prints, with the preset
    of ./config.yaml (or --config, or --widths), and writes nothing unless -o is given."""
    import torch

    torch.set_num_threads(1)
    project = tmp_path / "project"
    (project / "results").mkdir(parents=True)
    (project / "config.yaml").write_text(
        "profile: default\nmodel: {widths: wide}\nprofiles: {default: {}, small: "
        "{model: {widths: efficient}}}\n")
    table = project / "results" / "table1.csv"
    table.write_text("written by the pipeline\n")
    monkeypatch.chdir(project)
    assert main(["params"]) == 0
    out = capsys.readouterr().out
    assert "width preset wide (model.widths of config.yaml)" in out and "written" not in out
    assert table.read_text() == "written by the pipeline\n"
    assert main(["params", "--profile", "small"]) == 0
    assert "width preset efficient" in capsys.readouterr().out
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["params"]) == 0
    assert "efficient (the package default)" in capsys.readouterr().out
    assert main(["params", "--config", str(project / "config.yaml")]) == 0
    assert "width preset wide" in capsys.readouterr().out
    assert list(elsewhere.iterdir()) == []
    assert main(["params", "--widths", "banana"]) == 1
    assert "unknown width preset 'banana'" in capsys.readouterr().err
    assert main(["params", "--config", "nope.yaml"]) == 1
    assert "config file nope.yaml does not exist" in capsys.readouterr().err


# ------------------------------------------------------------------ transcribe


@pytest.fixture(scope="module")
def model_1a(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An (untrained) 1a checkpoint: enough to exercise the command line."""
    import torch

    from slotmpe.models import build_model, save_checkpoint

    torch.set_num_threads(1)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("m") / "model.pt"
    save_checkpoint(path, build_model("1a"), {})
    return path


def _tone_file(path: Path, sr: int = 16_000, seconds: float = 1.0, channels: int = 1) -> Path:
    t = np.arange(int(sr * seconds)) / sr
    y = (0.3 * np.sin(2 * np.pi * 261.63 * t)).astype(np.float32)
    sf.write(path, np.stack([y] * channels, axis=1) if channels > 1 else y, sr)
    return path


def test_transcribe_one_file(model_1a: Path, tmp_path: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:
    wav = _tone_file(tmp_path / "tone.wav", sr=44_100, channels=2)
    out = tmp_path / "out"
    rc = main(["transcribe", str(wav), "--model", str(model_1a), "-o", str(out),
               "--threshold", "0.0", "--device", "cpu"])
    assert rc == 0, capsys.readouterr().err
    for suffix in (".mid", ".notes.csv", ".png"):
        assert (out / f"tone{suffix}").stat().st_size > 0
    import pretty_midi

    pm = pretty_midi.PrettyMIDI(str(out / "tone.mid"))
    assert [i.name for i in pm.instruments] == ["mixture"]  # 1a: no slot tracks
    assert len(pm.instruments[0].notes) > 0  # threshold 0: every pitch is on
    assert "tone.wav" in capsys.readouterr().out


def test_missing_model_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wav = _tone_file(tmp_path / "a.wav")
    rc = main(["transcribe", str(wav), "--model", str(tmp_path / "nope.pt")])
    err = capsys.readouterr().err
    assert rc == 1
    assert _stderr_lines(err) == [f"slotmpe: error: {tmp_path / 'nope.pt'}: model file does not exist"]


@pytest.mark.parametrize("content", [b"", b"this is not a torch file"])
def test_bad_model_file_is_one_line(content: bytes, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    wav = _tone_file(tmp_path / "a.wav")
    bad = tmp_path / "model.pt"
    bad.write_bytes(content)
    rc = main(["transcribe", str(wav), "--model", str(bad)])
    lines = _stderr_lines(capsys.readouterr().err)
    assert rc == 1 and len(lines) == 1
    assert lines[0].startswith(f"slotmpe: error: {bad}: ")
    assert ("empty" if not content else "cannot load model") in lines[0]


def _bad_files(d: Path) -> dict[str, Path]:
    unreadable = d / "garbage.wav"
    unreadable.write_bytes(b"RIFF....WAVEnot really audio" * 10)
    no_samples = d / "nosamples.wav"
    sf.write(no_samples, np.zeros(0, dtype=np.float32), 16_000)  # valid header, 0 samples
    zero_bytes = d / "zerobytes.flac"
    zero_bytes.write_bytes(b"")
    return {"undecodable format": unreadable, "audio is empty": no_samples,
            "file is empty": zero_bytes}


def test_bad_audio_files_are_one_line_each(model_1a: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    for problem, path in _bad_files(tmp_path).items():
        rc = main(["transcribe", str(path), "--model", str(model_1a), "-o", str(tmp_path / "o")])
        err = capsys.readouterr().err
        assert rc == 1
        errors = [ln for ln in _stderr_lines(err) if ln.startswith("slotmpe: error:")]
        assert len(errors) == 1 and problem in errors[0] and str(path) in errors[0], err
        assert "Traceback" not in err
        assert not (tmp_path / "o" / f"{path.stem}.mid").exists()


def test_bad_file_in_directory_does_not_stop_the_rest(
    model_1a: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = tmp_path / "in"
    d.mkdir()
    bad = _bad_files(d)
    _tone_file(d / "good1.wav")
    _tone_file(d / "good2.flac", sr=22_050)
    (d / "readme.txt").write_text("not audio, ignored")
    out = tmp_path / "out"
    rc = main(["transcribe", str(d), "--model", str(model_1a), "-o", str(out)])
    err = capsys.readouterr().err
    assert rc == 1
    for name in ("good1", "good2"):
        assert (out / f"{name}.mid").exists() and (out / f"{name}.notes.csv").exists()
    errors = [ln for ln in _stderr_lines(err) if ln.startswith("slotmpe: error:")]
    assert len(errors) == len(bad)
    assert f"transcribed 2 of {2 + len(bad)} files" in err and f"{len(bad)} failed" in err
    assert "Traceback" not in err


def test_empty_directory_is_an_error(model_1a: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["transcribe", str(tmp_path), "--model", str(model_1a)])
    assert rc == 1
    assert _stderr_lines(capsys.readouterr().err) == [
        f"slotmpe: error: no audio files found in {tmp_path}"
    ]


def test_unavailable_cuda_is_one_line(model_1a: Path, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    wav = _tone_file(tmp_path / "a.wav")
    rc = main(["transcribe", str(wav), "--model", str(model_1a), "--device", "cuda"])
    lines = _stderr_lines(capsys.readouterr().err)
    assert rc == 1 and len(lines) == 1 and "CUDA is not available" in lines[0]


# ------------------------------------------------------------------ evaluate (issue 24, fault 1)


def test_evaluate_cache_follows_its_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                           ) -> None:
    """Editing every label file and evaluating again into the same work dir gave the old
    metrics.json (the feature cache was keyed by path); now it equals a fresh work dir's. A failed
    run leaves no metrics.json behind, and a timbre encoder is refused before the data is read."""
    import json

    import pandas as pd
    import pretty_midi
    import torch
    from test_folder import make_folder

    from slotmpe.models import build_model, save_checkpoint
    from slotmpe.models.timbre_encoder import TimbreEncoder

    data = make_folder(tmp_path / "quartets")
    (data / "split.csv").write_text("piece,split\nsong_a,test\nsong_b,val\nsong_c,test\n")
    torch.manual_seed(0)
    model = tmp_path / "results" / "chamber" / "1c" / "seed0" / "model.pt"
    save_checkpoint(model, build_model("1c"), {"exp": "1c", "dataset": "chamber", "seed": 0})

    def evaluate(work: str) -> int:
        return main(["evaluate", str(model), str(data), "--work-dir", str(tmp_path / work),
                     "--split", "all", "--no-progress", "--threads", "1"])

    def std_ap(work: str) -> float:
        (path,) = (tmp_path / work).glob("1c_*/metrics.json")
        return float(json.loads(path.read_text())["std_ap"])

    assert evaluate("wd") == 0
    before = std_ap("wd")
    for f in data.rglob("*.csv"):  # every label one fifth higher
        if f.name not in ("split.csv", "metadata.csv"):
            df = pd.read_csv(f)
            df["midi"] += 7
            df.to_csv(f, index=False)
    for f in data.rglob("*.mid"):
        pm = pretty_midi.PrettyMIDI(str(f))
        for inst in pm.instruments:
            for n in inst.notes:
                n.pitch += 7
        pm.write(str(f))
    assert evaluate("wd") == 0 and evaluate("fresh") == 0
    assert std_ap("wd") == pytest.approx(std_ap("fresh"))
    assert std_ap("wd") != pytest.approx(before)

    (data / "song_a" / "stems" / "violin_1.wav").write_bytes(b"not audio")
    assert evaluate("wd") == 1
    assert not list((tmp_path / "wd").glob("*/metrics.json"))
    assert not list((tmp_path / "wd").glob("*/per_file.csv"))

    enc = tmp_path / "encoder.pt"
    save_checkpoint(enc, TimbreEncoder(), {})
    capsys.readouterr()
    assert main(["evaluate", str(enc), str(tmp_path / "nowhere")]) == 1
    assert "timbre encoder" in capsys.readouterr().err


# ------------------------------------------------------------------ evaluate work dir (issue 31)


@pytest.fixture()
def quartets(tmp_path: Path) -> Path:
    """A three-piece folder dataset (tests/test_folder.py), every piece scored with --split all."""
    from test_folder import make_folder

    data = make_folder(tmp_path / "quartets")
    (data / "split.csv").write_text("piece,split\nsong_a,test\nsong_b,val\nsong_c,test\n")
    return data


def _slot_model(path: Path, exp: str, seed: int) -> Path:
    import torch

    from slotmpe.models import build_model, save_checkpoint

    torch.manual_seed(seed)
    save_checkpoint(path, build_model(exp), {"exp": exp, "dataset": "chamber", "seed": seed})
    return path


def _listing(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")}


def test_evaluate_from_inside_the_data_keeps_the_cache_out(
    quartets: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`cd my_quartets && slotmpe evaluate MODEL .` took its own cache folder for a piece; now the
    work dir goes to the user cache dir, and the data folder is left exactly as it was."""
    model = _slot_model(tmp_path / "m" / "model.pt", "1c", 0)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(quartets)
    before = _listing(quartets)
    for _ in range(2):  # the second run reuses the cache
        assert main(["evaluate", str(model), ".", "--split", "all", "--no-progress",
                     "--threads", "1"]) == 0
    out = capsys.readouterr()
    assert _listing(quartets) == before
    (metrics,) = (tmp_path / "cache").rglob("metrics.json")
    assert f"written to {metrics}" in out.out and "work dir" in out.err
    assert json.loads(metrics.read_text())["n_files"] == 3


def test_evaluate_refuses_a_work_dir_inside_the_data(
    quartets: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--work-dir DATA failed on the second run, deleted the first run's metrics.json and left
    cache files in the dataset; now it is refused before anything is written."""
    model = _slot_model(tmp_path / "m" / "model.pt", "1c", 0)
    before = _listing(quartets)
    for wd in (quartets, quartets / "cache"):
        rc = main(["evaluate", str(model), str(quartets), "--work-dir", str(wd), "--split", "all",
                   "--no-progress"])
        err = capsys.readouterr().err
        assert rc == 1 and "lies inside the dataset folder" in err and str(wd) in err
    assert _listing(quartets) == before


def test_folder_scan_skips_a_tagged_cache_folder(quartets: Path, tmp_path: Path) -> None:
    """A work dir left inside a dataset (CACHEDIR.TAG, or an old slotmpe_eval) is no piece."""
    from slotmpe.datasets import build_dataset
    from slotmpe.datasets.manifest import read_manifest
    from slotmpe.workdir import mark_cache_dir

    mark_cache_dir(quartets / "my_cache")
    (quartets / "my_cache" / "features").mkdir()
    (quartets / "slotmpe_eval" / "quartets" / "features").mkdir(parents=True)
    df = read_manifest(build_dataset("q", {"type": "folder", "path": str(quartets)},
                                     tmp_path / "out", 0))
    assert sorted(set(df["piece_id"])) == ["song_a", "song_b", "song_c"]


def test_evaluate_keeps_one_folder_per_model(
    quartets: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Two models on the same data with the default work dir printed the same metrics.json path
    and one model's metrics were lost; now each model has its own folder."""
    monkeypatch.chdir(tmp_path)
    models = [_slot_model(tmp_path / f"m{s}" / "model.pt", "1c", s) for s in (0, 1)]
    paths = []
    for m in models:
        assert main(["evaluate", str(m), str(quartets), "--split", "all", "--no-progress",
                     "--threads", "1"]) == 0
        paths.append(capsys.readouterr().out.split("written to ")[-1].strip())
    assert paths[0] != paths[1]
    metrics = [json.loads(Path(p).read_text()) for p in paths]
    assert all(Path(p).is_file() for p in paths)
    assert metrics[0]["std_ap"] != metrics[1]["std_ap"]  # two different models, both kept
    assert {Path(p).parent.parent for p in paths} == {tmp_path / "slotmpe_eval" / "quartets"}


def test_evaluate_refuses_a_work_dir_in_use(
    quartets: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A second run on a work dir another run holds stops at once, naming the lock; the first
    run's outputs are untouched."""
    import filelock

    from slotmpe.workdir import LOCK_NAME

    model = _slot_model(tmp_path / "m" / "model.pt", "1c", 0)
    wd = tmp_path / "wd"
    wd.mkdir()
    with filelock.FileLock(str(wd / LOCK_NAME), timeout=0):
        rc = main(["evaluate", str(model), str(quartets), "--work-dir", str(wd),
                   "--split", "all", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1 and "in use by another slotmpe evaluate" in err and LOCK_NAME in err
    assert not (wd / "features").exists()
    assert main(["evaluate", str(model), str(quartets), "--work-dir", str(wd),
                 "--split", "all", "--no-progress", "--threads", "1"]) == 0  # released: runs


# ------------------------------------------------------------------ findings (issue 31, fault 10)


def test_findings_names_a_damaged_environment_json(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """A damaged environment.json gave a bare JSONDecodeError; now the message names the file."""
    run = tmp_path / "chamber" / "1a" / "seed0"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text("{}\n")
    env = tmp_path / "environment.json"
    env.write_text('{"commit": "abc", "paper_aliases": {"chamb')
    assert main(["findings", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert f"{env} is not valid JSON" in err
