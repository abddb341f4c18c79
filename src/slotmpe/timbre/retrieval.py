"""Same-source retrieval: the validation set of key/query windows and its top-k metrics."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from slotmpe.models.timbre_encoder import TimbreEncoder
from slotmpe.timbre.stems import Stem, stem_window, windows_to_hcqt

# ----------------------------------------------------------------------------------- retrieval


def retrieval_accuracy(
    query_emb: np.ndarray | torch.Tensor,
    query_src: np.ndarray | Sequence[int],
    key_emb: np.ndarray | torch.Tensor,
    key_src: np.ndarray | Sequence[int],
    ks: Sequence[int] = (1, 5),
) -> dict[str, float]:
    """Same-source retrieval of each query among a fixed candidate set of keys (one per source).

    Args:
        query_emb: ``(Q, D)`` query embeddings.
        query_src: ``(Q,)`` source id of each query (must be among ``key_src``).
        key_emb: ``(S, D)`` candidate embeddings.
        key_src: ``(S,)`` distinct source ids of the candidates.
        ks: the k of the top-k accuracies.

    Returns:
        ``top{k}`` (percent of queries whose own key is among the k most cosine-similar keys;
        ties count against the query), ``chance_top{k}`` (``100 * min(k, S) / S``), ``mrr``
        (mean reciprocal rank), ``n_queries``, ``n_candidates``.
    """
    q = F.normalize(torch.as_tensor(np.asarray(query_emb), dtype=torch.float64), dim=-1)
    k = F.normalize(torch.as_tensor(np.asarray(key_emb), dtype=torch.float64), dim=-1)
    qs = np.asarray(query_src).reshape(-1)
    ksrc = np.asarray(key_src).reshape(-1)
    if len(set(ksrc.tolist())) != ksrc.size:
        raise ValueError("key_src must hold one key per source")
    pos = {s: i for i, s in enumerate(ksrc.tolist())}
    missing = sorted(set(qs.tolist()) - set(pos))
    if missing:
        raise ValueError(f"queries of sources without a key: {missing[:5]}")
    n_keys = ksrc.size
    out: dict[str, float] = {"n_queries": float(qs.size), "n_candidates": float(n_keys)}
    if qs.size == 0 or n_keys == 0:
        for kk in ks:
            out[f"top{kk}"] = float("nan")
            out[f"chance_top{kk}"] = float("nan")
        out["mrr"] = float("nan")
        return out
    sim = (q @ k.T).numpy()  # (Q, S)
    own = sim[np.arange(qs.size), [pos[s] for s in qs.tolist()]]
    others = sim.copy()
    others[np.arange(qs.size), [pos[s] for s in qs.tolist()]] = -np.inf
    rank = (others >= own[:, None]).sum(axis=1)  # 0 = own key strictly best
    for kk in ks:
        out[f"top{kk}"] = float(100.0 * np.mean(rank < kk))
        out[f"chance_top{kk}"] = float(100.0 * min(kk, n_keys) / n_keys)
    out["mrr"] = float(np.mean(1.0 / (rank + 1.0)))
    return out


@dataclass
class RetrievalSet:
    """Fixed evaluation windows: ``windows`` float32 ``(M, N_WIDE, W)``, ``src`` int64 ``(M,)``
    (index into the stem list), ``is_key`` bool ``(M,)`` (one key per source that has one)."""

    windows: np.ndarray
    src: np.ndarray
    is_key: np.ndarray


def build_retrieval_set(stems: Sequence[Stem], n_queries: int, window: int, seed: int) -> RetrievalSet:
    """One key and up to ``n_queries`` query windows (distinct starts) per stem with active windows.

    A stem with a single active start gives a key (a distractor candidate) but no query. Drawn
    with ``numpy.random.default_rng(seed)`` in stem order, so the set is fixed for a given cache.
    """
    rng = np.random.default_rng(seed)
    wins: list[np.ndarray] = []
    src: list[int] = []
    is_key: list[bool] = []
    for i, stem in enumerate(stems):
        if stem.starts.size == 0:
            continue
        n = min(stem.starts.size, n_queries + 1)
        chosen = rng.choice(stem.starts, size=n, replace=False)
        for j, s in enumerate(chosen):
            wins.append(stem_window(stem, int(s), window))
            src.append(i)
            is_key.append(j == 0)
    if not wins:
        return RetrievalSet(np.zeros((0, 0, window), np.float32), np.zeros(0, np.int64), np.zeros(0, bool))
    return RetrievalSet(np.stack(wins), np.asarray(src, np.int64), np.asarray(is_key, bool))


@torch.no_grad()
def embed_windows(
    model: TimbreEncoder, windows: np.ndarray | torch.Tensor, device: str = "cpu", batch: int = 64
) -> np.ndarray:
    """Embed wide log-CQT windows ``(M, N_WIDE, W)`` -> float32 ``(M, D)`` unit vectors (eval mode)."""
    was_training = model.training
    model.eval()
    out = []
    w = torch.as_tensor(np.asarray(windows), dtype=torch.float32)
    for i in range(0, w.shape[0], batch):
        x = windows_to_hcqt(w[i : i + batch]).to(device)
        out.append(model(x).float().cpu())
    model.train(was_training)
    if not out:
        return np.zeros((0, model.embed_dim), np.float32)
    return torch.cat(out).numpy()


def evaluate_retrieval(
    model: TimbreEncoder, rset: RetrievalSet, device: str = "cpu"
) -> dict[str, float]:
    """Top-1/top-5 retrieval (percent), chance levels and MRR of ``model`` on a retrieval set."""
    emb = embed_windows(model, rset.windows, device)
    return retrieval_accuracy(
        emb[~rset.is_key], rset.src[~rset.is_key], emb[rset.is_key], rset.src[rset.is_key]
    )


