"""Optional heads of the slot model: timbre head (2a+), FiLM (2b+), polyphony head (3a+).

* :class:`TimbreHead` (paper Sec. III-C): ``LN(d) -> Linear(d, d) -> GELU -> Linear(d, 128)`` per
  slot, L2-normalised; supervised against the frozen timbre encoder's source embeddings.
* :class:`FiLM`: ``Linear(128, 2 d)`` maps the predicted (normalised) slot embedding to per-channel
  ``(gamma, beta)`` that modulate the masked ``d``-channel slot feature map before pitch decoding
  (``(1 + gamma) * F + beta``, so a zero output is the identity).
* :class:`PolyphonyHead` (paper Sec. III-D): from the shared trunk features at 216 bins,
  conv3x3 -> average 3 bins -> flatten ``C x 72`` per frame -> temporal conv (3 frames) -> ReLU ->
  8 polyphony-class logits per frame. Its weights sit in the per-frame temporal layer
  (``C x 72 -> hidden``), which runs once per frame rather than per pitch-time cell, so it is cheap
  in compute for its size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from slotmpe.constants import EMBED_DIM, N_PITCHES, N_POLY_CLASSES, SLOT_DIM
from slotmpe.models.trunk import conv_bn_relu, pool_to_pitch


class TimbreHead(nn.Module):
    """Per-slot timbre embedding: ``(B, K, d) -> (B, K, 128)`` L2-normalised."""

    def __init__(
        self, dim: int = SLOT_DIM, hidden: int = SLOT_DIM, embed_dim: int = EMBED_DIM
    ) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, embed_dim)
        )

    def forward(self, slots: torch.Tensor) -> torch.Tensor:
        """``slots`` ``(B, K, d)`` -> unit-norm embeddings ``(B, K, E)``."""
        return F.normalize(self.net(slots), dim=-1)


class FiLM(nn.Module):
    """Timbre-conditioned FiLM parameters: ``(B, K, E) -> (gamma, beta)``, each ``(B, K, d)``."""

    def __init__(self, embed_dim: int = EMBED_DIM, channels: int = SLOT_DIM) -> None:
        super().__init__()
        self.proj = nn.Linear(embed_dim, 2 * channels)

    def forward(self, emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``emb`` ``(B, K, E)`` -> ``(gamma, beta)``; apply as ``(1 + gamma) * F + beta``."""
        gamma, beta = self.proj(emb).chunk(2, dim=-1)
        return gamma, beta


class PolyphonyHead(nn.Module):
    """Mixture polyphony classes per frame: ``(B, C, 216, T) -> logits (B, 8, T)``.

    Args:
        in_channels: trunk channels ``C``.
        channels: channels after the 3x3 reduction conv.
        hidden: width of the temporal layer over the flattened ``channels x 72`` frame vector.
    """

    def __init__(
        self,
        in_channels: int,
        channels: int = 16,
        hidden: int = 88,
        n_classes: int = N_POLY_CLASSES,
        n_pitches: int = N_PITCHES,
    ) -> None:
        super().__init__()
        self.reduce = conv_bn_relu(in_channels, channels, (3, 3))
        self.temporal = nn.Sequential(
            nn.Conv1d(channels * n_pitches, hidden, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv1d(hidden, n_classes, kernel_size=1),
        )

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """``h`` ``(B, C, 216, T)`` -> polyphony logits ``(B, 8, T)``."""
        r = pool_to_pitch(self.reduce(h))  # (B, c, 72, T)
        b, c, p, t = r.shape
        return self.temporal(r.reshape(b, c * p, t))
