"""The network of the deep-learning denoiser: a DnCNN-style residual CNN (Zhang et al.,
2017), colour, blind over the noise level. Plain 3×3 convolutions and ReLUs — no batch
norm — so it is exactly local: its receptive-field radius is its depth."""

from __future__ import annotations

import torch
from torch import nn

DEPTH = 10
CHANNELS = 48


class DnCNN(nn.Module):
    def __init__(self, depth: int = DEPTH, channels: int = CHANNELS) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, channels, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True)]
        layers.append(nn.Conv2d(channels, 3, 3, padding=1))
        self.body = nn.Sequential(*layers)
        self.depth = depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: N×3×H×W in [0, 1]; returns the denoised image (input minus the noise)."""
        return x - self.body(x)
