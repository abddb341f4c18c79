"""Config resolution (profiles, overrides) and the mapping of config sections to settings."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from slotmpe.config import ConfigError, apply_profile, deep_merge, load_config, table3_rows
from slotmpe.pipeline import settings_to

REPO = Path(__file__).resolve().parents[1]


def test_deep_merge_merges_dicts_and_replaces_lists() -> None:
    base = {"a": {"x": 1, "y": [1, 2]}, "b": 1}
    out = deep_merge(base, {"a": {"y": [3]}, "c": 2})
    assert out == {"a": {"x": 1, "y": [3]}, "b": 1, "c": 2}
    assert base == {"a": {"x": 1, "y": [1, 2]}, "b": 1}  # input untouched


def test_profile_overlay_then_overrides() -> None:
    cfg = {"profile": "p", "train": {"lr": 1.0, "epochs": 5}, "profiles": {"p": {"train": {"epochs": 1}}}}
    assert apply_profile(cfg)["train"] == {"lr": 1.0, "epochs": 1}
    assert apply_profile(cfg, {"train": {"epochs": 9}})["train"] == {"lr": 1.0, "epochs": 9}
    with pytest.raises(ConfigError, match="unknown profile 'q'"):
        apply_profile(cfg, {"profile": "q"})


@pytest.mark.parametrize("profile", ["default", "tiny", "paper"])
def test_shipped_profiles_resolve(profile: str) -> None:
    cfg = load_config(REPO / "config.yaml", {"profile": profile})
    rows = table3_rows(cfg)
    assert len(rows) == (15 if profile == "paper" else 14)
    assert cfg["fig2_dataset"] in cfg["datasets"]


def test_table3_rows_must_name_configured_datasets() -> None:
    with pytest.raises(ConfigError, match="nowhere"):
        table3_rows({"datasets": {"a": {}}, "table3_rows": [["1a", "nowhere"]]})


def test_settings_to_rejects_unknown_keys() -> None:
    @dataclass
    class S:
        lr: float = 0.1
        seed: int = 0

    assert settings_to(S, {"lr": 0.5}, seed=3) == S(0.5, 3)
    with pytest.raises(KeyError, match="learning_rate"):
        settings_to(S, {"learning_rate": 0.5})


def test_nested_command_line_strings_are_coerced() -> None:
    cfg = {"profile": "p", "train": {"max_epochs": 5}, "profiles": {"p": {}}}
    out = apply_profile(cfg, {"train": {"max_epochs": "2", "lr": "0.1", "windows_per_epoch": "null"},
                              "table3_rows": [["1a", "chamber"]]})
    assert out["train"] == {"max_epochs": 2, "lr": 0.1, "windows_per_epoch": None}
    assert out["table3_rows"] == [["1a", "chamber"]]
