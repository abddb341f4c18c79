"""Benchmark of the training loops: windows/s of the slot model's full step (1a, 2b, 3c) and
stems/s of the timbre encoder's step.

Measured (issue 27, step 1; 2026-12-06, AMD EPYC (Zen 5, family 26) [avx2 avx512f avx512_bf16],
torch 2.14.1, fp32, one thread, batch 8, 23-frame windows, AdamW, channels-last; two one-thread
training jobs and niced test runs shared the 2 cores, so absolute rates are low and only the
interleaved ratios count). ``--threads 1 --exps --variants --timbre-steps 0 --exact-reps 8``,
windows per CPU-second, best round (median of the per-round ratios):

==========================  ==============  ==============  ==================================
ISA                         2b before/after 3c before/after ratio 2b / 3c
==========================  ==============  ==============  ==================================
AVX-512 (native)            52.1 / 72.6     49.7 / 68.6     1.39x (1.38) / 1.38x (1.39)
AVX2 (emulated, see below)  44.9 / 62.8     39.8 / 54.4     1.40x (1.41) / 1.37x (1.40)
==========================  ==============  ==============  ==================================

Other runs under other loads gave 1.38-1.55x (2b) and 1.30-1.47x (3c); on the real chamber cache
(``--features data/chamber/features``) 1.25x (median 1.30) and 1.42x (1.45). The gain is the factored
token map (``slotmpe.models.token_map``; ``--ab-variants dense-tokens``, the current code with it
off, runs at 1.00x); the decoder's ReLU in the convolutions' layout and its last 1x1 layer as a
matrix-vector product are within the noise. ``torch.compile`` of the current model: 1.00x on 2b
and 3c (one graph, no breaks; 20 CPU-s of this process to compile and warm up, ~1 min wall with
inductor's compile workers); the contiguous layout (``nchw``): 1.16-1.19x,
i.e. channels-last stays faster on this CPU. **2x is not reached**; what holds it back, from
``--profile 2b 3c`` (per-operator least self time over 6 profiled steps, 3c after, 113 ms):
convolutions 54 ms (48 %: backward 32, forward 22; oneDNN AVX-512 kernels at ~110-150 GFLOP/s on
8/16-channel maps, the decoder's two 3x3 layers over B*K = 64 slot maps and the trunk's 39x3
layer the largest), linear layers (mm/addmm) 20 ms (18 %; the slot FFN 192-2576-192 three times
per step is 12 ms of it: MKL runs at its AVX2 speed, ~104 GFLOP/s, on this AMD CPU, where
oneDNN's ``_linear_pointwise`` reaches ~210), elementwise/reductions/copies 26 ms (23 %),
token products 8 ms (7 %), normalisation 6 ms (5 %). 2x (before: ~161 ms per step) needs
<= 80 ms: with the convolutions at 54 ms, everything else (59 ms now) would have to shrink to
~26 ms, i.e. by 56 %; the convolutions alone are two thirds of that budget. Losses + Hungarian matching cost 1.5-1.7 ms per step
and the data loader 0.7-0.9 ms of CPU per batch (real chamber cache: 0.8 ms, 3.3 ms in the
first pass while the memory maps fault in): neither is a bottleneck. Routing the linear layers
through oneDNN (``torch.ops.mkldnn._linear_pointwise`` with a hand-written backward: the FFN
alone 3.9 -> 2.6 ms per iteration) gave 1.01x (2b) / 0.98-1.09x (3c) in the whole step, so it
was not kept. The AVX2 rows: the same CPU
with ``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2`` (the kernels of an AVX2-only EPYC).

What it measures. For each experiment and each variant (``default``: the default
:class:`TrainConfig`, i.e. what training does; ``fp32``: plain NCHW layout; optionally
channels-last, bf16 autocast (``precision``; fast only with native bf16: CUDA, AMX, AVX-512 BF16),
torch.compile) it prints, at batch 8 and 23-frame windows:

* ``data``: windows/s of the real :class:`slotmpe.data.WindowDataset` + DataLoader alone
  (HCQT slicing, target assembly, collation; ``--workers`` processes),
* ``step``: windows/s of :func:`slotmpe.training.train_step` (forward, Hungarian matching, all
  loss terms, backward, AdamW) on one prefetched batch, by wall time and by process CPU time
  divided by the thread count (the figure for otherwise idle cores),
* ``epoch``: windows/s of :func:`slotmpe.training.train_one_epoch` (loader + steps), the number
  that decides wall time,
* the loss after the timed steps (a variant that "helps" must not change it much),
* ``timbre``: stems/s of :func:`slotmpe.timbre.train_step` (batch 32 stems x 4 views of 46 frames:
  augmentation, fast-HCQT, encoder + projection, multi-view loss, backward, AdamW).

* before/after (``--exact-exps``, ``--exact-reps``, ``--exact-steps``): the step rate of the model
  code at ``--baseline-rev`` (default: before issue 27, imported from git beside the current
  code, :func:`load_baseline`) against the current code and the ``--ab-variants``, in one process
  from the same parameters and batch, interleaved over ``--exact-reps`` rounds of
  ``--exact-steps`` steps, by process CPU time, fp32 under :func:`deterministic_mode`
  (:func:`bench_ab`); the ratio of the best rounds (the least disturbed on a shared machine) and
  the median of the per-round ratios, and the largest relative difference of the outputs and of
  the gradients, after against before, from the same state.
* ``--profile EXP ...``: where a step's CPU time goes, before and after (:func:`profile_step`).

The CPU model and flags (:func:`slotmpe.precision.cpu_summary`) and the ATen kernel level are
printed first; ``ATEN_CPU_CAPABILITY`` / ``ONEDNN_MAX_CPU_ISA`` in the environment are echoed.

``--device cuda`` runs the same on the GPU (and stops with a clear message when none is present).

Without ``--features`` a small synthetic feature cache (random CQT, sustained-note rolls, the
CONTRACTS keys) is written to a temporary folder, so the benchmark runs anywhere.

Usage: ``python benchmarks/bench_train.py [--exps 1a 2b 3c] [--threads 2] [--steps 6]
[--variants fp32 bf16 channels_last compile] [--features data/chamber/features] [--workers 0]
[--timbre-steps 3] [--device cpu|cuda] [--exact-exps 2b 3c] [--exact-reps 8] [--exact-steps 1]
[--baseline-rev REV] [--ab-variants compile nchw dense-tokens] [--profile 2b 3c]``
"""

from __future__ import annotations

import argparse
import atexit
import copy
import importlib
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from slotmpe.constants import EMBED_DIM, FAMILIES, FAMILY_INDEX, N_PITCHES
from slotmpe.data import WindowDataset
from slotmpe.experiments import default_loss_weights, get_experiment
from slotmpe.features import INDEX_COLUMNS, INDEX_NAME, N_WIDE
from slotmpe.losses import compute_losses
from slotmpe.models import build_model
from slotmpe.precision import cpu_summary, resolve_precision
from slotmpe.training import (
    TrainConfig,
    batch_to,
    deterministic_mode,
    make_optimizer,
    train_one_epoch,
    train_step,
)

VARIANTS = ("default", "fp32", "channels_last", "bf16", "bf16+channels_last", "compile")
_INSTR = (("violin", "strings"), ("flute", "woodwinds"), ("trumpet", "brass"), ("piano", "keyboards"))


def write_synthetic_cache(folder: Path, n_pieces: int = 4, n_frames: int = 600, seed: int = 0
                          ) -> dict[str, np.ndarray]:
    """Write ``n_pieces`` train pieces (4 sources each) + index; returns random embeddings."""
    rng = np.random.default_rng(seed)
    rows, emb = [], {}
    for i in range(n_pieces):
        pid, n_src = f"s{i}", 4
        rolls = np.zeros((n_src, N_PITCHES, n_frames), dtype=bool)
        for s in range(n_src):
            t = 0
            while t < n_frames:
                d = int(rng.integers(4, 20))
                rolls[s, 12 * s + int(rng.integers(0, 24)), t:t + d] = rng.random() < 0.8
                t += d
        fam = np.zeros((len(FAMILIES), N_PITCHES, n_frames), dtype=bool)
        for s in range(n_src):
            fam[FAMILY_INDEX[_INSTR[s][1]]] |= rolls[s]
        mix = rolls.any(0)
        ids = [f"{pid}_{s}" for s in range(n_src)]
        np.savez(
            folder / f"{pid}.npz",
            cqt=rng.random((N_WIDE, n_frames)).astype(np.float16),
            stem_cqt=np.zeros((0, N_WIDE, n_frames), np.float16),
            source_rolls=rolls, family_rolls=fam, mix_roll=mix,
            poly=np.minimum(mix.sum(0), 7).astype(np.uint8),
            source_poly=rolls.sum(1).astype(np.uint8),
            track_ids=np.array(ids), instruments=np.array([a for a, _ in _INSTR]),
            families=np.array([f for _, f in _INSTR]), has_stems=np.array(False),
            n_frames=np.array(n_frames),
        )
        rows.append((pid, "train", n_frames, n_src))
        for t in ids:
            e = rng.normal(size=EMBED_DIM).astype(np.float32)
            emb[t] = e / np.linalg.norm(e)
    pd.DataFrame(rows, columns=list(INDEX_COLUMNS)).to_csv(folder / INDEX_NAME, index=False)
    return emb


def bench_data(ds: WindowDataset, batch: int, workers: int, n_batches: int) -> float:
    """Windows/s of loading ``n_batches`` batches."""
    loader = DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers)
    it = iter(loader)
    next(it)  # start-up (workers, first file maps)
    t0 = time.perf_counter()
    n = 0
    for _ in range(n_batches):
        n += next(it)["x"].shape[0]
    return n / (time.perf_counter() - t0)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_variant(exp_name: str, variant: str, ds: WindowDataset, cfg: TrainConfig, steps: int
                  ) -> tuple[float, float, float, float]:
    """``(step windows/s, step windows per CPU-second x threads, epoch windows/s, loss after the
    timed steps)`` of one variant. The CPU-time figure is what the step would reach on
    ``threads`` otherwise idle cores; it is much less disturbed by other jobs on a shared machine.
    """
    device = torch.device(cfg.device or "cpu")
    prec = resolve_precision(cfg.precision, device)
    exp = get_experiment(exp_name)
    w = default_loss_weights(exp)
    torch.manual_seed(0)
    model = build_model(exp_name).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    run_model = torch.compile(model) if cfg.compile else model
    try:  # the optimiser train_experiment uses (fused AdamW where available)
        from slotmpe.training import make_optimizer
        opt = make_optimizer(model, cfg.lr, cfg.weight_decay)
    except ImportError:  # older checkouts
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    batch = batch_to(next(iter(DataLoader(ds, batch_size=cfg.batch_size))), device, cfg.channels_last)
    for _ in range(2):  # warm-up (and compilation)
        train_step(run_model, batch, exp, w, opt, cfg.timbre_match_weight, precision=prec)
    _sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        losses = train_step(run_model, batch, exp, w, opt, cfg.timbre_match_weight, precision=prec)
    _sync(device)
    step_ws = steps * cfg.batch_size / (time.perf_counter() - t0)
    cpu_ws = steps * cfg.batch_size / ((time.process_time() - c0) / torch.get_num_threads())
    ds.set_epoch(1)
    sub = torch.utils.data.Subset(ds, list(range(steps * cfg.batch_size)))
    loader = DataLoader(sub, batch_size=cfg.batch_size, shuffle=True,
                        num_workers=cfg.num_workers)
    t0 = time.perf_counter()
    train_one_epoch(run_model, loader, exp, w, opt, cfg, device)
    _sync(device)
    epoch_ws = len(sub) / (time.perf_counter() - t0)
    return step_ws, cpu_ws, epoch_ws, float(losses["total"].detach())


BASELINE_REV = "6ec3eb4"
"""The model code before issue 27 (dense token map, fused token gradient, conv decoder tail)."""

AB_VARIANTS = ("compile", "nchw", "dense-tokens")
"""Options measured beside ``after`` in the interleaved before/after comparison: ``compile``
(``torch.compile`` of the current model), ``nchw`` (the current model in the contiguous layout)
and ``dense-tokens`` (the current model with ``slot_attention.factored_tokens`` off)."""


def load_baseline(rev: str, repo: Path | None = None) -> ModuleType:
    """The package ``slotmpe.models`` as it was at git revision ``rev``, imported under another
    name (``slotmpe_models_<rev>``) beside the current one, so both run in one process.

    Its modules come from ``git show rev:src/slotmpe/models/<file>``; their imports of
    ``slotmpe.models`` are pointed at the copy (the rest of ``slotmpe`` is shared). Raises
    ``SystemExit`` with the git error when ``repo`` is not a git checkout that has ``rev``.
    """
    repo = repo or Path(__file__).resolve().parents[1]
    name = "slotmpe_models_" + "".join(c if c.isalnum() else "_" for c in rev)
    if name in sys.modules:
        return sys.modules[name]

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True,
                                  check=True).stdout
        except (OSError, subprocess.CalledProcessError) as e:
            err = getattr(e, "stderr", "") or str(e)
            raise SystemExit(f"--baseline-rev {rev}: cannot read the model code from git in "
                             f"{repo}: {err.strip()}") from e

    root = Path(tempfile.mkdtemp(prefix="slotmpe_baseline_"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    pkg = root / name
    pkg.mkdir()
    for f in git("ls-tree", "--name-only", rev, "src/slotmpe/models/").split():
        if f.endswith(".py"):
            (pkg / Path(f).name).write_text(git("show", f"{rev}:{f}").replace("slotmpe.models", name))
    sys.path.insert(0, str(root))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(root))


def _rel_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """Largest difference of ``a`` against ``b`` relative to each tensor's largest magnitude of
    ``b``, at least 1e-3 of the largest of all (a gradient that is zero in theory, such as the
    query bias's, holds only rounding noise)."""
    floor = 1e-3 * max(float(v.abs().max()) for v in b.values())
    return max(float((a[k] - v).abs().max() / v.abs().max().clamp_min(floor))
               for k, v in b.items())


def _outputs_and_grads(model: torch.nn.Module, batch: dict, exp_name: str
                       ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The model's finite outputs and every parameter gradient of the training loss."""
    exp = get_experiment(exp_name)
    model.zero_grad(set_to_none=True)
    model.train()
    out = model(batch["x"])
    compute_losses(exp, out, batch, default_loss_weights(exp), 1.0)["total"].backward()
    outs = {k: v.detach().clone() for k, v in out.items() if torch.isfinite(v).all()}
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()
             if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return outs, grads


def bench_ab(exp_name: str, ds: WindowDataset, baseline: ModuleType, variants: Sequence[str],
             steps: int, reps: int) -> dict[str, object]:
    """Before/after step rates of one experiment, interleaved in this process, by CPU time.

    ``before``: the model code of the baseline revision; ``after``: the current code; plus the
    ``variants`` (:data:`AB_VARIANTS`). All start from the same parameters (the baseline loads
    the current model's state dict: the checkpoint format is unchanged), run fp32 under
    :func:`deterministic_mode` in the layout of the default :class:`TrainConfig` (channels-last)
    with the optimiser of :func:`make_optimizer`, on one prefetched batch. Every configuration is
    warmed up (``compile``: its compile time is the CPU time of its first two steps), then
    ``reps`` rounds each run ``steps`` steps of every configuration, the order rotated every
    round.

    Returns ``{"times": {config: [CPU s per step, one per round]}, "compile_s": float | None,
    "out_diff": float, "grad_diff": float}``: the largest relative differences (see
    :func:`_rel_diff`) of the outputs and of the gradients, after against before, from the same
    state and batch.
    """
    cfg = TrainConfig(batch_size=8, device="cpu")
    exp = get_experiment(exp_name)
    w = default_loss_weights(exp)
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    torch.manual_seed(0)
    ref = build_model(exp_name)
    state = copy.deepcopy(ref.state_dict())
    batch = batch_to(next(iter(DataLoader(ds, batch_size=cfg.batch_size))), "cpu",
                     cfg.channels_last)
    models: dict[str, torch.nn.Module] = {}
    for name in ("before", "after", *variants):
        m = baseline.build_model(exp_name) if name == "before" else build_model(exp_name)
        m.load_state_dict(state)
        m = m.to(memory_format=torch.contiguous_format if name == "nchw" else fmt)
        if name == "dense-tokens":
            m.slot_attention.factored_tokens = False
        models[name] = m
    out: dict[str, object] = {"compile_s": None}
    with deterministic_mode("cpu"):
        o_b, g_b = _outputs_and_grads(models["before"], batch, exp_name)
        o_a, g_a = _outputs_and_grads(models["after"], batch, exp_name)
        out["out_diff"], out["grad_diff"] = _rel_diff(o_a, o_b), _rel_diff(g_a, g_b)
        runs = {}
        for name, m in models.items():
            opt = make_optimizer(m, cfg.lr, cfg.weight_decay)
            run_model = torch.compile(m) if name == "compile" else m
            b = batch if name != "nchw" else {**batch, "x": batch["x"].contiguous()}
            runs[name] = (run_model, opt, b)
            c0 = time.process_time()
            for _ in range(2):  # warm-up (and compilation)
                train_step(run_model, b, exp, w, opt, cfg.timbre_match_weight, cfg.grad_clip,
                           "fp32")
            if name == "compile":
                out["compile_s"] = time.process_time() - c0
        names = list(runs)
        times: dict[str, list[float]] = {k: [] for k in names}
        for r in range(reps):
            for name in names[r % len(names):] + names[: r % len(names)]:
                run_model, opt, b = runs[name]
                c0 = time.process_time()
                for _ in range(steps):
                    train_step(run_model, b, exp, w, opt, cfg.timbre_match_weight,
                               cfg.grad_clip, "fp32")
                times[name].append((time.process_time() - c0) / steps)
    out["times"] = times
    return out


def print_ab(exp_name: str, res: dict[str, object], batch: int = 8) -> None:
    """One line per configuration: windows per CPU-second and the ratio to ``before``."""
    times: dict[str, list[float]] = res["times"]  # type: ignore[assignment]
    base = np.array(times["before"])
    for name, t in times.items():
        t = np.array(t)
        line = (f"{exp_name} {name:<13}: {batch / t.min():6.1f} windows per CPU-second "
                f"(best round; median {batch / np.median(t):6.1f})")
        if name != "before":
            per = base / t
            line += (f", {base.min() / t.min():.2f}x before (best against best; median of the "
                     f"per-round ratios {np.median(per):.2f}, {per.min():.2f}-{per.max():.2f})")
        if name == "compile" and res["compile_s"] is not None:
            line += f"; compile + 2 warm-up steps {res['compile_s']:.0f} CPU-s"
        print(line, flush=True)
    print(f"{exp_name} exactness     : after against before from the same state and batch, "
          f"largest relative difference of the outputs {res['out_diff']:.1e}, of the "
          f"gradients {res['grad_diff']:.1e}", flush=True)


_OP_CLASSES = (
    ("convolution backward", ("convolution_backward",)),
    ("convolution forward", ("convolution", "mkldnn_convolution")),
    ("bmm (token products)", ("bmm",)),
    ("mm / addmm (linear layers)", ("mm", "addmm", "linear")),
    ("normalisation", ("batch_norm", "layer_norm")),
    ("pooling", ("pool",)),
)


def _op_class(name: str) -> str:
    op = name.removeprefix("aten::")
    for label, keys in _OP_CLASSES:
        if any(k == op or (k in op and len(k) > 4) for k in keys):
            return label
    return "elementwise, reductions, copies, other"


def profile_step(exp_name: str, ds: WindowDataset, steps: int, top: int,
                 model_factory: Callable[[str], torch.nn.Module] | None = None,
                 label: str = "after") -> None:
    """Print where a training step's CPU time goes: per operator, the least self time over
    ``steps`` separately profiled steps (the least disturbed by other jobs; shapes are not
    recorded, which would inflate the convolutions), grouped into classes and the ``top`` single
    operators; plus the step's losses + Hungarian matching and the data loader per batch."""
    from torch.profiler import ProfilerActivity, profile

    from slotmpe.losses import compute_losses as losses_fn

    cfg = TrainConfig(batch_size=8, device="cpu")
    exp = get_experiment(exp_name)
    w = default_loss_weights(exp)
    torch.manual_seed(0)
    model = (model_factory or build_model)(exp_name)
    model = model.to(memory_format=torch.channels_last if cfg.channels_last
                     else torch.contiguous_format)
    opt = make_optimizer(model, cfg.lr, cfg.weight_decay)
    loader = DataLoader(ds, batch_size=cfg.batch_size, shuffle=True)
    batch = batch_to(next(iter(loader)), "cpu", cfg.channels_last)
    best: dict[str, float] = {}
    calls: dict[str, int] = {}
    step_cpu, loss_cpu = [], []
    with deterministic_mode("cpu"):
        for _ in range(2):
            train_step(model, batch, exp, w, opt, cfg.timbre_match_weight, cfg.grad_clip, "fp32")
        for _ in range(steps):
            c0 = time.process_time()
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                train_step(model, batch, exp, w, opt, cfg.timbre_match_weight, cfg.grad_clip,
                           "fp32")
            step_cpu.append(time.process_time() - c0)
            for e in prof.key_averages():
                best[e.key] = min(best.get(e.key, math.inf), e.self_cpu_time_total / 1e6)
                calls[e.key] = e.count
            with torch.no_grad():
                out = model(batch["x"])
            c0 = time.process_time()
            losses_fn(exp, out, batch, w, cfg.timbre_match_weight)
            loss_cpu.append(time.process_time() - c0)
    c0, n = time.process_time(), 0
    for i, _ in enumerate(loader):
        n = i + 1
        if n == 20:
            break
    data_s = (time.process_time() - c0) / max(n, 1)
    total = sum(best.values())
    print(f"profile {exp_name} ({label}): {min(step_cpu) * 1e3:.1f} ms CPU per profiled step "
          f"(least of {steps}); sum of the per-operator least self times {total * 1e3:.1f} ms")
    classes: dict[str, float] = {}
    for k, v in best.items():
        classes[_op_class(k)] = classes.get(_op_class(k), 0.0) + v
    for label_c, v in sorted(classes.items(), key=lambda kv: -kv[1]):
        print(f"  {label_c:<40s} {v * 1e3:7.1f} ms {100 * v / total:5.1f} %")
    print(f"  (within the step: losses + Hungarian matching {min(loss_cpu) * 1e3:.1f} ms; "
          f"outside it: data loader {data_s * 1e3:.1f} ms per batch of 8)")
    for k, v in sorted(best.items(), key=lambda kv: -kv[1])[:top]:
        print(f"    {k:<42s} {v * 1e3:7.2f} ms {100 * v / total:5.1f} %  {calls[k]:4d} calls")


def bench_timbre(device: torch.device, steps: int, stems: int = 32, seed: int = 0
                 ) -> tuple[float, float, float]:
    """``(stems/s, stems per CPU-second x threads, loss after the timed steps)`` of the timbre
    encoder's training step on random wide-CQT views ``(stems, 4, N_WIDE, 46)``."""
    from slotmpe.models.timbre_encoder import TimbreEncoder
    from slotmpe.timbre import TimbreConfig, silence_level
    from slotmpe.timbre import train_step as timbre_step

    cfg = TimbreConfig(device=str(device))
    torch.manual_seed(seed)
    model = TimbreEncoder(**cfg.model).to(device)
    if getattr(cfg, "channels_last", False):  # as train_encoder does
        model = model.to(memory_format=torch.channels_last)
    try:  # the optimiser train_encoder uses (fused AdamW where available)
        from slotmpe.training import make_optimizer
        opt = make_optimizer(model, cfg.lr, cfg.weight_decay)
    except ImportError:  # older checkouts
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    views = torch.from_numpy(rng.random((stems, cfg.views, N_WIDE, cfg.window), dtype=np.float32))
    silence = silence_level()
    timbre_step(model, views, opt, cfg, silence, gen)  # warm-up
    _sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        terms = timbre_step(model, views, opt, cfg, silence, gen)
    _sync(device)
    wall = time.perf_counter() - t0
    cpu = (time.process_time() - c0) / torch.get_num_threads()
    return steps * stems / wall, steps * stems / cpu, float(terms["total"].detach())


def main(exps: Sequence[str], threads: int, steps: int, variants: Sequence[str],
         features: Path | None, workers: int, timbre_steps: int = 3, device: str = "cpu",
         exact_exps: Sequence[str] = ("2b", "3c"), exact_reps: int = 8, exact_steps: int = 1,
         baseline_rev: str = BASELINE_REV, ab_variants: Sequence[str] = (),
         profile: Sequence[str] = (), profile_steps: int = 6, profile_top: int = 25) -> None:
    """Run the benchmark and print one line per (experiment, variant) and one for the encoder."""
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {device}: no CUDA device is available here "
                         f"(torch {torch.__version__}, CUDA build {torch.version.cuda}); use --device cpu")
    torch.set_num_threads(threads)
    where = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU"
    isa = ", ".join(f"{k}={os.environ[k]}" for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")
                    if k in os.environ)
    print(f"torch {torch.__version__}, device {device} ({where}), CPU threads "
          f"{torch.get_num_threads()}, batch 8, W 23, workers {workers}")
    print(f"CPU: {cpu_summary()}; ATen kernels {torch.backends.cpu.get_cpu_capability()}"
          + (f" ({isa})" if isa else ""))
    with tempfile.TemporaryDirectory() as tmp:
        if features is None:
            features = Path(tmp)
            emb = write_synthetic_cache(features)
            print(f"synthetic feature cache in {features}")
        else:
            emb = None
        ds = WindowDataset(features, "train", train=True, windows_per_epoch=8 * max(12, steps + 1),
                           seed=0, embeddings=emb)
        print(f"data   : {bench_data(ds, 8, workers, 10):8.1f} windows/s (loader alone)")
        for exp in exps:
            for v in variants:
                if v == "default":  # what train_experiment does with the default TrainConfig
                    cfg = TrainConfig(batch_size=8, num_workers=workers, device=device)
                else:
                    cfg = TrainConfig(batch_size=8, num_workers=workers, device=device,
                                      channels_last="channels_last" in v,
                                      precision="bf16" if "bf16" in v else "fp32",
                                      compile=v == "compile")
                step_ws, cpu_ws, epoch_ws, loss = bench_variant(exp, v, ds, cfg, steps)
                print(f"{exp} {v:<19}: step {step_ws:7.1f} windows/s ({cpu_ws:7.1f} by CPU time), "
                      f"epoch (loader+step) "
                      f"{epoch_ws:7.1f} windows/s, loss after {steps + 2} steps {loss:.4f}",
                      flush=True)
        if exact_reps > 0 and exact_exps:
            if dev.type != "cpu":
                raise SystemExit("the before/after comparison (--exact-reps) runs on the CPU; "
                                 "pass --exact-reps 0 with --device cuda")
            baseline = load_baseline(baseline_rev)
            print(f"before/after: model code of {baseline_rev} against this checkout, fp32, "
                  f"channels-last, {torch.get_num_threads()} thread(s), CPU time of the whole "
                  f"training step, {exact_reps} interleaved rounds of {exact_steps} step(s)",
                  flush=True)
            for exp in exact_exps:
                print_ab(exp, bench_ab(exp, ds, baseline, ab_variants, exact_steps, exact_reps))
        for exp in profile:
            if profile_steps > 0:
                baseline = load_baseline(baseline_rev)
                profile_step(exp, ds, profile_steps, profile_top, baseline.build_model,
                             f"before: {baseline_rev}")
                profile_step(exp, ds, profile_steps, profile_top)
    if timbre_steps > 0:
        sps, cps, loss = bench_timbre(dev, timbre_steps)
        print(f"timbre encoder        : step {sps:7.1f} stems/s ({cps:7.1f} by CPU time), "
              f"32 stems x 4 views x 46 frames, loss after {timbre_steps + 1} steps {loss:.4f}",
              flush=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--exps", nargs="*", default=["1a", "2b", "3c"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--variants", nargs="*", default=["default"], choices=VARIANTS,
                    help="default: TrainConfig's defaults; fp32: plain layout, no compile")
    ap.add_argument("--features", type=Path, default=None)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--timbre-steps", type=int, default=3,
                    help="timed steps of the timbre encoder (0: skip it)")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    ap.add_argument("--exact-exps", nargs="*", default=["2b", "3c"],
                    help="experiments of the before/after comparison")
    ap.add_argument("--exact-reps", type=int, default=8,
                    help="interleaved rounds of the before/after comparison (0: skip it)")
    ap.add_argument("--exact-steps", type=int, default=1, help="timed steps per round")
    ap.add_argument("--baseline-rev", default=BASELINE_REV,
                    help="git revision whose src/slotmpe/models is 'before' (default: the code "
                         "before issue 27)")
    ap.add_argument("--ab-variants", nargs="*", default=[], choices=AB_VARIANTS,
                    help="options measured beside 'after' in the same rounds")
    ap.add_argument("--profile", nargs="*", default=[],
                    help="experiments whose step is profiled, before and after")
    ap.add_argument("--profile-steps", type=int, default=6)
    ap.add_argument("--profile-top", type=int, default=25)
    a = ap.parse_args()
    main(a.exps, a.threads, a.steps, a.variants, a.features, a.workers, a.timbre_steps, a.device,
         a.exact_exps, a.exact_reps, a.exact_steps, a.baseline_rev, a.ab_variants, a.profile,
         a.profile_steps, a.profile_top)
