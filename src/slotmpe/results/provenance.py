"""Where a run's seeds came from, and the checks that they belong together.

A run is built seed by seed (issue 28): each seed is trained in a git worktree of one pinned
commit and published into the same ``docs/runs/<date>-<commit>/``. This module finds

* the **slotmpe checkout** that made a ``results/`` tree (:func:`project_for`): the git toplevel
  holding the tree when it is a slotmpe checkout (``Snakefile``, ``workflow/``, ``src/slotmpe``),
  else the checkout of the imported package; never the repository of the current directory, so
  a command run from inside another repository records the right commit;
* its **commit** and whether it had uncommitted changes (:func:`commit_of`);
* the **workflow config** (:func:`find_config`: ``--config``, else ``config.yaml`` beside the
  ``results/`` tree, else at the checkout's root) and its digest without ``seeds``
  (:func:`config_digest`): two seeds of one run were run with the same config exactly when their
  digests match;

and, from a published run's ``environment.json``, the per-seed records (:func:`seed_records`:
commit, config digest, CPU, precisions), the refusal to mix commits or configs
(:func:`check_seeds`) and the lines that report CPU kinds and precisions (:func:`describe_seeds`).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# CPU flags that change the numerics of training (bf16 autocast, matmul kernels).
NUMERIC_FLAGS: tuple[str, ...] = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
RUN_CONFIG_EXCLUDED: tuple[str, ...] = ("seeds",)


class ProvenanceError(ValueError):
    """Seeds that cannot be one run, or a run whose origin cannot be recorded."""


def git(repo: Path, *args: str) -> str | None:
    """``git -C repo args`` stdout (stripped); ``None`` when git fails or is missing."""
    try:
        res = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                             timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout.strip()


def is_project(root: Path) -> bool:
    """Whether ``root`` is a slotmpe checkout (a ``Snakefile``, ``workflow/`` and ``src/slotmpe``)."""
    root = Path(root)
    return ((root / "Snakefile").is_file() and (root / "workflow").is_dir()
            and (root / "src" / "slotmpe").is_dir())


def _toplevel(path: Path) -> Path | None:
    start = Path(path).resolve()
    while not start.exists():
        start = start.parent
    top = git(start if start.is_dir() else start.parent, "rev-parse", "--show-toplevel")
    return Path(top) if top else None


def package_project() -> Path | None:
    """The slotmpe checkout of the imported package (an editable install), if it is one."""
    import slotmpe

    root = Path(slotmpe.__file__).resolve().parents[2]
    return root if is_project(root) else None


def project_for(results_dir: Path) -> Path:
    """The slotmpe checkout that made ``results_dir`` (module docstring).

    Raises :class:`ProvenanceError` when neither the tree's git checkout nor the package's is a
    slotmpe checkout.
    """
    top = _toplevel(results_dir)
    if top is not None and is_project(top):
        return top
    pkg = package_project()
    if pkg is not None and _toplevel(pkg) is not None:
        return pkg
    where = f"its git repository {top} is not a slotmpe checkout" if top else "not in git"
    raise ProvenanceError(
        f"{results_dir}: cannot tell which slotmpe commit made it ({where}, and the installed "
        "slotmpe package is not a git checkout); publish the results/ of the checkout that "
        "ran the workflow")


def commit_of(project: Path) -> tuple[str, bool]:
    """``(commit, dirty)`` of a slotmpe checkout; ``dirty``: uncommitted changes to tracked files.

    Raises :class:`ProvenanceError` when ``project`` is not a git checkout.
    """
    commit = git(project, "rev-parse", "HEAD")
    if not commit:
        raise ProvenanceError(f"{project}: not a git checkout; cannot record the commit")
    return commit, bool(git(project, "status", "--porcelain", "--untracked-files=no"))


def worktree_plan(project: Path, commit: str) -> tuple[Path, Path]:
    """``(main checkout, worktree of the pinned commit)`` for a run made in ``project``.

    A ``project`` that is itself a linked git worktree is the run's worktree (its main checkout
    is where ``git worktree add`` recreates it); otherwise the worktree goes beside ``project``
    as ``<name>-run-<short commit>``.
    """
    project = Path(project).resolve()
    common = git(project, "rev-parse", "--path-format=absolute", "--git-common-dir")
    own = git(project, "rev-parse", "--path-format=absolute", "--git-dir")
    if common and own and Path(common) != Path(own):
        return Path(common).parent, project
    return project, project.parent / f"{project.name}-run-{commit[:7]}"


def find_config(tree: Path, explicit: str | Path | None = None) -> Path | None:
    """The workflow config of a ``results/`` tree: ``explicit`` (must exist), else
    ``config.yaml`` beside the tree, else at the root of its slotmpe checkout; ``None`` if none."""
    if explicit is not None:
        if not Path(explicit).is_file():
            raise FileNotFoundError(f"config file {explicit} does not exist")
        return Path(explicit)
    beside = Path(tree).resolve().parent / "config.yaml"
    if beside.is_file():
        return beside
    top = _toplevel(tree)
    if top is not None and is_project(top) and (top / "config.yaml").is_file():
        return top / "config.yaml"
    return None


def load_run_config(path: Path, profile: str | None = None) -> dict[str, Any]:
    """The resolved workflow config (its profile, or ``profile``, applied)."""
    from slotmpe.config import load_config

    return load_config(path, {"profile": profile} if profile else None)


def config_digest(cfg: Mapping[str, Any]) -> str:
    """sha256 of the resolved config without :data:`RUN_CONFIG_EXCLUDED` (canonical JSON)."""
    kept = {k: v for k, v in cfg.items() if k not in RUN_CONFIG_EXCLUDED}
    text = json.dumps(kept, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def seed_records(env: Mapping[str, Any]) -> dict[int, dict[str, Any]]:
    """``seed -> record`` of an ``environment.json``: its ``seed_info`` when present, else (a run
    published before seeds were merged) the run's own commit, config digest and CPU for every
    seed. A record has ``commit``, ``config_sha256``, ``cpu`` and ``precisions`` (from ``runs``)."""
    seeds = [int(s) for s in env.get("seeds") or []]
    info = env.get("seed_info") or {}
    out: dict[int, dict[str, Any]] = {}
    for s in seeds:
        rec = dict(info.get(str(s)) or {})
        rec.setdefault("commit", env.get("commit"))
        rec.setdefault("config_sha256", env.get("config_sha256"))
        rec.setdefault("cpu", env.get("cpu"))
        rec["precisions"] = sorted({str(r.get("precision") or "unknown") for r in env.get("runs") or []
                                    if int(r.get("seed", -1)) == s})
        out[s] = rec
    return out


def check_seeds(records: Mapping[int, Mapping[str, Any]], where: Path | str) -> None:
    """Refuse seeds of different commits or configs (:class:`ProvenanceError` naming both)."""
    for key, what in (("commit", "commits"), ("config_sha256", "configs")):
        first: tuple[int, Any] | None = None
        for s, rec in sorted(records.items()):
            v = rec.get(key)
            if first is None:
                first = (s, v)
            elif v != first[1]:
                raise ProvenanceError(
                    f"{where}: seeds from different {what} cannot be one run: seed {first[0]} "
                    f"has {key} {first[1]}, seed {s} has {key} {v}; publish them into separate "
                    "folders")


def cpu_kind(cpu: Mapping[str, Any] | None) -> str:
    """``model (numeric flags)`` of a CPU record (``{"model", "flags"}``); ``unknown`` if none."""
    if not cpu:
        return "unknown"
    flags = set(cpu.get("flags") or [])
    have = [f for f in NUMERIC_FLAGS if f in flags]
    return f"{cpu.get('model') or 'unknown'} ({', '.join(have) or 'none of ' + '/'.join(NUMERIC_FLAGS)})"


def describe_seeds(records: Mapping[int, Mapping[str, Any]]) -> tuple[str, list[str]]:
    """Markdown section on the seeds of a run, and its warnings (CPU kinds or precisions that
    differ between seeds; empty when they agree)."""
    seeds = sorted(records)
    warnings: list[str] = []
    lines = ["\n## Seeds\n"]
    if not seeds:
        return "", warnings
    first = records[seeds[0]]
    commit = str(first.get("commit") or "unknown")
    digest = first.get("config_sha256")
    head = f"Seeds {', '.join(map(str, seeds))}: one commit" if len(seeds) > 1 else \
        f"Seed {seeds[0]}: commit"
    lines.append(f"{head} {commit[:7]}, config "
                 f"{'sha256 ' + str(digest)[:12] if digest else 'not recorded'}.\n")
    kinds = {s: cpu_kind(records[s].get("cpu")) for s in seeds}
    precs = {s: "/".join(records[s].get("precisions") or ["unknown"]) for s in seeds}
    for name, per_seed in (("CPU kinds", kinds), ("precisions", precs)):
        if len(set(per_seed.values())) > 1:
            text = "; ".join(f"seed {s}: {v}" for s, v in per_seed.items())
            warnings.append(f"seeds ran on different {name}: {text}")
            lines.append(f"**The seeds ran on different {name}**: {text}. Seed-to-seed spread "
                         "includes that difference.\n")
        else:
            label = "CPU" if name == "CPU kinds" else "Precision"
            lines.append(f"{label} (every seed): {next(iter(per_seed.values()))}.\n")
    return "\n".join(lines), warnings
