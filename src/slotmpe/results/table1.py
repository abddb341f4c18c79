"""Table I of the paper from our runs: the eight configurations, our trainable parameter count
next to the paper's, and the capacity columns of :mod:`slotmpe.results.capacity`."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from slotmpe.experiments import EXPERIMENTS
from slotmpe.utils import atomic_path


def _flags(exp_name: str) -> str:
    e = EXPERIMENTS[exp_name]
    on = [
        name
        for name, flag in (
            ("timbre_head", e.timbre_head),
            ("film", e.film),
            ("poly_head", e.poly_head),
            ("poly_mix_loss", e.poly_mix_loss),
            ("poly_slot_loss", e.poly_slot_loss),
        )
        if flag
    ]
    return "+".join(on) if on else "-"


def build_table1(widths: str = "efficient") -> pd.DataFrame:
    """Table I of the width preset ``widths``: the eight configurations, our trainable parameters,
    the paper's, delta %, and the capacity columns of :mod:`slotmpe.results.capacity`.

    Columns: ``exp, task, slots, matching, flags, params, paper_params, delta_pct`` where ``slots``
    is 0 for 1a (its slot head exists but is unused, as in the paper's Table I) and ``delta_pct =
    100 * (params - paper_params) / paper_params`` (two decimals); then ``widths`` (the preset),
    the parameters per component (``slotmpe.results.capacity.COMPONENTS``), ``grad_params`` (measured:
    parameters that receive a gradient in a training step) and ``mflops`` (forward MFLOPs per
    23-frame window).
    """
    from slotmpe.results.capacity import COMPONENTS, capacity_row

    recs = []
    for name, e in EXPERIMENTS.items():
        cap = capacity_row(name, widths)
        recs.append({
            "exp": name,
            "task": e.task,
            "slots": e.n_slots if e.uses_slots else 0,
            "matching": e.matching,
            "flags": _flags(name),
            **{k: cap[k] for k in ("params", "paper_params", "delta_pct", "widths", *COMPONENTS,
                                   "grad_params", "mflops")},
        })
    return pd.DataFrame.from_records(recs)


def write_table1(out_csv: Path, widths: str = "efficient") -> pd.DataFrame:
    """Write :func:`build_table1` of ``widths`` to ``out_csv`` (``table1.csv``, atomically) and
    return it."""
    df = build_table1(widths)
    with atomic_path(out_csv) as tmp:
        df.to_csv(tmp, index=False)
    return df
