"""Convolutional trunk and the two 216 -> 72 branches of the slot model (paper Sec. III-B).

The trunk is inspired by Basic Pitch (Bittner et al., 2022): a 5x5 convolution over the aligned
fast-HCQT, a tall "harmonic/octave" kernel spanning 39 bins (13 semitones) in frequency and 3 frames
in time, and a 3x3 convolution that widens the map for the branches, all at the full 216-bin
resolution. Like Basic Pitch (16 and 8 channels in its 5x5 and 3x39 layers) it is narrow: every
channel at 216 x T costs ``216 T`` times its kernel size in multiply-adds, so the widths are small
(default 8 / 8 / 16). Two branches follow:

* :class:`GlobalBranch` predicts the mixture pitch map (standard MPE head);
* :class:`SlotBranch` produces the pitch-time feature map consumed by the slot head.

Both reduce 216 -> 72 bins by averaging groups of three bins (``avg_pool2d`` with kernel (3, 1)).
Everything is convolutional with "same" padding, so any number of frames ``T`` works.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from slotmpe.constants import BINS_PER_SEMITONE, N_INPUT_CHANNELS


def conv_bn_relu(c_in: int, c_out: int, kernel: tuple[int, int]) -> nn.Sequential:
    """Conv2d (no bias, 'same' padding; kernel = (freq, time)) + BatchNorm2d + ReLU."""
    pad = (kernel[0] // 2, kernel[1] // 2)
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, padding=pad, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


def time_radius(module: nn.Module) -> int:
    """Receptive-field radius in frames of a *sequential* stack of convolutions.

    Sums ``dilation * (kernel_t - 1) // 2`` over every Conv1d/Conv2d inside ``module`` (time is
    the last axis). Used to size the overlap ("halo") when long inputs are processed in chunks.
    """
    r = 0
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.Conv1d):
            k = m.kernel_size[-1]
            d = m.dilation[-1]
            r += d * (k - 1) // 2
    return r


def pool_to_pitch(x: torch.Tensor) -> torch.Tensor:
    """Average groups of three bins: ``(B, C, 216, T) -> (B, C, 72, T)``."""
    return F.avg_pool2d(x, kernel_size=(BINS_PER_SEMITONE, 1))


class Trunk(nn.Module):
    """Shared convolutional trunk at 216 bins: ``(B, 12, 216, T) -> (B, C3, 216, T)``.

    Args:
        channels: output channels ``(C1, C2, C3)`` of the three convolutions (5x5, tall
            ``harmonic_kernel`` x 3, 3x3).
        harmonic_kernel: frequency extent (bins) of the middle, Basic-Pitch-style tall kernel.
        in_channels: input channels (6 aligned harmonics + 6 validity masks).
    """

    def __init__(
        self,
        channels: Sequence[int] = (8, 8, 16),
        harmonic_kernel: int = 39,
        in_channels: int = N_INPUT_CHANNELS,
    ) -> None:
        super().__init__()
        c1, c2, c3 = (int(c) for c in channels)
        self.in_norm = nn.BatchNorm2d(in_channels)
        self.layers = nn.Sequential(
            conv_bn_relu(in_channels, c1, (5, 5)),
            conv_bn_relu(c1, c2, (harmonic_kernel, 3)),
            conv_bn_relu(c2, c3, (3, 3)),
        )
        self.out_channels = c3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``(B, 12, 216, T)`` -> features ``(B, C3, 216, T)``."""
        return self.layers(self.in_norm(x))


class GlobalBranch(nn.Module):
    """Mixture pitch head: ``(B, C, 216, T) -> logits (B, 72, T)``.

    conv3x3 (216 bins) -> average 3 bins -> conv3x3 (72 bins) -> 1x1 conv to one logit map.
    """

    def __init__(self, in_channels: int, channels: Sequence[int] = (8, 8)) -> None:
        super().__init__()
        ca, cb = (int(c) for c in channels)
        self.pre = conv_bn_relu(in_channels, ca, (3, 3))
        self.post = conv_bn_relu(ca, cb, (3, 3))
        self.out = nn.Conv2d(cb, 1, kernel_size=1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """``h`` ``(B, C, 216, T)`` -> mixture logits ``(B, 72, T)``."""
        return self.out(self.post(pool_to_pitch(self.pre(h)))).squeeze(1)


class SlotBranch(nn.Module):
    """Slot feature branch: ``(B, C, 216, T) -> (B, Cs, 72, T)``.

    conv3x3 (216 bins) -> average 3 bins -> conv3x3 (72 bins), mirroring :class:`GlobalBranch`.
    """

    def __init__(self, in_channels: int, channels: Sequence[int] = (16, 32)) -> None:
        super().__init__()
        ca, cb = (int(c) for c in channels)
        self.pre = conv_bn_relu(in_channels, ca, (3, 3))
        self.post = conv_bn_relu(ca, cb, (3, 3))
        self.out_channels = cb

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """``h`` ``(B, C, 216, T)`` -> slot features ``(B, Cs, 72, T)``."""
        return self.post(pool_to_pitch(self.pre(h)))
