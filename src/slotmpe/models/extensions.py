"""Building blocks of extension experiments (issue 18), kept apart from the paper's model parts.

:class:`TimbreMaskBias` (experiment field ``timbre_mask``, row 4f): timbre-coupled slot identity.
In the paper the slot timbre embedding only enters the decoder through FiLM, after the masks have
decided which slot a pitch-time token belongs to. Here it also takes part in that competition:
every token ``t_j`` (``d`` channels) is projected to the timbre space, ``u_j = normalize(W t_j)``
(``E = 128``), and the mask logit of slot ``k`` at token ``j`` gets ``scale * cos(e_k, u_j)``
added, ``e_k`` the slot's (unit-norm) predicted timbre embedding and ``scale`` a learned scalar
(initialised to 1). Two slots with the same timbre then compete for the same tokens, and a slot
whose embedding matches a source's timbre is pulled towards that source's notes. Parameters:
``d * E + E + 1`` (24,705 for d = 192).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from slotmpe.constants import EMBED_DIM, SLOT_DIM


class TimbreMaskBias(nn.Module):
    """Mask-logit bias ``(B, K, 72, t)`` from tokens ``(B, 72, t, d)`` and slot timbre ``(B, K, E)``.

    Args:
        dim: token dimension ``d``.
        embed_dim: timbre embedding dimension ``E``.
        init_scale: initial value of the learned scale of the cosine.
    """

    def __init__(self, dim: int = SLOT_DIM, embed_dim: int = EMBED_DIM, init_scale: float = 1.0
                 ) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, embed_dim)
        self.scale = nn.Parameter(torch.tensor(float(init_scale)))

    def forward(self, tokens: torch.Tensor, timbre: torch.Tensor) -> torch.Tensor:
        """``scale * cos(timbre_k, normalize(proj(token_j)))`` as ``(B, K, 72, t)``."""
        b, p, t, _ = tokens.shape
        u = F.normalize(self.proj(tokens), dim=-1).reshape(b, p * t, -1)  # (B, 72 t, E)
        sim = torch.matmul(timbre.to(u.dtype), u.transpose(1, 2))  # (B, K, 72 t)
        return (self.scale * sim).view(b, -1, p, t)
