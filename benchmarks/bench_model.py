"""CPU benchmark of the slot model: training throughput and full-file inference speed.

Prints, for each experiment (default 1a and 3c):

* forward FLOPs per 23-frame window (``torch.utils.flop_counter.FlopCounterMode``, batch 8),
* forward+backward windows/s at batch 8, T = 23 frames (train mode, a surrogate loss over every
  output), and
* full-file inference time (eval mode, no gradients, batch 1) in seconds per minute of audio.

Usage: ``python benchmarks/bench_model.py [--exps 1a 3c] [--threads 2] [--iters 5] [--minutes 1]``
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import torch

from slotmpe.constants import FRAME_RATE, N_BINS, N_INPUT_CHANNELS, WINDOW_FRAMES
from slotmpe.models import build_model, count_parameters


def bench_train(exp: str, batch: int = 8, iters: int = 5, warmup: int = 1) -> float:
    """Forward+backward windows per second for ``exp`` at ``(batch, 12, 216, 23)`` inputs."""
    torch.manual_seed(0)
    model = build_model(exp).train()
    x = torch.randn(batch, N_INPUT_CHANNELS, N_BINS, WINDOW_FRAMES)
    elapsed = 0.0
    for i in range(warmup + iters):
        t0 = time.perf_counter()
        out = model(x)
        loss = sum(v.float().mean() for v in out.values())
        loss.backward()  # type: ignore[union-attr]
        model.zero_grad(set_to_none=True)
        if i >= warmup:
            elapsed += time.perf_counter() - t0
    return batch * iters / elapsed


def forward_flops(exp: str, batch: int = 8) -> float:
    """Forward FLOPs per ``(12, 216, 23)`` window for ``exp`` (train mode, batch ``batch``)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = build_model(exp).train()
    counter = FlopCounterMode(display=False)
    with counter:
        model(torch.randn(batch, N_INPUT_CHANNELS, N_BINS, WINDOW_FRAMES))
    return counter.get_total_flops() / batch


def bench_inference(exp: str, minutes: float = 1.0, repeats: int = 1) -> float:
    """Seconds of compute per minute of audio for full-file inference (batch 1, eval, no grad)."""
    torch.manual_seed(0)
    model = build_model(exp).eval()
    n_frames = int(round(minutes * 60 * FRAME_RATE))
    x = torch.randn(1, N_INPUT_CHANNELS, N_BINS, n_frames)
    with torch.no_grad():
        model(x[..., :64])  # warm-up
        t0 = time.perf_counter()
        for _ in range(repeats):
            model(x)
        elapsed = (time.perf_counter() - t0) / repeats
    return elapsed / minutes


def main(exps: Sequence[str], threads: int, iters: int, minutes: float) -> None:
    """Run both benchmarks for every experiment in ``exps`` and print one line each."""
    torch.set_num_threads(threads)
    print(f"torch {torch.__version__}, CPU threads: {torch.get_num_threads()}")
    for exp in exps:
        n = count_parameters(build_model(exp))
        gflop = forward_flops(exp) / 1e9
        wps = bench_train(exp, iters=iters)
        spm = bench_inference(exp, minutes=minutes)
        print(
            f"exp {exp}: {n:,} params | fwd {gflop:.3f} GFLOP/window | train fwd+bwd (batch 8, T=23): {wps:.1f} windows/s | "
            f"full-file inference: {spm:.2f} s per minute of audio"
        )


def _parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--exps", nargs="+", default=["1a", "3c"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--minutes", type=float, default=1.0)
    return p.parse_args(argv)


if __name__ == "__main__":
    a = _parse()
    main(a.exps, a.threads, a.iters, a.minutes)
