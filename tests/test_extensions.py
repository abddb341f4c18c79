"""Tests of the extension experiments (issue 18): rows, overlap loss, derived models, table."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from slotmpe import losses as L
from slotmpe.config import ConfigError, load_config, table3_ext_rows
from slotmpe.experiments import (
    ALL_EXPERIMENTS,
    BASE_LOSS_WEIGHTS,
    EXPERIMENTS,
    EXTENSIONS,
    active_loss_terms,
    default_loss_weights,
    extend,
    get_experiment,
    training_experiment,
)

torch.set_num_threads(1)

# The paper's loss terms per configuration, as before the extensions existed.
PAPER_TERMS = {
    "1a": ("mix",),
    "1b": ("mix", "fixed_slot", "union"),
    "1c": ("mix", "union", "slot", "activity", "inactive"),
    "2a": ("mix", "union", "slot", "activity", "inactive", "timbre"),
    "2b": ("mix", "union", "slot", "activity", "inactive", "timbre"),
    "3a": ("mix", "union", "slot", "activity", "inactive", "timbre"),
    "3b": ("mix", "union", "slot", "activity", "inactive", "timbre", "poly_mix"),
    "3c": ("mix", "union", "slot", "activity", "inactive", "timbre", "poly_mix", "poly_slot"),
}


def test_paper_rows_are_unchanged() -> None:
    assert list(EXPERIMENTS) == list(PAPER_TERMS)
    for name, terms in PAPER_TERMS.items():
        e = EXPERIMENTS[name]
        assert (e.base, e.overlap_loss, e.timbre_mask, e.infer_frames, e.postprocess) == (
            None, False, False, None, ())
        assert active_loss_terms(e) == terms
        w = default_loss_weights(e)
        assert {t for t, v in w.items() if v} == set(terms)
        assert w["overlap"] == 0.0
        assert all(w[t] == BASE_LOSS_WEIGHTS[t] for t in terms)
        assert L.logged_terms(e) == L.logged_terms(dataclasses.replace(e))
        assert "overlap" not in L.logged_terms(e)
        assert training_experiment(e) == (e.derived_from or name)


def test_extension_rows_are_one_change_on_a_named_base() -> None:
    assert list(ALL_EXPERIMENTS) == [*EXPERIMENTS, *EXTENSIONS]
    assert set(EXTENSIONS) >= {"4a", "4b", "4c"}
    for name, e in EXTENSIONS.items():
        base = get_experiment(e.base)
        fields = [f for f in _config_fields() if getattr(e, f) != getattr(base, f)]
        assert len(fields) == 1, (name, fields)
        assert e.description
    assert training_experiment("4a") == "2b" and training_experiment("4b") == "2b"
    assert training_experiment("4c") == "4c" and training_experiment("4d") == "4c"
    assert get_experiment("4a").derived_from == "2b" and get_experiment("4d").derived_from == "4c"
    assert get_experiment("4c").derived_from is None and get_experiment("4f").derived_from is None
    assert get_experiment("4a").postprocess == ("exclusive",)
    assert "overlap" in active_loss_terms(get_experiment("4c"))


def _config_fields() -> list[str]:
    """Configuration fields of an Experiment (not its name, base, description, paper count)."""
    skip = {"name", "base", "description", "paper_params", "derived_from"}
    return [f.name for f in dataclasses.fields(EXPERIMENTS["2b"]) if f.name not in skip]


def test_extend_rejects_anything_but_one_change() -> None:
    e2b = EXPERIMENTS["2b"]
    with pytest.raises(ValueError, match="exactly one change"):
        extend(e2b, "4z", "two", overlap_loss=True, postprocess=("merge",))
    with pytest.raises(ValueError, match="already has"):
        extend(e2b, "4z", "none", film=True)
    with pytest.raises(ValueError, match="not a configuration field"):
        extend(e2b, "4z", "meta", paper_params=3)
    with pytest.raises(ValueError, match="unknown postprocess"):
        extend(e2b, "4z", "bad", postprocess=("dedupe",))


def test_extension_models_are_the_base_architecture() -> None:
    """Rows without a model change build their base's model (same weights, same outputs)."""
    from slotmpe.models import build_model, count_parameters

    for name, e in EXTENSIONS.items():
        if e.timbre_mask != get_experiment(e.base).timbre_mask:
            continue
        torch.manual_seed(0)
        m = build_model(name).eval()
        torch.manual_seed(0)
        b = build_model(e.base).eval()
        assert count_parameters(m) == count_parameters(b)
        sm, sb = m.state_dict(), b.state_dict()
        assert sm.keys() == sb.keys() and all(torch.equal(sm[k], sb[k]) for k in sm)
        x = torch.randn(1, 12, 216, 23, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            om, ob = m(x), b(x)
        assert om.keys() == ob.keys()
        for k in om:
            torch.testing.assert_close(om[k], ob[k], atol=0, rtol=0)


def _overlap_brute(p: torch.Tensor) -> torch.Tensor:
    k = p.shape[1]
    tot = torch.zeros(p.shape[0], p.shape[2], p.shape[3])
    for i in range(k):
        for j in range(i + 1, k):
            tot = tot + p[:, i] * p[:, j]
    return tot.mean()


def test_overlap_loss_value_and_gradient() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 6, 7, generator=g, requires_grad=True)
    v = L.overlap_loss(logits)
    torch.testing.assert_close(v, _overlap_brute(torch.sigmoid(logits)))
    v.backward()
    assert logits.grad is not None and bool((logits.grad > 0).all())  # every overlap is pushed down
    # one slot on per cell: no overlap
    one = torch.full((1, 3, 4, 4), -1e4)
    one[0, 0] = 10.0
    assert L.overlap_loss(one).item() == pytest.approx(0.0, abs=1e-6)
    # two slots at p = 0.5 in every cell: 0.25
    two = torch.full((1, 3, 4, 4), -1e4)
    two[0, :2] = 0.0
    assert L.overlap_loss(two).item() == pytest.approx(0.25)


def _stem_batch(b: int = 2, t: int = 23) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    src = (torch.rand(b, 8, 72, t, generator=g) > 0.97).float()
    src[:, 3:] = 0
    present = src.flatten(2).amax(-1) > 0
    emb = torch.nn.functional.normalize(torch.randn(b, 8, 128, generator=g), dim=-1)
    return {"mix": src.amax(1), "sources": src, "source_present": present, "source_emb": emb,
            "family": torch.zeros(b, 4, 72, t), "poly": src.sum((1, 2)).clamp(max=7).long(),
            "source_poly": src.sum(2)}


def test_compute_losses_adds_only_the_overlap_term() -> None:
    from slotmpe.models import build_model

    batch = _stem_batch()
    torch.manual_seed(0)
    model = build_model("4c").train()
    out = model(torch.randn(2, 12, 216, 23, generator=torch.Generator().manual_seed(2)))
    e2b, e4c = get_experiment("2b"), get_experiment("4c")
    matches = L.match_slots(e4c, out, batch)
    r2b = L.compute_losses(e2b, out, batch, default_loss_weights(e2b), matches=matches)
    r4c = L.compute_losses(e4c, out, batch, default_loss_weights(e4c), matches=matches)
    assert set(r4c) == set(r2b) | {"overlap"}
    for k in r2b:
        if k != "total":
            torch.testing.assert_close(r4c[k], r2b[k])
    w = BASE_LOSS_WEIGHTS["overlap"]
    torch.testing.assert_close(r4c["total"], r2b["total"] + w * r4c["overlap"])
    torch.testing.assert_close(r4c["overlap"], L.overlap_loss(out["slot_logits"]))


def _save(path: Path, exp: str, seed: int = 0) -> Path:
    from slotmpe.models import build_model, save_checkpoint

    torch.manual_seed(seed)
    save_checkpoint(path, build_model(exp), {"exp": exp, "dataset": "chamber", "seed": 3})
    return path


def test_derive_checkpoint_for_inference_only_extensions(tmp_path: Path) -> None:
    from slotmpe.derive import derive_checkpoint
    from slotmpe.models import load_checkpoint

    base = _save(tmp_path / "2b" / "model.pt", "2b")
    out = derive_checkpoint(base, "4a", tmp_path / "4a" / "model.pt")
    m, meta = load_checkpoint(out)
    b, _ = load_checkpoint(base)
    assert meta["experiment"] == "4a" and m.exp.name == "4a"
    assert meta["extra"]["exp"] == "4a" and meta["extra"]["seed"] == 3
    assert meta["extra"]["derived_from"] == "2b"
    sm, sb = m.state_dict(), b.state_dict()
    assert sm.keys() == sb.keys() and all(torch.equal(sm[k], sb[k]) for k in sb)
    with pytest.raises(ValueError, match="not derived"):
        derive_checkpoint(base, "4c", tmp_path / "x.pt")
    other = _save(tmp_path / "3c" / "model.pt", "3c")
    with pytest.raises(ValueError, match="derives from"):
        derive_checkpoint(other, "4b", tmp_path / "y.pt")
    assert not (tmp_path / "x.pt").exists() and not (tmp_path / "y.pt").exists()


def test_evaluation_applies_the_postprocessing(tmp_path: Path) -> None:
    """4a is evaluated on its base's weights with exclusive cells: no duplicated claim remains,
    while the base (same weights) has the same mixture metrics."""
    from test_evaluation import _tiny_cache

    from slotmpe import evaluation
    from slotmpe.derive import derive_checkpoint

    cache = _tiny_cache(tmp_path / "cache")
    base = _save(tmp_path / "chamber" / "2b" / "seed3" / "model.pt", "2b")
    ext = derive_checkpoint(base, "4a", tmp_path / "chamber" / "4a" / "seed3" / "model.pt")
    res = {}
    for name, ckpt in (("2b", base), ("4a", ext)):
        run = ckpt.parent
        evaluation.tune_thresholds(ckpt, cache, run / "thresholds.json", device="cpu")
        res[name] = evaluation.evaluate_model(ckpt, run / "thresholds.json", cache,
                                              run / "metrics.json", device="cpu")
    assert res["4a"]["exp"] == "4a" and res["4a"]["dup_rate"] == 0.0
    assert res["2b"]["dup_rate"] > 0.0  # an untrained model: its slots overlap everywhere
    assert res["4a"]["dup_rate_target"] == res["2b"]["dup_rate_target"] > 0.0
    assert res["4a"]["std_f1"] == res["2b"]["std_f1"]


def test_table3_ext_rows_config() -> None:
    cfg = load_config(Path(__file__).parents[1] / "config.yaml")
    rows = table3_ext_rows(cfg)
    assert rows and all(get_experiment(e).base is not None for e, _ in rows)
    assert {d for _, d in rows} == {"chamber", "electro"}
    with pytest.raises(ConfigError, match="not an extension"):
        table3_ext_rows({**cfg, "table3_ext_rows": [["2b", "chamber"]]})
    with pytest.raises(ConfigError, match="not in datasets"):
        table3_ext_rows({**cfg, "table3_ext_rows": [["4a", "nowhere"]]})
    with pytest.raises(ConfigError, match="unknown experiment"):
        table3_ext_rows({**cfg, "table3_ext_rows": [["4z", "chamber"]]})
    assert table3_ext_rows({"datasets": {}}) == []
    # a third name: the experiment the row is compared with (issue 29: 4m against 2b)
    assert table3_ext_rows({**cfg, "table3_ext_rows": [["4m", "chamber", "2b"]]}) == [
        ("4m", "chamber", "2b")]
    with pytest.raises(ConfigError, match="unknown experiment"):
        table3_ext_rows({**cfg, "table3_ext_rows": [["4m", "chamber", "9z"]]})
    with pytest.raises(ConfigError, match="is not \\[exp, dataset\\]"):
        table3_ext_rows({**cfg, "table3_ext_rows": [["4m", "chamber", "2b", "3c"]]})
    from slotmpe.config import trained_experiments

    assert trained_experiments({"table3_ext_rows": [["4m", "chamber", "2b"]]}) == ["2b", "3c", "4m"]


def _run(root: Path, exp: str, seed: int, slot_f1: float, dup: float, tp: list[int]) -> Path:
    d = root / "chamber" / exp / f"seed{seed}"
    d.mkdir(parents=True)
    m = {"exp": exp, "dataset": "chamber", "seed": seed, "slot_f1": slot_f1, "slot_p": 50.0,
         "slot_r": 50.0, "slot_ap": 40.0, "std_f1": 90.0, "dup_rate": dup, "dup_rate_target": 2.0}
    (d / "metrics.json").write_text(json.dumps(m))
    rows = ["file,output,tp,fp,fn,n_frames,threshold"]
    rows += [f"f{i},slot,{v},10,10,100,0.5" for i, v in enumerate(tp)]
    rows += [f"f{i},mix,50,5,5,100,0.5" for i in range(len(tp))]
    (d / "per_file.csv").write_text("\n".join(rows) + "\n")
    return d / "metrics.json"


def test_table3_ext_from_runs(tmp_path: Path) -> None:
    pytest.importorskip("slotmpe.results.stats")
    from slotmpe.results.ext import ext_rows_with_bases, write_table3_ext

    rows = [("4a", "chamber")]
    assert ext_rows_with_bases(rows) == [("4a", "chamber"), ("2b", "chamber")]
    paths = [
        _run(tmp_path, "4a", 0, 60.0, 0.0, [30, 40, 50, 20]),
        _run(tmp_path, "4a", 1, 62.0, 0.0, [32, 41, 52, 22]),
        _run(tmp_path, "2b", 0, 50.0, 20.0, [10, 20, 30, 10]),
        _run(tmp_path, "2b", 1, 51.0, 22.0, [12, 21, 31, 11]),
    ]
    df = write_table3_ext(paths, rows, tmp_path / "t.csv", tmp_path / "t.md")
    r = df.iloc[0]
    assert (r["exp"], r["base"], r["dataset"], r["n_seeds"]) == ("4a", "2b", "chamber", 2)
    assert r["slot_f1"] == 61.0 and r["base_slot_f1"] == 50.5 and r["dup_rate"] == 0.0
    assert r["base_dup_rate"] == 21.0 and r["n_files"] == 4
    assert r["ci_low"] <= r["effect"] <= r["ci_high"] and r["effect"] > 0
    assert r["ci_method"].startswith("two-level") and bool(r["seeds_agree"])
    assert r["min_detectable"] == pytest.approx((r["ci_high"] - r["ci_low"]) / 2, abs=0.011)
    md = (tmp_path / "t.md").read_text()
    assert "| 4a | 2b | chamber | 2 |" in md and "Dup %" in md
    assert list(pd.read_csv(tmp_path / "t.csv")["exp"]) == ["4a"]
    from slotmpe.results.ext import ExtTableError

    with pytest.raises(ExtTableError, match="no metrics for 2b/chamber"):
        write_table3_ext(paths[:2], rows, tmp_path / "u.csv", tmp_path / "u.md")
    assert not (tmp_path / "u.csv").exists()
    # no named reference: the base; 4 test files are too few for a verdict
    assert (r["reference"], r["ref_slot_f1"], r["verdict"]) == ("2b", 50.5, "not resolved")
    assert r["reason"] == "4 test files (at least 5 needed)"
    assert "| 2b | 50.50 |" in md and "not resolved (4 test files" in md


def test_table3_ext_against_a_named_reference(tmp_path: Path) -> None:
    """A row's third name replaces its base as what the effect is measured against (issue 29:
    every extension against 2b); the base stays in the table; one seed gets no verdict."""
    pytest.importorskip("slotmpe.results.stats")
    from slotmpe.results.ext import ExtTableError, ext_rows_with_bases, write_table3_ext

    rows = [("4a", "chamber", "3c")]
    assert ext_rows_with_bases(rows) == [("4a", "chamber"), ("2b", "chamber"), ("3c", "chamber")]
    paths = [
        _run(tmp_path, "4a", 0, 40.0, 0.0, [10, 12, 30, 20, 8, 9]),
        _run(tmp_path, "4a", 1, 41.0, 0.0, [11, 13, 31, 21, 9, 9]),
        _run(tmp_path, "2b", 0, 30.0, 20.0, [1, 2, 3, 1, 1, 1]),
        _run(tmp_path, "2b", 1, 31.0, 22.0, [1, 2, 3, 1, 1, 1]),
        _run(tmp_path, "3c", 0, 60.0, 5.0, [30, 40, 50, 40, 30, 30]),
        _run(tmp_path, "3c", 1, 61.0, 5.0, [31, 41, 51, 41, 31, 31]),
    ]
    r = write_table3_ext(paths, rows, tmp_path / "t.csv", tmp_path / "t.md").iloc[0]
    assert (r["base"], r["base_slot_f1"], r["reference"], r["ref_slot_f1"]) == ("2b", 30.5, "3c", 60.5)
    assert r["ci_high"] < 0 and r["verdict"] == "worse" and r["reason"] == ""
    one = write_table3_ext([paths[0], paths[2], paths[4]], rows, tmp_path / "o.csv",
                           tmp_path / "o.md").iloc[0]
    assert one["verdict"] == "not resolved" and "1 seed" in one["reason"]
    assert "not resolved (1 seed" in (tmp_path / "o.md").read_text()
    with pytest.raises(ExtTableError, match="no metrics for 3c/chamber"):
        write_table3_ext(paths[:4], rows, tmp_path / "u.csv", tmp_path / "u.md")


def test_postprocess_steps_are_defined_for_every_row() -> None:
    from slotmpe import postprocess as PP

    p = np.random.default_rng(0).random((8, 72, 10)).astype(np.float32)
    for e in ALL_EXPERIMENTS.values():
        out, _ = PP.suppress_duplicates(p, np.linspace(0, 1, 8), steps=e.postprocess)
        assert out.shape == p.shape


def test_timbre_mask_model() -> None:
    """4f = 2b + TimbreMaskBias: 24,705 more parameters, the shared ones initialised alike, the
    bias reaches the masks, gradients reach it, and chunked eval equals one pass."""
    from slotmpe.models import build_model, count_parameters

    torch.manual_seed(0)
    m = build_model("4f")
    torch.manual_seed(0)
    b = build_model("2b")
    assert count_parameters(m) - count_parameters(b) == 192 * 128 + 128 + 1
    sb = b.state_dict()
    assert all(torch.equal(v, sb[k]) for k, v in m.state_dict().items() if k in sb)
    x = torch.randn(2, 12, 216, 23, generator=torch.Generator().manual_seed(4))
    m.train()
    out = m(x)
    (out["slot_logits"].sigmoid().mean() + out["masks"][:, 0].mean()).backward()
    for n, p in m.timbre_mask.named_parameters():
        assert p.grad is not None and bool(p.grad.abs().sum() > 0), n
    m.eval()
    with torch.no_grad():
        ref = m(x)
        m.timbre_mask.scale.fill_(0.0)  # scale 0: exactly 2b's masks with the same weights
        zero = m(x)
        b.load_state_dict({k: v for k, v in m.state_dict().items() if k in sb})
        torch.testing.assert_close(zero["masks"], b.eval()(x)["masks"])
        assert not torch.allclose(ref["masks"], zero["masks"])
        m.timbre_mask.scale.fill_(2.0)
        long_x = torch.randn(1, 12, 216, 70, generator=torch.Generator().manual_seed(5))
        whole = m(long_x)
        m.chunk_frames = 25
        chunked = m(long_x)
    for k in ("slot_logits", "masks"):
        torch.testing.assert_close(chunked[k], whole[k], atol=1e-5, rtol=1e-4)


def test_windowed_inference_frames() -> None:
    from slotmpe.inference import inference_frames

    e4g, e2b = get_experiment("4g"), get_experiment("2b")
    assert training_experiment(e4g) == "2b" and e4g.infer_frames == 64
    assert inference_frames(e2b, 20000) == 20000 and inference_frames(e2b, None) is None
    assert inference_frames(e4g, 20000) == 64 and inference_frames(e4g, None) == 64
    assert inference_frames(e4g, 40) == 40


def test_issue23_rows_4h_to_4l() -> None:
    """4h/4i change training (mask supervision, remix data) on 2b; 4j combines them; 4k/4l are
    4a/4e's inference steps on 4j's weights."""
    h, i, j, k, l_ = (get_experiment(n) for n in ("4h", "4i", "4j", "4k", "4l"))
    assert (h.base, h.mask_target, h.remix) == ("2b", True, False)
    assert (i.base, i.mask_target, i.remix) == ("2b", False, True)
    assert (j.base, j.mask_target, j.remix) == ("4h", True, True)
    assert active_loss_terms(h) == (*PAPER_TERMS["2b"], "mask")
    assert active_loss_terms(i) == PAPER_TERMS["2b"] and active_loss_terms(j) == active_loss_terms(h)
    assert [training_experiment(e) for e in (h, i, j, k, l_)] == ["4h", "4i", "4j", "4j", "4j"]
    assert (k.postprocess, l_.postprocess) == (("exclusive",), ("active",))
    assert default_loss_weights(h)["mask"] == BASE_LOSS_WEIGHTS["mask"] > 0
    for e in EXPERIMENTS.values():
        assert not e.mask_target and not e.remix and "mask" not in active_loss_terms(e)
