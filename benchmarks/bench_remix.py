"""How far is a magnitude sum of stem CQTs from the CQT of the summed audio? (remix, issue 23)

The remix augmentation (:mod:`slotmpe.remix`) and the 4h ratio masks (:mod:`slotmpe.stem_masks`)
treat the mixture's CQT magnitude as the sum of the stems' magnitudes. Phases interfere, so this
holds only approximately. On the pieces of one split of a rendered dataset (``mix == sum of
stems`` for the embedded datasets) this measures:

A. **Audio**: ``M_sum = sum_s |CQT(stem_s)|`` against ``M_mix = |CQT(sum_s stem_s)|`` (all stems,
   pitched or not, as stored), both with :func:`slotmpe.cqt.cqt_magnitude` (the NumPy twin of the
   feature step's CQT) over all wide bins and frames:

   * ``rel_l1``: ``sum |M_sum - M_mix| / sum M_mix`` (relative error of linear magnitude, dominated
     by loud cells);
   * ``median_rel``: median over audible cells (``M_mix`` within 60 dB of its maximum) of
     ``|M_sum - M_mix| / M_mix``;
   * ``mae_log``: mean absolute difference of the log-compressed maps (the model input's
     domain, each compressed with its own maximum, values in ``[0, 1]``; 0.0125 = 1 dB), over all
     cells and over the 216 model bins only.
B. **Cache** (what the remix does): the cached mixture ``cqt`` against
   ``log_compress(sum_s g_s log_expand(stem_cqt_s))`` with the estimated stem gains ``g_s``
   (pitched stems only: the cache has no drum CQT): ``mae_log`` as above; and the gain estimate's
   error against the true level ``max |CQT(stem)| / max |CQT(mix)|`` from the audio
   (``gain_err_db``: median and max of ``|20 log10(g_est / g_true)|`` over stems).

Usage (after ``snakemake data/chamber/features/index.csv``)::

    python benchmarks/bench_remix.py data/chamber --split val
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from slotmpe.audio import load_audio
from slotmpe.constants import N_BINS
from slotmpe.cqt import WIDE_OFFSET, cqt_magnitude, log_compress
from slotmpe.data import load_piece, read_index
from slotmpe.stem_masks import MASK_FLOOR_DB, estimate_stem_gains, log_expand


def _fit(y: np.ndarray, n: int) -> np.ndarray:
    return y[:n] if len(y) >= n else np.pad(y, (0, n - len(y)))


def piece_errors(root: Path, rows: pd.DataFrame, piece: dict[str, np.ndarray]) -> dict[str, object]:
    """Errors of one piece (see the module docstring); ``rows`` its manifest rows."""
    mix, _ = load_audio(root / rows["mix_path"].iloc[0])
    n = len(mix)
    stems = {r.track_id: _fit(load_audio(root / r.stem_path, allow_silent=True)[0], n)
             for r in rows.itertuples() if isinstance(r.stem_path, str) and r.stem_path}
    m_mix = cqt_magnitude(mix)
    mags = {tid: cqt_magnitude(y) for tid, y in stems.items()}
    m_sum = np.sum(list(mags.values()), axis=0)
    audible = m_mix > m_mix.max() * 10.0 ** (-MASK_FLOOR_DB / 20.0)
    x_mix, x_sum = log_compress(m_mix), log_compress(m_sum)
    model = slice(WIDE_OFFSET, WIDE_OFFSET + N_BINS)
    out: dict[str, object] = {
        "frames": int(m_mix.shape[1]),
        "n_stems": len(stems),
        "rel_l1": float(np.abs(m_sum - m_mix).sum() / m_mix.sum()),
        "median_rel": float(np.median(np.abs(m_sum - m_mix)[audible] / m_mix[audible])),
        "mae_log": float(np.abs(x_sum - x_mix).mean()),
        "mae_log_model_bins": float(np.abs(x_sum[model] - x_mix[model]).mean()),
    }
    # B: the cache path
    pitched = [str(t) for t in piece["track_ids"]]
    if bool(piece["has_stems"]) and pitched:
        gains = estimate_stem_gains(piece["cqt"], piece["stem_cqt"])
        lin = (log_expand(piece["stem_cqt"]) * gains[:, None, None]).sum(axis=0)
        x_cache = np.asarray(piece["cqt"], np.float32)
        x_rec = log_compress(lin)
        true = np.array([mags[t].max() / m_mix.max() for t in pitched])
        out["cache_mae_log"] = float(np.abs(x_rec - x_cache).mean())
        out["cache_mae_log_model_bins"] = float(np.abs(x_rec[model] - x_cache[model]).mean())
        out["gain_err_db"] = [float(v) for v in np.abs(20 * np.log10(np.maximum(gains, 1e-6) / true))]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dataset_dir", type=Path, help="data/<dataset> (manifest.parquet, features/)")
    ap.add_argument("--split", default="val", help="train, val, test or all")
    ap.add_argument("--max-pieces", type=int, default=None)
    ap.add_argument("--out", type=Path, default=None, help="write the per-piece figures as JSON")
    args = ap.parse_args()
    root = args.dataset_dir
    manifest = pd.read_parquet(root / "manifest.parquet")
    index = read_index(root / "features")
    rows = index if args.split == "all" else index[index["split"] == args.split]
    pids = rows["piece_id"].astype(str).tolist()[: args.max_pieces]
    t0 = time.perf_counter()
    per_piece = {}
    for pid in pids:
        piece = load_piece(root / "features" / f"{pid}.npz")
        per_piece[pid] = piece_errors(root, manifest[manifest["piece_id"] == pid], piece)
    frames = np.array([p["frames"] for p in per_piece.values()], float)

    def wmean(key: str) -> float:
        vals = np.array([p[key] for p in per_piece.values()], float)
        return float((vals * frames).sum() / frames.sum())

    gain_err = np.concatenate([p.get("gain_err_db", []) for p in per_piece.values()])
    summary = {
        "dataset": root.name, "split": args.split, "pieces": len(per_piece),
        "minutes": float(frames.sum() * 512 / 16000 / 60),
        **{k: wmean(k) for k in ("rel_l1", "median_rel", "mae_log", "mae_log_model_bins",
                                 "cache_mae_log", "cache_mae_log_model_bins")},
        "gain_err_db_median": float(np.median(gain_err)), "gain_err_db_max": float(gain_err.max()),
        "n_stems": int(len(gain_err)), "seconds": time.perf_counter() - t0,
    }
    print(json.dumps(summary, indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"summary": summary, "pieces": per_piece}, indent=1))


if __name__ == "__main__":
    main()
