"""Benchmark of the training loops: windows/s of the slot model's full step (1a, 2b, 3c) and
stems/s of the timbre encoder's step.

For each experiment and each variant (``default``: the default :class:`TrainConfig`, i.e. what
training does; ``fp32``: plain NCHW layout; optionally channels-last, bf16 autocast (CUDA only),
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

``--device cuda`` runs the same on the GPU (and stops with a clear message when none is present).

Without ``--features`` a small synthetic feature cache (random CQT, sustained-note rolls, the
CONTRACTS keys) is written to a temporary folder, so the benchmark runs anywhere.

Usage: ``python benchmarks/bench_train.py [--exps 1a 2b 3c] [--threads 2] [--steps 6]
[--variants fp32 bf16 channels_last compile] [--features data/chamber/features] [--workers 0]
[--timbre-steps 3] [--device cpu|cuda]``
"""

from __future__ import annotations

import argparse
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
from slotmpe.training import TrainConfig, batch_to, train_one_epoch, train_step

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
        train_step(run_model, batch, exp, w, opt, cfg.timbre_match_weight, bf16=cfg.bf16)
    _sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        losses = train_step(run_model, batch, exp, w, opt, cfg.timbre_match_weight, bf16=cfg.bf16)
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
         features: Path | None, workers: int, timbre_steps: int = 3, device: str = "cpu") -> None:
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
                if "bf16" in v and dev.type != "cuda":
                    print(f"{exp} {v:<19}: (bf16 runs on CUDA only; measured ~9x slower on this CPU)")
                    continue
                if v == "default":  # what train_experiment does with the default TrainConfig
                    cfg = TrainConfig(batch_size=8, num_workers=workers, device=device)
                else:
                    cfg = TrainConfig(batch_size=8, num_workers=workers, device=device,
                                      channels_last="channels_last" in v, bf16="bf16" in v,
                                      compile=v == "compile")
                step_ws, cpu_ws, epoch_ws, loss = bench_variant(exp, v, ds, cfg, steps)
                print(f"{exp} {v:<19}: step {step_ws:7.1f} windows/s ({cpu_ws:7.1f} by CPU time), "
                      f"epoch (loader+step) "
                      f"{epoch_ws:7.1f} windows/s, loss after {steps + 2} steps {loss:.4f}",
                      flush=True)
    if timbre_steps > 0:
        sps, cps, loss = bench_timbre(dev, timbre_steps)
        print(f"timbre encoder        : step {sps:7.1f} stems/s ({cps:7.1f} by CPU time), "
              f"32 stems x 4 views x 46 frames, loss after {timbre_steps + 1} steps {loss:.4f}",
              flush=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--exps", nargs="+", default=["1a", "2b", "3c"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--variants", nargs="+", default=["default"], choices=VARIANTS,
                    help="default: TrainConfig's defaults; fp32: plain layout, no compile")
    ap.add_argument("--features", type=Path, default=None)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--timbre-steps", type=int, default=3,
                    help="timed steps of the timbre encoder (0: skip it)")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    a = ap.parse_args()
    main(a.exps, a.threads, a.steps, a.variants, a.features, a.workers, a.timbre_steps, a.device)
