"""Tests of slotmpe.losses: every term is zero/minimal for a perfect prediction and positive
otherwise; the union term is Eq. 2; compute_losses wires terms and weights per experiment."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from slotmpe import losses as L
from slotmpe.experiments import EXPERIMENTS, active_loss_terms, default_loss_weights, get_experiment

torch.set_num_threads(1)
B, K, P, T = 2, 8, 72, 6
BIG = 30.0  # |logit| of a "perfect" prediction


def _batch(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    sources = torch.zeros(B, 8, P, T)
    present = torch.zeros(B, 8, dtype=torch.bool)
    n_src = [3, 1]
    for b, n in enumerate(n_src):
        for s in range(n):
            sources[b, s] = (torch.rand(P, T, generator=g) > 0.9).float()
            sources[b, s, 10 + 5 * s, :] = 1.0  # never silent
            present[b, s] = True
    family = torch.zeros(B, 4, P, T)
    family[:, 0] = sources[:, 0]
    family[:, 2] = torch.maximum(sources[:, 1], sources[:, 2])
    mix = sources.amax(1)
    emb = F.normalize(torch.randn(B, 8, 128, generator=g), dim=-1) * present[..., None]
    poly = mix.sum(1).clamp(max=7).long()
    return {"mix": mix, "family": family, "sources": sources, "source_present": present,
            "source_emb": emb, "poly": poly, "source_poly": sources.sum(2)}


def _perfect_outputs(batch: dict[str, torch.Tensor], kind: str, perm: list[int]) -> dict:
    """Outputs that predict the batch exactly; slot k holds target perm[k] (or nothing if -1)."""
    tg = batch["family"] if kind == "family" else batch["sources"]
    k = tg.shape[1]
    present = tg.flatten(2).amax(-1) > 0 if kind == "family" else batch["source_present"]
    slot_maps = torch.zeros(B, k, P, T)
    act = torch.full((B, k), -BIG)
    timbre = torch.zeros(B, k, 128)
    timbre[..., 0] = 1.0
    for b in range(B):
        for s_out, s_in in enumerate(perm):
            if s_in >= 0 and present[b, s_in]:
                slot_maps[b, s_out] = tg[b, s_in]
                act[b, s_out] = BIG
                if kind != "family":
                    timbre[b, s_out] = batch["source_emb"][b, s_in]
    poly_logits = F.one_hot(batch["poly"], 8).permute(0, 2, 1).float() * 2 * BIG - BIG
    slot_logits = (slot_maps * 2 - 1) * BIG
    return {"mix_logits": (batch["mix"] * 2 - 1) * BIG, "slot_logits": slot_logits,
            "activity_logits": act, "timbre": timbre, "poly_logits": poly_logits,
            "union_prob": 1 - torch.prod(1 - torch.sigmoid(slot_logits), dim=1)}


def test_union_is_eq2_noisy_or() -> None:
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(B, 4, P, T, generator=g) * 3
    mix = (torch.rand(B, P, T, generator=g) > 0.5).float()
    m = 1 - torch.prod(1 - torch.sigmoid(logits.double()), dim=1)  # Eq. 2
    ref = F.binary_cross_entropy(m, mix.double())
    assert L.union_loss(logits, mix).item() == pytest.approx(ref.item(), rel=1e-5)
    log_m, log_1m = L.union_log_probs(logits)
    assert torch.allclose(log_m.exp().double(), m, atol=1e-6)
    assert torch.allclose(log_1m.exp().double(), 1 - m, atol=1e-6)


def test_union_is_stable_for_extreme_logits() -> None:
    logits = torch.tensor([-200.0, -100.0, 50.0, 200.0]).view(1, 4, 1, 1).expand(1, 4, 2, 2).clone()
    logits.requires_grad_(True)
    mix = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])
    loss = L.union_loss(logits, mix)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    all_off = torch.full((1, 4, 1, 1), -100.0)
    assert torch.isfinite(L.union_loss(all_off, torch.ones(1, 1, 1)))
    assert L.union_loss(all_off, torch.ones(1, 1, 1)).item() > 10


def test_stem_terms_zero_for_perfect_and_positive_otherwise() -> None:
    batch = _batch()
    perm = [-1, 2, -1, 0, 1, -1, -1, -1]  # permuted slots, some unmatched
    out = _perfect_outputs(batch, "stem", perm)
    matches = L.match_slots(get_experiment("3c"), out, batch, emb_weight=1.0)
    for b, (s, t) in enumerate(matches):
        want = {k: v for k, v in enumerate(perm) if v >= 0 and batch["source_present"][b, v]}
        assert dict(zip(s.tolist(), t.tolist(), strict=True)) == want
    tg, present, emb = L.slot_targets(get_experiment("3c"), batch)
    perfect = {
        "mix": L.mix_loss(out["mix_logits"], batch["mix"]),
        "union": L.union_loss(out["slot_logits"], batch["mix"]),
        "slot": L.slot_pitch_loss(out["slot_logits"], tg, matches),
        "activity": L.activity_loss(out["activity_logits"], matches),
        "inactive": L.inactive_loss(out["slot_logits"], matches),
        "timbre": L.timbre_loss(out["timbre"], emb, matches),
        "poly_mix": L.poly_mix_loss(out["poly_logits"], batch["poly"]),
        "poly_slot": L.poly_slot_loss(out["slot_logits"], batch["source_poly"], matches),
    }
    for name, v in perfect.items():
        assert 0 <= v.item() < 1e-6, (name, v.item())
    # now perturb each output and check that the corresponding term becomes clearly positive
    bad = {k: v.clone() for k, v in out.items()}
    bad["mix_logits"] = -bad["mix_logits"]
    bad["slot_logits"][0, 1] = -bad["slot_logits"][0, 1]  # matched slot wrong
    bad["slot_logits"][0, 0] = BIG  # unmatched slot fully on
    bad["activity_logits"] = -bad["activity_logits"]
    bad["timbre"] = F.normalize(torch.ones(B, K, 128), dim=-1)
    bad["poly_logits"] = torch.zeros_like(bad["poly_logits"])
    bad_vals = {
        "mix": L.mix_loss(bad["mix_logits"], batch["mix"]),
        "union": L.union_loss(-torch.full_like(out["slot_logits"], BIG), batch["mix"]),
        "slot": L.slot_pitch_loss(bad["slot_logits"], tg, matches),
        "activity": L.activity_loss(bad["activity_logits"], matches),
        "inactive": L.inactive_loss(bad["slot_logits"], matches),
        "timbre": L.timbre_loss(bad["timbre"], emb, matches),
        "poly_mix": L.poly_mix_loss(bad["poly_logits"], batch["poly"]),
        "poly_slot": L.poly_slot_loss(bad["slot_logits"], batch["source_poly"], matches),
    }
    for name, v in bad_vals.items():
        assert v.item() > 1e-2, (name, v.item())


def test_fixed_slot_loss_uses_family_order() -> None:
    batch = _batch(1)
    fam_logits = (batch["family"] * 2 - 1) * BIG
    assert L.fixed_slot_loss(fam_logits, batch["family"]).item() < 1e-6
    swapped = fam_logits[:, [2, 1, 0, 3]]  # strings predicted in the brass slot
    assert L.fixed_slot_loss(swapped, batch["family"]).item() > 1.0
    with pytest.raises(ValueError, match="4 slots"):
        L.fixed_slot_loss(torch.zeros(B, 8, P, T), batch["family"])


def test_empty_matches_give_graph_connected_zero() -> None:
    logits = torch.randn(B, 4, P, T, requires_grad=True)
    empty = [(np.zeros(0, np.int64), np.zeros(0, np.int64))] * B
    for v in (L.slot_pitch_loss(logits, torch.zeros(B, 4, P, T), empty),
              L.poly_slot_loss(logits, torch.zeros(B, 4, T), empty)):
        assert v.item() == 0.0
        v.backward()
    # no match at all: every slot is inactive
    assert L.inactive_loss(logits, empty).item() > 0
    act = L.activity_loss(torch.full((B, 4), -BIG), empty)
    assert act.item() < 1e-6


def test_timbre_skips_unknown_embeddings() -> None:
    slot = F.normalize(torch.randn(1, 2, 128), dim=-1)
    target = torch.zeros(1, 2, 128)
    target[0, 1] = slot[0, 0]
    m = [(np.array([0, 1]), np.array([1, 0]))]  # slot 0 -> source 1 (known), slot 1 -> source 0 (zero)
    assert L.timbre_loss(slot, target, m).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_compute_losses_per_experiment(name: str) -> None:
    exp = get_experiment(name)
    batch = _batch(3)
    kind = "family" if exp.task == "family" else "stem"
    perm = [2, 0, 1, 3] if kind == "family" else [1, 0, 2, -1, -1, -1, -1, -1]
    if exp.matching == "fixed":
        perm = [0, 1, 2, 3]
    out = _perfect_outputs(batch, kind, perm)
    if not exp.uses_slots:
        out = {"mix_logits": out["mix_logits"]}
    if not exp.timbre_head:
        out.pop("timbre", None)
    if not exp.poly_head:
        out.pop("poly_logits", None)
    w = default_loss_weights(exp)
    res = L.compute_losses(exp, out, batch, w)
    assert set(res) == set(L.logged_terms(exp)) | {"total"}
    assert set(active_loss_terms(exp)) <= set(res)
    assert res["total"].item() < 1e-5
    expect = sum(w[k] * res[k] for k in L.logged_terms(exp))
    assert res["total"].item() == pytest.approx(float(expect), abs=1e-7)
    # a bad mixture prediction raises the total by exactly w_mix * mix term
    out["mix_logits"] = torch.zeros_like(out["mix_logits"])
    res2 = L.compute_losses(exp, out, batch, w)
    assert res2["total"].item() == pytest.approx(w["mix"] * np.log(2), rel=1e-4)


def test_zero_weight_terms_are_logged_without_grad() -> None:
    exp = get_experiment("3a")  # poly head present, no poly loss
    batch = _batch()
    out = _perfect_outputs(batch, "stem", list(range(8)))
    out["poly_logits"] = torch.zeros_like(out["poly_logits"]).requires_grad_(True)
    res = L.compute_losses(exp, out, batch, default_loss_weights(exp))
    assert res["poly_mix"].item() == pytest.approx(np.log(8), rel=1e-5)
    assert not res["poly_mix"].requires_grad
    with pytest.raises(ValueError, match="cannot compute"):
        L.compute_losses(get_experiment("1c"), out, batch, {"mix": 1.0, "timbre": 1.0})


def _duplicate_outputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Perfect outputs whose slot 7 duplicates slot 0 (same pitch map and timbre) and predicts
    itself active while slot 0 predicts itself inactive."""
    out = _perfect_outputs(batch, "source", list(range(8)))
    for key in ("slot_logits", "timbre"):
        out[key][:, 7] = out[key][:, 0]
    out["activity_logits"][:, 0] = -3.0
    out["activity_logits"][:, 7] = 3.0
    return out


def test_activity_match_weight_moves_the_match_to_the_active_duplicate() -> None:
    """3c with ``act_weight`` and 4m (its own weight 3) match the slot that predicts itself
    active; 3c at the paper's weight 0 keeps slot 0, and the activity loss then contradicts both
    duplicates' predictions."""
    batch = _batch(3)
    out = _duplicate_outputs(batch)
    e3c, e4m = get_experiment("3c"), get_experiment("4m")
    paper = L.match_slots(e3c, out, batch)
    assert all(0 in s and 7 not in s for s, _ in paper)
    for exp, w in ((e3c, 1.0), (e3c, 0.3), (e4m, 0.0), (e4m, 5.0)):
        m = L.match_slots(exp, out, batch, act_weight=w)
        assert all(7 in s and 0 not in s for s, _ in m), (exp.name, w)
    wts = default_loss_weights(e3c)
    act_paper = L.compute_losses(e3c, out, batch, wts)["activity"]
    act_4m = L.compute_losses(e4m, out, batch, wts)["activity"]
    act_w = L.compute_losses(e3c, out, batch, wts, match_act_weight=3.0)["activity"]
    assert float(act_4m) == pytest.approx(float(act_w)) and float(act_4m) < float(act_paper)


def test_activity_match_weight_is_ignored_without_hungarian_matching() -> None:
    batch = _batch(1)
    for name in ("1a", "1b"):
        exp = get_experiment(name)
        out = _perfect_outputs(batch, "family", [0, 1, 2, 3])
        a = L.compute_losses(exp, out, batch, default_loss_weights(exp))
        b = L.compute_losses(exp, out, batch, default_loss_weights(exp), match_act_weight=2.0)
        assert {k: float(v) for k, v in a.items()} == {k: float(v) for k, v in b.items()}
