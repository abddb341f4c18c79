"""3a derived from a trained 2b run equals a trained 3a (slotmpe.derive), on a tiny cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import slotmpe.training as tr
from slotmpe.constants import EMBED_DIM
from slotmpe.derive import derive_checkpoint
from slotmpe.features import INDEX_COLUMNS, INDEX_NAME
from slotmpe.models import load_checkpoint

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """2b and 3a trained for 2 epochs with seed 3 on a tiny cache (test_training's pieces), and
    3a derived from 2b."""
    from test_training import _write_piece

    root = tmp_path_factory.mktemp("derive")
    feats = root / "features"
    feats.mkdir()
    rng = np.random.default_rng(0)
    specs = [("p0", "train", 70, 3), ("p1", "train", 60, 2), ("p2", "val", 50, 3)]
    for pid, _split, n_frames, n_src in specs:
        _write_piece(feats, pid, n_frames, n_src, rng)
    pd.DataFrame(specs, columns=list(INDEX_COLUMNS)).to_csv(feats / INDEX_NAME, index=False)
    ids = [f"p{i}_{j}" for i, n in enumerate((3, 2, 3)) for j in range(n)]
    emb = rng.normal(size=(len(ids), EMBED_DIM))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    df = pd.DataFrame(emb, columns=[f"e{k}" for k in range(EMBED_DIM)])
    df.insert(0, "track_id", ids)
    df.to_parquet(root / "emb.parquet")
    cfg = tr.TrainConfig(max_epochs=2, patience=2, windows_per_epoch=16, val_windows=8, seed=3,
                         threads=1, progress=False, device="cpu")
    out = {}
    for exp in ("2b", "3a"):
        out[exp] = tr.train_experiment(exp, feats, root / exp, cfg, embeddings_path=root / "emb.parquet",
                                       dataset="tiny")
    out["3a_derived"] = derive_checkpoint(out["2b"], "3a", root / "3a_derived" / "model.pt")
    return out


def test_derived_3a_equals_trained_3a(runs: dict[str, Path]) -> None:
    trained, t_meta = load_checkpoint(runs["3a"])
    derived, d_meta = load_checkpoint(runs["3a_derived"])
    ts, ds = trained.state_dict(), derived.state_dict()
    assert set(ts) == set(ds)
    # the only differing state: the polyphony head's BatchNorm running statistics
    differ = sorted(k for k in ts if not torch.equal(ts[k], ds[k]))
    assert differ and all(k.startswith("poly_head.") and ".running_" in k or
                          k.endswith("num_batches_tracked") for k in differ), differ
    for k in ts:
        if k.startswith("poly_head.") and k not in differ:
            assert torch.equal(ts[k], ds[k]), k  # weights: no gradient, no weight decay
    x = torch.randn(2, 12, 216, 23, generator=torch.Generator().manual_seed(0))
    trained.eval(), derived.eval()
    with torch.no_grad():
        ot, od = trained(x), derived(x)
    assert set(ot) == set(od)
    for k in ot:
        if k != "poly_logits":
            assert torch.equal(ot[k], od[k]), k
    assert d_meta["extra"]["exp"] == "3a" and d_meta["extra"]["derived_from"] == "2b"
    assert d_meta["extra"]["best_epoch"] == t_meta["extra"]["best_epoch"]
    assert d_meta["extra"]["seed"] == 3


def test_derivation_is_deterministic_and_checked(runs: dict[str, Path], tmp_path: Path) -> None:
    again = derive_checkpoint(runs["2b"], "3a", tmp_path / "again.pt")
    a, _ = load_checkpoint(again)
    b, _ = load_checkpoint(runs["3a_derived"])
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    with pytest.raises(ValueError, match="derives from 2b"):
        derive_checkpoint(runs["3a"], "3a", tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="not derived"):
        derive_checkpoint(runs["2b"], "3b", tmp_path / "bad.pt")
    assert not (tmp_path / "bad.pt").exists()
