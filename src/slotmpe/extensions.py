"""Models of extension experiments that change inference only (issue 18).

An extension such as 4a (2b + a post-processing step) trains exactly like its base: with the same
seed and data the training would reproduce the base's weights bit for bit (training is
deterministic), so the workflow does not train it again. :func:`derive_checkpoint` writes the
base's trained weights as a checkpoint of the extension experiment (``kwargs["exp"]`` = the
extension, ``extra["derived_from"]`` = the base's checkpoint metadata), so evaluation and
``slotmpe transcribe`` read the extension's flags (e.g. its ``postprocess``) from the checkpoint
like for any other model. Which experiment's training a row reuses is
:func:`slotmpe.experiments.training_experiment`.
"""

from __future__ import annotations

from pathlib import Path

from slotmpe.experiments import get_experiment, training_experiment
from slotmpe.utils import get_logger

log = get_logger(__name__)


def derive_checkpoint(base_model: Path, out_model: Path, exp_name: str) -> Path:
    """Write ``out_model``: the weights of ``base_model`` as a checkpoint of ``exp_name``.

    Args:
        base_model: ``model.pt`` trained for ``training_experiment(exp_name)``.
        out_model: destination ``model.pt`` (written atomically).
        exp_name: an experiment whose difference from that training is inference-only.

    Raises:
        ValueError: ``exp_name`` trains its own model, or ``base_model`` was trained for another
            experiment than the one ``exp_name`` reuses.
    """
    from slotmpe.models import build_model, load_checkpoint, save_checkpoint

    exp = get_experiment(exp_name)
    trained = training_experiment(exp)
    if trained == exp.name:
        raise ValueError(f"experiment {exp.name} trains its own model; it cannot be derived")
    model, meta = load_checkpoint(Path(base_model))
    got = meta.get("experiment")
    if got != trained:
        raise ValueError(
            f"{base_model} is a model of experiment {got!r}; {exp.name} reuses {trained!r}"
        )
    widths = {k: v for k, v in meta["kwargs"].items() if k != "exp"}
    derived = build_model(exp.name, **widths)
    derived.load_state_dict(model.state_dict())
    extra = dict(meta.get("extra") or {})
    extra.update(exp=exp.name, derived_from={"experiment": trained, "path": str(base_model),
                                             "extra": meta.get("extra") or {}})
    save_checkpoint(Path(out_model), derived, extra)
    log.info("%s: weights of %s (%s) with post-processing %s -> %s", exp.name, trained, base_model,
             list(exp.postprocess), out_model)
    return Path(out_model)
