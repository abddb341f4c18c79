"""The ``slotmpe`` command line: ``transcribe``, ``evaluate``, ``params`` and ``info``.

Parsing (:func:`build_parser`, :func:`main`) is kept apart from the typed functions that do the work
(:func:`run_transcribe`, :func:`run_params`, :func:`run_info`), which tests and scripts can call
directly. Expected failures (missing model, unreadable/empty/silent audio, no CUDA) are reported as one
line ``slotmpe: error: ...`` on stderr with a non-zero exit status, never a traceback (``--debug``
shows it). In a batch, a bad file is reported and skipped; the others are still transcribed, a summary
follows, and the exit status is 1 if any file failed.

Exit status: 0 success, 1 failure (or any file of a batch failed), 2 command-line usage error.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

import slotmpe
from slotmpe import constants as C

PROG = "slotmpe"


class CLIError(RuntimeError):
    """An expected failure reported as one line on stderr."""


def _err(msg: str) -> None:
    print(f"{PROG}: error: {msg}", file=sys.stderr)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


# --------------------------------------------------------------------------------------------
# typed commands


def run_transcribe(
    inputs: Sequence[str | os.PathLike[str]],
    model_path: str | os.PathLike[str] | None = None,
    outdir: str | os.PathLike[str] = "transcriptions",
    threshold: float | None = None,
    activity_threshold: float | None = None,
    min_note_ms: float | None = None,
    merge_gap_ms: float | None = None,
    device: str = "auto",
    max_frames: int | None = None,
    threads: int | None = None,
    write_png: bool = True,
    progress: bool | None = None,
    debug: bool = False,
    stream: bool = False,
    minimum_frequency: float | None = None,
    maximum_frequency: float | None = None,
    sonify: bool = False,
    save_model_outputs: bool = False,
    min_similarity: float | None = None,
    prefer_onnx: bool = True,
) -> int:
    """Transcribe every input file (directories expanded) with the model at ``model_path``
    (``None``: the model that ships with the package, :mod:`slotmpe.pretrained`).

    Writes ``<name>.mid``, ``<name>.notes.csv`` and ``<name>.png`` per input into ``outdir``.
    ``model_path`` is a ``.pt`` checkpoint (torch) or an ``.onnx`` export (onnxruntime, CPU; torch
    is then never imported). ``None`` options take the defaults of
    :class:`slotmpe.transcribe.TranscribeOptions` (thresholds:
    :func:`slotmpe.transcribe.resolve_thresholds`, one rule whichever file names the model:
    ``threshold``, else ``thresholds.json`` beside the model, else those embedded in its ONNX
    export, else 0.5 with a warning; a damaged ``thresholds.json`` is an error). ``progress`` (default: when more than one file) shows a
    tqdm bar on stderr. ``stream``: one input (a file or ``-`` for stdin) is transcribed block by
    block and every note is printed to stdout as a CSV row as soon as it is final
    (:mod:`slotmpe.transcribe.stream`). A ``.pt`` run on the CPU is replaced by its up-to-date
    sibling ``.onnx`` (``prefer_onnx``; :func:`slotmpe.transcribe.runners.load_model_fast`), which
    is said once on stderr. ``minimum_frequency``/``maximum_frequency`` (Hz) drop notes outside
    the range; ``sonify`` also writes ``<name>.sonified.wav``, ``save_model_outputs``
    ``<name>.model_output.npz``; ``min_similarity`` is the named-instrument cut-off
    (:mod:`slotmpe.instruments`). Returns the exit status: 0 if every file was transcribed,
    1 otherwise; raises :class:`CLIError` for problems that stop everything (model, device, output
    folder, no input files).
    """
    from tqdm import tqdm

    from slotmpe import transcribe as tr
    from slotmpe.audio import AudioError

    if model_path is None:
        from slotmpe.pretrained import default_model_path

        try:
            model_path = default_model_path()
        except tr.TranscriptionError as exc:
            raise CLIError(_one_line(exc)) from exc
    is_onnx = Path(model_path).suffix.lower() == ".onnx"
    if not is_onnx and prefer_onnx and device in ("auto", "cpu"):
        from slotmpe.transcribe.runners import sibling_onnx

        # the up-to-date export beside model.pt runs on the CPU: torch is then never imported
        is_onnx = sibling_onnx(model_path)[0] is not None
    if is_onnx:
        if device not in ("auto", "cpu"):
            raise CLIError(f"{model_path}: ONNX models run on the CPU only (got --device {device})")
        dev = "cpu"
    else:
        from slotmpe.utils import resolve_device

        try:
            dev = resolve_device(device)
        except RuntimeError as exc:
            raise CLIError(_one_line(exc)) from exc
    from slotmpe.thresholds import ThresholdsError

    try:  # one rule for every way of naming the model; a damaged file stops here
        mix_thr, slot_thr, thr_source = tr.resolve_thresholds(model_path, threshold)
    except ThresholdsError as exc:
        raise CLIError(f"{_one_line(exc)} (fix or remove it, or pass --threshold)") from exc
    try:
        options = tr.TranscribeOptions(
            mix_threshold=mix_thr,
            slot_threshold=slot_thr,
            activity_threshold=(tr.DEFAULT_ACTIVITY_THRESHOLD if activity_threshold is None
                                else activity_threshold),
            min_note_ms=tr.DEFAULT_MIN_NOTE_MS if min_note_ms is None else min_note_ms,
            merge_gap_ms=tr.DEFAULT_MERGE_GAP_MS if merge_gap_ms is None else merge_gap_ms,
            device=dev,
            max_frames=tr.DEFAULT_MAX_FRAMES if max_frames is None else (max_frames or None),
            write_png=write_png,
            minimum_frequency=minimum_frequency,
            maximum_frequency=maximum_frequency,
            sonify=sonify,
            save_model_outputs=save_model_outputs,
            **({} if min_similarity is None else {"min_similarity": min_similarity}),
        )
    except ValueError as exc:
        raise CLIError(_one_line(exc)) from exc
    if stream and (len(inputs) != 1 or Path(inputs[0]).is_dir()):
        raise CLIError("--stream takes exactly one audio file (or - for stdin)")
    if stream and (sonify or save_model_outputs or minimum_frequency or maximum_frequency):
        raise CLIError("--sonify, --save-model-outputs and --minimum/--maximum-frequency work on "
                       "whole files only, not with --stream")
    try:
        out = tr.check_writable(outdir)  # before the model is loaded and run
        from slotmpe.transcribe.runners import load_model_fast

        model, meta, run_path, note = load_model_fast(model_path, device=dev, threads=threads,
                                                      prefer_onnx=prefer_onnx)
    except tr.TranscriptionError as exc:
        raise CLIError(_one_line(exc)) from exc
    if note:
        print(note, file=sys.stderr)
    if threads:
        from slotmpe.utils import clamp_threads

        if clamp_threads(threads) < threads:
            print(f"--threads {threads}: using {clamp_threads(threads)}, the number of CPUs",
                  file=sys.stderr)
        if run_path.suffix.lower() != ".onnx":  # onnxruntime's sessions clamp the same way
            from slotmpe.utils import set_threads

            set_threads(threads)
    skipped: list[str] = []
    files = [Path(inputs[0])] if stream else tr.find_audio_files(inputs, skipped)
    for line in skipped:
        print(f"{PROG}: warning: {line}", file=sys.stderr)
    if not files:
        raise CLIError("no audio files found in " + ", ".join(str(p) for p in inputs))
    print(
        f"model {model_path} ({meta.get('experiment', meta.get('exp', '?'))}) on {dev}; "
        f"thresholds mix {options.mix_threshold:.3g}, slots {options.slot_threshold:.3g} "
        f"({thr_source}); activity {options.activity_threshold:.3g}",
        file=sys.stderr,
    )
    if stream:
        from slotmpe.transcribe.stream import transcribe_stream

        try:
            result = transcribe_stream(inputs[0], model, meta, out, options, emit=sys.stdout)
        except (AudioError, tr.TranscriptionError, OSError, ValueError) as exc:
            if debug:
                raise
            raise CLIError(_one_line(exc)) from exc
        print(result.summary(), file=sys.stderr)
        return 0

    names = tr.output_names(files)
    show_bar = len(files) > 1 if progress is None else progress
    failed: list[tuple[Path, str]] = []
    n_ok = 0
    bar = tqdm(list(zip(files, names, strict=True)), desc="transcribe", unit="file",
               disable=not show_bar, file=sys.stderr)
    for f, name in bar:
        bar.set_postfix_str(f.name, refresh=False)
        try:
            result = tr.transcribe_file(f, model, meta, out, options, name=name)
        except (AudioError, tr.TranscriptionError, OSError, ValueError) as exc:
            if debug:
                raise
            msg = _one_line(exc)
            if str(f) not in msg:
                msg = f"{f}: {msg}"
            failed.append((f, msg))
            tqdm.write(f"{PROG}: error: {msg}", file=sys.stderr)
            continue
        except Exception as exc:  # unexpected: still one line, and the batch goes on
            if debug:
                raise
            msg = f"{f}: {type(exc).__name__}: {_one_line(exc)} (rerun with --debug for details)"
            failed.append((f, msg))
            tqdm.write(f"{PROG}: error: {msg}", file=sys.stderr)
            continue
        n_ok += 1
        tqdm.write(result.summary())
    bar.close()
    if len(files) > 1 or failed:
        line = f"transcribed {n_ok} of {len(files)} files into {out}"
        if failed:
            line += f"; {len(failed)} failed: " + ", ".join(str(f) for f, _ in failed)
        print(line, file=sys.stderr)
    return 1 if failed else 0


def run_export(model_path: str | os.PathLike[str], out_path: str | os.PathLike[str] | None = None
               ) -> int:
    """Export a ``.pt`` checkpoint to ONNX (default: the same path with ``.onnx``); returns 0."""
    from slotmpe.thresholds import ThresholdsError
    from slotmpe.transcribe import TranscriptionError
    from slotmpe.transcribe.onnx_export import export_onnx

    out = Path(out_path) if out_path else Path(model_path).with_suffix(".onnx")
    if out.suffix.lower() != ".onnx":
        raise CLIError(f"{out}: the output file must end in .onnx")
    try:
        export_onnx(model_path, out)
    except (TranscriptionError, ThresholdsError) as exc:
        raise CLIError(_one_line(exc)) from exc
    print(f"exported {model_path} -> {out}", file=sys.stderr)
    return 0


def params_widths(
    widths: str | None = None,
    config: str | os.PathLike[str] | None = None,
    profile: str | None = None,
) -> tuple[str, str]:
    """The width preset of ``slotmpe params`` and where it came from: ``widths`` when given, else
    ``model.widths`` of the workflow config ``config`` (default ``./config.yaml`` when there is
    one; ``profile`` applied), else ``efficient`` (the package default)."""
    import yaml

    from slotmpe.config import load_config
    from slotmpe.models import WIDTH_PRESETS

    if widths is not None:
        source = "--widths"
    else:
        path = Path(config) if config is not None else Path("config.yaml")
        if config is None and not path.is_file():
            return "efficient", "the package default"
        if not path.is_file():
            raise CLIError(f"config file {path} does not exist")
        try:
            cfg = load_config(path, {"profile": profile} if profile else None)
        except (OSError, ValueError, yaml.YAMLError) as exc:  # ConfigError is a ValueError
            raise CLIError(f"config file {path}: {_one_line(exc)}") from exc
        widths = str((cfg.get("model") or {}).get("widths", "efficient"))
        source = f"model.widths of {path}" + (f" (profile {profile})" if profile else "")
    if widths not in WIDTH_PRESETS:
        raise CLIError(f"{source}: unknown width preset {widths!r}; known: "
                       f"{', '.join(WIDTH_PRESETS)}")
    return widths, source


def run_params(
    out_csv: str | os.PathLike[str] | None = None,
    widths: str | None = None,
    config: str | os.PathLike[str] | None = None,
    profile: str | None = None,
) -> int:
    """Print Table I (:func:`slotmpe.results.table1.build_table1`) of the width preset
    (:func:`params_widths`) and, only when ``out_csv`` is given, write it there; returns 0.
    Nothing else is written (the pipeline's ``results/table1.csv`` is its own)."""
    from slotmpe.results.table1 import build_table1
    from slotmpe.utils import atomic_path

    preset, source = params_widths(widths, config, profile)
    df = build_table1(preset)
    rows = [list(df.columns)] + [[str(v) for v in r] for r in df.itertuples(index=False)]
    cols = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.rjust(w) for c, w in zip(r, cols, strict=True)).rstrip())
    print(f"width preset {preset} ({source})")
    if out_csv is not None:
        out = Path(out_csv)
        with atomic_path(out) as tmp:
            df.to_csv(tmp, index=False)
        print(f"written to {out}")
    return 0


def run_evaluate(
    model_path: str | os.PathLike[str],
    data: str | os.PathLike[str],
    work_dir: str | os.PathLike[str] | None = None,
    split: str = "test",
    thresholds: str | os.PathLike[str] | None = None,
    tune: bool = False,
    encoder: str | os.PathLike[str] | None = None,
    out: str | os.PathLike[str] | None = None,
    device: str = "auto",
    max_frames: int | None = None,
    threads: int | None = None,
    progress: bool = True,
) -> int:
    """Score a trained model on a folder dataset or manifest (:func:`slotmpe.generalisation.
    evaluate_dataset`), print the metrics and write ``metrics.json``; returns 0.

    The model file is checked to be a slot model before any data is read. ``work_dir`` (default
    :func:`slotmpe.workdir.default_work_dir`; never inside the data) holds the feature cache,
    reused only while the data's files are unchanged (content hashes), and one folder per model
    with its ``metrics.json``; a second run on the same work dir at once is refused (lock). That
    model's previous ``metrics.json`` is deleted when the run starts, so a failed run leaves none.
    """
    from slotmpe.generalisation import evaluate_dataset
    from slotmpe.models import CheckpointError, SlotMPE
    from slotmpe.models.io import require_kind
    from slotmpe.utils import set_threads
    from slotmpe.workdir import WorkDirError, check_work_dir, default_work_dir, user_cache_root

    if not Path(model_path).is_file():
        raise CLIError(f"model {model_path} does not exist")
    try:
        require_kind(model_path, SlotMPE)
    except CheckpointError as exc:
        raise CLIError(_one_line(exc)) from exc
    if not Path(data).exists():
        raise CLIError(f"data {data} does not exist")
    if work_dir is None:
        wd = default_work_dir(Path(data))
        if user_cache_root() in wd.parents:
            print(f"work dir {wd} (the current folder lies inside the data)", file=sys.stderr)
    else:
        wd = Path(work_dir)
    try:
        check_work_dir(wd, Path(data))
        if threads:
            set_threads(threads)
        res = evaluate_dataset(
            Path(model_path), Path(data), wd, split=split,
            thresholds_path=Path(thresholds) if thresholds else None, tune=tune,
            encoder_path=Path(encoder) if encoder else None,
            out_path=Path(out) if out else None,
            device=None if device == "auto" else device, max_frames=max_frames or None,
            progress=progress,
        )
    except WorkDirError as exc:
        raise CLIError(_one_line(exc)) from exc
    keys = ("std_ap", "std_f1", "std_p", "std_r", "slot_ap", "slot_f1", "slot_p", "slot_r",
            "timbre_cos", "poly_std_acc", "poly_stem_acc")
    print(f"{res['exp']} (trained on {res.get('train_dataset')}) on {res.get('test_dataset')} "
          f"[{split}]: {res['n_files']} files, {res['n_frames']} frames; thresholds from "
          f"{res.get('thresholds_from')}")
    for k in keys:
        v = res.get(k)
        print(f"  {k:14s} {'-' if v is None else f'{v:.4f}' if k == 'timbre_cos' else f'{v:.2f}'}")
    print(f"written to {res['metrics_path']}")
    return 0


def _dist_version(name: str) -> str | None:
    """Installed version of distribution ``name`` (read from its metadata, never imported)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def version_lines() -> list[str]:
    """What ``slotmpe --version`` prints, for bug reports: the package version, the shipped
    model's identity, the onnxruntime and torch versions (from the installed metadata: torch is
    not imported, so this stays fast) and the CPU's precision support."""
    from slotmpe.cpu import cpu_info, cpu_native_bf16
    from slotmpe.pretrained import identity_line, shipped_model_identity

    ort, torch_v = _dist_version("onnxruntime"), _dist_version("torch")
    cpu = cpu_info()
    flags = " ".join(cpu["flags"]) or "none of avx2 avx512f avx512_bf16 amx"  # type: ignore[arg-type]
    bf16 = ("native bf16 (precision auto = bf16)" if cpu_native_bf16(cpu)
            else "no native bf16 (precision auto = fp32)")
    return [
        f"slotmpe {slotmpe.__version__}",
        f"shipped model: {identity_line(shipped_model_identity())}",
        f"onnxruntime {ort or 'not installed'}; torch {torch_v or 'not installed'}",
        f"CPU: {cpu['model']} [{flags}]; {bf16}",
        f"python {platform.python_version()} on {platform.platform()}",
    ]


class _VersionAction(argparse.Action):
    """``--version``: print :func:`version_lines` and exit 0."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS,
                 default: str = argparse.SUPPRESS, help: str | None = None) -> None:
        super().__init__(option_strings=option_strings, dest=dest, default=default, nargs=0,
                         help=help)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        print("\n".join(version_lines()))
        parser.exit()


def run_info() -> int:
    """Print :func:`version_lines`, then torch's threads and devices (when torch is installed),
    the signal constants and the experiments; returns 0."""
    from slotmpe.experiments import ALL_EXPERIMENTS

    lines = version_lines()
    lines[0] = f"slotmpe {slotmpe.__version__} ({Path(slotmpe.__file__).parent})"
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        lines.append(f"torch {torch.__version__}; CPU threads {torch.get_num_threads()} of "
                     f"{os.cpu_count()} cores")
        if torch.cuda.is_available():
            for i in range(torch.cuda.device_count()):
                lines.append(f"cuda:{i} {torch.cuda.get_device_name(i)} "
                             f"(CUDA {torch.version.cuda})")
        else:
            lines.append("cuda: not available (transcription runs on CPU)")
    else:
        lines.append("torch: not installed (ONNX models only; training needs torch)")
    lines += [
        f"audio: {C.SAMPLE_RATE} Hz mono, hop {C.HOP_LENGTH} ({C.FRAME_RATE:g} frames/s)",
        f"CQT: {C.BINS_PER_OCTAVE} bins/octave, {C.N_BINS} model bins from {C.FMIN:.3f} Hz, "
        f"{C.N_PITCHES} pitches MIDI {C.MIDI_MIN}..{C.MIDI_MAX}",
        f"fast-HCQT: harmonics {C.HARMONICS}, shifts {C.HARMONIC_SHIFTS} bins, "
        f"input {C.N_INPUT_CHANNELS} x {C.N_BINS} x T",
        f"slots: up to {C.MAX_SLOTS}, d = {C.SLOT_DIM}, timbre embedding {C.EMBED_DIM}; "
        f"polyphony classes {C.N_POLY_CLASSES}; training window {C.WINDOW_FRAMES} frames",
        f"families: {', '.join(C.FAMILIES)}",
        "experiments:",
    ]
    lines += [f"  {e.name}  {e.description}" for e in ALL_EXPERIMENTS.values()]
    print("\n".join(lines))
    return 0


# --------------------------------------------------------------------------------------------
# parsing


_Num = TypeVar("_Num", int, float)


def _number(text: str, kind: type[_Num]) -> _Num:
    """``text`` as an int or float (``kind``); an argparse error naming ``text`` if it is not one."""
    try:
        return kind(text)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None


def _probability(text: str) -> float:
    v = _number(text, float)
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"must lie in [0, 1]: {text}")
    return v


def _non_negative(text: str) -> float:
    v = _number(text, float)
    if not (math.isfinite(v) and v >= 0):  # nan and inf would fail per file, after the model ran
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return v


def _non_negative_int(text: str) -> int:
    v = _number(text, int)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {text}")
    return v


def _positive(text: str) -> float:
    v = _number(text, float)
    if not (math.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return v


def _similarity(text: str) -> float:
    v = _number(text, float)
    if not -1.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"must lie in [-1, 1], got {text}")
    return v


def _add_alias_config_args(p: argparse.ArgumentParser) -> None:
    """``--config``/``--profile`` of the result-table commands (where the paper aliases come from)."""
    p.add_argument("--config", default=None, metavar="FILE",
                   help="workflow config (default: config.yaml beside the results/ tree, else at "
                        "the root of its slotmpe checkout; never the current directory's)")
    p.add_argument("--profile", default=None, help="config profile (default: the config's own)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``slotmpe`` command and its subcommands."""
    from slotmpe import transcribe as tr

    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "slotmpe: lightweight slot-attention multi-instrument multi-pitch estimation.\n"
            "Transcribe audio into one MIDI track per source, show Table I, or print setup info."
        ),
        epilog=f"Run '{PROG} COMMAND --help' for the options of a command.",
        formatter_class=fmt,
    )
    parser.add_argument("--version", action=_VersionAction,
                        help="show the version, the shipped model, onnxruntime/torch versions and "
                             "the CPU's precision support, then exit")
    parser.add_argument("--debug", action="store_true",
                        help="show full tracebacks instead of one-line errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "transcribe",
        help="transcribe audio files into per-source MIDI, a notes CSV and a piano-roll PNG",
        description=(
            "Transcribe audio with a trained slotmpe model. For every input writes into OUTDIR:\n"
            "  <name>.mid        one track per active slot, named after its instrument with its GM\n"
            "                    program where the model has a timbre head ('slot 1'..'slot K'\n"
            "                    otherwise), + a 'mixture' track\n"
            "  <name>.notes.csv  slot,onset_s,offset_s,midi,confidence,instrument,similarity,"
            "name_confidence\n"
            "  <name>.png        piano roll, one colour per slot (legend in the PNG's metadata)\n"
            "A model.pt with an up-to-date model.onnx beside it (the pipeline writes one) runs on\n"
            "onnxruntime (--no-onnx: torch).\n"
            "Any sample rate, mono or stereo, any format soundfile reads (WAV, FLAC, OGG, MP3, ...).\n"
            "A directory transcribes every audio file in it (not recursive). Long files are run\n"
            "through the model in chunks of --max-frames frames, so model memory stays bounded."
        ),
        epilog=(
            "examples:\n"
            f"  {PROG} transcribe song.wav -o out/          (the shipped model)\n"
            f"  {PROG} transcribe song.wav --model results/chamber/3c/seed0/model.pt -o out/\n\n"
            "A bad file is reported on one line and skipped; the exit status is 1 if any failed."
        ),
        formatter_class=fmt,
    )
    p.add_argument("audio", nargs="+", metavar="AUDIO",
                   help="audio file(s) and/or directories of audio files")
    p.add_argument("--model", "-m", default=None, metavar="PATH",
                   help="trained model, e.g. results/{dataset}/{exp}/seed{seed}/model.pt, or its "
                        "ONNX export (faster, leaner, no torch needed; see 'slotmpe export'); "
                        "default: the model that ships with the package (its MODEL_CARD.md: "
                        "'slotmpe info')")
    p.add_argument("-o", "--outdir", default="transcriptions", metavar="OUTDIR",
                   help="output folder, created if needed (default: %(default)s)")
    p.add_argument("--threshold", type=_probability, default=None, metavar="FLOAT",
                   help="note threshold on frame probabilities for the mixture and the slots "
                        "(default: the tuned values in thresholds.json beside the model, else "
                        "those embedded in its ONNX export, else "
                        f"{tr.DEFAULT_THRESHOLD:g} with a warning)")
    p.add_argument("--activity-threshold", type=_probability, default=None, metavar="FLOAT",
                   help="slots whose activity probability is below this are dropped "
                        f"(default: {tr.DEFAULT_ACTIVITY_THRESHOLD:g})")
    p.add_argument("--min-note-ms", type=_non_negative, default=None, metavar="MS",
                   help="drop notes shorter than this, after gap merging "
                        f"(default: {tr.DEFAULT_MIN_NOTE_MS:g} = 3 frames of 32 ms)")
    p.add_argument("--merge-gap-ms", type=_non_negative, default=None, metavar="MS",
                   help="merge same-pitch notes separated by at most this gap; 0 disables "
                        f"(default: {tr.DEFAULT_MERGE_GAP_MS:g} = 2 frames)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="where the model runs; auto = the up-to-date .onnx export beside a .pt "
                        "model when there is one (CPU), else cuda when available "
                        "(default: %(default)s)")
    p.add_argument("--max-frames", type=_non_negative_int, default=None, metavar="N",
                   help="frames per model chunk, bounding memory on long files; 0 = whole file "
                        "at once (default: 4096 frames = 131 s, "
                        "slotmpe.transcribe.options.TRANSCRIBE_MAX_FRAMES; model memory is also "
                        "bounded internally by its own exact time chunking)")
    p.add_argument("--threads", type=_non_negative_int, default=None, metavar="N",
                   help="CPU threads for torch or onnxruntime, at most the number of CPUs "
                        "(default: their default)")
    p.add_argument("--no-png", action="store_true", help="do not write the piano-roll PNG")
    p.add_argument("--minimum-frequency", type=_positive, default=None, metavar="HZ",
                   help="drop notes whose pitch lies below this frequency (Hz)")
    p.add_argument("--maximum-frequency", type=_positive, default=None, metavar="HZ",
                   help="drop notes whose pitch lies above this frequency (Hz)")
    p.add_argument("--sonify", action="store_true",
                   help="also write <name>.sonified.wav: the MIDI rendered with the General MIDI "
                        "soundfont the embedded datasets are rendered with (slot tracks mixed, "
                        "each with its program)")
    p.add_argument("--save-model-outputs", action="store_true",
                   help="also write <name>.model_output.npz: the mixture and slot probabilities "
                        "(mix (72,T), slots (K,72,T), activity, timbre, poly, frame_times, midi)")
    p.add_argument("--min-similarity", type=_similarity, default=None, metavar="COS",
                   help="named instruments: a slot whose timbre is less similar (cosine) than "
                        "this to every instrument of the training run is 'unknown' "
                        "(default: slotmpe.instruments.DEFAULT_MIN_SIMILARITY)")
    p.add_argument("--no-onnx", action="store_true",
                   help="run a .pt model with torch even when an up-to-date .onnx export lies "
                        "beside it (by default that export runs, with onnxruntime)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--stream", action="store_true",
                   help="read ONE file (or - for stdin) in blocks and print each note as a CSV row "
                        "on stdout as soon as it is final (<= 1 s of audio after its end); "
                        "bounded memory; the files are written at the end")

    pe = sub.add_parser(
        "export",
        help="export a trained model.pt to ONNX, for transcription without torch",
        description=("Export a checkpoint to one ONNX file that 'slotmpe transcribe --model\n"
                     "MODEL.onnx' runs with onnxruntime (CPU), without importing torch. The tuned\n"
                     "thresholds (thresholds.json beside the checkpoint) are embedded, and copied\n"
                     "beside the output when none is there."),
        epilog=f"example:\n  {PROG} export results/chamber/3c/seed0/model.pt -o 3c.onnx",
        formatter_class=fmt,
    )
    pe.add_argument("model", metavar="MODEL.pt", help="trained checkpoint")
    pe.add_argument("-o", "--out", default=None, metavar="MODEL.onnx",
                    help="output file (default: MODEL with the suffix .onnx)")

    pp = sub.add_parser(
        "params",
        help="print Table I: trainable parameters of the eight configurations",
        description=("Count the trainable parameters of the eight configurations (1a..3c) of a\n"
                     "width preset and print them beside the paper's counts and the difference in\n"
                     "percent. The preset: --widths, else model.widths of --config (default:\n"
                     "./config.yaml if any), else efficient. Writes a CSV only with -o."),
        epilog=f"example:\n  {PROG} params --widths wide -o table1_wide.csv",
        formatter_class=fmt,
    )
    pp.add_argument("-o", "--out", default=None, metavar="OUT",
                    help="also write the table to this CSV file (default: print only)")
    pp.add_argument("--widths", default=None, metavar="PRESET",
                    help="width preset, a key of slotmpe.models.WIDTH_PRESETS: efficient or wide "
                         "(default: from the config)")
    pp.add_argument("--config", default=None, metavar="FILE",
                    help="workflow config whose model.widths is used (default: ./config.yaml if "
                         "any)")
    pp.add_argument("--profile", default=None, help="config profile (default: the config's own)")

    pe = sub.add_parser(
        "evaluate",
        help="score a trained model on a folder dataset or manifest (Table III metrics)",
        description=(
            "Score a trained model on your own multitrack data: DATA is a folder in the 'folder'\n"
            "layout (one subfolder a piece: stems, one notes file per stem; see docs/datasets.md) or a\n"
            "manifest.parquet. The manifest and feature cache go to --work-dir, never inside\n"
            "DATA, with one folder per model (<exp>_<model hash>/metrics.json); the cache is\n"
            "reused only while DATA's files are unchanged (content hashes). The model's previous\n"
            "metrics.json is removed when a run starts (a failed run leaves none); a second run\n"
            "on the same work dir at once stops with an error (lock).\n"
            "Thresholds: those tuned on the model's own validation split (thresholds.json beside\n"
            "the model), --thresholds FILE, or --tune on DATA's val split. Slot metrics need stems."
        ),
        epilog=(
            "example:\n"
            f"  {PROG} evaluate results/chamber/3c/seed0/model.pt my_quartets/ --split all"
        ),
        formatter_class=fmt,
    )
    pe.add_argument("model", metavar="MODEL.pt", help="trained model")
    pe.add_argument("data", metavar="DATA_DIR", help="folder dataset or manifest.parquet")
    pe.add_argument("--split", choices=("test", "val", "train", "all"), default="test",
                    help="pieces to score; all = every piece (default: %(default)s)")
    pe.add_argument("--thresholds", metavar="FILE", default=None,
                    help="thresholds.json to use (default: the one beside the model)")
    pe.add_argument("--tune", action="store_true",
                    help="tune the thresholds on DATA's val split instead")
    pe.add_argument("--encoder", metavar="FILE", default=None,
                    help="timbre encoder for timbre cos (default: results/{dataset}/timbre/"
                         "encoder.pt of the model's run, if present)")
    pe.add_argument("--work-dir", metavar="DIR", default=None,
                    help="cache and output folder, outside DATA (default: ./slotmpe_eval/<DATA "
                         "name>, or the user cache dir when run from inside DATA)")
    pe.add_argument("-o", "--out", metavar="FILE", default=None,
                    help="metrics.json to write (default: WORK_DIR/<exp>_<model hash>/"
                         "metrics.json)")
    pe.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                    help="where the model runs (default: %(default)s)")
    pe.add_argument("--max-frames", type=_non_negative_int, default=None, metavar="N",
                    help="frames per model chunk on long files; 0 = whole file")
    pe.add_argument("--threads", type=_non_negative_int, default=None, metavar="N",
                    help="CPU threads for torch (default: torch's default)")
    pe.add_argument("--no-progress", action="store_true", help="no progress bar")

    pf = sub.add_parser(
        "findings",
        help="recompute the findings and Table III from a results/ tree or a published run",
        description=(
            "Rebuild findings.csv/.md, table3.csv/.md, table3_vs_paper.md, table3_notes.csv/.md\n"
            "and (where it has rows) table3_ext.csv/.md from the per-run files of DIR (a results/\n"
            "tree or a docs/runs/<run> folder) with the code the workflow uses, and print the\n"
            "findings. Rows: DIR's own table3.csv / table3_ext.csv, else every run found. Seeds:\n"
            "those DIR's tables use (environment.json of a published run, else table3.csv); a\n"
            "published run's seeds must share commit and config. Dataset aliases:\n"
            "DIR/environment.json, else the workflow config (--config). Written atomically."
        ),
        epilog=f"example:\n  {PROG} findings docs/runs/2025-01-01-abc1234 -o /tmp/check",
        formatter_class=fmt,
    )
    pf.add_argument("dir", metavar="DIR", help="results/ tree or published run folder")
    pf.add_argument("-o", "--out", default=None, metavar="OUT",
                    help="folder to write the tables to (default: DIR itself)")
    _add_alias_config_args(pf)

    pr = sub.add_parser(
        "publish-run",
        help="copy a results/ tree's tables and per-run files to docs/runs/<date>-<commit>/",
        description=(
            "Add the seeds of a finished results/ tree (those its table3.csv used) to a published\n"
            "run: every run folder's per_file.csv, metrics.json, thresholds.json and\n"
            "train_log.csv (no models), the tables rebuilt from all the run's seeds,\n"
            "environment.json (commit, config digest, CPU, versions, precision and threads from\n"
            "the checkpoints, seeds, wall and CPU time per rule from benchmarks/out/) and\n"
            "STATUS.md (seeds and rows done, the commands for the rest). A folder of another\n"
            "commit or config is refused; the folder is replaced only when complete."
        ),
        epilog=f"example:\n  {PROG} publish-run results --out docs/runs/2025-01-01-abc1234",
        formatter_class=fmt,
    )
    pr.add_argument("results", metavar="RESULTS_DIR", help="a finished results/ tree")
    pr.add_argument("-o", "--out", default=None, metavar="DIR",
                    help="published folder (default: the checkout's docs/runs/<date>-<short "
                         "commit>, reusing an existing folder of that commit)")
    _add_alias_config_args(pr)

    sub.add_parser(
        "info",
        help="print package, torch and device information and the signal constants",
        description="Print the slotmpe and torch versions, the available devices, the audio and\n"
                    "pitch constants and the eight experiment configurations.",
        formatter_class=fmt,
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``slotmpe`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "transcribe":
            return run_transcribe(
                args.audio,
                args.model,
                args.outdir,
                threshold=args.threshold,
                activity_threshold=args.activity_threshold,
                min_note_ms=args.min_note_ms,
                merge_gap_ms=args.merge_gap_ms,
                device=args.device,
                max_frames=args.max_frames,
                threads=args.threads,
                write_png=not args.no_png,
                progress=False if args.no_progress else None,
                debug=args.debug,
                stream=args.stream,
                minimum_frequency=args.minimum_frequency,
                maximum_frequency=args.maximum_frequency,
                sonify=args.sonify,
                save_model_outputs=args.save_model_outputs,
                min_similarity=args.min_similarity,
                prefer_onnx=not args.no_onnx,
            )
        if args.command == "export":
            return run_export(args.model, args.out)
        if args.command == "params":
            return run_params(args.out, args.widths, args.config, args.profile)
        if args.command == "info":
            return run_info()
        if args.command in ("findings", "publish-run"):
            from slotmpe.results.commands import run_findings, run_publish

            if args.command == "findings":
                return run_findings(args.dir, args.out, args.config, args.profile)
            return run_publish(args.results, args.out, args.config, args.profile)
        if args.command == "evaluate":
            return run_evaluate(
                args.model, args.data, args.work_dir, split=args.split,
                thresholds=args.thresholds, tune=args.tune, encoder=args.encoder, out=args.out,
                device=args.device, max_frames=args.max_frames, threads=args.threads,
                progress=not args.no_progress,
            )
    except CLIError as exc:
        if args.debug:
            raise
        _err(str(exc))
        return 1
    except KeyboardInterrupt:
        _err("interrupted")
        return 130
    except Exception as exc:
        if args.debug:
            raise
        _err(f"{type(exc).__name__}: {_one_line(exc)} (rerun with --debug for details)")
        return 1
    parser.error(f"unknown command {args.command!r}")  # pragma: no cover - argparse guards this
    return 2  # pragma: no cover


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
