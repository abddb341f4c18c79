"""Fig. 2: 2-D UMAP (PCA for tiny sets) of the exported stem embeddings."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from slotmpe.constants import EMBED_DIM
from slotmpe.timbre.export import read_embeddings
from slotmpe.utils import atomic_path, get_logger

log = get_logger(__name__)

# ----------------------------------------------------------------------------------- UMAP


_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p", "8", "d", "H")


def _project_2d(x: np.ndarray, seed: int) -> tuple[np.ndarray, str]:
    """2-D coordinates of ``(n, D)`` points: UMAP for ``n >= 4``, else PCA (method named)."""
    n = x.shape[0]
    if n >= 4:
        import umap

        reducer = umap.UMAP(
            n_neighbors=max(2, min(15, n - 1)),
            min_dist=0.3,
            metric="euclidean",  # on unit vectors: monotone in cosine distance, cheaper to JIT
            random_state=seed,
            n_jobs=1,
            init="spectral" if n >= 10 else "random",
        )
        return np.asarray(reducer.fit_transform(x), dtype=np.float64), "UMAP"
    if n == 0:
        return np.zeros((0, 2)), "none"
    xc = x - x.mean(axis=0, keepdims=True)
    _, _, vt = np.linalg.svd(xc, full_matrices=False)
    coords = xc @ vt[:2].T if vt.shape[0] >= 2 else np.zeros((n, 2))
    if coords.shape[1] < 2:
        coords = np.pad(coords, ((0, 0), (0, 2 - coords.shape[1])))
    return coords, "PCA (too few points for UMAP)"


def plot_umap(
    embeddings_path: Path, out_png: Path, split: str = "test", seed: int = 0, title: str = ""
) -> Path:
    """UMAP of one split's stem embeddings, coloured by instrument, marker by piece (Fig. 2).

    ``umap-learn`` with ``random_state=seed``, Euclidean metric on the unit embeddings (monotone in
    cosine distance), ``min_dist=0.3`` and ``n_neighbors = min(15, n - 1)``;
    with fewer than 4 points the plot falls back to a PCA projection and says so in the title;
    with none it writes a figure that says the split is empty.

    Returns:
        ``out_png`` (written atomically).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    df = read_embeddings(embeddings_path)
    df = df[df["split"] == split].reset_index(drop=True)
    x = df[[f"e{i}" for i in range(EMBED_DIM)]].to_numpy(np.float64)
    coords, method = _project_2d(x, seed)
    if method != "UMAP":
        log.warning("%s: %d %s stem(s); %s", embeddings_path, len(df), split, method)

    instruments = sorted(df["instrument"].unique().tolist())
    pieces = sorted(df["piece_id"].unique().tolist())
    cmap = plt.get_cmap("tab10" if len(instruments) <= 10 else "tab20")
    colour = {ins: cmap(i % cmap.N) for i, ins in enumerate(instruments)}
    marker = {p: _MARKERS[i % len(_MARKERS)] for i, p in enumerate(pieces)}

    fig, ax = plt.subplots(figsize=(9.0, 6.0))
    for i, r in df.iterrows():
        ax.scatter(
            coords[i, 0], coords[i, 1], s=70, c=[colour[r["instrument"]]],
            marker=marker[r["piece_id"]], edgecolors="black", linewidths=0.5, alpha=0.9,
        )
    if df.empty:
        ax.text(0.5, 0.5, f"no {split} stems", ha="center", va="center", transform=ax.transAxes)
    head = title or f"Timbre embeddings ({split} split)"
    n_st, n_pc = len(df), len(pieces)
    ax.set_title(
        f"{head}\n{method}, {n_st} stem{'s' * (n_st != 1)}, {n_pc} piece{'s' * (n_pc != 1)}",
        fontsize=11,
    )
    ax.set_xlabel(f"{method.split(' ')[0]} 1")
    ax.set_ylabel(f"{method.split(' ')[0]} 2")
    ax.grid(alpha=0.3)
    ins_handles = [
        Line2D([], [], marker="o", linestyle="", markerfacecolor=colour[i], markeredgecolor="black",
               markersize=8, label=i.replace("_", " "))
        for i in instruments
    ]
    piece_handles = [
        Line2D([], [], marker=marker[p], linestyle="", markerfacecolor="lightgrey",
               markeredgecolor="black", markersize=8, label=p)
        for p in pieces
    ]
    legends = []
    if ins_handles:
        legends.append(ax.legend(
            handles=ins_handles, title="instrument", loc="upper left", bbox_to_anchor=(1.01, 1.0),
            fontsize=8, title_fontsize=9, frameon=False,
        ))
        ax.add_artist(legends[-1])
    if piece_handles:  # below the axes, so long instrument and piece lists never overlap
        legends.append(ax.legend(
            handles=piece_handles, title="piece", loc="upper center", bbox_to_anchor=(0.5, -0.1),
            fontsize=8, title_fontsize=9, frameon=False, ncol=min(4, len(piece_handles)),
        ))
    out_png = Path(out_png)
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=150, format="png", bbox_inches="tight", bbox_extra_artists=legends)
    plt.close(fig)
    return out_png
