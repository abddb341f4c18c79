"""``slotmpe transcribe`` against Basic Pitch's CLI, side by side on the same audio (issue 14).

For each audio length (default 60 s, 5, 20 and 40 min; stereo 44.1 kHz, synthesised here: harmonic
tones in a random two-voice melody plus noise, seeded) both command lines run as fresh processes,
``--runs`` times each, interleaved (the order of the tools rotates per run):

* theirs: ``basic-pitch OUTDIR FILE`` from Basic Pitch 0.4.0 in its own virtual environment
  (``--bp-venv``, default ``/work/bpvenv``; onnxruntime backend, no TensorFlow). It is never a
  project dependency: without the venv the benchmark says so and measures only ours.
* ours: ``python -m slotmpe.cli transcribe FILE -m MODEL.pt -o OUTDIR --no-png`` (MIDI and notes
  CSV; Basic Pitch's default output is the MIDI file only), for each experiment (1a, 3c). The
  ``model.pt`` has its ``model.onnx`` export beside it, as the pipeline writes it, so this is the
  path a user takes (onnxruntime, issue 24); ``--model-suffix .onnx`` names the export directly.
  With ``--png`` also ``slotmpe 3c+png``, our full default output set (MIDI + CSV + PNG).

Peak RSS at 5, 20 and 40 min shows whether memory stays bounded (issue 24: flat beyond one model
chunk of 20000 frames = 10.7 min).

Per tool and length it prints the median wall time (process start to exit), seconds per audio
minute, CPU seconds and the peak RSS (GNU ``/usr/bin/time``) and the ratios ours/theirs.
It also times the in-process call with the model loaded (``basic_pitch.inference.predict``, which
writes nothing, vs ``slotmpe.transcribe.transcribe_file`` writing MIDI and CSV, no PNG; each in its
own interpreter, median of ``--runs`` calls).

Models: the ``.pt``/``.onnx`` files under ``--models`` (``{exp}/model.pt``); missing ones are built
with slotmpe's own constructors (``build_model(exp)``, seed 0, *untrained* but of the real size,
which is what matters for speed), saved as the pipeline does and exported with
``slotmpe export``. Results go to ``--out`` (JSON).

Usage::

    PYTHONPATH=src python benchmarks/bench_vs_basic_pitch.py [--lengths 60 600] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
SR = 44_100


def synth(path: Path, seconds: float, seed: int = 0) -> Path:
    """Stereo 44.1 kHz test audio: two voices of harmonic notes (0.25-1 s) plus quiet noise."""
    if path.exists():
        return path
    if seconds > 300:  # long files: the 300 s signal repeated (synthesis is slow in pure NumPy)
        base, _ = sf.read(synth(path.with_name("bench_300s.wav"), 300.0, seed), dtype="float32")
        reps = int(np.ceil(seconds / 300.0))
        sf.write(path, np.tile(base, (reps, 1))[: int(seconds * SR)], SR, subtype="PCM_16")
        return path
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    out = np.zeros((n, 2), dtype=np.float32)
    for voice, (lo, hi) in enumerate(((48, 60), (62, 80))):
        t0 = 0.0
        while t0 < seconds:
            dur = float(rng.uniform(0.25, 1.0))
            midi = int(rng.integers(lo, hi))
            f = 440.0 * 2 ** ((midi - 69) / 12)
            i0, i1 = int(t0 * SR), min(n, int((t0 + dur) * SR))
            t = np.arange(i1 - i0) / SR
            y = sum(np.sin(2 * np.pi * k * f * t) / k for k in range(1, 6) if k * f < 8000)
            env = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.01) * np.exp(-t * 2.0)
            out[i0:i1, voice] += (0.25 * y * env).astype(np.float32)
            out[i0:i1, 1 - voice] += (0.1 * y * env).astype(np.float32)
            t0 += dur
    out += 0.003 * rng.standard_normal(out.shape).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, out, SR, subtype="PCM_16")
    return path


def ensure_model(models: Path, exp: str) -> Path:
    """``models/{exp}/model.onnx``, building (untrained, seed 0) and exporting it when missing."""
    onnx_path = models / exp / "model.onnx"
    if onnx_path.exists():
        return onnx_path
    pt = models / exp / "model.pt"
    if not pt.exists():
        import torch

        from slotmpe.models import build_model, save_checkpoint

        torch.manual_seed(0)
        save_checkpoint(pt, build_model(exp).eval(), {"note": "untrained, for speed benchmarks"})
    from slotmpe.transcribe.onnx_export import export_onnx

    export_onnx(pt, onnx_path)
    return onnx_path


def run_cli(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float, float]:
    """``(wall seconds, peak RSS MB, CPU seconds)`` of one fresh process; raises on failure.

    Peak RSS and CPU come from GNU time (``/usr/bin/time``), which forks from its own small
    process: ``ru_maxrss`` of a child forked from this (large) Python would include the parent's
    pages at fork time.
    """
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
        t0 = time.perf_counter()
        proc = subprocess.run(["/usr/bin/time", "-f", "%M %U %S", "-o", tf.name, *cmd],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"{cmd[0]} failed ({proc.returncode}): {proc.stderr.decode()[-2000:]}")
        kb, user, sys_ = tf.read().split()[-3:]
    return wall, float(kb) / 1024.0, float(user) + float(sys_)


OURS_INPROC = """
import statistics, sys, tempfile, time
from slotmpe.transcribe import TranscribeOptions, load_model, transcribe_file
model, meta = load_model(sys.argv[1])
times = []
for _ in range(int(sys.argv[3])):
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        transcribe_file(sys.argv[2], model, meta, d, TranscribeOptions(write_png=False))
        times.append(time.perf_counter() - t)
print(statistics.median(times))
"""

THEIRS_INPROC = """
import statistics, sys, time
from basic_pitch import ICASSP_2022_MODEL_PATH
from basic_pitch.inference import Model, predict
model = Model(ICASSP_2022_MODEL_PATH)
times = []
for _ in range(int(sys.argv[2])):
    t = time.perf_counter(); predict(sys.argv[1], model); times.append(time.perf_counter() - t)
print(statistics.median(times))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bp-venv", default="/work/bpvenv", help="Basic Pitch 0.4.0 virtualenv")
    ap.add_argument("--lengths", type=float, nargs="+", default=[60.0, 300.0, 1200.0, 2400.0],
                    help="seconds")
    ap.add_argument("--model-suffix", default=".pt", choices=(".pt", ".onnx"),
                    help="run MODEL.pt (its sibling .onnx is used) or MODEL.onnx directly")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--exps", nargs="+", default=["1a", "3c"])
    ap.add_argument("--models", type=Path, default=ROOT / "benchmarks/out/models")
    ap.add_argument("--audio", type=Path, default=ROOT / "benchmarks/out/audio")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/out/bench_vs_basic_pitch.json")
    ap.add_argument("--no-inprocess", action="store_true", help="skip the in-process timing")
    ap.add_argument("--png", action="store_true", help="also run 3c with the PNG (full outputs)")
    args = ap.parse_args()

    bp_cli = Path(args.bp_venv) / "bin" / "basic-pitch"
    have_bp = bp_cli.exists()
    if not have_bp:
        print(f"Basic Pitch not found at {bp_cli}: measuring slotmpe only. Install it with\n"
              f"  python -m venv {args.bp_venv} && {args.bp_venv}/bin/pip install --no-deps "
              f"basic-pitch==0.4.0 && {args.bp_venv}/bin/pip install onnxruntime librosa mir_eval "
              "pretty_midi 'resampy<0.4.3' scikit-learn scipy", file=sys.stderr)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    models = {e: ensure_model(args.models, e) for e in args.exps}
    files = {sec: synth(args.audio / f"bench_{int(sec)}s.wav", sec) for sec in args.lengths}
    tools = (["basic-pitch"] if have_bp else []) + [f"slotmpe {e}" for e in args.exps]
    if args.png:
        tools.append(f"slotmpe {args.exps[-1]}+png")

    def cmd(tool: str, audio: Path, out: Path) -> list[str]:
        if tool == "basic-pitch":
            return [str(bp_cli), str(out), str(audio)]
        exp = tool.split()[1].removesuffix("+png")
        return [sys.executable, "-m", "slotmpe.cli", "transcribe", str(audio), "-m",
                str(models[exp].with_suffix(args.model_suffix)), "-o", str(out), "--no-progress",
                *([] if tool.endswith("+png") else ["--no-png"])]

    res: dict[str, dict[str, list[tuple[float, float, float]]]] = {t: {} for t in tools}
    for r in range(args.runs):
        for sec, audio in files.items():
            order = tools[r % len(tools):] + tools[: r % len(tools)]
            for tool in order:
                out = Path(tempfile.mkdtemp(prefix="bench-"))
                try:
                    wall, rss, cpu = run_cli(cmd(tool, audio, out), env)
                finally:
                    shutil.rmtree(out, ignore_errors=True)
                res[tool].setdefault(str(sec), []).append((wall, rss, cpu))
                print(f"run {r + 1} {tool:15s} {sec:6.0f} s audio: {wall:7.2f} s, {rss:7.1f} MB, "
                      f"CPU {cpu:7.2f} s",
                      file=sys.stderr, flush=True)

    inproc: dict[str, dict[str, float]] = {t: {} for t in tools}
    if not args.no_inprocess:
        for sec, audio in files.items():
            for tool in tools:
                if tool.endswith("+png"):
                    continue
                if tool == "basic-pitch":
                    c = [str(Path(args.bp_venv) / "bin" / "python"), "-c", THEIRS_INPROC, str(audio),
                         str(args.runs)]
                else:
                    c = [sys.executable, "-c", OURS_INPROC, str(models[tool.split()[1]]),
                         str(audio), str(args.runs)]
                p = subprocess.run(c, capture_output=True, text=True, env=env, check=True)
                inproc[tool][str(sec)] = float(p.stdout.strip().splitlines()[-1])

    summary = []
    print(f"\n{'tool':15s} {'audio':>6s} {'wall s':>7s} {'s/min':>6s} {'CPU s':>7s} {'RSS MB':>7s} "
          f"{'inproc s/min':>12s} {'wall ratio':>10s} {'CPU ratio':>9s} {'RSS ratio':>9s} "
          f"{'inproc ratio':>12s}")
    for sec in files:
        key = str(sec)
        base = None
        for tool in tools:
            walls = [w for w, _, _ in res[tool][key]]
            rsss = [m for _, m, _ in res[tool][key]]
            cpus = [c for _, _, c in res[tool][key]]
            row = {"tool": tool, "audio_s": sec, "runs": len(walls),
                   "wall_s": statistics.median(walls), "peak_rss_mb": statistics.median(rsss),
                   "cpu_s": statistics.median(cpus),
                   "inproc_s": inproc[tool].get(key)}
            row["s_per_min"] = row["wall_s"] / (sec / 60.0)
            row["inproc_s_per_min"] = (None if row["inproc_s"] is None
                                       else row["inproc_s"] / (sec / 60.0))
            if tool == "basic-pitch":
                base = row
            elif base is not None:
                row["wall_ratio"] = row["wall_s"] / base["wall_s"]
                row["rss_ratio"] = row["peak_rss_mb"] / base["peak_rss_mb"]
                row["cpu_ratio"] = row["cpu_s"] / base["cpu_s"]
                if row["inproc_s"] and base["inproc_s"]:
                    row["inproc_ratio"] = row["inproc_s"] / base["inproc_s"]
            summary.append(row)

            def f(v: float | None, fmt: str) -> str:
                return "-" if v is None else format(v, fmt)

            print(f"{tool:15s} {sec:6.0f} {row['wall_s']:7.2f} {row['s_per_min']:6.2f} "
                  f"{row['cpu_s']:7.2f} {row['peak_rss_mb']:7.1f} "
                  f"{f(row['inproc_s_per_min'], '12.2f')} {f(row.get('wall_ratio'), '10.2f')} "
                  f"{f(row.get('cpu_ratio'), '9.2f')} {f(row.get('rss_ratio'), '9.2f')} "
                  f"{f(row.get('inproc_ratio'), '12.2f')}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rows": summary, "raw": res, "cpu": os.cpu_count(),
                                    "model_suffix": args.model_suffix,
                                    "load_avg_at_end": os.getloadavg()}, indent=1))
    print(f"\nwrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
