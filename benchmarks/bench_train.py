"""Benchmark of the training loops: windows/s of the slot model's full step (1a, 2b, 3c) and
stems/s of the timbre encoder's step.

For each experiment and each variant (``default``: the default :class:`TrainConfig`, i.e. what
training does; ``fp32``: plain NCHW layout; optionally channels-last, bf16 autocast (``precision``; fast only with native bf16: CUDA, AMX, AVX-512 BF16),
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

* ``exact``: the before/after ratio of the step rate for the exact speed-ups, measured in one
  process on one model and batch, the configurations interleaved over ``--exact-reps``
  repetitions of ``--exact-steps`` steps (step time by process CPU time on the CPU, by wall time
  on CUDA; the ratio of the best repetitions, the least disturbed on a shared machine, and the
  median of the per-repetition ratios), under the deterministic mode training runs in
  (:func:`slotmpe.training.deterministic_mode`): (a) ``fused``: the token map's gradient in one
  batched product (``SlotAttention.fused_token_grad``) against the plain autograd products,
  (b) ``no-fill``: ``torch.utils.deterministic.fill_uninitialized_memory = False`` against
  ``True`` (torch's default; with deterministic algorithms on, every ``torch.empty`` is filled
  with NaN), (c) both together. Ratio > 1: faster. It also prints the largest relative difference
  of the parameters after one step from the same state (before against both).

``--device cuda`` runs the same on the GPU (and stops with a clear message when none is present).

Without ``--features`` a small synthetic feature cache (random CQT, sustained-note rolls, the
CONTRACTS keys) is written to a temporary folder, so the benchmark runs anywhere.

Usage: ``python benchmarks/bench_train.py [--exps 1a 2b 3c] [--threads 2] [--steps 6]
[--variants fp32 bf16 channels_last compile] [--features data/chamber/features] [--workers 0]
[--timbre-steps 3] [--device cpu|cuda] [--exact-exps 2b 3c] [--exact-reps 8] [--exact-steps 1]``
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from slotmpe.constants import EMBED_DIM, FAMILIES, FAMILY_INDEX, N_PITCHES
from slotmpe.data import WindowDataset
from slotmpe.experiments import default_loss_weights, get_experiment
from slotmpe.features import INDEX_COLUMNS, INDEX_NAME, N_WIDE
from slotmpe.models import build_model
from slotmpe.precision import resolve_precision
from slotmpe.training import (
    TrainConfig,
    batch_to,
    deterministic_mode,
    forward_losses,
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


# (fused token gradient, fill uninitialised memory) of each configuration of bench_exact
EXACT_CONFIGS: dict[str, tuple[bool, bool]] = {
    "before": (False, True),
    "fused": (True, True),
    "no-fill": (False, False),
    "both": (True, False),
}


def _set_exact(model: torch.nn.Module, fused: bool, fill: bool) -> None:
    """Switch the exact speed-ups: the fused token gradient of every slot-attention module and
    torch's filling of uninitialised memory."""
    for mod in model.modules():
        if hasattr(mod, "fused_token_grad"):
            mod.fused_token_grad = fused
    torch.utils.deterministic.fill_uninitialized_memory = fill


def bench_exact(exp_name: str, ds: WindowDataset, steps: int, reps: int, device: str = "cpu"
                ) -> tuple[dict[str, tuple[float, float, float, float]], float, bool]:
    """Before/after step-rate ratios of the exact speed-ups (see the module docstring).

    Returns ``{config: (ratio of the best (least disturbed) repetition times before/config,
    median, min, max of the per-repetition ratios)}`` for ``fused``, ``no-fill`` and ``both``; the largest difference of any parameter
    gradient, fused against plain token products from the same state, relative to that
    gradient's largest magnitude (at least 1e-3 of the largest of all: some gradients are zero in
    theory and hold only rounding noise); and whether one step with the fill off gives
    bit-identical parameters.
    """
    dev = torch.device(device)
    cfg = TrainConfig(batch_size=8, device=device)
    prec = "fp32"  # the exact speed-ups are measured in float32, as in issue 21
    exp = get_experiment(exp_name)
    w = default_loss_weights(exp)
    torch.manual_seed(0)
    model = build_model(exp_name).to(dev)
    try:  # the optimiser train_experiment uses (fused AdamW where available)
        from slotmpe.training import make_optimizer
        opt = make_optimizer(model, cfg.lr, cfg.weight_decay)
    except ImportError:  # older checkouts
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    batch = batch_to(next(iter(DataLoader(ds, batch_size=cfg.batch_size))), dev)
    fill_before = torch.utils.deterministic.fill_uninitialized_memory
    names = list(EXACT_CONFIGS)
    times: dict[str, list[float]] = {k: [] for k in names}

    def step() -> None:
        train_step(model, batch, exp, w, opt, cfg.timbre_match_weight, precision=prec)

    def clock() -> float:
        _sync(dev)
        return time.perf_counter() if dev.type == "cuda" else time.process_time()

    try:
        with deterministic_mode(dev):
            # exactness: gradients of the fused against the plain token products (same state)
            grads = {}
            for fused in (False, True):
                _set_exact(model, fused, True)
                model.zero_grad(set_to_none=True)
                forward_losses(model, batch, exp, w, cfg.timbre_match_weight, prec
                               )["total"].backward()
                grads[fused] = {n: p.grad.clone() for n, p in model.named_parameters()
                                if p.grad is not None}
            model.zero_grad(set_to_none=True)
            floor = 1e-3 * max(float(g.abs().max()) for g in grads[False].values())
            grad_diff = max(
                float((grads[True][n] - g).abs().max() / g.abs().max().clamp_min(floor))
                for n, g in grads[False].items()
            )
            # fill off: the parameters after one step from the same state are bit-identical
            state = copy.deepcopy((model.state_dict(), opt.state_dict()))
            after = {}
            for k in ("before", "no-fill"):
                model.load_state_dict(state[0])
                opt.load_state_dict(state[1])
                _set_exact(model, *EXACT_CONFIGS[k])
                step()
                after[k] = [p.detach().clone() for p in model.parameters()]
            same = all(torch.equal(a, b) for a, b in zip(*after.values(), strict=True))
            for k in names:  # warm-up of every configuration
                _set_exact(model, *EXACT_CONFIGS[k])
                step()
            for r in range(reps):  # interleaved, the order rotated every repetition
                for k in names[r % len(names):] + names[: r % len(names)]:
                    _set_exact(model, *EXACT_CONFIGS[k])
                    t0 = clock()
                    for _ in range(steps):
                        step()
                    times[k].append(clock() - t0)
    finally:
        _set_exact(model, True, fill_before)
    base = np.array(times["before"])
    out = {}
    for k in names[1:]:
        per = base / np.array(times[k])
        out[k] = (float(base.min() / np.min(times[k])), float(np.median(per)), float(per.min()),
                  float(per.max()))
    return out, grad_diff, same


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
         exact_exps: Sequence[str] = ("2b", "3c"), exact_reps: int = 8, exact_steps: int = 1
         ) -> None:
    """Run the benchmark and print one line per (experiment, variant) and one for the encoder."""
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {device}: no CUDA device is available here "
                         f"(torch {torch.__version__}, CUDA build {torch.version.cuda}); use --device cpu")
    torch.set_num_threads(threads)
    where = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU"
    print(f"torch {torch.__version__}, device {device} ({where}), CPU threads "
          f"{torch.get_num_threads()}, batch 8, W 23, workers {workers}")
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
        if exact_reps > 0:
            by = "wall time" if dev.type == "cuda" else f"CPU time / {torch.get_num_threads()} threads"
            print(f"exact speed-ups: step-rate ratio after/before ({by}; {exact_reps} interleaved "
                  f"repetitions of {exact_steps} step(s)): best repetition against best "
                  f"(median, min-max of the per-repetition ratios)")
        for exp in exact_exps if exact_reps > 0 else ():
            ratios, grad_diff, same = bench_exact(exp, ds, exact_steps, exact_reps, device)
            text = ", ".join(f"{k} {r:.3f}x (median {med:.3f}, {lo:.3f}-{hi:.3f})"
                             for k, (r, med, lo, hi) in ratios.items())
            print(f"{exp} exact              : {text}; gradients fused/plain max rel diff "
                  f"{grad_diff:.1e}; no-fill parameters after a step "
                  f"{'bit-identical' if same else 'DIFFER'}", flush=True)
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
    ap.add_argument("--variants", nargs="+", default=["default"], choices=VARIANTS,
                    help="default: TrainConfig's defaults; fp32: plain layout, no compile")
    ap.add_argument("--features", type=Path, default=None)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--timbre-steps", type=int, default=3,
                    help="timed steps of the timbre encoder (0: skip it)")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    ap.add_argument("--exact-exps", nargs="*", default=["2b", "3c"],
                    help="experiments of the exact speed-up ratios (fused token gradient, "
                         "fill_uninitialized_memory off, both)")
    ap.add_argument("--exact-reps", type=int, default=8,
                    help="interleaved repetitions per configuration (0: skip)")
    ap.add_argument("--exact-steps", type=int, default=1, help="timed steps per repetition")
    a = ap.parse_args()
    main(a.exps, a.threads, a.steps, a.variants, a.features, a.workers, a.timbre_steps, a.device,
         a.exact_exps, a.exact_reps, a.exact_steps)
