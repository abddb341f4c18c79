"""Every relative link in README.md and docs/**/*.md resolves (issue 30): the file or folder exists,
and a ``#fragment`` names a heading of the target Markdown file (GitHub's anchor rules). The
README stays short (about 250 lines) and keeps the quick start's two commands that CI runs."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.M | re.S)
CODE = re.compile(r"`+[^`\n]*`+")


def markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def strip_code(text: str) -> str:
    """``text`` without fenced code blocks and inline code spans (their brackets are not links)."""
    return CODE.sub("", FENCE.sub("", text))


def links(text: str) -> list[str]:
    """Targets of the inline links and images ``[text](target)`` / ``![alt](target)``."""
    return LINK.findall(strip_code(text))


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, inline markup and punctuation dropped (``-`` and
    ``_`` kept), spaces to ``-``."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = unicodedata.normalize("NFC", text.strip().lower())
    text = "".join(c for c in text if c in "-_ " or unicodedata.category(c)[0] in "LN")
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The heading anchors of a Markdown file (repeated headings get ``-1``, ``-2``, ...)."""
    seen: dict[str, int] = {}
    out = set()
    for line in FENCE.sub("", path.read_text()).splitlines():
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        base = slug(m.group(1))
        n = seen.get(base, 0)
        out.add(base if n == 0 else f"{base}-{n}")
        seen[base] = n + 1
    return out


def broken_links(md: Path) -> list[str]:
    """The relative links of ``md`` that do not resolve, as ``"target: why"``."""
    bad = []
    for target in links(md.read_text()):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto: ...
            continue
        path_part, _, fragment = target.partition("#")
        dest = md if not path_part else (md.parent / unquote(path_part)).resolve()
        if not dest.exists():
            bad.append(f"{target}: {dest} does not exist")
            continue
        if fragment and dest.suffix == ".md" and unquote(fragment) not in anchors(dest):
            bad.append(f"{target}: no heading #{fragment} in {dest}")
    return bad


@pytest.mark.parametrize("md", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(md: Path) -> None:
    assert broken_links(md) == []


def test_checker_finds_broken_links(tmp_path: Path) -> None:
    """The checker itself: a missing file, a missing anchor and a link inside code are told apart."""
    (tmp_path / "other.md").write_text("# Using a trained model: `slotmpe transcribe`\n## A\n## A\n")
    md = tmp_path / "page.md"
    md.write_text("[ok](other.md#using-a-trained-model-slotmpe-transcribe) [ok](other.md#a-1)\n"
                  "[bad](missing.md) [bad](other.md#nope) ![img](fig.png) [web](https://x.org/a)\n"
                  "`[code](not-a-link.md)`\n```\n[fenced](also-not.md)\n```\n[self](#nowhere)\n")
    bad = broken_links(md)
    assert len(bad) == 4, bad
    assert {b.split(":")[0] for b in bad} == {"missing.md", "other.md#nope", "fig.png", "#nowhere"}


def test_readme_is_short_and_keeps_the_quick_start() -> None:
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 260
    assert "bash scripts/install.sh && snakemake --cores 4 results/table3.csv\n" in text
    assert "\npython -m pytest -q\n" in text
    ci = (ROOT / ".ci" / "run").read_text()
    assert "bash scripts/install.sh" in ci and "python -m pytest -q" in ci
    for page in ("training", "results", "transcription", "datasets", "extensions", "design",
                 "pretrained"):
        assert f"(docs/{page}.md)" in text, page
