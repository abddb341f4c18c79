"""``slotmpe findings`` and ``slotmpe publish-run`` (argument parsing in :mod:`slotmpe.cli`).

Errors are raised as ``FileNotFoundError`` / ``ValueError`` naming the file; the CLI prints them.
Neither command depends on the current directory: the workflow config is found from the folder
given (:func:`slotmpe.results.provenance.find_config`), the paper's figures are package data.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def _config_aliases(
    folder: Path, config: str | os.PathLike[str] | None, profile: str | None
) -> dict[str, str] | None:
    """``paper_aliases`` of the workflow config of ``folder`` (``config``, else found beside it
    or in its checkout; its profile applied); ``None`` when no config is found."""
    from slotmpe.results.provenance import find_config, load_run_config

    path = find_config(folder, config)
    if path is None:
        return None
    cfg = load_run_config(path, profile)
    return {str(k): str(v) for k, v in (cfg.get("paper_aliases") or {}).items()}


def run_findings(
    folder: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    config: str | os.PathLike[str] | None = None,
    profile: str | None = None,
) -> int:
    """Rebuild Table III, the note table, the findings and table3_ext of a ``results/`` tree or a
    published run folder (:func:`slotmpe.results.build.rebuild`) and print the findings (and, on
    stderr, seeds that ran on different CPU kinds or precisions); returns 0."""
    from slotmpe.results.build import ENVIRONMENT_NAME, rebuild

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder (a results/ tree or docs/runs/<run>)")
    published = (folder / ENVIRONMENT_NAME).is_file()
    aliases = (None if published and config is None
               else _config_aliases(folder, config, profile))
    written, warnings = rebuild(folder, None if out is None else Path(out), aliases)
    md = next((p for p in written if p.name == "findings.md"), None)
    if md is not None:
        print(md.read_text(), end="")
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    for p in written:
        print(f"written {p}", file=sys.stderr)
    return 0


def run_publish(
    results_dir: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    config: str | os.PathLike[str] | None = None,
    profile: str | None = None,
) -> int:
    """Publish the finished seeds of a ``results/`` tree (:func:`slotmpe.results.publish.
    publish_run`) and print the folder; returns 0."""
    from slotmpe.results.publish import publish_run

    dest = publish_run(Path(results_dir), None if out is None else Path(out), config, profile)
    print(dest)
    return 0
