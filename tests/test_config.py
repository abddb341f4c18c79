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


# ------------------------------------------------------------------ unknown keys (issue 24, fault 5)

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


def _schema() -> dict:
    import yaml

    return yaml.safe_load(SCHEMA.read_text())


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ({"seedz": "[1]"}, r"unknown key 'seedz' in the top level; did you mean 'seeds'\?"),
        ({"train": {"max_epoch": "2"}}, r"'max_epoch' in train; did you mean 'max_epochs'\?"),
        ({"train": {"loss_weights": {"timbr": "0.3"}}},
         r"'timbr' in train.loss_weights; did you mean 'timbre'\?"),
        ({"datasets": {"chamber": {"minuts": "1"}}},
         r"'minuts' in datasets.chamber for a dataset of type 'chamber'; did you mean 'minutes'\?"),
        ({"datasets": {"mine": {"type": "folder", "path": "x", "minutes": "1"}}},
         r"'minutes' in datasets.mine for a dataset of type 'folder'"),
        ({"timbre": {"batchsize": "4"}}, r"did you mean 'batch_size'\?"),
    ],
)
def test_config_typos_name_the_closest_valid_key(override: dict, needle: str) -> None:
    from slotmpe.config import validate_config

    with pytest.raises(ConfigError, match=needle):
        validate_config(load_config(REPO / "config.yaml", override), SCHEMA)


@pytest.mark.parametrize("profile", ["default", "tiny", "paper", "quick", "activity29"])
def test_shipped_profiles_and_new_keys_validate(profile: str) -> None:
    from slotmpe.config import validate_config

    validate_config(load_config(REPO / "config.yaml", {"profile": profile}), SCHEMA)
    # keys other engineers add concurrently (issue 24's brief)
    new = {"train": {"precision": "bf16", "grad_clip": "null", "selection_metric": "mix",
                     "val_every": "2", "plateau_metric": "total"},
           "datasets": {"chamber": {"val_pieces": "2", "test_pieces": "2"},
                        "mine": {"type": "folder", "path": "x"},
                        "toy": {"type": "urmp", "url": "u", "md5": "0" * 31 + "1"}}}
    validate_config(load_config(REPO / "config.yaml", {"profile": profile, **new}), SCHEMA)


def test_schema_keys_match_the_code() -> None:
    """The schema's keys are those the code reads: a key added to a dataclass or builder without
    the schema (or the reverse) fails here."""
    import dataclasses

    from slotmpe.datasets import embedded, folder
    from slotmpe.experiments import BASE_LOSS_WEIGHTS
    from slotmpe.timbre import TimbreConfig
    from slotmpe.training import TrainConfig

    s = _schema()
    d = s["$defs"]
    set_by_workflow = {"seed", "threads", "widths"}
    pending = {"precision", "val_every", "plateau_metric"}  # added by concurrent work (issue 24)
    train = {f.name for f in dataclasses.fields(TrainConfig)} - set_by_workflow
    assert train <= set(d["train"]["properties"]) <= train | pending
    timbre = {f.name for f in dataclasses.fields(TimbreConfig)} - set_by_workflow
    assert set(d["timbre"]["properties"]) == timbre
    assert set(d["train"]["properties"]["loss_weights"]["properties"]) == set(BASE_LOSS_WEIGHTS)
    embedded_keys = set(d["dataset_embedded"]["properties"]) | {"name"}
    splits = {"val_pieces", "test_pieces"}
    assert embedded_keys | set(d["dataset_chamber"].get("properties", {})) == (
        set(embedded.CHAMBER_DEFAULTS) | splits)
    assert embedded_keys | set(d["dataset_electro"]["properties"]) == (
        set(embedded.ELECTRO_DEFAULTS) | splits)
    assert set(d["dataset_folder"]["properties"]) | {"name"} == set(folder.DEFAULTS) | {"path"}


def test_dry_run_rejects_a_typo(tmp_path: Path) -> None:
    """Through Snakemake: the typo fails at validation with the suggestion (it passed before)."""
    import shutil
    import subprocess
    import sys

    shutil.copy(REPO / "config.yaml", tmp_path / "config.yaml")
    res = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d",
                          str(tmp_path), "-n", "results/table3.csv", "--config",
                          "train={max_epoch: 2}"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode != 0
    assert "did you mean 'max_epochs'?" in res.stdout + res.stderr


# ------------------------------------------------------------------ values (issue 31, fault 9)


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ({"train": {"device": "banana"}}, r"train.device: 'banana' does not match"),
        ({"timbre": {"device": "gpu"}}, r"timbre.device: 'gpu' does not match"),
        ({"datasets": {"chamber": {"tempo_range": [0, 0]}}},
         r"datasets.chamber.tempo_range.0: 0 is less than or equal to the minimum of 0"),
        ({"datasets": {"electro": {"gain_db_range": [0, -9]}}},
         r"datasets.electro.gain_db_range: \[0, -9\] is reversed; give \[low, high\]"),
        ({"datasets": {"chamber": {"velocity_range": [200, 300]}}},
         r"datasets.chamber.velocity_range.0: 200 is greater than the maximum of 127"),
        ({"datasets": {"chamber": {"tempo_range": [120, 60]}}},
         r"datasets.chamber.tempo_range: \[120, 60\] is reversed"),
        ({"datasets": {"chamber": {"val_fraction": "0.8", "test_fraction": "0.8"}}},
         r"datasets.chamber.val_fraction \+ test_fraction = 0.8 \+ 0.8 = 1.6: they must sum to "
         r"less than 1"),
        ({"datasets": {"mine": {"type": "folder", "path": "x", "val_fraction": "0.9"}}},
         r"datasets.mine.val_fraction \+ test_fraction = 0.9 \+ 0.15 = 1.05"),
        ({"train": {"selection_metric": "banana"}},
         r"train.selection_metric: 'banana' is not a validation column of experiment\(s\) 1a, "),
        ({"train": {"plateau_metric": "timbre"}},
         r"train.plateau_metric: 'timbre' is not a validation column of experiment\(s\) 1a, 1b, "
         r"1c;.* every trained experiment logs: mix"),
    ],
)
def test_config_values_a_job_would_fail_on_are_refused(override: dict, needle: str) -> None:
    """Each passed validation and failed only at job time (or, the velocity, was clamped to 127
    silently); now validate_config refuses it, naming the key."""
    from slotmpe.config import validate_config

    with pytest.raises(ConfigError, match=needle):
        validate_config(load_config(REPO / "config.yaml", override), SCHEMA)


def test_a_cuda_device_without_cuda_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """`device: cuda` on a machine without CUDA failed in the job with a traceback; now at
    validation (the workflow skips the check on a cluster's submit host: check_devices)."""
    import torch

    from slotmpe.config import validate_config

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for key in ("train", "timbre"):
        cfg = load_config(REPO / "config.yaml", {key: {"device": "cuda"}})
        with pytest.raises(ConfigError, match=rf"{key}.device: 'cuda' but CUDA is not available"):
            validate_config(cfg, SCHEMA)
        validate_config(cfg, SCHEMA, check_devices=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    validate_config(load_config(REPO / "config.yaml", {"train": {"device": "cuda:0"}}), SCHEMA)
    with pytest.raises(ConfigError, match=r"train.device: 'cuda:1' but this machine has 1 CUDA"):
        validate_config(load_config(REPO / "config.yaml", {"train": {"device": "cuda:1"}}), SCHEMA)


def test_good_values_still_validate() -> None:
    """A fixed tempo, a fixed gain, fractions below 1 and a term every experiment logs pass."""
    from slotmpe.config import validate_config

    validate_config(load_config(REPO / "config.yaml", {
        "train": {"selection_metric": "mix", "plateau_metric": "total", "device": "cpu"},
        "timbre": {"device": "auto"},
        "datasets": {"chamber": {"tempo_range": [90, 90], "gain_db_range": [-3, -3],
                                 "velocity_range": [1, 127], "val_fraction": "0.4",
                                 "test_fraction": "0.5"}}}), SCHEMA)


def test_dry_run_rejects_a_cuda_device_without_cuda(tmp_path: Path) -> None:
    """Through Snakemake: refused at parse time, before any job starts."""
    import shutil
    import subprocess
    import sys

    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    shutil.copy(REPO / "config.yaml", tmp_path / "config.yaml")
    res = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d",
                          str(tmp_path), "-n", "results/table3.csv", "--config",
                          "train={device: cuda}"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode != 0
    assert "train.device: 'cuda' but CUDA is not available" in res.stdout + res.stderr
