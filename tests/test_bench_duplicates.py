"""The validation duplicate diagnosis of benchmarks/bench_duplicates.py (issue 29) on tiny cases."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_duplicates as bd  # noqa: E402

from slotmpe.experiments import get_experiment  # noqa: E402

torch.set_num_threads(1)


def test_soft_containment() -> None:
    a = torch.tensor([[[1.0, 0.0], [0.5, 0.0]]])  # (1, 2, 2), mass 1.5
    of = torch.stack([a[0], torch.zeros(2, 2), torch.tensor([[1.0, 1.0], [0.0, 0.0]])])
    c = bd.soft_containment(a, of)
    torch.testing.assert_close(c, torch.tensor([[1.0, 0.0, 1.0 / 1.5]]))
    assert bd.soft_containment(torch.zeros(1, 2, 2), of).eq(0).all()


def test_duplicate_tally_counts_active_unmatched_duplicates() -> None:
    """Slot 0 matched (called inactive), slot 1 its active copy (a duplicate), slot 2 active but
    elsewhere (not one), slot 3 a copy that is inactive (not counted); item 2: no slot matched."""
    a = torch.zeros(3, 2)
    a[0] = 0.9
    b = torch.zeros(3, 2)
    b[2] = 0.9
    probs = torch.stack([torch.stack([a, a * 0.8, b, a]), torch.stack([a, b, a, b])])
    act = torch.tensor([[-2.0, 2.0, 3.0, -4.0], [1.0, 1.0, -1.0, -1.0]])
    matched = torch.tensor([[True, False, False, False], [False] * 4])
    t = bd.duplicate_tally(probs, act, matched)
    assert (t["slots"], t["matched"], t["active_unmatched"], t["duplicates"],
            t["matched_inactive"]) == (8, 1, 4, 1, 1)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(act, matched.float())
    assert t["activity_bce_sum"] == pytest.approx(8 * float(bce), rel=1e-5)
    r = bd._rates(t)
    assert r["dup_rate"] == pytest.approx(0.25) and r["activity_bce"] == pytest.approx(float(bce))
    # a stricter containment or a higher activity cut changes the counts as defined
    assert bd.duplicate_tally(probs, act, matched, containment=0.95)["duplicates"] == 1
    assert bd.duplicate_tally(probs, act, matched, active=0.99)["active_unmatched"] == 0
    with pytest.raises(ValueError, match="do not fit"):
        bd.duplicate_tally(probs, act[:, :3], matched)


def test_run_weights_follow_the_run_and_the_row() -> None:
    meta = {"extra": {"train_config": {"timbre_match_weight": 0.5, "activity_match_weight": 0.3}}}
    assert bd.run_weights(meta, get_experiment("3c")) == (0.5, 0.3)
    assert bd.run_weights(meta, get_experiment("4m")) == (0.5, 3.0)
    assert bd.run_weights({"extra": {}}, get_experiment("2b")) == (1.0, 0.0)  # older checkpoint


def test_activity_weight_screen_settings_and_table(tmp_path: Path) -> None:
    """bench_activity_weight: --set parsing, the config's train settings (profile, overrides) and
    the CSV of finished rows, sorted by weight and seed."""
    import json

    import bench_activity_weight as ba

    assert ba.parse_sets(["max_epochs=4", "val_windows=null", "precision=fp32"]) == {
        "max_epochs": 4, "val_windows": None, "precision": "fp32"}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        ba.parse_sets(["max_epochs"])
    cfg = tmp_path / "config.yaml"
    cfg.write_text("profile: default\nmodel: {widths: wide}\ntrain: {max_epochs: 32, lr: 0.001}\n"
                   "profiles:\n  default: {}\n  tiny: {train: {max_epochs: 1}}\n")
    assert ba.train_settings(cfg, "tiny", {"lr": 0.01}) == {
        "max_epochs": 1, "lr": 0.01, "widths": "wide"}
    with pytest.raises(ValueError, match="--weights"):
        ba.train_settings(cfg, None, {"activity_match_weight": 1.0})
    for w, seed, f1 in ((1.0, 0, 50.0), (0.0, 1, 40.0), (0.0, 0, 42.0)):
        run = tmp_path / "out" / ba._wtag(w) / f"seed{seed}"
        run.mkdir(parents=True)
        (run / ba.ROW_NAME).write_text(json.dumps({"exp": "3c", "weight": w, "seed": seed,
                                                   "val_slot_f1": f1}))
    df = ba.write_csv(tmp_path / "out")
    assert list(df.columns) == list(ba.COLUMNS)
    assert df[["weight", "seed"]].values.tolist() == [[0.0, 0], [0.0, 1], [1.0, 0]]
    s = ba.summary(df)
    assert s.loc[0.0, "seeds"] == 2 and s.loc[0.0, "val_slot_f1"] == pytest.approx(41.0)
    assert (tmp_path / "out" / ba.CSV_NAME).is_file()
