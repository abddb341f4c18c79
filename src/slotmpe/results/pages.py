"""Pages of the Snakemake report (``snakemake --report report.html``): tables as HTML, training curves.

Snakemake's HTML report shows images and HTML inline and offers every other file (CSV, Markdown)
only as a download, so each table that a reader should see is rendered to a small self-contained
HTML page: :func:`markdown_page` turns the Markdown tables written by :mod:`slotmpe.results.table3`,
:mod:`slotmpe.generalisation` and the findings into HTML, :func:`csv_page` a CSV (Table I with its
capacity columns). Python-Markdown (with its ``tables``
extension) does the conversion.

:func:`plot_training_curves` draws ``train_log.csv`` (one row per epoch: ``train_<term>``,
``val_<term>`` for every logged loss term and ``total``, ``lr``): one panel per loss term with the
training and validation curves, so a reader sees which term converged and where validation turns.
"""

from __future__ import annotations

import html
from pathlib import Path

import markdown
import pandas as pd

from slotmpe.utils import atomic_path, get_logger

log = get_logger(__name__)

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.2em; color: #222; }
h1 { font-size: 1.3em; } h2 { font-size: 1.1em; margin-top: 1.4em; }
p { max-width: 60em; line-height: 1.4; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.6em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.55em; text-align: right; white-space: nowrap; }
th { background: #f0f0f0; white-space: normal; vertical-align: bottom; }
td:nth-child(-n+2), th:nth-child(-n+2) { text-align: left; }
tr:nth-child(even) td { background: #fafafa; }
code { background: #f4f4f4; padding: 0 0.2em; }
"""


def markdown_to_html(text: str) -> str:
    """HTML body of a Markdown text (headings, paragraphs, inline markup, pipe tables), rendered
    by Python-Markdown with its ``tables`` extension. Raw HTML in the text is escaped first (table
    cells hold user data such as instrument names), so it shows as text."""
    return markdown.markdown(html.escape(text, quote=False), extensions=["tables"],
                             output_format="html")


def _page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}"
            f"</title><style>{STYLE}</style></head><body>\n{body}\n</body></html>\n")


def markdown_page(md_paths: list[Path], out_html: Path, title: str) -> Path:
    """One HTML page from one or more Markdown files (in order), written atomically."""
    body = "\n<hr>\n".join(markdown_to_html(Path(p).read_text(encoding="utf-8")) for p in md_paths)
    with atomic_path(out_html) as tmp:
        tmp.write_text(_page(title, body), encoding="utf-8")
    return out_html


def csv_page(csv_path: Path, out_html: Path, title: str, intro: str = "") -> Path:
    """An HTML page showing ``csv_path`` as a table (with ``intro`` as a paragraph above it)."""
    df = pd.read_csv(csv_path, dtype={"exp": str})
    ints = {c: "{:,}".format for c in df.columns if pd.api.types.is_integer_dtype(df[c])}
    table = df.to_html(index=False, na_rep="–", border=0, formatters=ints,
                       float_format=lambda v: f"{v:,.2f}")
    body = f"<h1>{html.escape(title)}</h1>\n" + (markdown_to_html(intro) + "\n" if intro else "")
    with atomic_path(out_html) as tmp:
        tmp.write_text(_page(title, body + table), encoding="utf-8")
    return out_html


def loss_terms(log_df: pd.DataFrame) -> list[str]:
    """Loss terms logged in a ``train_log.csv`` frame (``train_<term>`` columns), total last."""
    terms = [c[len("train_"):] for c in log_df.columns if c.startswith("train_")]
    return [t for t in terms if t != "total"] + (["total"] if "total" in terms else [])


def plot_training_curves(log_csv: Path, out_png: Path, title: str) -> Path:
    """Plot train/val loss per term per epoch from ``train_log.csv`` -> ``out_png`` (atomic).

    One panel per loss term (train solid, validation dashed), the weighted total last; a log
    y-axis where a panel's values span more than a factor of 20. A log with a single epoch is drawn as points.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    df = pd.read_csv(log_csv)
    if "epoch" not in df.columns or df.empty:
        raise ValueError(f"{log_csv}: no 'epoch' column or no rows; not a train_log.csv")
    terms = loss_terms(df)
    if not terms:
        raise ValueError(f"{log_csv}: no train_<term> columns")
    ncol = min(4, len(terms))
    nrow = -(-len(terms) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.2 * ncol, 2.5 * nrow), squeeze=False)
    marker = "o" if len(df) < 3 else None
    for ax, term in zip(axes.flat, terms, strict=False):
        for split, style in (("train", "-"), ("val", "--")):
            col = f"{split}_{term}"
            if col in df.columns and df[col].notna().any():
                ax.plot(df["epoch"], df[col], style, marker=marker, label=split)
        vals = df[[c for c in (f"train_{term}", f"val_{term}") if c in df.columns]].to_numpy()
        vals = vals[~pd.isna(vals)]
        if vals.size and (vals > 0).all() and vals.max() > 20 * vals.min():
            ax.set_yscale("log")  # only where the curve spans more than a decade
        ax.set_xlim(df["epoch"].min() - 0.5, df["epoch"].max() + 0.5)
        if len(df) <= 12:
            ax.set_xticks(df["epoch"].to_numpy())
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(term, fontsize=10)
        ax.set_xlabel("epoch", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(terms):]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return out_png
