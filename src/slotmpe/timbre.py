"""Timbre encoder training, embedding export, retrieval metrics and the Fig. 2 UMAP plot.

Paper Sections III-C and V-A. The encoder (:class:`slotmpe.models.timbre_encoder.TimbreEncoder`)
is trained on isolated-stem CQT windows with a multi-view source-identity objective, frozen, and
used to make one 128-d timbre target per pitched stem for Exp 2 and 3.

Data: the feature cache (``{piece_id}.npz`` + ``index.csv``, see docs/CONTRACTS.md); the encoder
reads the per-stem wide log-CQT ``stem_cqt`` ``(S, N_WIDE, T)`` and the pitch labels
``source_rolls`` ``(S, 72, T)``. Pieces without stem audio (``stem_cqt`` with 0 rows) are skipped
with a log line.

Activity rule (which frames of a stem count as *active*; made explicit here):

* ``L_t`` (labels): any pitch of the stem's roll is on at frame ``t``.
* ``E_t`` (energy): ``e_t > 0`` and ``e_t >= hi - energy_db / TOP_DB`` where ``e_t`` is the largest
  log-CQT value of frame ``t`` over the whole wide CQT and ``hi`` the 99th percentile of ``e_t``
  over the stem: with the features' compression (``1 + dB / TOP_DB``, floor 0) a frame is
  energy-active when its loudest bin is within ``energy_db`` (30) dB of the stem's loud frames and
  above the -80 dB floor; a silent stem has no energy-active frame.
* The labels are *reliable* when ``L`` is non-empty and labels and energy agree both ways:
  ``|L & E| / |L| >= label_agreement_min`` (labelled frames do sound) and
  ``|L & E| / |E| >= label_agreement_min`` (sounding frames are labelled; long releases, reverb
  or delay tails, as in mshoxxDB, break this). Reliable -> active = ``L`` (rule ``"labels"``);
  otherwise active = ``E`` (rule ``"energy"``), or ``L`` if ``E`` is empty (``"labels_no_energy"``);
  neither -> the stem has no active frames (``"silent"``: not used for training or retrieval; its
  export embedding is taken from evenly spaced windows).
* A window start ``s`` is *active* when at least ``min_active_frac`` of frames ``s..s+W-1`` are
  active; if no start qualifies, the starts with the largest active fraction (> 0) are used.

Training item: ``views`` (4) active windows of ``window`` (46) frames of one stem. A batch holds
``batch_size`` (32) distinct stems (fewer if the split has fewer). Augmentation per view: random
gain uniform in ``[-gain_db, gain_db]`` dB applied to the log-CQT through the log compression of
:mod:`slotmpe.features` (see :func:`apply_gain_db`), ``torchaudio.transforms.FrequencyMasking`` and
``TimeMasking`` on the wide CQT (masked cells set to the silence level), then the fast-HCQT; the
encoder normalises each window itself (:func:`slotmpe.models.timbre_encoder.normalize_window`).

Loss (:func:`multiview_timbre_loss`): supervised multi-view contrastive loss (NT-Xent / SupCon
style on the projection head, positives = the other views of the same stem, negatives = all views
of the other stems of the batch) + within-source consistency (``1 - |mean of the stem's unit
embeddings|^2``, i.e. the views' spread around their mean) + VICReg-style variance and covariance
regularisation of the unit embeddings scaled by ``sqrt(D)``.

Checkpoint selection: top-1 same-source retrieval on a fixed, seeded set of active validation
windows (:func:`build_retrieval_set`, :func:`retrieval_accuracy`): each validation stem contributes
one *key* window (the candidate set = one key per stem) and up to ``val_queries`` *query* windows;
a query is a top-k hit when its own stem's key is among the k keys most cosine-similar to it.
Chance level for top-k is ``min(k, S) / S``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from slotmpe.constants import EMBED_DIM, TIMBRE_VIEWS, TIMBRE_WINDOW_FRAMES
from slotmpe.models.timbre_encoder import TimbreEncoder, count_trainable
from slotmpe.utils import atomic_path, get_logger, resolve_device, seed_everything, set_threads

log = get_logger(__name__)

PAPER_TOP1 = 71.52
PAPER_TOP5 = 92.36
EMBEDDING_ID_COLUMNS: tuple[str, ...] = ("track_id", "piece_id", "split", "instrument", "family")
EMBEDDING_COLUMNS: tuple[str, ...] = EMBEDDING_ID_COLUMNS + tuple(f"e{i}" for i in range(EMBED_DIM))


@dataclass
class TimbreConfig:
    """Settings of :func:`train_encoder` (config.yaml section ``timbre``; keys = field names).

    Defaults follow the paper (Sec. V-A) where it gives a value; the rest are our choices.
    """

    max_epochs: int = 100
    patience: int = 6  # epochs without a better selection score before stopping
    batch_size: int = 32  # sources (stems) per batch; each gives `views` windows
    views: int = TIMBRE_VIEWS  # positive views per source
    window: int = TIMBRE_WINDOW_FRAMES  # frames per view (46 ~ 1.47 s)
    lr: float = 5e-4  # AdamW
    weight_decay: float = 1e-2
    min_lr: float = 1e-6  # floor of the cosine annealing (per step, over max_epochs)
    items_per_epoch: int | None = None  # training items (sources) per epoch; None: one per stem
    temperature: float = 0.1  # contrastive temperature
    w_contrastive: float = 1.0
    w_consistency: float = 0.5
    w_variance: float = 1.0
    w_covariance: float = 0.04
    variance_target: float = 1.0  # hinge target of the per-dimension std of sqrt(D) * embedding
    gain_db: float = 3.0  # random gain in [-gain_db, gain_db] dB
    freq_mask_bins: int = 24  # FrequencyMasking max width (wide-CQT bins; 36 = one octave)
    time_mask_frames: int = 8  # TimeMasking max width (frames)
    min_active_frac: float = 0.5  # a window is active when >= this fraction of frames is active
    energy_db: float = 30.0  # energy rule: within this many dB of the stem's loud frames
    label_agreement_min: float = 0.5
    val_queries: int = 8  # query windows per validation stem (plus one key window)
    export_windows: int = 8  # windows averaged per stem by export_embeddings
    seed: int = 0
    device: str | None = None  # None/"auto": cuda if available
    threads: int | None = None  # torch intra-op threads (None: leave as is)
    progress: bool = True  # tqdm progress bars
    model: dict[str, Any] = field(default_factory=dict)  # TimbreEncoder kwargs overrides

    def __post_init__(self) -> None:
        if self.views < 2:
            raise ValueError(f"TimbreConfig.views must be >= 2 (positives), got {self.views}")
        if self.batch_size < 1 or self.max_epochs < 1 or self.window < 8:
            raise ValueError(
                "TimbreConfig needs batch_size >= 1, max_epochs >= 1 and window >= 8; got "
                f"{self.batch_size}, {self.max_epochs}, {self.window}"
            )


# ----------------------------------------------------------------------------------- features


def _features() -> Any:
    """The features module (imported lazily: it pulls in the CQT dependencies)."""
    from slotmpe import features

    return features


def apply_gain_db(logcqt: torch.Tensor, gain_db: torch.Tensor) -> torch.Tensor:
    """Apply a gain in dB to log-compressed CQT windows, consistently with the features module.

    :func:`slotmpe.features.log_compress` maps magnitudes linearly in dB to ``[0, 1]``
    (``x = 1 + dB / TOP_DB``, floor 0 at ``-TOP_DB`` dB re the file maximum). A gain of ``g`` dB
    therefore adds ``g / TOP_DB`` to every cell above the floor, clipped at the floor (0); cells at
    the floor stay there (their true level is unknown). Values may exceed 1 for positive gains
    (louder than the file's original maximum).

    Args:
        logcqt: ``(N, F, T)`` log-CQT windows (:func:`slotmpe.features.cqt_wide` values).
        gain_db: ``(N,)`` gains in dB.

    Returns:
        ``(N, F, T)`` the windows as if their audio had been scaled by ``10 ** (gain_db / 20)``.
    """
    shift = (gain_db.to(logcqt.dtype) / float(_features().TOP_DB)).view(-1, 1, 1)
    return torch.where(logcqt > 0, (logcqt + shift).clamp_min(0.0), torch.zeros_like(logcqt))


def silence_level() -> float:
    """Log-CQT value of silence (the floor of the log compression: 0); masks and padding use it."""
    return 0.0


def windows_to_hcqt(windows: torch.Tensor) -> torch.Tensor:
    """Wide log-CQT windows ``(N, N_WIDE, W)`` -> fast-HCQT ``(N, 12, 216, W)`` (float32)."""
    return _features().hcqt_from_cqt(windows.float()).float()


# ----------------------------------------------------------------------------------- activity


def energy_activity(stem_cqt: np.ndarray, energy_db: float = 30.0) -> np.ndarray:
    """Energy-based frame activity of one stem (rule in the module docstring).

    Args:
        stem_cqt: ``(F, T)`` log-CQT of the stem (features' compression: ``1 + dB / TOP_DB``).
        energy_db: frames whose loudest bin is within this many dB of the stem's reference level
            (the 99th percentile over frames of the loudest bin) are active.

    Returns:
        ``(T,)`` bool; all False for a silent stem (every frame at the floor).
    """
    e = np.asarray(stem_cqt, dtype=np.float32).max(axis=0)
    if e.size == 0:
        return np.zeros(0, dtype=bool)
    hi = float(np.percentile(e, 99.0))
    return (e > 0.0) & (e >= hi - energy_db / float(_features().TOP_DB))


def frame_activity(
    stem_cqt: np.ndarray,
    roll: np.ndarray | None,
    energy_db: float = 30.0,
    agreement_min: float = 0.5,
) -> tuple[np.ndarray, str]:
    """Active frames of one stem and the rule that chose them (see the module docstring).

    Args:
        stem_cqt: ``(F, T)`` log-CQT of the stem.
        roll: ``(72, T)`` bool pitch labels, or ``None`` when there are none.
        energy_db: energy rule parameter (:func:`energy_activity`).
        agreement_min: minimum label precision and coverage against energy for reliable labels.

    Returns:
        ``(active (T,) bool, rule)`` with rule in ``{"labels", "energy", "labels_no_energy",
        "silent"}``.
    """
    energy = energy_activity(stem_cqt, energy_db)
    labels = (
        np.zeros_like(energy)
        if roll is None
        else np.asarray(roll, dtype=bool).any(axis=0)[: energy.shape[0]]
    )
    if labels.shape != energy.shape:
        raise ValueError(f"pitch labels cover {labels.shape[0]} frames, the CQT {energy.shape[0]}")
    n_l, n_e = int(labels.sum()), int(energy.sum())
    if n_l > 0:
        both = int((labels & energy).sum())
        if n_e > 0 and both / n_l >= agreement_min and both / n_e >= agreement_min:
            return labels, "labels"
        if n_e == 0:
            return labels, "labels_no_energy"
    if n_e > 0:
        return energy, "energy"
    return np.zeros_like(energy), "silent"


def active_starts(active: np.ndarray, window: int, min_frac: float = 0.5) -> np.ndarray:
    """Start frames of the active windows of one stem.

    Args:
        active: ``(T,)`` bool frame activity, ``T >= window``.
        window: window length in frames.
        min_frac: minimum active fraction of a window.

    Returns:
        int64 ``(n,)`` sorted starts with active fraction ``>= min_frac``; if there are none, the
        starts with the largest (non-zero) fraction; empty if no frame is active.
    """
    if active.shape[0] < window:
        raise ValueError(f"{active.shape[0]} frames is shorter than the window ({window})")
    cs = np.concatenate([[0], np.cumsum(active.astype(np.int64))])
    frac = (cs[window:] - cs[:-window]) / float(window)
    good = np.flatnonzero(frac >= min_frac - 1e-9)
    if good.size == 0 and frac.max(initial=0.0) > 0:
        good = np.flatnonzero(frac >= frac.max() - 1e-9)
    return good.astype(np.int64)


@dataclass
class Stem:
    """One pitched stem of the feature cache with its activity.

    ``cqt``: float16 ``(N_WIDE, T')`` log-CQT, padded with silence to at least ``window`` frames;
    ``starts``: int64 ``(n,)`` active window starts (empty: no active frames).
    """

    piece_id: str
    split: str
    track_id: str
    instrument: str
    family: str
    cqt: np.ndarray
    starts: np.ndarray
    rule: str
    n_frames: int


def read_index(feature_dir: Path) -> pd.DataFrame:
    """``feature_dir/index.csv`` (piece_id, split, ...); raises ``FileNotFoundError``/``ValueError``."""
    path = Path(feature_dir) / "index.csv"
    if not path.is_file():
        raise FileNotFoundError(f"feature index {path} not found")
    df = pd.read_csv(path, dtype={"piece_id": str, "split": str})
    missing = {"piece_id", "split"} - set(df.columns)
    if missing:
        raise ValueError(f"{path}: missing column(s) {sorted(missing)}")
    return df


def load_stems(
    feature_dir: Path, splits: Sequence[str], cfg: TimbreConfig, silence: float | None = None
) -> list[Stem]:
    """Load every pitched stem with stem audio of the given splits, in index/manifest order.

    Args:
        feature_dir: folder with ``index.csv`` and the ``{piece_id}.npz`` files.
        splits: splits to load.
        cfg: window length and activity-rule settings.
        silence: padding value for stems shorter than the window (default :func:`silence_level`).

    Returns:
        the stems (silent ones included, with empty ``starts``).
    """
    from slotmpe.data import load_piece

    feature_dir = Path(feature_dir)
    index = read_index(feature_dir)
    pad_value = silence_level() if silence is None else silence
    stems: list[Stem] = []
    for row in index.itertuples(index=False):
        if row.split not in splits:
            continue
        path = feature_dir / f"{row.piece_id}.npz"
        piece = load_piece(path)
        track_ids = [str(t) for t in np.asarray(piece["track_ids"]).reshape(-1)]
        stem_cqt = np.asarray(piece["stem_cqt"])
        if stem_cqt.shape[0] == 0:
            if track_ids:
                log.info(
                    "%s: %d pitched track(s) without stem audio skipped", path.name, len(track_ids)
                )
            continue
        if stem_cqt.shape[0] != len(track_ids):
            raise ValueError(
                f"{path}: stem_cqt has {stem_cqt.shape[0]} stems but track_ids {len(track_ids)}"
            )
        rolls = piece.get("source_rolls")
        instruments = [str(t) for t in np.asarray(piece["instruments"]).reshape(-1)]
        families = [str(t) for t in np.asarray(piece["families"]).reshape(-1)]
        for s, track in enumerate(track_ids):
            cqt = stem_cqt[s]
            roll = None if rolls is None or len(rolls) <= s else np.asarray(rolls[s])
            active, rule = frame_activity(
                cqt, roll, cfg.energy_db, cfg.label_agreement_min
            )
            n_frames = cqt.shape[1]
            if n_frames < cfg.window:
                pad = cfg.window - n_frames
                cqt = np.pad(cqt, ((0, 0), (0, pad)), constant_values=pad_value)
                active = np.pad(active, (0, pad))
            starts = (
                active_starts(active, cfg.window, cfg.min_active_frac)
                if active.any()
                else np.zeros(0, dtype=np.int64)
            )
            stems.append(
                Stem(
                    piece_id=str(row.piece_id),
                    split=str(row.split),
                    track_id=track,
                    instrument=instruments[s],
                    family=families[s],
                    cqt=np.ascontiguousarray(cqt, dtype=np.float16),
                    starts=starts,
                    rule=rule,
                    n_frames=int(n_frames),
                )
            )
    return stems


def _window(stem: Stem, start: int, window: int) -> np.ndarray:
    """``(N_WIDE, window)`` float32 slice of a stem's log-CQT."""
    return stem.cqt[:, start : start + window].astype(np.float32)


def _pick(rng: np.random.Generator, starts: np.ndarray, n: int) -> np.ndarray:
    """``n`` starts from ``starts`` (without replacement when there are enough)."""
    return rng.choice(starts, size=n, replace=bool(starts.size < n))


# ----------------------------------------------------------------------------------- loss


def multiview_timbre_loss(
    emb: torch.Tensor,
    proj: torch.Tensor,
    source_ids: torch.Tensor | None = None,
    temperature: float = 0.1,
    w_contrastive: float = 1.0,
    w_consistency: float = 0.5,
    w_variance: float = 1.0,
    w_covariance: float = 0.04,
    variance_target: float = 1.0,
) -> dict[str, torch.Tensor]:
    """Supervised multi-view contrastive loss + consistency, variance and covariance terms.

    Args:
        emb: ``(B, V, D)`` L2-normalised embeddings (V views of each of B sources).
        proj: ``(B, V, P)`` projection-head outputs (normalised here).
        source_ids: ``(B,)`` source identity of each item (items with equal ids are positives of
            each other too); default ``arange(B)``.
        temperature: softmax temperature of the contrastive term.
        w_*: weights of the terms in ``total``.
        variance_target: hinge target of the per-dimension std of ``sqrt(D) * emb``.

    Returns:
        dict of scalar tensors ``total``, ``contrastive``, ``consistency``, ``variance``,
        ``covariance``.
    """
    if emb.dim() != 3 or proj.dim() != 3 or emb.shape[:2] != proj.shape[:2]:
        raise ValueError(f"expected emb (B,V,D) and proj (B,V,P), got {tuple(emb.shape)}, {tuple(proj.shape)}")
    b, v, d = emb.shape
    ids = torch.arange(b, device=emb.device) if source_ids is None else source_ids.to(emb.device)
    labels = ids.repeat_interleave(v)  # (N,)
    n = b * v

    # contrastive (SupCon / multi-positive NT-Xent)
    z = F.normalize(proj.reshape(n, -1), dim=-1)
    sim = z @ z.T / temperature
    self_mask = torch.eye(n, dtype=torch.bool, device=emb.device)
    sim = sim.masked_fill(self_mask, float("-inf"))
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    pos = (labels[:, None] == labels[None, :]) & ~self_mask
    n_pos = pos.sum(dim=1)
    has_pos = n_pos > 0
    pos_log_prob = log_prob.masked_fill(~pos, 0.0).sum(dim=1)
    contrastive = -(pos_log_prob[has_pos] / n_pos[has_pos]).mean() if has_pos.any() else emb.sum() * 0

    # within-source consistency: mean squared distance of unit views to their mean = 1 - |mean|^2
    consistency = (1.0 - emb.mean(dim=1).pow(2).sum(dim=-1)).mean()

    # variance / covariance (VICReg) over all N views of sqrt(D) * unit embeddings
    u = emb.reshape(n, d) * math.sqrt(d)
    if n >= 2:
        u = u - u.mean(dim=0, keepdim=True)
        var = u.pow(2).sum(dim=0) / (n - 1)
        variance = F.relu(variance_target - torch.sqrt(var + 1e-4)).mean()
        cov = u.T @ u / (n - 1)
        off = cov - torch.diag(torch.diagonal(cov))
        covariance = off.pow(2).sum() / d
    else:
        variance = covariance = emb.sum() * 0
    total = (
        w_contrastive * contrastive
        + w_consistency * consistency
        + w_variance * variance
        + w_covariance * covariance
    )
    return {
        "total": total,
        "contrastive": contrastive,
        "consistency": consistency,
        "variance": variance,
        "covariance": covariance,
    }


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
            wins.append(_window(stem, int(s), window))
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


# ----------------------------------------------------------------------------------- training


def _augment(windows: torch.Tensor, cfg: TimbreConfig, silence: float, gen: torch.Generator) -> torch.Tensor:
    """Gain and frequency/time masking of wide log-CQT windows ``(N, F, W)`` -> ``(N, F, W)``."""
    import torchaudio.transforms as AT

    n = windows.shape[0]
    if cfg.gain_db > 0:
        gain = (torch.rand(n, generator=gen) * 2.0 - 1.0) * cfg.gain_db
        windows = apply_gain_db(windows, gain.to(windows.device))
    x = windows.unsqueeze(1)  # (N, 1, F, W): iid masks per item need a 4-D input
    if cfg.freq_mask_bins > 0:
        x = AT.FrequencyMasking(cfg.freq_mask_bins, iid_masks=True)(x, mask_value=silence)
    if cfg.time_mask_frames > 0:
        x = AT.TimeMasking(min(cfg.time_mask_frames, cfg.window), iid_masks=True)(x, mask_value=silence)
    return x.squeeze(1)


def _train_batch(
    stems: Sequence[Stem], idx: np.ndarray, rng: np.random.Generator, cfg: TimbreConfig
) -> torch.Tensor:
    """``(B, V, N_WIDE, W)`` float32 views of the stems ``idx``."""
    batch = [
        np.stack([_window(stems[i], int(s), cfg.window) for s in _pick(rng, stems[i].starts, cfg.views)])
        for i in idx
    ]
    return torch.from_numpy(np.stack(batch))


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def _clean(d: dict[str, Any]) -> dict[str, Any]:
    """Replace NaN floats by None (valid JSON)."""
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in d.items()}


def train_encoder(feature_dir: Path, out_dir: Path, cfg: TimbreConfig) -> Path:
    """Train the timbre encoder on the training stems; select it on validation retrieval.

    Writes ``out_dir/encoder.pt`` (:func:`slotmpe.models.save_checkpoint`, ``extra`` holds the
    config, metrics and feature folder) and ``out_dir/metrics.json`` (``top1``, ``top5``,
    ``chance`` (= ``chance_top1``), ``chance_top5``, ``mrr`` in percent / 0..1 on the validation
    retrieval set of the selected checkpoint; ``params`` (encoder + projection head),
    ``params_encoder``, ``params_projection``; ``epochs``, ``best_epoch``, ``selection``, ``note``,
    counts, the per-epoch ``history`` and the paper's figures).

    Selection: the epoch with the highest validation top-1, ties broken by MRR. When the
    validation split has fewer than 2 stems with active windows, retrieval is trivial (or
    impossible): the metrics are reported for what exists and the checkpoint is selected by
    the lowest training loss instead (``selection`` and ``note`` say so).

    Returns:
        the path of ``encoder.pt``.
    """
    from tqdm.auto import tqdm

    from slotmpe import models

    feature_dir, out_dir = Path(feature_dir), Path(out_dir)
    if cfg.threads:
        set_threads(cfg.threads)
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    silence = silence_level()
    t0 = time.time()

    train = [s for s in load_stems(feature_dir, ("train",), cfg, silence) if s.starts.size > 0]
    val_all = load_stems(feature_dir, ("val",), cfg, silence)
    val = [s for s in val_all if s.starts.size > 0]
    if not train:
        raise ValueError(f"{feature_dir}: no training stem with stem audio and active frames")
    rules = pd.Series([s.rule for s in train + val_all]).value_counts().to_dict()
    log.info(
        "timbre encoder: %d train stems, %d val stems (%d with active windows); activity rules %s",
        len(train), len(val_all), len(val), rules,
    )
    rset = build_retrieval_set(val, cfg.val_queries, cfg.window, cfg.seed)
    n_val_queries = int((~rset.is_key).sum())
    trivial = len(val) < 2 or n_val_queries == 0
    notes: list[str] = []
    if len(val) < 2:
        notes.append(
            f"validation split has {len(val)} stem(s) with active windows: retrieval is "
            + ("trivial (chance 100%)" if len(val) == 1 else "not measurable")
        )
    elif n_val_queries == 0:
        notes.append("no validation stem has two distinct active windows: no retrieval queries")
    if trivial:
        notes.append("checkpoint selected by the lowest training loss")

    model = TimbreEncoder(**cfg.model).to(device)
    params = count_trainable(model)
    params_proj = count_trainable(model.projector)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    batch = min(cfg.batch_size, len(train))
    items = cfg.items_per_epoch or len(train)
    steps_per_epoch = max(1, math.ceil(items / batch))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(
        opt, T_max=steps_per_epoch * cfg.max_epochs, eta_min=cfg.min_lr
    )
    gen = torch.Generator().manual_seed(cfg.seed)
    log.info(
        "device %s, %d trainable parameters (encoder %d + projection %d), %d steps/epoch of %d "
        "stems x %d views", device, params, params - params_proj, params_proj, steps_per_epoch,
        batch, cfg.views,
    )

    history: list[dict[str, Any]] = []
    best_score: tuple[float, float] | None = None
    best_state: dict[str, torch.Tensor] | None = None
    best_epoch, best_metrics, bad = 0, {}, 0
    for epoch in range(1, cfg.max_epochs + 1):
        model.train()
        rng = np.random.default_rng([cfg.seed, epoch])
        sums: dict[str, float] = {}
        bar = tqdm(range(steps_per_epoch), desc=f"timbre epoch {epoch}", disable=not cfg.progress, leave=False)
        for _ in bar:
            idx = rng.choice(len(train), size=batch, replace=False)
            views = _train_batch(train, idx, rng, cfg)  # (B, V, F, W)
            b, v = views.shape[:2]
            flat = _augment(views.reshape(b * v, *views.shape[2:]).to(device), cfg, silence, gen)
            x = windows_to_hcqt(flat)
            emb = model(x)
            proj = model.project(emb)
            terms = multiview_timbre_loss(
                emb.view(b, v, -1), proj.view(b, v, -1), None, cfg.temperature,
                cfg.w_contrastive, cfg.w_consistency, cfg.w_variance, cfg.w_covariance,
                cfg.variance_target,
            )
            opt.zero_grad(set_to_none=True)
            terms["total"].backward()
            opt.step()
            sched.step()
            for k, t in terms.items():
                sums[k] = sums.get(k, 0.0) + float(t.detach())
            bar.set_postfix(loss=f"{float(terms['total'].detach()):.3f}")
        row: dict[str, Any] = {"epoch": epoch, "lr": opt.param_groups[0]["lr"]}
        row.update({f"train_{k}": s / steps_per_epoch for k, s in sums.items()})
        ret = evaluate_retrieval(model, rset, device) if rset.windows.shape[0] else {}
        row.update({f"val_{k}": v for k, v in _clean(ret).items()})
        history.append(row)
        if trivial:
            score = (-row["train_total"], 0.0)
        else:
            score = (ret["top1"], ret["mrr"])
        improved = best_score is None or score > best_score
        log.info(
            "epoch %d: train loss %.4f, val top1 %s top5 %s%s", epoch, row["train_total"],
            row.get("val_top1"), row.get("val_top5"), " *" if improved else "",
        )
        if improved:
            best_score, best_epoch, best_metrics, bad = score, epoch, dict(ret), 0
            best_state = copy.deepcopy({k: t.detach().cpu() for k, t in model.state_dict().items()})
        else:
            bad += 1
            if bad >= cfg.patience:
                log.info("early stop after %d epochs without improvement", bad)
                break

    assert best_state is not None
    model.load_state_dict(best_state)
    model.cpu().eval()
    metrics: dict[str, Any] = {
        "top1": best_metrics.get("top1"),
        "top5": best_metrics.get("top5"),
        "chance": best_metrics.get("chance_top1"),
        "chance_top1": best_metrics.get("chance_top1"),
        "chance_top5": best_metrics.get("chance_top5"),
        "mrr": best_metrics.get("mrr"),
        "params": params,
        "params_encoder": params - params_proj,
        "params_projection": params_proj,
        "epochs": len(history),
        "best_epoch": best_epoch,
        "selection": "train_loss" if trivial else "val_top1",
        "note": "; ".join(notes),
        "n_train_stems": len(train),
        "n_val_stems": len(val_all),
        "n_val_stems_active": len(val),
        "n_val_queries": n_val_queries,
        "n_val_candidates": int(rset.is_key.sum()),
        "activity_rules": {str(k): int(c) for k, c in rules.items()},
        "device": device,
        "seconds": round(time.time() - t0, 1),
        "paper_top1": PAPER_TOP1,
        "paper_top5": PAPER_TOP5,
        "history": history,
    }
    metrics = _clean(metrics)
    enc_path = out_dir / "encoder.pt"
    models.save_checkpoint(
        enc_path,
        model,
        {
            "kind": "timbre_encoder",
            "timbre_config": dataclasses.asdict(cfg),
            "metrics": {k: v for k, v in metrics.items() if k != "history"},
            "feature_dir": str(feature_dir),
        },
    )
    with atomic_path(out_dir / "metrics.json") as tmp:
        tmp.write_text(json.dumps(metrics, indent=2, default=_json_default) + "\n")
    log.info(
        "timbre encoder: best epoch %d of %d, val top1 %s%% top5 %s%% (chance %s%%), %s",
        best_epoch, len(history), metrics["top1"], metrics["top5"], metrics["chance"], enc_path,
    )
    return enc_path


# ----------------------------------------------------------------------------------- export


def _config_from_extra(extra: dict[str, Any]) -> TimbreConfig:
    """The TimbreConfig stored in a checkpoint's ``extra`` (defaults where absent)."""
    stored = dict(extra.get("timbre_config") or {})
    names = {f.name for f in dataclasses.fields(TimbreConfig)}
    return TimbreConfig(**{k: v for k, v in stored.items() if k in names})


def export_embeddings(encoder_path: Path, feature_dir: Path, out_path: Path, seed: int = 0) -> Path:
    """One L2-normalised timbre embedding per pitched stem (with stem audio) of every split.

    Per stem, up to ``export_windows`` active windows (seeded choice among the active starts;
    evenly spaced windows for a stem without active frames, with a warning) are embedded, the
    embeddings averaged and L2-normalised.

    Writes ``out_path`` (parquet, atomic): columns ``track_id, piece_id, split, instrument, family,
    e0..e127`` (float32), one row per pitched stem, in index/manifest order.

    Returns:
        ``out_path``.
    """
    from slotmpe import models

    model, meta = models.load_checkpoint(Path(encoder_path), map_location="cpu")
    if not isinstance(model, TimbreEncoder):
        raise TypeError(f"{encoder_path} holds a {type(model).__name__}, not a TimbreEncoder")
    model.eval()
    cfg = _config_from_extra(dict(meta.get("extra") or {}))
    stems = load_stems(Path(feature_dir), ("train", "val", "test"), cfg)
    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = []
    for stem in stems:
        starts = stem.starts
        if starts.size == 0:
            log.warning(
                "%s/%s: no active frames (rule %s); embedding evenly spaced windows",
                stem.piece_id, stem.track_id, stem.rule,
            )
            last = stem.cqt.shape[1] - cfg.window
            starts = np.unique(np.linspace(0, last, cfg.export_windows).round().astype(np.int64))
        elif starts.size > cfg.export_windows:
            starts = np.sort(rng.choice(starts, size=cfg.export_windows, replace=False))
        wins = np.stack([_window(stem, int(s), cfg.window) for s in starts])
        emb = embed_windows(model, wins).mean(axis=0)
        emb = emb / max(float(np.linalg.norm(emb)), 1e-12)
        row: dict[str, Any] = {
            "track_id": stem.track_id,
            "piece_id": stem.piece_id,
            "split": stem.split,
            "instrument": stem.instrument,
            "family": stem.family,
        }
        row.update({f"e{i}": np.float32(x) for i, x in enumerate(emb)})
        rows.append(row)
    df = pd.DataFrame(rows, columns=list(EMBEDDING_COLUMNS))
    if df["track_id"].duplicated().any():
        dup = df.loc[df["track_id"].duplicated(), "track_id"].tolist()[:5]
        raise ValueError(f"{feature_dir}: duplicate track ids {dup}")
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:
        df.to_parquet(tmp, index=False)
    log.info("exported %d stem embeddings to %s", len(df), out_path)
    return out_path


def read_embeddings(path: Path) -> pd.DataFrame:
    """The embeddings parquet, validated (columns of :data:`EMBEDDING_COLUMNS`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"timbre embeddings {path} not found")
    df = pd.read_parquet(path)
    missing = [c for c in EMBEDDING_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing[:6]}{'...' if len(missing) > 6 else ''}")
    return df


def load_embeddings(path: Path) -> dict[str, np.ndarray]:
    """``track_id -> (128,) float32`` unit embedding, from :func:`export_embeddings`'s parquet."""
    df = read_embeddings(path)
    mat = df[[f"e{i}" for i in range(EMBED_DIM)]].to_numpy(np.float32)
    return {str(t): mat[i].copy() for i, t in enumerate(df["track_id"])}


# ----------------------------------------------------------------------------------- UMAP


_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p", "8", "d", "H")


def _project_2d(x: np.ndarray, seed: int) -> tuple[np.ndarray, str]:
    """2-D coordinates of ``(n, D)`` points: UMAP for ``n >= 4``, else PCA (method named)."""
    n = x.shape[0]
    if n >= 4:
        import umap

        reducer = umap.UMAP(
            n_neighbors=max(2, min(15, n - 1)),
            min_dist=0.3,
            metric="euclidean",  # on unit vectors: monotone in cosine distance, cheaper to JIT
            random_state=seed,
            n_jobs=1,
            init="spectral" if n >= 10 else "random",
        )
        return np.asarray(reducer.fit_transform(x), dtype=np.float64), "UMAP"
    if n == 0:
        return np.zeros((0, 2)), "none"
    xc = x - x.mean(axis=0, keepdims=True)
    _, _, vt = np.linalg.svd(xc, full_matrices=False)
    coords = xc @ vt[:2].T if vt.shape[0] >= 2 else np.zeros((n, 2))
    if coords.shape[1] < 2:
        coords = np.pad(coords, ((0, 0), (0, 2 - coords.shape[1])))
    return coords, "PCA (too few points for UMAP)"


def plot_umap(
    embeddings_path: Path, out_png: Path, split: str = "test", seed: int = 0, title: str = ""
) -> Path:
    """UMAP of one split's stem embeddings, coloured by instrument, marker by piece (Fig. 2).

    ``umap-learn`` with ``random_state=seed``, Euclidean metric on the unit embeddings (monotone in
    cosine distance), ``min_dist=0.3`` and ``n_neighbors = min(15, n - 1)``;
    with fewer than 4 points the plot falls back to a PCA projection and says so in the title;
    with none it writes a figure that says the split is empty.

    Returns:
        ``out_png`` (written atomically).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    df = read_embeddings(embeddings_path)
    df = df[df["split"] == split].reset_index(drop=True)
    x = df[[f"e{i}" for i in range(EMBED_DIM)]].to_numpy(np.float64)
    coords, method = _project_2d(x, seed)
    if method != "UMAP":
        log.warning("%s: %d %s stem(s); %s", embeddings_path, len(df), split, method)

    instruments = sorted(df["instrument"].unique().tolist())
    pieces = sorted(df["piece_id"].unique().tolist())
    cmap = plt.get_cmap("tab10" if len(instruments) <= 10 else "tab20")
    colour = {ins: cmap(i % cmap.N) for i, ins in enumerate(instruments)}
    marker = {p: _MARKERS[i % len(_MARKERS)] for i, p in enumerate(pieces)}

    fig, ax = plt.subplots(figsize=(9.0, 6.0))
    for i, r in df.iterrows():
        ax.scatter(
            coords[i, 0], coords[i, 1], s=70, c=[colour[r["instrument"]]],
            marker=marker[r["piece_id"]], edgecolors="black", linewidths=0.5, alpha=0.9,
        )
    if df.empty:
        ax.text(0.5, 0.5, f"no {split} stems", ha="center", va="center", transform=ax.transAxes)
    head = title or f"Timbre embeddings ({split} split)"
    n_st, n_pc = len(df), len(pieces)
    ax.set_title(
        f"{head}\n{method}, {n_st} stem{'s' * (n_st != 1)}, {n_pc} piece{'s' * (n_pc != 1)}",
        fontsize=11,
    )
    ax.set_xlabel(f"{method.split(' ')[0]} 1")
    ax.set_ylabel(f"{method.split(' ')[0]} 2")
    ax.grid(alpha=0.3)
    ins_handles = [
        Line2D([], [], marker="o", linestyle="", markerfacecolor=colour[i], markeredgecolor="black",
               markersize=8, label=i.replace("_", " "))
        for i in instruments
    ]
    piece_handles = [
        Line2D([], [], marker=marker[p], linestyle="", markerfacecolor="lightgrey",
               markeredgecolor="black", markersize=8, label=p)
        for p in pieces
    ]
    legends = []
    if ins_handles:
        legends.append(ax.legend(
            handles=ins_handles, title="instrument", loc="upper left", bbox_to_anchor=(1.01, 1.0),
            fontsize=8, title_fontsize=9, frameon=False,
        ))
        ax.add_artist(legends[-1])
    if piece_handles:  # below the axes, so long instrument and piece lists never overlap
        legends.append(ax.legend(
            handles=piece_handles, title="piece", loc="upper center", bbox_to_anchor=(0.5, -0.1),
            fontsize=8, title_fontsize=9, frameon=False, ncol=min(4, len(piece_handles)),
        ))
    out_png = Path(out_png)
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=150, format="png", bbox_inches="tight", bbox_extra_artists=legends)
    plt.close(fig)
    return out_png
