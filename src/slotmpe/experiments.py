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
"""

from __future__ import annotations

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
)


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
}


def get_experiment(name: str) -> Experiment:
    """The experiment called ``name``; ``KeyError`` listing the valid names otherwise."""
    try:
        return EXPERIMENTS[str(name)]
    except KeyError:
        raise KeyError(
            f"unknown experiment {name!r}; valid experiments: {', '.join(EXPERIMENTS)}"
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
