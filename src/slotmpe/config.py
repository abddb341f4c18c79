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


def table3_ext_rows(config: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The configured extension rows (``table3_ext_rows``) as ``(exp, dataset)`` pairs.

    Checked like :func:`table3_rows`; each experiment must be an extension (one with a ``base``).
    Empty when the key is absent.
    """
    from slotmpe.experiments import get_experiment

    rows = [(str(r[0]), str(r[1])) for r in config.get("table3_ext_rows", None) or []]
    known = set(config.get("datasets", {}))
    for exp, ds in rows:
        if ds not in known:
            raise ConfigError(
                f"table3_ext_rows names dataset {ds!r} (exp {exp}) not in datasets: {sorted(known)}"
            )
        try:
            e = get_experiment(exp)
        except KeyError as err:
            raise ConfigError(f"table3_ext_rows: {err.args[0]}") from None
        if e.base is None:
            raise ConfigError(f"table3_ext_rows: {exp} is not an extension experiment (no base)")
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


def validate_config(config: Mapping[str, Any], schema: str | Path | Mapping[str, Any]) -> None:
    """Check ``config`` against the JSON schema (``workflow/schemas/config.schema.yaml``).

    Raises :class:`ConfigError` listing every problem, one line each: an unknown key names the
    closest valid key (``seedz`` -> ``seeds``, ``max_epoch`` -> ``max_epochs``, a dataset's
    ``minuts`` -> ``minutes``, among the keys of that dataset's ``type``), any other violation
    names the setting and jsonschema's message. ``config`` is not changed (Snakemake's
    ``validate`` fills in the defaults afterwards).
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
    if messages:
        raise ConfigError("\n".join(dict.fromkeys(messages)))
