"""Tests of slotmpe.inference and slotmpe.evaluation (tiny models, tiny feature cache)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from slotmpe import inference

torch.set_num_threads(1)


class _TimeLocalSlots(nn.Module):
    """Fake model: time-local outputs, slot order permuted randomly at every call.

    Slot ``k``'s logits are ``x[0, 3 * p, t] * (k + 1)`` style maps (distinct per slot), so the
    whole-file output is known and a chunked run must reproduce it up to one global permutation.
    """

    def __init__(self, n_slots: int = 4, seed: int = 0) -> None:
        super().__init__()
        self.k = n_slots
        self.gen = torch.Generator().manual_seed(seed)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        self.calls += 1
        base = x[:, 0, 1::3, :]  # (B, 72, T)
        slot_logits = torch.stack([base * (k + 1) - 2.0 * k for k in range(self.k)], dim=1)
        timbre = nn.functional.normalize(torch.eye(self.k, 16)[None] + 0.1, dim=-1)
        act = torch.arange(self.k, dtype=torch.float32)[None]
        perm = torch.randperm(self.k, generator=self.gen)
        return {
            "mix_logits": base,
            "slot_logits": slot_logits[:, perm],
            "activity_logits": act[:, perm],
            "timbre": timbre[:, perm],
            "poly_logits": x[:, 0, :8, :],
        }


def _canonical(slots: np.ndarray) -> np.ndarray:
    """Slots sorted by their total mass (identity-free comparison)."""
    return slots[np.argsort(slots.sum(axis=(1, 2)))]


def test_chunk_bounds_cover_with_overlap() -> None:
    assert inference.chunk_bounds(50, 100) == [(0, 50)]
    b = inference.chunk_bounds(100, 40)
    assert b[0] == (0, 40) and b[-1] == (60, 100)
    for (_s0, e0), (s1, e1) in zip(b, b[1:], strict=False):
        assert s1 < e0 and e1 - s1 == 40 and e0 - s1 >= 10


def test_predict_chunked_keeps_slot_identity() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 216, 130)).astype(np.float32)
    model = _TimeLocalSlots()
    whole = inference.predict(model, x, device="cpu", max_frames=None)
    chunked = inference.predict(model, x, device="cpu", max_frames=40)
    assert model.calls == 1 + len(inference.chunk_bounds(130, 40))
    assert chunked["slots"].shape == (4, 72, 130)
    np.testing.assert_allclose(chunked["mix"], whole["mix"], atol=1e-6)
    np.testing.assert_allclose(chunked["poly"], whole["poly"], atol=1e-6)
    # the same slot maps, each slot consistent over the whole file (one global permutation)
    perm = [int(np.argmin(np.abs(whole["slots"] - c).mean(axis=(1, 2)))) for c in chunked["slots"]]
    assert sorted(perm) == [0, 1, 2, 3]
    np.testing.assert_allclose(chunked["slots"], whole["slots"][perm], atol=1e-6)
    np.testing.assert_allclose(chunked["activity"], whole["activity"][perm], atol=1e-6)
    np.testing.assert_allclose(chunked["timbre"], whole["timbre"][perm], atol=1e-5)


def test_predict_real_model_shapes_and_probabilities() -> None:
    models = pytest.importorskip("slotmpe.models")
    model = models.build_model("3c")
    x = torch.randn(12, 216, 30)
    out = inference.predict(model, x)
    assert out["mix"].shape == (72, 30) and out["slots"].shape == (8, 72, 30)
    assert out["activity"].shape == (8,) and out["timbre"].shape == (8, 128)
    assert out["poly"].shape == (8, 30)
    np.testing.assert_allclose(out["poly"].sum(axis=0), 1.0, atol=1e-5)
    assert out["slots"].min() >= 0 and out["slots"].max() <= 1
    np.testing.assert_allclose(np.linalg.norm(out["timbre"], axis=1), 1.0, atol=1e-4)
    assert "slots" not in inference.predict(models.build_model("1a"), x)


def test_predict_rejects_bad_shape() -> None:
    with pytest.raises(ValueError, match="12, 216, T"):
        inference.predict(_TimeLocalSlots(), np.zeros((216, 10), np.float32))


# ------------------------------------------------------------------------------------------
# End to end: tiny feature cache + untrained checkpoints
# ------------------------------------------------------------------------------------------


INSTRUMENT_OF = {"strings": "violin", "woodwinds": "flute", "brass": "trumpet",
                 "keyboards": "piano"}


def _roll_notes(roll: np.ndarray) -> list[tuple[float, float, int]]:
    """Notes ``(onset_s, offset_s, midi)`` of a bool ``(72, T)`` roll: one per run of frames."""
    out = []
    for p in range(roll.shape[0]):
        on = np.concatenate(([0], roll[p].astype(np.int8), [0]))
        d = np.diff(on)
        for a, b in zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1), strict=True):
            out.append((a * 0.032, b * 0.032, 23 + p))
    return sorted(out)


def _tiny_cache(root: Path) -> Path:
    """A feature cache of 2 val + 2 test pieces written through the feature-cache contract, with
    the manifest and notes files (one note per run of roll frames) beside it."""
    features = pytest.importorskip("slotmpe.features")
    import pandas as pd

    out = root / "features"
    out.mkdir(parents=True)
    (root / "notes").mkdir()
    rng = np.random.default_rng(0)
    rows = []
    manifest = []
    for i, split in enumerate(("val", "val", "test", "test")):
        t = 40 + 7 * i
        s = 10 if i == 3 else 3  # the last test piece has more sources than the 8 slots
        fams = ("strings", "woodwinds", "strings", "brass", "keyboards") * 2
        fams = fams[:s]
        src = np.zeros((s, 72, t), dtype=bool)
        for j in range(s):
            pitches = (5 + 7 * j) % 66 + rng.integers(0, 4, size=t)
            on = rng.random(t) < 0.7
            src[j, pitches[on], np.flatnonzero(on)] = True
        fam = np.zeros((4, 72, t), dtype=bool)
        for j, f in enumerate(fams):
            fam[("brass", "keyboards", "strings", "woodwinds").index(f)] |= src[j]
        mix = src.any(axis=0)
        sp = src.sum(axis=1).astype(np.uint8)
        piece = f"p{i}"
        np.savez(
            out / f"{piece}.npz",
            cqt=rng.normal(size=(features.N_WIDE, t)).astype(np.float16),
            stem_cqt=np.zeros((s, features.N_WIDE, t), np.float16),
            source_rolls=src, family_rolls=fam, mix_roll=mix,
            poly=np.clip(mix.sum(axis=0), 0, 7).astype(np.uint8), source_poly=sp,
            track_ids=np.array([f"{piece}_{j}" for j in range(s)]),
            instruments=np.array([INSTRUMENT_OF[f] for f in fams]), families=np.array(fams),
            has_stems=np.array(True), n_frames=np.array(t),
        )
        rows.append(f"{piece},{split},{t},{s}")
        for j in range(s):
            notes = pd.DataFrame(_roll_notes(src[j]), columns=["onset_s", "offset_s", "midi"])
            notes.to_csv(root / "notes" / f"{piece}_{j}.csv", index=False)
            manifest.append({
                "dataset": "tiny", "piece_id": piece, "split": split, "track_id": f"{piece}_{j}",
                "instrument": INSTRUMENT_OF[fams[j]], "family": fams[j], "pitched": True,
                "stem_path": "", "mix_path": f"audio/{piece}.wav",
                "notes_path": f"notes/{piece}_{j}.csv", "duration_s": t * 0.032,
            })
    (out / "index.csv").write_text("piece_id,split,n_frames,n_sources\n" + "\n".join(rows) + "\n")
    pd.DataFrame(manifest).to_parquet(root / "manifest.parquet")
    return out


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = pytest.importorskip("slotmpe.data")
    if not hasattr(data, "FileDataset"):
        pytest.skip("slotmpe.data.FileDataset not available")
    return _tiny_cache(tmp_path_factory.mktemp("cache"))


def _checkpoint(root: Path, exp: str) -> Path:
    models = pytest.importorskip("slotmpe.models")
    torch.manual_seed(0)
    model = models.build_model(exp)
    path = root / "chamber" / exp / "seed3" / "model.pt"
    models.save_checkpoint(path, model, {"exp": exp, "dataset": "chamber", "seed": 3})
    return path


@pytest.mark.parametrize("exp", ["1a", "1b", "3c"])
def test_tune_and_evaluate_end_to_end(tmp_path: Path, tiny_cache: Path, exp: str) -> None:
    from slotmpe import evaluation, metrics

    ckpt = _checkpoint(tmp_path, exp)
    run = ckpt.parent
    emb_path = None
    if exp == "3c":
        import pandas as pd

        ids = [f"p{i}_{j}" for i in range(4) for j in range(10 if i == 3 else 3)]
        e = np.random.default_rng(1).normal(size=(len(ids), 128))
        e /= np.linalg.norm(e, axis=1, keepdims=True)
        df = pd.DataFrame(e, columns=[f"e{k}" for k in range(128)])
        df.insert(0, "track_id", ids)
        emb_path = tmp_path / "embeddings.parquet"
        df.to_parquet(emb_path)
    th = evaluation.tune_thresholds(ckpt, tiny_cache, run / "thresholds.json", device="cpu")
    assert json.loads((run / "thresholds.json").read_text()) == th
    assert 0.0 <= th["mix"] <= 1.0 and th["n_files"] == 2 and th["split"] == "val"
    assert (th["slots"] is None) == (exp == "1a")
    m = evaluation.evaluate_model(ckpt, run / "thresholds.json", tiny_cache, run / "metrics.json",
                                  embeddings_path=emb_path, device="cpu")
    assert json.loads((run / "metrics.json").read_text()) == m
    assert (m["exp"], m["dataset"], m["seed"], m["split"]) == (exp, "chamber", 3, "test")
    assert m["n_files"] == 2 and m["n_frames"] == 54 + 61
    for k in ("std_ap", "std_f1", "std_p", "std_r"):
        assert 0.0 <= m[k] <= 100.0
    slot_keys = ("slot_ap", "slot_f1", "slot_p", "slot_r")
    if exp == "1a":
        assert all(m[k] is None for k in slot_keys)
    else:
        assert all(0.0 <= m[k] <= 100.0 for k in slot_keys)
    if exp == "3c":
        # 3 + 8 matched pairs (2 of the 10 sources of the last piece are unmatched misses)
        assert -1.0 <= m["timbre_cos"] <= 1.0 and m["n_cos_pairs"] == m["n_matched_pairs"] == 11
        assert 0.0 <= m["poly_std_acc"] <= 100.0 and 0.0 <= m["poly_stem_acc"] <= 100.0
        # without embeddings (a dataset without stems) timbre cos is null, nothing else changes
        m2 = evaluation.evaluate_model(ckpt, run / "thresholds.json", tiny_cache,
                                       run / "metrics_noemb.json", device="cpu")
        assert m2["timbre_cos"] is None and m2["n_cos_pairs"] == 0
        assert m2["slot_f1"] == pytest.approx(m["slot_f1"])
    else:
        assert m["timbre_cos"] is None and m["poly_std_acc"] is None and m["poly_stem_acc"] is None

    # the reported standard metrics equal a direct recomputation from predictions
    from slotmpe.data import FileDataset
    from slotmpe.models import load_checkpoint

    model, _ = load_checkpoint(ckpt)
    ds = FileDataset(tiny_cache, "test")
    pooled = metrics.PooledCells()
    for i in range(len(ds)):
        item = ds[i]
        pooled.add(item["mix"].numpy() > 0.5, inference.predict(model, item["x"])["mix"])
    assert m["std_ap"] == pytest.approx(100 * pooled.ap())
    assert m["std_f1"] == pytest.approx(100 * pooled.prf(th["mix"])["f1"])

    # per_file.csv: one row per (test file, output) whose summed counts give the pooled F1
    import pandas as pd

    from slotmpe.per_file import PER_FILE_COLUMNS

    pf = pd.read_csv(run / "per_file.csv", dtype={"file": str})
    assert list(pf.columns) == list(PER_FILE_COLUMNS)
    notes = ["note_onoff", "note_onset"]
    outputs = (["mix"] + notes if exp == "1a" else
               ["mix", "multi_instrument"] + notes + ["slot", "slot_note_onoff", "slot_note_onset"])
    assert sorted(set(pf["output"])) == outputs
    note_keys = ("note_onset_f1", "note_onoff_f1", "slot_note_onset_f1", "slot_note_onoff_f1",
                 "multi_instrument_f1")
    for key in note_keys:
        if exp == "1a" and not key.startswith("note"):
            assert m[key] is None
        else:
            assert 0.0 <= m[key] <= 100.0
    for out, key in (("mix", "std_f1"), ("slot", "slot_f1"),
                     *((k.removesuffix("_f1"), k) for k in note_keys)):
        if out not in outputs:
            continue
        rows = pf[pf["output"] == out]
        assert sorted(rows["file"]) == ["p2", "p3"] and sorted(rows["n_frames"]) == [54, 61]
        tp, fp, fn = (int(rows[c].sum()) for c in ("tp", "fp", "fn"))
        assert 100 * metrics.prf_from_counts(tp, fp, fn)["f1"] == pytest.approx(m[key])

    # mixture note counts: notes made as `slotmpe transcribe` makes them (96 ms minimum, 64 ms
    # gaps bridged) at the tuned threshold, scored by mir_eval against the notes files
    import mir_eval

    from slotmpe.notes import probs_to_notes

    n_ref = 0
    for i in range(len(ds)):
        item = ds[i]
        pid = item["piece_id"]
        ref = pd.concat([pd.read_csv(tiny_cache.parent / "notes" / f"{pid}_{j}.csv")
                         for j in range(10 if pid == "p3" else 3)]).drop_duplicates()
        n_ref += len(ref)
        est = probs_to_notes(inference.predict(model, item["x"])["mix"], th["mix"], 3, 2)
        hz = mir_eval.util.midi_to_hz
        for out, ratio in (("note_onset", None), ("note_onoff", 0.2)):
            match = mir_eval.transcription.match_notes(
                ref[["onset_s", "offset_s"]].to_numpy(), hz(ref["midi"].to_numpy(float)),
                np.array([[n.onset_s, min(n.offset_s, len(item["mix"][0]) * 0.032)]
                          for n in est]).reshape(-1, 2),
                hz(np.array([n.midi for n in est], float)), offset_ratio=ratio)
            row = pf[(pf["output"] == out) & (pf["file"] == pid)].iloc[0]
            assert (row["tp"], row["tp"] + row["fp"], row["tp"] + row["fn"]) == \
                (len(match), len(est), len(ref))
    assert m["n_ref_notes"] == n_ref


def test_evaluate_errors_name_the_file(tmp_path: Path, tiny_cache: Path) -> None:
    from slotmpe import evaluation

    with pytest.raises(FileNotFoundError, match="nope.pt"):
        evaluation.evaluate_model(tmp_path / "nope.pt", tmp_path / "t.json", tiny_cache,
                                  tmp_path / "m.json")
    ckpt = _checkpoint(tmp_path, "1a")
    with pytest.raises(FileNotFoundError, match="missing.json"):
        evaluation.evaluate_model(ckpt, tmp_path / "missing.json", tiny_cache, tmp_path / "m.json")
    assert not (tmp_path / "m.json").exists()
