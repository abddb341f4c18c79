"""slotmpe.models: the slot-attention MI-MPE model, its building blocks and checkpoints.

Public API: :class:`SlotMPE` (``models.slotmpe``), :func:`build_model`, :func:`count_parameters`,
:func:`save_checkpoint`, :func:`load_checkpoint` (``models.io``). The timbre encoder lives in
``slotmpe.models.timbre_encoder`` and is *not* imported here (import it explicitly).

Default widths (``slotmpe.models.slotmpe.DEFAULT_WIDTHS``)
---------------------------------------------------------
* trunk (216 bins): BatchNorm(12); conv 5x5 12->32; Basic-Pitch-style tall conv 39x3 (13 semitones
  x 3 frames) 32->64; conv 5x5 64->96; each conv bias-free + BatchNorm + ReLU.
* global branch: conv3x3 96->64 (216 bins) -> mean of 3 bins -> conv3x3 64->32 (72 bins) ->
  1x1 conv 32->1 = mixture logits.
* slot branch: conv3x3 96->64 (216 bins) -> mean of 3 bins -> conv3x3 64->128 (72 bins).
* slot head (d = 192, 3 iterations): LN(128) + Linear(128, 192) token projection, learned pitch
  embedding 72x192, LN; K learned queries (K x 192); LN + q/k/v Linear(192, 192); residual FFN
  LN + 192->768->192 (GELU).
* mask decoder: slot and token projections Linear(192, 192) each, activity Linear(192, 1),
  shared conv decoder 1x1 192->80, 3x3 80->80, 3x3 80->80, 1x1 80->1.
* timbre head (2a+): LN(192), Linear(192, 192), GELU, Linear(192, 128), L2 normalisation.
* FiLM (2b+): Linear(128, 2 x 192) -> (gamma, beta) on the 192-channel masked slot map.
* polyphony head (3a+): conv3x3 96->16 (216 bins) -> mean of 3 bins -> flatten 16 x 72 per frame
  -> Conv1d(1152, 84, 3) -> ReLU -> Conv1d(84, 8, 1).

Trainable parameters (Table I in brackets)
------------------------------------------
====================  =========  =========  =========  =========
component             1a-1c      2a         2b         3a-3c
====================  =========  =========  =========  =========
trunk                   403,224    403,224    403,224    403,224
global branch            73,953     73,953     73,953     73,953
slot branch             129,408    129,408    129,408    129,408
slot head (ex. queries) 447,040    447,040    447,040    447,040
slot queries (K x 192)      768      1,536      1,536      1,536
mask decoder            205,186    205,186    205,186    205,186
timbre head                   -     62,144     62,144     62,144
FiLM                          -          -     49,536     49,536
polyphony head                -          -          -    304,924
total                 1,259,579  1,322,491  1,372,027  1,676,951
paper (Table I)       1,266,211  1,329,123  1,378,851  1,684,875
delta                    -0.52%     -0.50%     -0.49%     -0.47%
====================  =========  =========  =========  =========

The configurations differ only by the components Table I adds: 2a - 1c = 62,912 exactly as in
the paper (timbre head 62,144 + four more learned slot queries 768), 2b - 2a = 49,536 (paper
49,728), 3a - 2b = 304,924 (paper 306,024). The constant offset of about -6.6k in the base lies in
the trunk/decoder widths, which the paper does not state.

Which parameters train: every parameter gets a gradient in its configuration except, by design
of the paper, the slot branch + slot head + mask decoder in 1a (present, counted, skipped in
``forward``) and the polyphony head in 3a (its output is computed but no loss uses it).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from slotmpe.models.io import CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint
from slotmpe.models.slotmpe import DEFAULT_WIDTHS, SlotMPE

__all__ = [
    "DEFAULT_WIDTHS",
    "CheckpointError",
    "SlotMPE",
    "build_model",
    "count_parameters",
    "load_checkpoint",
    "read_checkpoint",
    "save_checkpoint",
]


def build_model(exp_name: str, **widths: Any) -> SlotMPE:
    """The slot model for experiment ``exp_name`` ("1a".."3c"), with optional width overrides
    (keys of ``DEFAULT_WIDTHS``); unknown experiments raise ``KeyError``."""
    return SlotMPE(exp_name, **widths)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters (``requires_grad``) of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
