"""Report pages: Markdown/CSV tables as HTML and the training-curve plot."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from slotmpe.results.pages import (
    csv_page,
    loss_terms,
    markdown_page,
    markdown_to_html,
    plot_training_curves,
)


def test_markdown_tables_and_escaping() -> None:
    md = ("# Title `x`\n\nSome **bold** <b>text</b>\nwrapped.\n\n| A | B |\n|---|---|\n| 1 | 2 < 3 |\n"
          "| – | x |\n\nAfter.\n")
    out = re.sub(r">\s*\n\s*<", "><", markdown_to_html(md)).replace("\n", " ")
    assert "<h1>Title <code>x</code></h1>" in out
    assert "<p>Some <strong>bold</strong> &lt;b&gt;text&lt;/b&gt; wrapped.</p>" in out
    assert "<th>A</th><th>B</th>" in out and "<td>2 &lt; 3</td>" in out
    assert out.count("<tr>") == 3 and "<p>After.</p>" in out


def test_pages_are_written(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("# A\n\n| x |\n|---|\n| 1 |\n")
    page = markdown_page([tmp_path / "a.md", tmp_path / "a.md"], tmp_path / "a.html", "T")
    text = page.read_text()
    assert text.startswith("<!DOCTYPE html>") and text.count("<table>") == 2
    pd.DataFrame({"exp": ["1a"], "params": [1264275], "delta_pct": [-0.15]}).to_csv(
        tmp_path / "t.csv", index=False)
    text = csv_page(tmp_path / "t.csv", tmp_path / "t.html", "Table I", "intro").read_text()
    assert "1,264,275" in text and "<p>intro</p>" in text and "-0.15" in text


def _log(path: Path, epochs: int) -> Path:
    rows = [{"epoch": e, "train_mix": 1.0 / e, "train_slot": 0.5 / e, "train_total": 1.5 / e,
             "val_mix": 1.1 / e, "val_slot": 0.6 / e, "val_total": 1.7 / e, "lr": 1e-3,
             "seconds": 1.0} for e in range(1, epochs + 1)]
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


@pytest.mark.parametrize("epochs", [1, 5])
def test_training_curves_png(tmp_path: Path, epochs: int) -> None:
    log = _log(tmp_path / "train_log.csv", epochs)
    assert loss_terms(pd.read_csv(log)) == ["mix", "slot", "total"]
    png = plot_training_curves(log, tmp_path / "curves.png", "t")
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_training_curves_bad_log(tmp_path: Path) -> None:
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="bad.csv"):
        plot_training_curves(tmp_path / "bad.csv", tmp_path / "c.png", "t")
