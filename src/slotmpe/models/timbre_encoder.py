"""Self-supervised timbre encoder (paper Section III-C): the teacher of the slot model's timbre head.

Input is the same fast-HCQT as the slot model, on a 46-frame window of one isolated stem:
``x`` of shape ``(B, 12, 216, 46)`` (six harmonically shifted log-CQT maps, then their six validity
masks; see :mod:`slotmpe.constants`). Any number of frames ``T >= 8`` works, the encoder pools over
time.

Architecture (all widths are constructor arguments; the defaults give the paper's size):

1. *Window normalisation* (no parameters): the six spectral channels are standardised per item
   with the mean and standard deviation over their valid cells (mask > 0); invalid cells are set to
   0. The embedding is therefore invariant to an additive offset and a positive scale of the
   log-CQT window.
2. *Convolutional backbone*: 3x3 conv + BatchNorm + ReLU blocks with channels
   ``(32 | 64, 64 | 128, 128 | 192)``; a 2x2 max-pool after each ``|``
   (``216 x 46 -> 108 x 23 -> 54 x 11 -> 27 x 5``); about 0.3 GMAC per 46-frame window.
3. *Adaptive mean and max pooling* over frequency and time, concatenated: ``(B, 384)``.
4. *Fully connected network* ``384 -> 336 -> 128`` (ReLU, dropout) and L2 normalisation: the
   128-d stem-timbre embedding returned by :meth:`TimbreEncoder.forward`.
5. *Projection head* ``128 -> 128 -> 64`` (:meth:`TimbreEncoder.project`), used only by the
   contrastive loss during training; discarded in use.

Trainable parameters with the defaults: 699,600 for encoder + projection head (we read the paper's
"full encoder has 699,584" as including the projection head; +0.002 %), of which 674,832 are the
encoder proper (steps 2-4) and 24,768 the projection head.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from slotmpe.constants import EMBED_DIM, N_HARMONICS, N_INPUT_CHANNELS

DEFAULT_CHANNELS: tuple[int, ...] = (32, 64, 64, 128, 128, 192)
DEFAULT_POOL_AFTER: tuple[int, ...] = (0, 2, 4)


def normalize_window(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Standardise the spectral channels of an HCQT window per item over its valid cells.

    Args:
        x: ``(B, 12, F, T)``: channels ``0..5`` spectral maps, ``6..11`` validity masks.
        eps: floor of the standard deviation.

    Returns:
        ``(B, 12, F, T)``: spectral channels with zero mean and unit variance over the cells whose
        mask is > 0 (invalid cells 0), masks unchanged.
    """
    if x.dim() != 4 or x.shape[1] != N_INPUT_CHANNELS:
        raise ValueError(f"expected (B, {N_INPUT_CHANNELS}, F, T), got {tuple(x.shape)}")
    spec = x[:, :N_HARMONICS]
    valid = (x[:, N_HARMONICS:] > 0).to(spec.dtype)
    n = valid.sum(dim=(1, 2, 3), keepdim=True).clamp_min(1.0)
    mean = (spec * valid).sum(dim=(1, 2, 3), keepdim=True) / n
    var = (((spec - mean) * valid) ** 2).sum(dim=(1, 2, 3), keepdim=True) / n
    spec = (spec - mean) / torch.sqrt(var + eps**2) * valid
    return torch.cat([spec, x[:, N_HARMONICS:]], dim=1)


class TimbreEncoder(nn.Module):
    """Fast-HCQT window ``(B, 12, 216, T)`` -> L2-normalised timbre embedding ``(B, 128)``.

    See the module docstring for the architecture. ``count_parameters`` of a default instance is
    699,600 (encoder 674,832 + projection head 24,768).

    Args:
        channels: output channels of the 3x3 conv blocks, in order.
        pool_after: indices of the blocks followed by a 2x2 max-pool.
        fc_hidden: hidden width of the fully connected network.
        embed_dim: embedding size (128).
        proj_hidden: hidden width of the projection head.
        proj_dim: output size of the projection head.
        dropout: dropout before the last fully connected layer.
        in_channels: input channels (12).
    """

    def __init__(
        self,
        channels: Sequence[int] = DEFAULT_CHANNELS,
        pool_after: Sequence[int] = DEFAULT_POOL_AFTER,
        fc_hidden: int = 336,
        embed_dim: int = EMBED_DIM,
        proj_hidden: int = 128,
        proj_dim: int = 64,
        dropout: float = 0.1,
        in_channels: int = N_INPUT_CHANNELS,
    ) -> None:
        super().__init__()
        self.config = {
            "channels": [int(c) for c in channels],
            "pool_after": [int(i) for i in pool_after],
            "fc_hidden": int(fc_hidden),
            "embed_dim": int(embed_dim),
            "proj_hidden": int(proj_hidden),
            "proj_dim": int(proj_dim),
            "dropout": float(dropout),
            "in_channels": int(in_channels),
        }
        layers: list[nn.Module] = []
        c_in = in_channels
        for i, c in enumerate(channels):
            layers += [
                nn.Conv2d(c_in, c, kernel_size=3, padding=1, bias=False),
                nn.BatchNorm2d(c),
                nn.ReLU(inplace=True),
            ]
            if i in set(pool_after):
                layers.append(nn.MaxPool2d(2, ceil_mode=False))
            c_in = c
        self.backbone = nn.Sequential(*layers)
        self.fc = nn.Sequential(
            nn.Linear(2 * c_in, fc_hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(fc_hidden, embed_dim),
        )
        self.projector = nn.Sequential(
            nn.Linear(embed_dim, proj_hidden),
            nn.ReLU(inplace=True),
            nn.Linear(proj_hidden, proj_dim),
        )
        self.embed_dim = int(embed_dim)

    def embed_raw(self, x: torch.Tensor) -> torch.Tensor:
        """Un-normalised embedding.

        Args:
            x: ``(B, 12, F, T)`` fast-HCQT windows (log-CQT maps + masks), not yet normalised.

        Returns:
            ``(B, embed_dim)`` output of the fully connected network, before L2 normalisation.
        """
        h = self.backbone(normalize_window(x))
        pooled = torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], dim=1)
        return self.fc(pooled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``(B, 12, F, T)`` -> L2-normalised embeddings ``(B, embed_dim)``."""
        return F.normalize(self.embed_raw(x), dim=-1)

    def project(self, e: torch.Tensor) -> torch.Tensor:
        """Projection head for the contrastive loss: ``(..., embed_dim)`` -> ``(..., proj_dim)``.

        The output is not normalised; the loss normalises it.
        """
        return self.projector(e)


def count_trainable(module: nn.Module) -> int:
    """Number of trainable parameters of ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
