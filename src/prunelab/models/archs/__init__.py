"""The graph-family architectures by name: one module each, one line here."""

from __future__ import annotations

import torch

from prunelab.models.archs.base import GraphNet, Input, Widths
from prunelab.models.archs.cnn import CNN
from prunelab.models.archs.lstm import LSTM
from prunelab.models.archs.mlp import MLP
from prunelab.models.archs.resnet import ResNet

ARCHS: dict[str, type[GraphNet]] = {"mlp": MLP, "cnn": CNN, "resnet": ResNet, "lstm": LSTM}


def build(name: str, inp: Input, widths: Widths, seed: int,
          device: torch.device | str = "cpu") -> GraphNet:
    """Architecture ``name`` at its configured widths, PyTorch's default init drawn from
    ``seed`` (same seed, same weights)."""
    cls = ARCHS[name]
    torch.manual_seed(seed)
    return cls(inp, widths, cls.default_sizes(inp, widths)).to(device)
