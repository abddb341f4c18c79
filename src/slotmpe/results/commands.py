"""``slotmpe findings`` and ``slotmpe publish-run`` (argument parsing in :mod:`slotmpe.cli`).

Errors are raised as ``FileNotFoundError`` / ``ValueError`` naming the file; the CLI prints them.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def _config_aliases(config: str | os.PathLike[str] | None, profile: str | None) -> dict[str, str]:
    """``paper_aliases`` of a workflow config (its profile applied); ``{}`` without a file."""
    if config is None:
        if not Path("config.yaml").is_file():
            return {}
        config = "config.yaml"
    from slotmpe.config import load_config

    if not Path(config).is_file():
        raise FileNotFoundError(f"config file {config} does not exist")
    cfg = load_config(config, {"profile": profile} if profile else None)
    return {str(k): str(v) for k, v in (cfg.get("paper_aliases") or {}).items()}


def run_findings(
    folder: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    config: str | os.PathLike[str] | None = None,
    profile: str | None = None,
) -> int:
    """Rebuild Table III, the note table, the findings and table3_ext of a ``results/`` tree or a
    published run folder (:func:`slotmpe.results.build.rebuild`) and print the findings; returns 0."""
    from slotmpe.results.build import rebuild

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder (a results/ tree or docs/runs/<run>)")
    written = rebuild(folder, None if out is None else Path(out), _config_aliases(config, profile))
    md = next((p for p in written if p.name == "findings.md"), None)
    if md is not None:
        print(md.read_text(), end="")
    for p in written:
        print(f"written {p}", file=sys.stderr)
    return 0


def run_publish(
    results_dir: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    config: str | os.PathLike[str] | None = None,
    profile: str | None = None,
) -> int:
    """Publish the small outputs of a ``results/`` tree (:func:`slotmpe.results.publish.publish_run`)
    and print the folder; returns 0."""
    from slotmpe.results.publish import publish_run

    dest = publish_run(Path(results_dir), None if out is None else Path(out),
                       _config_aliases(config, profile))
    print(dest)
    return 0
