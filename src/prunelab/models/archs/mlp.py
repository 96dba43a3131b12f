"""The study's MLP as a graph net: bias-free linear layers with ReLUs; hidden layer i is group
``h<i>`` (its rows, the next layer's columns)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from prunelab.models import graph as g
from prunelab.models.archs.base import GraphNet, Input, Widths, init_linear


class MLP(GraphNet):
    def __init__(self, inp: Input, widths: Widths, sizes: Mapping[str, int]) -> None:
        super().__init__(inp, widths, sizes)
        dims = [inp.features, *(sizes[f"h{i}"] for i in range(len(sizes))), inp.classes]
        self.fc = nn.ParameterList(init_linear(a, b) for a, b in zip(dims, dims[1:]))

    @staticmethod
    def default_sizes(inp: Input, widths: Widths) -> dict[str, int]:
        return {f"h{i}": n for i, n in enumerate(widths.mlp_hidden)}

    def parameters_by_name(self) -> dict[str, nn.Parameter]:
        return {f"fc{i}": p for i, p in enumerate(self.fc)}

    def graph(self) -> g.Graph:
        groups = [g.INPUT, *(f"h{i}" for i in range(len(self.sizes))), g.OUTPUT]
        parts = tuple(g.Part(f"fc{i}", g.Axis(b, 0), g.Axis(a, 1))
                      for i, (a, b) in enumerate(zip(groups, groups[1:])))
        return g.Graph(parts, {**self.sizes, g.INPUT: self.inp.features,
                               g.OUTPUT: self.inp.classes}, parts[-1].name)

    def forward(self, x: Tensor) -> Tensor:
        for i, w in enumerate(self.fc[:-1]):
            self.reads(f"fc{i}", x)
            x = torch.relu(x @ w.T)
            self.fires(f"h{i}", x)
        self.reads(f"fc{len(self.fc) - 1}", x)
        return x @ self.fc[-1].T
