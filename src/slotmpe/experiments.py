"""The eight configurations of the paper's Table I, as data.

Every consumer (model construction, losses, training, evaluation, Table I/III, CLI) reads the
experiment flags from here instead of branching on experiment names.

=====  ========  =====  =========  ======  ====  =========  ========  =========
exp    task      slots  matching   timbre  FiLM  poly head  poly mix  poly slot
=====  ========  =====  =========  ======  ====  =========  ========  =========
1a     standard  (4)    none       -       -     -          -         -
1b     family    4      fixed      -       -     -          -         -
1c     family    4      hungarian  -       -     -          -         -
2a     stem      8      hungarian  yes     -     -          -         -
2b     stem      8      hungarian  yes     yes   -          -         -
3a     stem      8      hungarian  yes     yes   yes        -         -
3b     stem      8      hungarian  yes     yes   yes        yes       -
3c     stem      8      hungarian  yes     yes   yes        yes       yes
=====  ========  =====  =========  ======  ====  =========  ========  =========

In 1a the slot head is present (it counts towards Table I's parameters) but unused: no slot output
enters any loss. In 3a the polyphony head is present but receives no loss.

Extension experiments (``4a``, ``4b``, ...; :data:`EXTENSIONS`) are rows of the same table: each is
built from one named ``base`` configuration by changing exactly one thing (see
:func:`extend`), e.g. a training loss term (``overlap_loss``) or an inference-time
post-processing step (``postprocess``, applied by :mod:`slotmpe.postprocess`). Their defaults are
the paper's behaviour, so 1a-3c are unchanged. :data:`EXPERIMENTS` holds the paper's eight (Table
I); :func:`get_experiment` knows every row.

=====  ====  =====================================================================
exp    base  the one change
=====  ====  =====================================================================
4a     2b    post-processing ``exclusive``: each cell keeps only its most probable slot
4b     2b    post-processing ``merge``: slots with coinciding maps and timbre merged
4c     2b    ``overlap_loss``: pairwise slot-overlap loss term ``overlap`` in training
4d     4c    post-processing ``exclusive`` on the 4c model
4e     2b    post-processing ``active``: slots with activity < 0.5 silenced
4f     2b    ``timbre_mask``: slot timbre cosine added to the mask logits (models.extensions)
4g     2b    ``infer_frames`` = 64: inference in overlapping 64-frame chunks (slot order aligned)
4h     2b    ``mask_target``: loss term ``mask``, slot masks vs the stems' ratio masks (issue 23)
4i     2b    ``remix``: training windows remixed from stems of different pieces (:mod:`slotmpe.remix`)
4j     4h    ``remix`` on top of 4h (both)
4k     4j    post-processing ``exclusive`` on the 4j model (4a on the separating base)
4l     4j    post-processing ``active`` on the 4j model (4e on the separating base)
4m     3c    ``activity_match_weight`` = 3: the slot's activity in the Hungarian cost (issue 29;
              the weight set on validation, docs/studies/2026-12-06-activity-matching)
=====  ====  =====================================================================

``activity_match_weight`` (4m) is the weight ``w_act`` of ``w_act * softplus(-activity_logit)`` in
the matching cost (:func:`slotmpe.matching.match_cost`). Every Hungarian experiment can train with
it through ``train.activity_match_weight`` (:class:`slotmpe.training.TrainConfig`, default 0 = the
paper's matching); a row that sets the field (4m) uses its own value whatever the config says
(:func:`resolve_activity_match_weight`).

``mask_target`` and ``remix`` change the training *data* as well: the datasets of such a row come
from :func:`slotmpe.remix.experiment_datasets` (ratio-mask targets in every item; remixed training
windows).

Rows that differ from their base only at inference (4a, 4b, 4d, 4e, 4g, 4k, 4l) are ``derived_from`` the
run whose weights they use (2b, 4c or 4j; :func:`training_experiment`) and are built by
:mod:`slotmpe.derive`; training them again would reproduce its weights.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

Task = Literal["standard", "family", "stem"]
Matching = Literal["none", "fixed", "hungarian"]

LOSS_TERMS: tuple[str, ...] = (
    "mix",  # mixture MPE BCE (global branch vs mixture roll)
    "fixed_slot",  # 1b: slot k vs family k, BCE
    "union",  # noisy-OR of slots (Eq. 2) vs mixture roll, BCE
    "slot",  # matched slot pitch BCE
    "activity",  # slot activity BCE (matched = active, unmatched = inactive)
    "inactive",  # inactive-slot pitch suppression (BCE towards 0)
    "timbre",  # cosine distance of matched slot embedding vs source embedding
    "poly_mix",  # mixture polyphony cross-entropy over 8 classes
    "poly_slot",  # slot polyphony Smooth L1 (sum over pitch of matched slot probs vs count)
    "overlap",  # extension: pairwise overlap of slot probability maps (duplicate suppression)
    "mask",  # extension 4h: slot masks vs the stems' ratio masks (matched) or 0 (unmatched), BCE
)

# Inference-time post-processing steps an experiment may name (slotmpe.postprocess), in order.
POSTPROCESS_STEPS: tuple[str, ...] = ("active", "merge", "exclusive")


@dataclass(frozen=True)
class Experiment:
    """One row of Table I: which task, slots, matching, heads and losses are active."""

    name: str
    task: Task
    n_slots: int
    matching: Matching
    timbre_head: bool = False
    film: bool = False
    poly_head: bool = False
    poly_mix_loss: bool = False
    poly_slot_loss: bool = False
    paper_params: int = 0
    derived_from: str | None = None
    description: str = field(default="", compare=False)
    # extension fields (defaults = the paper's configurations)
    base: str | None = None
    overlap_loss: bool = False
    timbre_mask: bool = False
    infer_frames: int | None = None
    postprocess: tuple[str, ...] = ()
    mask_target: bool = False  # 4h: supervise the slot masks with the stems' ratio masks
    remix: bool = False  # 4i: training windows remixed from stems of different pieces
    # 4m: weight of the activity term of the Hungarian cost; None = train.activity_match_weight
    activity_match_weight: float | None = None

    def __post_init__(self) -> None:
        w = self.activity_match_weight
        if w is not None and not (w >= 0 and w != float("inf")):
            raise ValueError(
                f"experiment {self.name}: activity_match_weight must be a finite number >= 0 or "
                f"None; got {w}"
            )
        bad = [s for s in self.postprocess if s not in POSTPROCESS_STEPS]
        if bad:
            raise ValueError(
                f"experiment {self.name}: unknown postprocess step(s) {bad}; "
                f"known: {', '.join(POSTPROCESS_STEPS)}"
            )

    @property
    def uses_slots(self) -> bool:
        """Whether slot outputs are trained and evaluated (False only for the 1a baseline)."""
        return self.task != "standard"

    @property
    def group(self) -> str:
        """Experiment group "1", "2" or "3" (loss weights are kept consistent within a group)."""
        return self.name[0]

    @property
    def target_kind(self) -> Literal["none", "family", "source"]:
        """Which target maps the slots are compared with."""
        return {"standard": "none", "family": "family", "stem": "source"}[self.task]  # type: ignore[return-value]


EXPERIMENTS: dict[str, Experiment] = {
    e.name: e
    for e in (
        Experiment("1a", "standard", 4, "none", paper_params=1_266_211,
                   description="standard MPE baseline (slot head present, unused)"),
        Experiment("1b", "family", 4, "fixed", paper_params=1_266_211,
                   description="4 fixed family slots (brass, keyboards, strings, woodwinds)"),
        Experiment("1c", "family", 4, "hungarian", paper_params=1_266_211,
                   description="4 family slots, Hungarian matching, activity/inactivity losses"),
        Experiment("2a", "stem", 8, "hungarian", timbre_head=True, paper_params=1_329_123,
                   description="8 stem slots + timbre head"),
        Experiment("2b", "stem", 8, "hungarian", timbre_head=True, film=True,
                   paper_params=1_378_851, description="2a + FiLM timbre conditioning"),
        Experiment("3a", "stem", 8, "hungarian", timbre_head=True, film=True, poly_head=True,
                   paper_params=1_684_875, derived_from="2b",
                   description="2b + polyphony head (no polyphony loss)"),
        Experiment("3b", "stem", 8, "hungarian", timbre_head=True, film=True, poly_head=True,
                   poly_mix_loss=True, paper_params=1_684_875,
                   description="3a + mixture polyphony loss"),
        Experiment("3c", "stem", 8, "hungarian", timbre_head=True, film=True, poly_head=True,
                   poly_mix_loss=True, poly_slot_loss=True, paper_params=1_684_875,
                   description="3b + slot polyphony loss"),
    )
}

# Fields of an Experiment that only change inference (a model trained for the base serves as is).
INFERENCE_FIELDS: frozenset[str] = frozenset({"postprocess", "infer_frames"})
# Fields that describe a row rather than configure it.
_META_FIELDS: frozenset[str] = frozenset(
    {"name", "base", "description", "paper_params", "derived_from"}
)


def extend(base: Experiment, name: str, description: str, **change: object) -> Experiment:
    """Extension experiment ``name``: ``base`` with exactly one field changed (``change``).

    An inference-only change (:data:`INFERENCE_FIELDS`) makes the row ``derived_from`` the run its
    base's weights come from (the workflow then builds it with :mod:`slotmpe.derive` instead of
    training it again); any other change trains its own model. ``ValueError`` when ``change`` does not name exactly one configuration field or leaves it as it
    was (an extension is one change on top of one named base).
    """
    if len(change) != 1:
        raise ValueError(f"extension {name}: exactly one change on top of {base.name}, got {change}")
    (key, value), = change.items()
    if key in _META_FIELDS or key not in Experiment.__dataclass_fields__:
        raise ValueError(f"extension {name}: {key!r} is not a configuration field of Experiment")
    if getattr(base, key) == value:
        raise ValueError(f"extension {name}: {key}={value!r} is what {base.name} already has")
    derived = (base.derived_from or base.name) if key in INFERENCE_FIELDS else None
    return dataclasses.replace(base, name=name, base=base.name, description=description,
                               derived_from=derived, **change)


def _extensions() -> dict[str, Experiment]:
    e2b = EXPERIMENTS["2b"]
    exts = [
        extend(e2b, "4a", "2b + exclusive cells: each (pitch, frame) keeps only its most probable "
               "slot at inference", postprocess=("exclusive",)),
        extend(e2b, "4b", "2b + merge duplicate slots (pitch maps and timbre coincide) at "
               "inference", postprocess=("merge",)),
        extend(e2b, "4c", "2b + pairwise slot-overlap loss in training", overlap_loss=True),
        extend(e2b, "4f", "2b + slot timbre cosine in the mask competition (timbre-coupled slot "
               "identity)", timbre_mask=True),
        extend(e2b, "4g", "2b + windowed inference: 64-frame chunks (training windows are 23) "
               "with slot order aligned between chunks, instead of one pass over the whole file",
               infer_frames=64),
        extend(e2b, "4e", "2b + slots with activity < 0.5 silenced at inference (as transcribe "
               "drops them)", postprocess=("active",)),
    ]
    exts += [
        extend(e2b, "4h", "2b + slot masks supervised by the stems' ratio masks (matched slots) "
               "and towards 0 (unmatched slots)", mask_target=True),
        extend(e2b, "4i", "2b + remix augmentation: half of the training windows are new "
               "mixtures of stems from different training pieces", remix=True),
    ]
    by_name = {e.name: e for e in exts}
    exts.append(extend(by_name["4c"], "4d", "4c + exclusive cells at inference",
                       postprocess=("exclusive",)))
    e4j = extend(by_name["4h"], "4j", "4h + remix augmentation (4i)", remix=True)
    exts += [
        e4j,
        extend(e4j, "4k", "4j + exclusive cells at inference (4a on the separating base)",
               postprocess=("exclusive",)),
        extend(e4j, "4l", "4j + slots with activity < 0.5 silenced at inference (4e on the "
               "separating base)", postprocess=("active",)),
        extend(EXPERIMENTS["3c"], "4m", "3c + the slot's activity in the Hungarian matching "
               "cost (weight 3 on -log sigmoid(activity logit), DETR-style; 3 of 0.3 / 1 / 3 "
               "had the best validation slot F1 on both datasets, seed 0)",
               activity_match_weight=3.0),
        extend(e2b, "4n", "2b + the slot's activity in the Hungarian matching cost (4m's "
               "change, weight 3, on the FiLM base without the timbre losses: 2b has the best "
               "stem F1 of the published run on both datasets)", activity_match_weight=3.0),
    ]
    return {e.name: e for e in sorted(exts, key=lambda e: e.name)}


# Extension rows (issue 18): one change each on top of a named base.
EXTENSIONS: dict[str, Experiment] = _extensions()
# Every row of the experiment table (the paper's eight, then the extensions).
ALL_EXPERIMENTS: dict[str, Experiment] = {**EXPERIMENTS, **EXTENSIONS}


def training_experiment(exp: Experiment | str) -> str:
    """Name of the experiment whose trained run ``exp`` uses: ``derived_from`` or its own name.

    4a (2b + post-processing) -> "2b", 4d (4c + post-processing) -> "4c", 3a -> "2b" (see
    :mod:`slotmpe.derive`); a row that changes training -> its own name.
    """
    e = exp if isinstance(exp, Experiment) else get_experiment(exp)
    return e.derived_from or e.name


# A row of ``table3_ext_rows``: (exp, dataset) or (exp, dataset, reference experiment).
ExtRow = tuple[str, ...]


def reference_of(row: ExtRow) -> str:
    """The experiment a ``table3_ext_rows`` row's effect is measured against (see
    :mod:`slotmpe.results.ext`): its third element, else the extension's base.

    ``ValueError`` for a row whose experiment has no base (not an extension) or a row that is
    not 2 or 3 names long.
    """
    if len(row) not in (2, 3):
        raise ValueError(f"table3_ext_rows: {list(row)} is not [exp, dataset] or "
                         "[exp, dataset, reference]")
    e = get_experiment(row[0])
    if e.base is None:
        raise ValueError(f"table3_ext_rows: {row[0]} is not an extension experiment (no base)")
    return str(row[2]) if len(row) == 3 else e.base


def resolve_activity_match_weight(exp: Experiment, configured: float = 0.0) -> float:
    """Weight of the activity term of ``exp``'s Hungarian cost: the row's own
    ``activity_match_weight`` (4m, 4n) or, where the row leaves it ``None``, ``configured``
    (``train.activity_match_weight``, 3 by default since issue 29's confirmation) for the
    stem-task rows (2a-3c and the extensions on them). 0 for experiments without Hungarian
    matching and for the family row 1c, which keeps the paper's matching."""
    if exp.matching != "hungarian":
        return 0.0
    if exp.activity_match_weight is not None:
        w = exp.activity_match_weight
    else:
        w = configured if exp.task == "stem" else 0.0
    if not (w >= 0 and w != float("inf")):
        raise ValueError(f"activity_match_weight must be a finite number >= 0; got {w}")
    return float(w)


# Base weights per loss term, shared by every experiment that has the term ("consistent within a
# group"). Overridable from config.yaml (train.loss_weights).
BASE_LOSS_WEIGHTS: dict[str, float] = {
    "mix": 1.0,
    "fixed_slot": 1.0,
    "union": 0.5,
    "slot": 1.0,
    "activity": 0.5,
    "inactive": 0.5,
    "timbre": 0.5,
    "poly_mix": 0.2,
    "poly_slot": 0.05,
    "overlap": 1.0,
    "mask": 1.0,
}


def get_experiment(name: str) -> Experiment:
    """The experiment called ``name``; ``KeyError`` listing the valid names otherwise."""
    try:
        return ALL_EXPERIMENTS[str(name)]
    except KeyError:
        raise KeyError(
            f"unknown experiment {name!r}; valid experiments: {', '.join(ALL_EXPERIMENTS)}"
        ) from None


def active_loss_terms(exp: Experiment) -> tuple[str, ...]:
    """The loss terms that experiment ``exp`` trains with, in ``LOSS_TERMS`` order."""
    on = {"mix"}
    if exp.matching == "fixed":
        on |= {"fixed_slot", "union"}
    if exp.matching == "hungarian":
        on |= {"union", "slot", "activity", "inactive"}
    if exp.timbre_head:
        on.add("timbre")
    if exp.poly_mix_loss:
        on.add("poly_mix")
    if exp.poly_slot_loss:
        on.add("poly_slot")
    if exp.overlap_loss:
        on.add("overlap")
    if exp.mask_target:
        on.add("mask")
    return tuple(t for t in LOSS_TERMS if t in on)


def default_loss_weights(
    exp: Experiment, overrides: dict[str, float] | None = None
) -> dict[str, float]:
    """Weight of every term in ``LOSS_TERMS`` for ``exp`` (0.0 where the term is off).

    ``overrides`` (e.g. from config) replace base weights; unknown keys raise ``KeyError``.
    """
    base = dict(BASE_LOSS_WEIGHTS)
    for k, v in (overrides or {}).items():
        if k not in base:
            raise KeyError(f"unknown loss term {k!r} in loss_weights; known: {', '.join(LOSS_TERMS)}")
        base[k] = float(v)
    active = set(active_loss_terms(exp))
    return {t: (base[t] if t in active else 0.0) for t in LOSS_TERMS}
