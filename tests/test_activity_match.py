"""Extension 4m (issue 29): the slot activity in the Hungarian cost, from the config to the loss.

The cost itself is tested in test_matching.py and its effect on the loss terms in test_losses.py;
here: the 4m row, ``train.activity_match_weight`` reaching the matching through
:class:`TrainConfig` and the training step, the schema key and resume checkpoints written before
the field existed.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from slotmpe import losses as L
from slotmpe import matching as Mt
from slotmpe.experiments import (
    EXPERIMENTS,
    active_loss_terms,
    get_experiment,
    resolve_activity_match_weight,
    training_experiment,
)
from slotmpe.training import TrainConfig
from slotmpe.training import checkpoint as C
from slotmpe.training import steps as S

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]


def test_4m_is_3c_with_activity_in_the_matching() -> None:
    e = get_experiment("4m")
    assert e.base == "3c" and training_experiment(e) == "4m" and e.derived_from is None
    assert dataclasses.replace(e, name="3c", base=None, description="",
                               activity_match_weight=None) == EXPERIMENTS["3c"]
    assert e.activity_match_weight == 3.0  # set on validation (issue 29 screening)
    assert active_loss_terms(e) == active_loss_terms(EXPERIMENTS["3c"])
    assert all(x.activity_match_weight is None for x in EXPERIMENTS.values())


def test_4n_is_2b_with_4ms_weight() -> None:
    """4n: the same change as 4m on 2b (the best stem row of the published run), trained."""
    n, m = get_experiment("4n"), get_experiment("4m")
    assert n.base == "2b" and training_experiment(n) == "4n" and n.derived_from is None
    assert n.activity_match_weight == m.activity_match_weight == 3.0
    assert dataclasses.replace(n, name="2b", base=None, description="",
                               activity_match_weight=None) == EXPERIMENTS["2b"]
    assert resolve_activity_match_weight(n, 0.0) == 3.0


def test_resolve_weight() -> None:
    assert resolve_activity_match_weight(get_experiment("3c"), 0.0) == 0.0
    assert resolve_activity_match_weight(get_experiment("2b"), 0.3) == 0.3
    assert resolve_activity_match_weight(get_experiment("4m"), 0.0) == 3.0
    assert resolve_activity_match_weight(get_experiment("4m"), 1.0) == 3.0
    assert resolve_activity_match_weight(get_experiment("1b"), 3.0) == 0.0  # fixed order
    assert resolve_activity_match_weight(get_experiment("1c"), 3.0) == 0.0  # family: the paper's
    assert resolve_activity_match_weight(get_experiment("2a"), 3.0) == 3.0
    with pytest.raises(ValueError, match=">= 0"):
        resolve_activity_match_weight(get_experiment("2b"), -1.0)
    with pytest.raises(ValueError, match="activity_match_weight"):
        dataclasses.replace(get_experiment("2b"), activity_match_weight=-0.5)
    with pytest.raises(ValueError, match="activity_match_weight"):
        TrainConfig(activity_match_weight=-1.0)


def _batch(b: int = 2, w: int = 23) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    sources = torch.zeros(b, 8, 72, w)
    present = torch.zeros(b, 8, dtype=torch.bool)
    sources[:, 0, 30, :] = 1.0
    sources[:, 1, 40, :10] = 1.0
    present[:, :2] = True
    mix = sources.amax(1)
    return {"x": torch.randn(b, 12, 216, w, generator=g), "mix": mix,
            "family": torch.zeros(b, 4, 72, w), "sources": sources, "source_present": present,
            "source_emb": torch.nn.functional.normalize(torch.randn(b, 8, 128, generator=g), dim=-1),
            "poly": mix.sum(1).long(), "source_poly": sources.sum(2)}


@pytest.mark.parametrize(("exp_name", "cfg_weight", "expected"),
                         [("3c", 0.7, 0.7), ("3c", 0.0, 0.0), ("4m", 0.0, 3.0)])
def test_config_weight_reaches_the_matching_of_a_training_epoch(
    monkeypatch: pytest.MonkeyPatch, exp_name: str, cfg_weight: float, expected: float
) -> None:
    """``TrainConfig.activity_match_weight`` is the activity weight of every matching of a
    training epoch and of the validation losses (4m: its own weight)."""
    from slotmpe.experiments import default_loss_weights
    from slotmpe.models import build_model

    seen: list[tuple[float, bool]] = []
    real = Mt.hungarian_match

    def spy(*args: Any, **kw: Any) -> list[Mt.Match]:
        seen.append((float(args[7]), args[6] is not None))
        return real(*args, **kw)

    monkeypatch.setattr(L, "hungarian_match", spy)
    exp = get_experiment(exp_name)
    torch.manual_seed(0)
    model = build_model(exp_name)
    cfg = TrainConfig(activity_match_weight=cfg_weight, channels_last=False, device="cpu")
    opt = S.make_optimizer(model, cfg.lr)
    w = default_loss_weights(exp)
    S.train_one_epoch(model, [_batch()], exp, w, opt, cfg, torch.device("cpu"))
    S.evaluate_losses(model, [_batch()], exp, w, cfg, torch.device("cpu"))
    assert seen == [(expected, expected > 0)] * 2


def test_schema_has_the_key() -> None:
    schema = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())
    train = next(v for k, v in _walk(schema) if k == "train" and "properties" in v)
    prop = train["properties"]["activity_match_weight"]
    assert prop["minimum"] == 0 and prop["default"] == TrainConfig().activity_match_weight


def _walk(d: Any) -> Any:
    if isinstance(d, dict):
        for k, v in d.items():
            yield k, v
            yield from _walk(v)


def test_identity_has_the_weight_and_old_checkpoints_resume(tmp_path: Path) -> None:
    """The weight is part of a run's identity; a checkpoint written before the field existed
    resumes under the default (0) and is refused under another weight."""
    ident = C._identity("3c", TrainConfig(), "fp32")
    assert ident["activity_match_weight"] == 0.0
    old = {k: v for k, v in ident.items() if k != "activity_match_weight"}
    path = tmp_path / C.CHECKPOINT_NAME
    torch.save({"version": C._CKPT_VERSION, "identity": old}, path)
    assert C._load_last(path, ident)["identity"] == old
    with pytest.raises(RuntimeError, match="activity_match_weight"):
        C._load_last(path, C._identity("3c", TrainConfig(activity_match_weight=1.0), "fp32"))


def test_default_config_puts_activity_in_the_matching_of_the_stem_rows() -> None:
    """Issue 29's confirmation made the term the default for 2a-3c (weight 3); 1c keeps the
    paper's matching; `activity29` (the confirmation's profile) trains 2b and 3c with the
    paper's matching, as the published run did."""
    from slotmpe.config import load_config

    cfg = load_config(ROOT / "config.yaml")
    w = float(cfg["train"]["activity_match_weight"])
    assert w == 3.0
    got = {n: resolve_activity_match_weight(get_experiment(n), w)
           for n in ("1a", "1b", "1c", "2a", "2b", "3a", "3b", "3c")}
    assert got == {"1a": 0.0, "1b": 0.0, "1c": 0.0, "2a": 3.0, "2b": 3.0, "3a": 3.0, "3b": 3.0,
                   "3c": 3.0}
    paper_matching = load_config(ROOT / "config.yaml", {"profile": "activity29"})
    assert float(paper_matching["train"]["activity_match_weight"]) == 0.0
