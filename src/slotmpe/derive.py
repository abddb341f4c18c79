"""Experiments derived from another experiment's trained run instead of being trained again.

3a is 2b plus a polyphony head that receives no loss and feeds nothing (see
:mod:`slotmpe.experiments`): the head is built after every shared module, so with one seed the
shared initial weights are identical (``tests/test_models.py``), and in training the head's
parameters get no gradient (AdamW skips them: no weight decay either), its forward pass draws no
random numbers and changes no other output, the selection loss (``total``) does not contain it.
A 3a run is therefore 2b's run with the head at its seeded initial weights, and
:func:`derive_checkpoint` builds it from 2b's ``model.pt`` without training:

1. ``seed_everything(seed)`` and ``build_model("3a")`` exactly as
   :func:`slotmpe.training.train_experiment` starts a run (same initial weights);
2. every shared parameter and buffer is replaced by 2b's trained one (strict: the keys that 2b
   lacks must be exactly the polyphony head's).

The one difference to a trained 3a: the polyphony head's BatchNorm running statistics
(``poly_head.reduce.1.running_mean/var``, ``num_batches_tracked``) are updated by every forward
pass in training mode even without a gradient, so a trained 3a carries running statistics of the
trunk features while the derived one keeps the initial ones (mean 0, variance 1). They enter
only ``poly_logits`` (Table III's ``poly_std_acc`` of 3a, an untrained head in both cases); every
pitch, slot, activity and timbre output, and so every other metric, is bit-identical
(``tests/test_derive.py`` trains both on a tiny cache and checks this).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from slotmpe.experiments import get_experiment
from slotmpe.utils import get_logger, seed_everything

log = get_logger(__name__)

# Non-shared state of the derived model that a trained run changes without a gradient.
UNTRAINED_STATE_NOTE = "poly_head BatchNorm running statistics stay at their initial values"


def derive_checkpoint(base_path: Path, exp_name: str, out_path: Path) -> Path:
    """Write ``out_path``: experiment ``exp_name`` derived from the trained ``base_path`` run.

    ``exp_name`` must declare ``derived_from`` equal to the base checkpoint's experiment. The
    derived model uses the base run's seed; its ``extra`` copies the base's (best epoch, training
    config, ...) with ``exp`` replaced and ``derived_from``/``derived_note`` added.
    """
    from slotmpe.models import build_model, load_checkpoint, save_checkpoint

    exp = get_experiment(exp_name)
    if exp.derived_from is None:
        raise ValueError(f"experiment {exp.name} is not derived from another experiment")
    base, meta = load_checkpoint(Path(base_path), map_location="cpu")
    extra: dict[str, Any] = dict(meta.get("extra", {}) or {}) if isinstance(meta, dict) else {}
    base_exp = getattr(getattr(base, "exp", None), "name", None) or extra.get("exp")
    if base_exp != exp.derived_from:
        raise ValueError(
            f"{base_path}: checkpoint of experiment {base_exp!r}, but {exp.name} derives from "
            f"{exp.derived_from}"
        )
    seed = extra.get("seed")
    if seed is None:
        raise ValueError(f"{base_path}: the checkpoint does not record its training seed")
    seed_everything(int(seed))
    model = build_model(exp.name, **{k: v for k, v in base.config.items() if k != "exp"})
    missing, unexpected = model.load_state_dict(base.state_dict(), strict=False)
    own = [k for k in missing if not k.startswith("poly_head.")]
    if own or unexpected:
        raise ValueError(
            f"{base_path}: {exp.derived_from} and {exp.name} differ beyond the polyphony head "
            f"(missing {own}, unexpected {list(unexpected)})"
        )
    new_extra = copy.deepcopy(extra)
    new_extra.update(exp=exp.name, derived_from=exp.derived_from,
                     derived_note=UNTRAINED_STATE_NOTE)
    save_checkpoint(Path(out_path), model, new_extra)
    log.info("derived %s from %s (%s, seed %s): %s", exp.name, exp.derived_from, base_path, seed,
             out_path)
    return Path(out_path)
