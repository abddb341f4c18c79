"""slotmpe.models: the slot-attention MI-MPE model, its building blocks and checkpoints.

Public API: :class:`SlotMPE` (``models.slotmpe``), :func:`build_model`, :func:`count_parameters`,
:func:`save_checkpoint`, :func:`load_checkpoint` (``models.io``). The timbre encoder lives in
``slotmpe.models.timbre_encoder`` and is *not* imported here (import it explicitly).

Default widths (``slotmpe.models.slotmpe.DEFAULT_WIDTHS``)
---------------------------------------------------------
The model is light in compute (paper Sec. V-A: an epoch of Exp 3 on URMP in ~9 s on a laptop CPU):
every channel at 216 x T or 72 x T resolution costs per pitch-time cell, so the convolutional parts
are Basic-Pitch-narrow, while the parameter mass sits in layers that run once per slot vector
(slot FFN, activity MLP, timbre head) or once per frame (polyphony head), which are nearly free.

* trunk (216 bins): BatchNorm(12); conv 5x5 12->8; Basic-Pitch-style tall conv 39x3 (13 semitones
  x 3 frames) 8->8; conv 3x3 8->16; each conv bias-free + BatchNorm + ReLU.
* global branch: conv3x3 16->8 (216 bins) -> mean of 3 bins -> conv3x3 8->8 (72 bins) ->
  1x1 conv 8->1 = mixture logits.
* slot branch: conv3x3 16->16 (216 bins) -> mean of 3 bins -> conv3x3 16->32 (72 bins).
* slot head (d = 192, 3 iterations): LN(32) + Linear(32, 192) token projection, learned pitch
  embedding 72x192, LN; K learned queries (K x 192); LN + q/k/v Linear(192, 192) (k and v folded
  onto the slot side, see ``models.slot_attention``); residual FFN LN + 192->2576->192 (GELU),
  shared across iterations.
* mask decoder: slot and token projections Linear(192, 192) each (the token one folded onto the
  slots), activity MLP 192->192->1 (GELU), shared conv decoder 1x1 192->16 (applied before the
  mask), 3x3 16->16, 3x3 16->16, 1x1 16->1.
* timbre head (2a+): LN(192), Linear(192, 192), GELU, Linear(192, 128), L2 normalisation.
* FiLM (2b+): Linear(128, 2 x 192) -> (gamma, beta) on the 192-channel masked slot map.
* polyphony head (3a+): conv3x3 16->16 (216 bins) -> mean of 3 bins -> flatten 16 x 72 per frame
  -> Conv1d(1152, 88, 3) -> ReLU -> Conv1d(88, 8, 1).

Trainable parameters (Table I in brackets)
------------------------------------------
=======================  =========  =========  =========  =========
component                1a-1c      2a         2b         3a-3c
=======================  =========  =========  =========  =========
trunk                       11,128     11,128     11,128     11,128
global branch                1,769      1,769      1,769      1,769
slot branch                  7,008      7,008      7,008      7,008
slot head (ex. FFN, q.)    132,544    132,544    132,544    132,544
slot FFN (192-2576-192)    991,952    991,952    991,952    991,952
slot queries (K x 192)         768      1,536      1,536      1,536
mask decoder: projections   74,112     74,112     74,112     74,112
mask decoder: activity      37,249     37,249     37,249     37,249
mask decoder: convs          7,745      7,745      7,745      7,745
timbre head                      -     62,144     62,144     62,144
FiLM                             -          -     49,536     49,536
polyphony head                   -          -          -    307,264
total                    1,264,275  1,327,187  1,376,723  1,683,987
paper (Table I)          1,266,211  1,329,123  1,378,851  1,684,875
delta                       -0.15%     -0.15%     -0.15%     -0.05%
=======================  =========  =========  =========  =========

The configurations differ only by the components Table I adds: 2a - 1c = 62,912 exactly as in
the paper (timbre head 62,144 + four more learned slot queries 768), 2b - 2a = 49,536 (paper
49,728), 3a - 2b = 307,264 (paper 306,024). The paper states neither the trunk/decoder widths nor
the FFN width; the FFN hidden width (``ffn_hidden``, 13.4 d) is the free width that brings the
shared base to Table I's size (within -0.15%).

Forward FLOPs per 23-frame window
---------------------------------
Counted with ``torch.utils.flop_counter.FlopCounterMode`` (batch 8, T = 23, divided by 8;
convolutions and matrix products), in MFLOP:

=====================================  =====  =====  =====  =====
stage                                  1a     1c     2b     3c
=====================================  =====  =====  =====  =====
trunk (see below)                      109.7  109.7  109.7  109.7
global branch                           13.4   13.4   13.4   13.4
slot branch                                -   38.2   38.2   38.2
slot head: token projection                -   20.3   20.3   20.3
slot head: attention (3 iters, folded)     -   17.1   34.0   34.0
slot head: q + FFN (per slot)              -   24.6   49.3   49.3
mask decoder: masks (folded) + 1x1         -   13.3   87.7   87.7
mask decoder: 3x3 + 3x3 + 1x1 per slot     -   61.3  122.5  122.5
timbre head + FiLM                         -      -    1.8    1.8
polyphony head                             -      -      -   36.9
total                                  123.1  298.1  477.5  514.4
=====================================  =====  =====  =====  =====

Trunk: 5x5 12->8 23.8, tall 39x3 8->8 74.4, 3x3 8->16 11.4 MFLOP.

The table counts the dense token map (``slot_attention.factored_tokens = False``). With the
factored map (the default, ``models.token_map``) every product with the tokens runs over the 32
slot-branch channels instead of d = 192 and the token projection disappears: 259.8 (1c), 371.0
(2b) and 408.0 (3c) MFLOP per window, same parameters, same outputs to float rounding.

The previous widths (trunk 32/64/96, slot branch 64/128, decoder 80 channels, keys/values on every
token) needed 4,613 (1a) and 9,602 (3c) MFLOP per window. With FiLM (2b+) the decoder's first
1x1 layer is per slot (``diag(1 + gamma_k)`` folded into its weights): ``K x 16 x 192`` multiply-
adds per token, which is why 2b+ cost more there than 1c.

Which parameters train: every parameter gets a gradient in its configuration except, by design
of the paper, the slot branch + slot head + mask decoder in 1a (present, counted, skipped in
``forward``) and the polyphony head in 3a (its output is computed but no loss uses it).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from slotmpe.models.io import CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint
from slotmpe.models.slotmpe import DEFAULT_WIDTHS, SlotMPE

# Width presets (config ``model.widths``). ``efficient`` = DEFAULT_WIDTHS (above). ``wide`` moves
# the weights from the per-slot FFN into the convolutions that run at every pitch-time cell
# (trunk, branches, decoder), keeping every configuration within 1 % of Table I; its cost per
# window is in results/capacity.csv and the README ("Capacity").
WIDTH_PRESETS: dict[str, dict[str, Any]] = {
    "efficient": {},
    "wide": {
        "trunk_channels": (32, 96, 128),
        "global_channels": (32, 32),
        "slot_channels": (128, 128),
        "decoder_channels": 32,
        "ffn_hidden": 406,  # the free width again: brings 1a-1c to Table I (+0.01 %)
        "poly_hidden": 83,  # keeps 3a-3c at Table I with the wider trunk feeding the head
    },
}

__all__ = [
    "DEFAULT_WIDTHS",
    "WIDTH_PRESETS",
    "CheckpointError",
    "SlotMPE",
    "build_model",
    "count_parameters",
    "load_checkpoint",
    "read_checkpoint",
    "save_checkpoint",
]


def build_model(exp_name: str, preset: str = "efficient", **widths: Any) -> SlotMPE:
    """The slot model for experiment ``exp_name`` ("1a".."3c") with the widths of ``preset``
    (a key of ``WIDTH_PRESETS``) and optional overrides (keys of ``DEFAULT_WIDTHS``); unknown
    experiments or presets raise ``KeyError``."""
    if preset not in WIDTH_PRESETS:
        raise KeyError(f"unknown width preset {preset!r}; known: {', '.join(WIDTH_PRESETS)}")
    return SlotMPE(exp_name, **{**WIDTH_PRESETS[preset], **widths})


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters (``requires_grad``) of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
