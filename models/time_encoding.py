"""Learned time features (Time2Vec, Kazemi et al. 2019) for chat messages.

Each message has two clocks: seconds since the stream started and seconds since the viewer's
previous message. Both span seconds to hours, so they enter on a log scale, log1p(seconds); each
becomes one linear feature (trend) plus `dim - 1` learned sinusoids (rhythms such as "answers
within a minute"). The model adds their projection to the message embedding, so order and pace
are visible to attention, which has no positional encoding of its own.
"""

from __future__ import annotations

import torch
from torch import nn


class Time2Vec(nn.Module):
    """(B, T, n_clocks) seconds -> (B, T, n_clocks * dim) features."""

    def __init__(self, n_clocks: int = 2, dim: int = 8) -> None:
        super().__init__()
        if dim < 2:
            raise ValueError("Time2Vec needs dim >= 2 (one linear + at least one periodic feature)")
        self.n_clocks, self.dim = n_clocks, dim
        # One frequency/phase set per clock: pace and position have different rhythms.
        self.weight = nn.Parameter(torch.randn(n_clocks, dim) * 0.5)
        self.bias = nn.Parameter(torch.zeros(n_clocks, dim))

    def forward(self, seconds: torch.Tensor) -> torch.Tensor:
        t = torch.log1p(seconds.clamp(min=0.0)).unsqueeze(-1)  # (B, T, C, 1)
        z = t * self.weight + self.bias  # (B, T, C, dim)
        features = torch.cat([z[..., :1], torch.sin(z[..., 1:])], dim=-1)  # linear + periodic
        return features.flatten(-2)  # (B, T, C * dim)


class MessageTimeEncoding(nn.Module):
    """Both clocks of every message -> a d_model vector to add to the message representation."""

    def __init__(self, d_model: int, dim: int = 8) -> None:
        super().__init__()
        self.time2vec = Time2Vec(n_clocks=2, dim=dim)
        self.proj = nn.Linear(2 * dim, d_model)

    def forward(self, seconds_since_start: torch.Tensor, seconds_since_prev: torch.Tensor) -> torch.Tensor:
        clocks = torch.stack([seconds_since_start, seconds_since_prev], dim=-1)  # (B, T, 2)
        return self.proj(self.time2vec(clocks))  # (B, T, d_model)
