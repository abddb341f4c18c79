"""Benchmark of ``slotmpe transcribe``: real-time factor and peak memory.

* Real-time factor (RTF = processing seconds / audio seconds; lower is faster) of
  :func:`slotmpe.transcribe.transcribe_file` on a 60 s, 44.1 kHz stereo WAV, split into its stages:
  audio loading + resampling, features (wide CQT -> fast-HCQT), model
  (:func:`slotmpe.inference.predict`), note creation, and writing MIDI/CSV/PNG. Run for the 1a and
  3c configurations with torch on 2 CPU threads.
* Peak resident memory (``ru_maxrss``) of a fresh subprocess transcribing a 10-minute file, next to
  the same process's RSS after its imports and model load (the baseline), so the per-file part is
  visible.

The models are *untrained* (``slotmpe.models.build_model`` with the default widths, seed 0): speed
and memory do not depend on the weights, only note creation does marginally (an untrained model
yields few notes). The audio is a synthetic two-instrument piece (a sine and a band-limited sawtooth
playing random notes), tiled to the requested length.

Usage::

    python benchmarks/bench_inference.py                       # 60 s RTF + 10 min peak memory
    python benchmarks/bench_inference.py --seconds 20 --long-seconds 120 --exps 3c
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

BENCH_SR = 44_100


def synth_piece(seconds: float, sr: int = BENCH_SR, seed: int = 0) -> np.ndarray:
    """A two-voice synthetic piece, float32 stereo ``(n, 2)``: sine + sawtooth random notes."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    out = np.zeros(n, dtype=np.float32)
    for voice, (lo, hi) in enumerate(((60, 84), (36, 60))):
        t = 0.0
        while t < seconds:
            dur = float(rng.uniform(0.15, 0.8))
            m = int(rng.integers(lo, hi))
            f = 440.0 * 2 ** ((m - 69) / 12)
            i0, i1 = int(t * sr), min(n, int((t + dur) * sr))
            tt = np.arange(i1 - i0) / sr
            if voice == 0:
                y = np.sin(2 * np.pi * f * tt)
            else:
                y = sum(np.sin(2 * np.pi * f * k * tt) / k for k in range(1, int(6000 // f) + 1))
            env = np.minimum(1.0, np.minimum(tt, tt[::-1]) / 0.01)
            out[i0:i1] += (0.2 * y * env).astype(np.float32)
            t += dur + float(rng.uniform(0.0, 0.2))
    return np.stack([out, 0.9 * out], axis=1)


def write_tiled(path: Path, piece: np.ndarray, seconds: float, sr: int = BENCH_SR) -> Path:
    """Write ``piece`` repeated to ``seconds`` as a 16-bit WAV, block by block."""
    n = int(seconds * sr)
    with sf.SoundFile(str(path), "w", samplerate=sr, channels=piece.shape[1], subtype="PCM_16") as f:
        done = 0
        while done < n:
            block = piece[: n - done]
            f.write(block)
            done += len(block)
    return path


def rss_mb() -> float:
    """Peak RSS of this process so far in MB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_rss_mb() -> float:
    """Current RSS of this process in MB (from /proc; falls back to the peak)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:  # pragma: no cover - non-Linux
        return rss_mb()


def time_stages(exp: str, wav: Path, outdir: Path, threads: int) -> dict[str, float]:
    """Seconds per stage of one transcription of ``wav`` with an untrained ``exp`` model."""
    import torch

    from slotmpe.audio import load_audio
    from slotmpe.constants import SAMPLE_RATE
    from slotmpe.features import hcqt
    from slotmpe.inference import predict
    from slotmpe.models import build_model
    from slotmpe.transcribe import (
        TranscribeOptions,
        activity_is_trained,
        make_tracks,
        plot_pianoroll,
        write_midi,
        write_notes_csv,
    )

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_model(exp).eval()
    opts = TranscribeOptions()
    # warm-up on 2 s (allocator, kernels, librosa filter caches)
    warm = np.zeros(2 * SAMPLE_RATE, dtype=np.float32)
    warm[::97] = 0.1
    predict(model, hcqt(warm, SAMPLE_RATE), "cpu", opts.resolved_max_frames())

    t: dict[str, float] = {}
    t0 = time.perf_counter()
    audio, _ = load_audio(wav)
    t1 = time.perf_counter()
    x = hcqt(audio, SAMPLE_RATE)
    t2 = time.perf_counter()
    probs = predict(model, x, "cpu", opts.resolved_max_frames())
    t3 = time.perf_counter()
    tracks = make_tracks(probs, opts, model.exp.uses_slots, model.exp, activity_is_trained(model.exp))
    t4 = time.perf_counter()
    write_midi(outdir / f"{exp}.mid", tracks)
    write_notes_csv(outdir / f"{exp}.notes.csv", tracks)
    plot_pianoroll(outdir / f"{exp}.png", tracks, len(audio) / SAMPLE_RATE)
    t5 = time.perf_counter()
    t.update(load=t1 - t0, features=t2 - t1, model=t3 - t2, notes=t4 - t3, write=t5 - t4,
             total=t5 - t0, n_notes=float(sum(len(tr.notes) for tr in tracks)))
    return t


def peak_child(exp: str, wav: Path, outdir: Path, threads: int) -> dict[str, float]:
    """Run in a fresh process: transcribe ``wav`` and report baseline and peak RSS in MB."""
    import torch

    from slotmpe.models import build_model
    from slotmpe.transcribe import TranscribeOptions, transcribe_file

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_model(exp).eval()
    meta = {"experiment": exp}
    import matplotlib  # noqa: F401  (imported before the baseline so it is not counted)
    import pretty_midi  # noqa: F401

    import slotmpe.features  # noqa: F401
    import slotmpe.inference  # noqa: F401

    base_peak, base_now = rss_mb(), current_rss_mb()
    t0 = time.perf_counter()
    res = transcribe_file(wav, model, meta, outdir, TranscribeOptions())
    return {"baseline_mb": base_now, "baseline_peak_mb": base_peak, "peak_mb": rss_mb(),
            "seconds": time.perf_counter() - t0, "duration_s": res.duration_s,
            "n_frames": float(res.n_frames)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="audio length for the RTF")
    ap.add_argument("--long-seconds", type=float, default=600.0, help="audio length for peak memory")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--exps", nargs="+", default=["1a", "3c"])
    ap.add_argument("--peak-exps", nargs="+", default=None, help="default: --exps")
    ap.add_argument("--skip-peak", action="store_true")
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    ap.add_argument("--peak-child", nargs=3, metavar=("EXP", "WAV", "OUTDIR"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.peak_child:
        exp, wav, outdir = args.peak_child
        print(json.dumps(peak_child(exp, Path(wav), Path(outdir), args.threads)))
        return 0

    import torch

    results: dict[str, object] = {
        "threads": args.threads, "cpu_count": os.cpu_count(), "torch": torch.__version__,
        "load_avg_at_start": os.getloadavg()[0],
    }
    with tempfile.TemporaryDirectory(prefix="bench_inference_") as tmp:
        d = Path(tmp)
        piece = synth_piece(60.0)
        wav = write_tiled(d / "piece.wav", piece, args.seconds)
        print(f"RTF on {args.seconds:g} s of 44.1 kHz stereo audio, {args.threads} threads "
              f"(untrained models; load average {results['load_avg_at_start']:.2f} on "
              f"{os.cpu_count()} cores)")
        print(f"{'exp':>4} {'load':>7} {'feat':>7} {'model':>7} {'notes':>7} {'write':>7} "
              f"{'total':>7} {'RTF':>7} {'x real time':>11}")
        for exp in args.exps:
            t = time_stages(exp, wav, d, args.threads)
            rtf = t["total"] / args.seconds
            results[f"rtf_{exp}"] = rtf
            results[f"stages_{exp}"] = t
            print(f"{exp:>4} {t['load']:7.2f} {t['features']:7.2f} {t['model']:7.2f} "
                  f"{t['notes']:7.3f} {t['write']:7.2f} {t['total']:7.2f} {rtf:7.4f} "
                  f"{1 / rtf:11.1f}")
        if not args.skip_peak:
            long_wav = write_tiled(d / "long.wav", piece, args.long_seconds)
            print(f"peak memory transcribing {args.long_seconds / 60:g} min of 44.1 kHz stereo "
                  f"audio (fresh process, {args.threads} threads)")
            for exp in args.peak_exps or args.exps:
                proc = subprocess.run(
                    [sys.executable, __file__, "--threads", str(args.threads), "--peak-child",
                     exp, str(long_wav), str(d)],
                    capture_output=True, text=True, check=False,
                )
                if proc.returncode != 0:
                    print(proc.stderr, file=sys.stderr)
                    return proc.returncode
                r = json.loads(proc.stdout.strip().splitlines()[-1])
                results[f"peak_{exp}"] = r
                print(f"{exp:>4} peak RSS {r['peak_mb']:.0f} MB (after imports + model "
                      f"{r['baseline_mb']:.0f} MB; file part {r['peak_mb'] - r['baseline_mb']:.0f} "
                      f"MB); {r['seconds']:.1f} s for {r['duration_s']:.0f} s of audio "
                      f"(RTF {r['seconds'] / r['duration_s']:.4f})")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
