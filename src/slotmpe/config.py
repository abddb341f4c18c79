"""Workflow configuration: profile overlays and the mapping of config sections to typed settings.

``config.yaml`` holds the ``default`` settings at the top level and, under ``profiles``, overlays
for ``tiny`` (tests/CI) and ``paper`` (real datasets, full protocol). The effective configuration
is ``deep_merge(file, profiles[profile])`` with the user's ``--config`` overrides applied last, so
any key can be overridden on the command line whatever the profile. Dictionaries merge key by key;
lists and scalars are replaced.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """Raised for an unknown profile or a malformed configuration."""


def deep_merge(base: Mapping[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    """Return a new dict: ``base`` updated recursively by ``overlay`` (dicts merge, others replace)."""
    out: dict[str, Any] = copy.deepcopy(dict(base))
    for key, value in overlay.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


CHECKSUM_KEYS = frozenset({"md5", "sha256"})
"""Keys whose values stay strings as typed (an all-digit md5 is not a number)."""


def coerce_scalars(value: Any) -> Any:
    """Turn string leaves into YAML scalars (``"2"`` -> 2, ``"null"`` -> None, ``"1a"`` stays).

    Snakemake parses nested ``--config`` values with YAML's BaseLoader, which keeps every scalar
    a string (``--config train='{max_epochs: 2}'`` gives ``{"max_epochs": "2"}``). Values of
    ``CHECKSUM_KEYS`` are left as typed: YAML would turn an all-digit md5 into an integer.
    """
    if isinstance(value, Mapping):
        return {
            k: (v if k in CHECKSUM_KEYS and isinstance(v, str) else coerce_scalars(v))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [coerce_scalars(v) for v in value]
    if isinstance(value, str):
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            return value
        return parsed if parsed is None or isinstance(parsed, (bool, int, float, str)) else value
    return value


def apply_profile(
    config: Mapping[str, Any], overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Apply ``config["profiles"][config["profile"]]``, then ``overrides`` (command-line --config)."""
    overrides = coerce_scalars(dict(overrides or {}))
    merged = deep_merge(config, overrides)
    profile = merged.get("profile", "default")
    profiles = merged.get("profiles", {}) or {}
    if profile not in profiles:
        raise ConfigError(
            f"unknown profile {profile!r}; config.yaml defines: {', '.join(sorted(profiles)) or 'none'}"
        )
    return normalise_checksums(deep_merge(deep_merge(merged, profiles[profile] or {}), overrides))


def normalise_checksums(config: dict[str, Any]) -> dict[str, Any]:
    """Write every ``datasets.*.md5`` / ``sha256`` as lower-case hex, however YAML typed it.

    See :func:`slotmpe.download.checksum_hex` (which all-digit values YAML read as integers are
    recovered, and why some cannot be). Raises :class:`ConfigError` naming the setting for a value
    that is not 32 (md5) / 64 (sha256) hex digits. ``config`` is changed in place and returned.
    """
    from slotmpe.download import checksum_hex

    datasets = config.get("datasets")
    if not isinstance(datasets, Mapping):
        return config
    for name, entry in datasets.items():
        if not isinstance(entry, dict):
            continue
        for algo in sorted(CHECKSUM_KEYS & set(entry)):
            try:
                entry[algo] = checksum_hex(entry[algo], algo, f"datasets.{name}.{algo}")
            except ValueError as exc:
                raise ConfigError(str(exc)) from exc
    return config


def load_config(
    path: str | Path = "config.yaml", overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Read a config file and resolve its profile (for use outside Snakemake, e.g. tests)."""
    with open(path, encoding="utf-8") as fh:
        raw = yaml.safe_load(fh) or {}
    return apply_profile(raw, overrides)


def table3_rows(config: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The configured Table III rows as ``(exp, dataset)`` pairs, checked against the datasets."""
    rows = [(str(r[0]), str(r[1])) for r in config.get("table3_rows", [])]
    known = set(config.get("datasets", {}))
    for exp, ds in rows:
        if ds not in known:
            raise ConfigError(f"table3_rows names dataset {ds!r} (exp {exp}) not in datasets: {sorted(known)}")
    return rows


def table3_ext_rows(config: Mapping[str, Any]) -> list[tuple[str, ...]]:
    """The configured extension rows (``table3_ext_rows``) as ``(exp, dataset)`` pairs, or
    ``(exp, dataset, reference)`` where a row names the experiment its effect is measured
    against (default: the extension's base; :mod:`slotmpe.results.ext`).

    Checked like :func:`table3_rows`; each experiment must be an extension (one with a ``base``),
    a reference a known experiment. Empty when the key is absent.
    """
    from slotmpe.experiments import get_experiment, reference_of

    rows = [tuple(str(x) for x in r) for r in config.get("table3_ext_rows", None) or []]
    known = set(config.get("datasets", {}))
    for row in rows:
        try:  # the row's shape, its experiment an extension, its reference a known experiment
            get_experiment(reference_of(row))
        except KeyError as err:
            raise ConfigError(f"table3_ext_rows: {err.args[0]}") from None
        except ValueError as err:
            raise ConfigError(str(err)) from None
        if row[1] not in known:
            raise ConfigError(f"table3_ext_rows names dataset {row[1]!r} (exp {row[0]}) not in "
                              f"datasets: {sorted(known)}")
    return rows


# --------------------------------------------------------------------------------------------
# validation with readable errors


def _ref_target(ref: str, root: Mapping[str, Any]) -> Mapping[str, Any]:
    """The subschema a local ``$ref`` (``#/$defs/name``) points to."""
    target: Any = root
    for part in ref.removeprefix("#/").split("/"):
        target = target[part]
    return target  # type: ignore[no-any-return]


def allowed_keys(schema: Mapping[str, Any], instance: Any, root: Mapping[str, Any]) -> set[str]:
    """Keys an object ``instance`` may have under ``schema``: its ``properties`` and those of the
    subschemas that apply in place (``$ref``, ``allOf``, and ``then`` where ``if`` holds)."""
    import jsonschema

    out = set(schema.get("properties", {}))
    if isinstance(schema.get("$ref"), str):
        out |= allowed_keys(_ref_target(schema["$ref"], root), instance, root)
    for sub in schema.get("allOf", []):
        out |= allowed_keys(sub, instance, root)
    if "if" in schema and "then" in schema:
        cls = jsonschema.validators.validator_for(root)
        if cls(schema["if"]).is_valid(instance):
            out |= allowed_keys(schema["then"], instance, root)
    return out


def _where(path: Any) -> str:
    return ".".join(str(p) for p in path) or "the top level"


def _unknown_key_messages(error: Any, root: Mapping[str, Any]) -> list[str]:
    """One message per unknown key of an ``additionalProperties``/``unevaluatedProperties``
    error, naming the closest valid key (difflib) and the valid ones."""
    import difflib

    inst = error.instance
    if not isinstance(inst, Mapping):
        return []
    allowed = sorted(allowed_keys(error.schema, inst, root))
    out = []
    for key in sorted(set(inst) - set(allowed), key=str):
        close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}? " if close else ""
        kind = ""
        if isinstance(inst.get("type"), str) and list(error.absolute_path)[:1] == ["datasets"]:
            kind = f" for a dataset of type {inst['type']!r}"
        out.append(f"config: unknown key {key!r} in {_where(error.absolute_path)}{kind}; {hint}"
                   f"valid keys: {', '.join(allowed)}")
    return out


def validate_config(
    config: Mapping[str, Any],
    schema: str | Path | Mapping[str, Any],
    check_devices: bool = True,
) -> None:
    """Check ``config`` against the JSON schema (``workflow/schemas/config.schema.yaml``), then
    the values the schema cannot express (:func:`value_problems`).

    Raises :class:`ConfigError` listing every problem, one line each: an unknown key names the
    closest valid key (``seedz`` -> ``seeds``, ``max_epoch`` -> ``max_epochs``, a dataset's
    ``minuts`` -> ``minutes``, among the keys of that dataset's ``type``), any other violation
    names the setting and the problem. ``check_devices``: also refuse a ``train.device`` /
    ``timbre.device`` this machine does not have (``cuda`` without CUDA); the workflow turns it
    off on a cluster's submit host, whose jobs run elsewhere. ``config`` is not changed
    (Snakemake's ``validate`` fills in the defaults afterwards).
    """
    import jsonschema

    if not isinstance(schema, Mapping):
        with open(schema, encoding="utf-8") as fh:
            schema = yaml.safe_load(fh)
    cls = jsonschema.validators.validator_for(schema)
    messages: list[str] = []
    errors = sorted(cls(schema).iter_errors(config), key=lambda e: [str(p) for p in e.path])
    for err in errors:
        if err.validator in ("additionalProperties", "unevaluatedProperties"):
            messages += _unknown_key_messages(err, schema)
        else:
            messages.append(f"config: {_where(err.absolute_path)}: {err.message}")
    if not messages:  # the value checks rely on the types the schema guarantees
        messages += value_problems(config, check_devices)
    if messages:
        raise ConfigError("\n".join(dict.fromkeys(messages)))


# --------------------------------------------------------------------------------------------
# values the schema cannot express

RANGE_KEYS = ("tempo_range", "gain_db_range", "velocity_range")
"""``[low, high]`` settings of a dataset entry (the schema checks each bound on its own)."""
SPLIT_TYPES = frozenset({"chamber", "electro", "folder"})
"""Dataset types that draw their splits from ``val_fraction`` / ``test_fraction``."""


def _split_defaults(kind: str) -> Mapping[str, Any]:
    if kind == "folder":
        from slotmpe.datasets.folder import DEFAULTS

        return DEFAULTS
    from slotmpe.datasets import embedded

    return embedded.CHAMBER_DEFAULTS if kind == "chamber" else embedded.ELECTRO_DEFAULTS


def _dataset_problems(name: str, entry: Mapping[str, Any]) -> list[str]:
    """Reversed ``[low, high]`` ranges and split fractions that leave no training split."""
    out = []
    for key in RANGE_KEYS:
        rng = entry.get(key)
        if isinstance(rng, list) and len(rng) == 2 and rng[0] > rng[1]:
            out.append(f"config: datasets.{name}.{key}: {rng} is reversed; give [low, high] "
                       f"(e.g. {sorted(rng)})")
    kind = entry.get("type")
    if kind in SPLIT_TYPES and ("val_fraction" in entry or "test_fraction" in entry):
        defaults = _split_defaults(str(kind))
        val = float(entry.get("val_fraction", defaults["val_fraction"]))
        test = float(entry.get("test_fraction", defaults["test_fraction"]))
        if val + test >= 1.0:
            out.append(f"config: datasets.{name}.val_fraction + test_fraction = {val:g} + "
                       f"{test:g} = {val + test:g}: they must sum to less than 1 (the rest of "
                       "the pieces is the train split)")
    return out


def trained_experiments(config: Mapping[str, Any]) -> list[str]:
    """Experiments whose models the config's rows train (or reuse): every Table III and
    extension row, the run it is derived from (:func:`slotmpe.experiments.training_experiment`)
    and an extension's base; in table order."""
    from slotmpe.experiments import ALL_EXPERIMENTS, training_experiment

    names: set[str] = set()
    for row in [*(config.get("table3_rows") or []), *(config.get("table3_ext_rows") or [])]:
        e = ALL_EXPERIMENTS.get(str(row[0]))
        if e is None:
            continue
        names |= {e.name, *(n for n in (e.derived_from, e.base) if n)}
        if len(row) == 3 and str(row[2]) in ALL_EXPERIMENTS:  # an extension row's reference
            names |= {str(row[2]), training_experiment(str(row[2]))}
    return [n for n in ALL_EXPERIMENTS if n in names]


def _metric_problems(config: Mapping[str, Any]) -> list[str]:
    """``train.selection_metric`` / ``plateau_metric`` that a trained experiment does not log
    (``pitch`` and ``total`` always exist; :func:`slotmpe.losses.logged_terms`)."""
    train = config.get("train") or {}
    keys = [(k, train.get(k)) for k in ("selection_metric", "plateau_metric")]
    keys = [(k, str(v)) for k, v in keys if v is not None and str(v) not in ("pitch", "total")]
    if not keys:
        return []
    from slotmpe.experiments import get_experiment
    from slotmpe.losses import logged_terms

    exps = trained_experiments(config)
    logged = {e: set(logged_terms(get_experiment(e))) for e in exps}
    common = [t for t in logged_terms(get_experiment(exps[0]))
              if all(t in v for v in logged.values())] if exps else []
    out = []
    for key, value in keys:
        missing = [e for e in exps if value not in logged[e]]
        if missing:
            out.append(f"config: train.{key}: {value!r} is not a validation column of experiment"
                       f"(s) {', '.join(missing)}; use 'pitch', 'total' or a loss term every "
                       f"trained experiment logs: {', '.join(common) or '(none)'}")
    return out


DEVICE_KEYS = ("train.device", "timbre.device")


def _device_problems(config: Mapping[str, Any]) -> list[str]:
    """Devices this machine does not have (``cuda``/``cuda:N`` without CUDA or that GPU,
    ``mps`` without MPS); torch is imported only when such a device is named."""
    out = []
    for key in DEVICE_KEYS:
        section, field = key.split(".")
        dev = (config.get(section) or {}).get(field)
        if not isinstance(dev, str) or dev in ("auto", "cpu"):
            continue
        import torch

        if dev.startswith("cuda"):
            n = torch.cuda.device_count() if torch.cuda.is_available() else 0
            index = int(dev.split(":")[1]) if ":" in dev else 0
            if n == 0:
                out.append(f"config: {key}: {dev!r} but CUDA is not available on this machine "
                           f"(torch {torch.__version__}); use auto or cpu")
            elif index >= n:
                out.append(f"config: {key}: {dev!r} but this machine has {n} CUDA device(s)")
        elif dev == "mps" and not torch.backends.mps.is_available():
            out.append(f"config: {key}: 'mps' but MPS is not available on this machine; use "
                       "auto or cpu")
    return out


def value_problems(config: Mapping[str, Any], check_devices: bool = True) -> list[str]:
    """One message per value the schema lets through but a job would fail on: a reversed
    ``[low, high]`` range of a dataset, split fractions that leave no training split, a
    ``selection_metric`` / ``plateau_metric`` a trained experiment does not log, and (with
    ``check_devices``) a device this machine lacks."""
    out: list[str] = []
    for name, entry in (config.get("datasets") or {}).items():
        if isinstance(entry, Mapping):
            out += _dataset_problems(str(name), entry)
    out += _metric_problems(config)
    if check_devices:
        out += _device_problems(config)
    return out
