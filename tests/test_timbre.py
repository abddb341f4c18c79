"""Tests of the timbre encoder, its loss, retrieval metric, export and UMAP plot (issue 7)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from slotmpe import features
from slotmpe.constants import EMBED_DIM, N_PITCHES
from slotmpe.models.timbre_encoder import TimbreEncoder, count_trainable, normalize_window
from slotmpe.timbre import (
    TimbreConfig,
    active_starts,
    apply_gain_db,
    export_embeddings,
    frame_activity,
    load_embeddings,
    multiview_timbre_loss,
    plot_umap,
    retrieval_accuracy,
    train_encoder,
)

torch.set_num_threads(1)

PAPER_PARAMS = 699_584
TINY_MODEL = {"channels": [8, 16, 16], "pool_after": [0, 1], "fc_hidden": 32,
              "proj_hidden": 32, "proj_dim": 16, "dropout": 0.0}


# ------------------------------------------------------------------------------------ model


def test_parameter_count_matches_paper() -> None:
    model = TimbreEncoder()
    n = count_trainable(model)
    assert abs(n - PAPER_PARAMS) / PAPER_PARAMS < 0.03, n
    assert count_trainable(model.projector) < n // 10  # the head is a small part


def test_forward_shapes_unit_norm_and_window_normalisation() -> None:
    torch.manual_seed(0)
    model = TimbreEncoder(**TINY_MODEL).eval()
    x = torch.rand(3, 12, 216, 46)
    x[:, 6:] = 1.0
    x[:, 6:, :10] = 0.0  # some invalid cells
    x[:, :6, :10] = 0.0
    e = model(x)
    assert e.shape == (3, EMBED_DIM)
    torch.testing.assert_close(e.norm(dim=-1), torch.ones(3))
    assert model.project(e).shape == (3, 16)
    # window normalisation: an offset and scale of the valid log-CQT cells changes nothing
    y = x.clone()
    y[:, :6] = (y[:, :6] * 2.0 + 0.3) * x[:, 6:]
    torch.testing.assert_close(model(y), e, atol=1e-4, rtol=1e-4)
    nx = normalize_window(x)
    valid = x[:, 6:] > 0
    assert abs(float(nx[:, :6][valid].mean())) < 1e-4
    assert float(nx[:, :6][~valid].abs().max()) == 0.0


# ------------------------------------------------------------------------------------ loss


def _grouped(b: int, v: int, d: int, noise: float, gen: torch.Generator) -> torch.Tensor:
    centres = torch.nn.functional.normalize(torch.randn(b, 1, d, generator=gen), dim=-1)
    views = centres + noise * torch.randn(b, v, d, generator=gen) / d**0.5
    return torch.nn.functional.normalize(views, dim=-1)


def test_loss_lower_for_grouped_views_than_shuffled() -> None:
    gen = torch.Generator().manual_seed(0)
    b, v, d = 8, 4, 128
    emb = _grouped(b, v, d, 0.3, gen)
    proj_map = torch.randn(d, 32, generator=gen)
    grouped = multiview_timbre_loss(emb, emb @ proj_map)
    perm = torch.randperm(b * v, generator=gen)
    shuf = emb.reshape(b * v, d)[perm].reshape(b, v, d)
    shuffled = multiview_timbre_loss(shuf, shuf @ proj_map)
    assert grouped["total"] < shuffled["total"] - 0.5
    assert grouped["contrastive"] < shuffled["contrastive"]
    assert grouped["consistency"] < shuffled["consistency"]
    for t in grouped.values():
        assert torch.isfinite(t)


def test_loss_collapse_is_penalised_and_gradients_flow() -> None:
    gen = torch.Generator().manual_seed(1)
    b, v, d = 6, 4, 64
    collapsed = torch.nn.functional.normalize(torch.ones(b, v, d), dim=-1)
    spread = _grouped(b, v, d, 0.0, gen)
    c = multiview_timbre_loss(collapsed, collapsed)
    s = multiview_timbre_loss(spread, spread)
    assert c["variance"] > s["variance"]
    assert float(c["consistency"]) == pytest.approx(0.0, abs=1e-6)
    emb = torch.randn(b, v, d, requires_grad=True)
    out = multiview_timbre_loss(torch.nn.functional.normalize(emb, dim=-1), emb[..., :16])
    out["total"].backward()
    assert emb.grad is not None and torch.isfinite(emb.grad).all()


# ------------------------------------------------------------------------------------ retrieval


def test_retrieval_perfect_on_constructed_case() -> None:
    rng = np.random.default_rng(0)
    s = 6
    keys = np.eye(s, 16)
    q_src = np.repeat(np.arange(s), 3)
    queries = keys[q_src] + 0.05 * rng.standard_normal((len(q_src), 16))
    r = retrieval_accuracy(queries, q_src, keys, np.arange(s))
    assert r["top1"] == 100.0 and r["top5"] == 100.0 and r["mrr"] == pytest.approx(1.0)
    assert r["chance_top1"] == pytest.approx(100 / 6) and r["chance_top5"] == pytest.approx(500 / 6)
    # a query closer to another source's key is a top-1 miss
    bad = queries.copy()
    bad[0] = keys[1]
    assert retrieval_accuracy(bad, q_src, keys, np.arange(s))["top1"] == pytest.approx(100 * 17 / 18)


def test_retrieval_chance_on_random_embeddings() -> None:
    rng = np.random.default_rng(1)
    s, q = 20, 4000
    r = retrieval_accuracy(
        rng.standard_normal((q, EMBED_DIM)), rng.integers(0, s, q),
        rng.standard_normal((s, EMBED_DIM)), np.arange(s),
    )
    assert r["chance_top1"] == 5.0 and r["chance_top5"] == 25.0
    assert abs(r["top1"] - 5.0) < 1.5
    assert abs(r["top5"] - 25.0) < 3.0


# ------------------------------------------------------------------------------------ activity / gain


def test_activity_rule() -> None:
    t = 200
    cqt = np.zeros((features.N_WIDE, t), np.float32)
    cqt[100, 50:150] = 0.9  # sound in frames 50..149
    roll = np.zeros((N_PITCHES, t), bool)
    roll[20, 50:150] = True
    act, rule = frame_activity(cqt, roll)
    assert rule == "labels" and act[50:150].all() and not act[:50].any()
    act, rule = frame_activity(cqt, None)  # missing labels: energy
    assert rule == "energy" and act[50:150].all() and not act[150:].any()
    wrong = np.zeros_like(roll)
    wrong[20, 0:40] = True  # labels where the stem is silent: unreliable
    assert frame_activity(cqt, wrong)[1] == "energy"
    tail = np.zeros_like(roll)
    tail[20, 50:60] = True  # labels cover only the onset, energy rings on (effect tail)
    assert frame_activity(cqt, tail)[1] == "energy"
    assert frame_activity(np.zeros_like(cqt), None)[1] == "silent"
    starts = active_starts(act, 46, 0.5)
    assert starts.min() == 50 - 23 and starts.max() == 150 - 23
    assert active_starts(np.zeros(t, bool), 46).size == 0


def test_gain_follows_log_compression() -> None:
    x = torch.tensor([[[0.0, 0.5, 1.0, 0.01]]])
    y = apply_gain_db(x, torch.tensor([6.0]))
    torch.testing.assert_close(y, torch.tensor([[[0.0, 0.5 + 6 / 80, 1.0 + 6 / 80, 0.01 + 6 / 80]]]))
    z = apply_gain_db(x, torch.tensor([-3.0]))
    torch.testing.assert_close(z, torch.tensor([[[0.0, 0.5 - 3 / 80, 1.0 - 3 / 80, 0.0]]]))


# ------------------------------------------------------------------------------------ tiny cache


def _stem_cqt(rng: np.random.Generator, t: int, env: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Log-CQT ``(N_WIDE, t)`` of a synthetic harmonic stem with spectral envelope ``env`` and
    its pitch roll ``(72, t)``: notes of 10-30 frames separated by short rests."""
    mag = np.full((features.N_WIDE, t), 1e-6, np.float32)
    roll = np.zeros((N_PITCHES, t), bool)
    f = 0
    while f < t:
        dur = int(rng.integers(10, 30))
        p = int(rng.integers(10, 50))
        sl = slice(f, min(t, f + dur))
        roll[p, sl] = True
        for h, a in enumerate(env, start=1):
            b = features.WIDE_OFFSET + 3 * p + 1 + int(round(36 * np.log2(h)))
            if b < features.N_WIDE:
                mag[b, sl] += a * (1.0 + 0.1 * rng.random())
        f += dur + int(rng.integers(0, 6))
    mag += 1e-4 * rng.random(mag.shape).astype(np.float32)
    return features.log_compress(mag), roll


def _tiny_cache(root: Path, val_stems: int = 2) -> tuple[Path, int]:
    """Feature cache with 4 instruments (distinct harmonic envelopes), pieces in 3 splits and one
    piece without stem audio. Returns the folder and the number of pitched stems with audio."""
    rng = np.random.default_rng(0)
    envs = {
        "violin": np.array([1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3]),
        "flute": np.array([1.0, 0.1, 0.02, 0.0, 0.0, 0.0, 0.0, 0.0]),
        "clarinet": np.array([1.0, 0.0, 0.6, 0.0, 0.4, 0.0, 0.3, 0.0]),
        "trumpet": np.array([0.3, 0.6, 1.0, 0.8, 0.6, 0.4, 0.3, 0.2]),
    }
    pieces = [("p0", "train", ["violin", "flute", "clarinet"]),
              ("p1", "train", ["trumpet", "violin", "flute"]),
              ("p2", "train", ["clarinet", "trumpet"]),
              ("p3", "val", ["violin", "flute", "trumpet"][:val_stems]),
              ("p4", "test", ["violin", "flute", "clarinet", "trumpet"]),
              ("p5", "test", ["violin", "clarinet"])]
    root.mkdir(parents=True, exist_ok=True)
    rows, n_stems = [], 0
    for pid, split, instruments in pieces:
        t = 120
        stems = [_stem_cqt(rng, t, envs[i]) for i in instruments]
        s = len(instruments)
        rolls = np.stack([r for _, r in stems])
        has = pid != "p5"
        n_stems += s if has else 0
        arrays = {
            "cqt": np.stack([c for c, _ in stems]).max(axis=0).astype(np.float16),
            "stem_cqt": (np.stack([c for c, _ in stems]) if has
                         else np.zeros((0, features.N_WIDE, t))).astype(np.float16),
            "source_rolls": rolls,
            "family_rolls": np.zeros((4, N_PITCHES, t), bool),
            "mix_roll": rolls.any(axis=0),
            "poly": rolls.sum(axis=1).clip(0, 7).max(axis=0).astype(np.uint8),
            "source_poly": rolls.sum(axis=1).astype(np.uint8),
            "track_ids": np.array([f"{pid}_{j}_{i}" for j, i in enumerate(instruments)]),
            "instruments": np.array(instruments),
            "families": np.array(["strings" if i == "violin" else "brass" if i == "trumpet"
                                  else "woodwinds" for i in instruments]),
            "has_stems": np.array(has),
            "n_frames": np.array(t),
        }
        np.savez(root / f"{pid}.npz", **arrays)
        rows.append({"piece_id": pid, "split": split, "n_frames": t, "n_sources": s})
    pd.DataFrame(rows).to_csv(root / "index.csv", index=False)
    return root, n_stems


def _tiny_cfg(**kw: object) -> TimbreConfig:
    base = dict(max_epochs=2, patience=2, batch_size=4, items_per_epoch=8, val_queries=3,
                export_windows=3, progress=False, device="cpu", threads=1, model=TINY_MODEL)
    base.update(kw)
    return TimbreConfig(**base)  # type: ignore[arg-type]


def test_train_export_and_umap_on_tiny_cache(tmp_path: Path) -> None:
    feat, n_stems = _tiny_cache(tmp_path / "features")
    out = tmp_path / "timbre"
    enc = train_encoder(feat, out, _tiny_cfg())
    assert enc == out / "encoder.pt" and enc.is_file()
    m = json.loads((out / "metrics.json").read_text())
    for key in ("top1", "top5", "chance", "chance_top5", "params", "epochs", "best_epoch"):
        assert key in m, key
    assert m["selection"] == "val_top1" and m["n_val_candidates"] == 2
    assert m["chance"] == 50.0 and m["chance_top5"] == 100.0 and m["top5"] == 100.0
    assert 0.0 <= m["top1"] <= 100.0 and 1 <= m["best_epoch"] <= m["epochs"] <= 2
    assert m["params"] == count_trainable(TimbreEncoder(**TINY_MODEL))

    emb_path = export_embeddings(enc, feat, out / "embeddings.parquet", seed=0)
    df = pd.read_parquet(emb_path)
    assert list(df.columns[:5]) == ["track_id", "piece_id", "split", "instrument", "family"]
    assert len(df) == n_stems and df["track_id"].is_unique
    assert "p5" not in set(df["piece_id"])  # no stem audio: skipped
    mat = df[[f"e{i}" for i in range(EMBED_DIM)]].to_numpy()
    np.testing.assert_allclose(np.linalg.norm(mat, axis=1), 1.0, atol=1e-5)
    emb = load_embeddings(emb_path)
    assert set(emb) == set(df["track_id"]) and emb["p4_0_violin"].shape == (EMBED_DIM,)
    # deterministic export
    again = export_embeddings(enc, feat, out / "again.parquet", seed=0)
    pd.testing.assert_frame_equal(df, pd.read_parquet(again))

    png = plot_umap(emb_path, out / "umap.png", split="test", seed=0, title="tiny")
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    few = plot_umap(emb_path, out / "umap_val.png", split="val")  # 2 points: PCA fallback
    assert few.is_file() and few.stat().st_size > 1000


def test_single_validation_stem_selects_on_training_loss(tmp_path: Path) -> None:
    feat, _ = _tiny_cache(tmp_path / "features", val_stems=1)
    train_encoder(feat, tmp_path / "t", _tiny_cfg(max_epochs=1, items_per_epoch=4))
    m = json.loads((tmp_path / "t" / "metrics.json").read_text())
    assert m["selection"] == "train_loss" and "1 stem" in m["note"]
    assert m["top1"] == 100.0 and m["chance"] == 100.0


def test_train_step_channels_last_same_result_and_deterministic() -> None:
    """The encoder step in channels-last computes the same loss as the plain layout (float
    tolerance), and is bit-identical when repeated from the same seed."""
    from slotmpe.timbre import train_step
    from slotmpe.training import make_optimizer

    views = torch.from_numpy(np.random.default_rng(0).random((4, 2, features.N_WIDE, 16),
                                                            dtype=np.float32))

    def run(cl: bool) -> tuple[float, dict[str, torch.Tensor]]:
        cfg = TimbreConfig(views=2, window=16, batch_size=4, model=TINY_MODEL, channels_last=cl)
        torch.manual_seed(0)
        model = TimbreEncoder(**TINY_MODEL)
        if cl:
            model = model.to(memory_format=torch.channels_last)
        opt = make_optimizer(model, cfg.lr, cfg.weight_decay)
        terms = train_step(model, views, opt, cfg, 0.0, torch.Generator().manual_seed(0))
        return float(terms["total"].detach()), {k: v.clone() for k, v in model.state_dict().items()}

    (la, wa), (lb, wb), (lc, _) = run(True), run(True), run(False)
    assert la == lb and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert la == pytest.approx(lc, rel=1e-5)
