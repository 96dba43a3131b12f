"""LeNet-5 as a graph net, for images (conv2d) or signals (conv1d): conv 5 (pad 2) -> pool 2 ->
conv 5 -> pool 2 -> flatten -> linear ... -> classes, ReLU after every hidden layer, no biases.
Conv i's channels are group ``c<i>``; the first linear layer reads each of the last conv's
channels as a block of its flattened positions."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from prunelab.models import graph as g
from prunelab.models.archs.base import (
    GraphNet,
    Input,
    Widths,
    conv,
    init_conv,
    init_linear,
    out_len,
    pool,
)

KERNEL, PADDING, POOL = 5, (2, 0), 2


class CNN(GraphNet):
    def __init__(self, inp: Input, widths: Widths, sizes: Mapping[str, int]) -> None:
        super().__init__(inp, widths, sizes)
        n_conv = len(widths.cnn_channels)
        chans = [inp.shape[0], *(sizes[f"c{i}"] for i in range(n_conv))]
        self.convs = nn.ParameterList(init_conv(inp.dims, a, b, KERNEL)
                                      for a, b in zip(chans, chans[1:]))
        side, self.positions = inp.shape[1], []
        for pad in PADDING[:n_conv]:
            side = out_len(side, KERNEL, 1, pad)
            self.positions.append(side**inp.dims)
            side //= POOL
        self.block = side**inp.dims
        dims = [chans[-1] * self.block, *(sizes[f"f{i}"] for i in range(len(widths.cnn_fc))),
                inp.classes]
        self.fc = nn.ParameterList(init_linear(a, b) for a, b in zip(dims, dims[1:]))

    @staticmethod
    def default_sizes(inp: Input, widths: Widths) -> dict[str, int]:
        return {**{f"c{i}": n for i, n in enumerate(widths.cnn_channels)},
                **{f"f{i}": n for i, n in enumerate(widths.cnn_fc)}}

    def parameters_by_name(self) -> dict[str, nn.Parameter]:
        return {**{f"conv{i}": p for i, p in enumerate(self.convs)},
                **{f"fc{i}": p for i, p in enumerate(self.fc)}}

    def graph(self) -> g.Graph:
        convs = [g.INPUT, *(f"c{i}" for i in range(len(self.convs)))]
        parts = [g.Part(f"conv{i}", g.Axis(b, 0), g.Axis(a, 1), self.positions[i])
                 for i, (a, b) in enumerate(zip(convs, convs[1:]))]
        fcs = [*(f"f{i}" for i in range(len(self.fc) - 1)), g.OUTPUT]
        reads = g.Axis(convs[-1], 1, block=self.block)
        for i, b in enumerate(fcs):
            parts.append(g.Part(f"fc{i}", g.Axis(b, 0), reads))
            reads = g.Axis(b, 1)
        sizes = {**self.sizes, g.INPUT: self.inp.shape[0], g.OUTPUT: self.inp.classes}
        return g.Graph(tuple(parts), sizes, parts[-1].name)

    def forward(self, x: Tensor) -> Tensor:
        x = x.reshape(len(x), *self.inp.shape)
        for i, (w, pad) in enumerate(zip(self.convs, PADDING)):
            self.reads_conv(f"conv{i}", x, KERNEL, padding=pad)
            x = pool(torch.relu(conv(x, w, padding=pad)), POOL)
            self.fires(f"c{i}", x)  # a channel's activity: its pooled positions
        x = x.flatten(1)
        for i, w in enumerate(self.fc[:-1]):
            self.reads(f"fc{i}", x)
            x = torch.relu(x @ w.T)
            self.fires(f"f{i}", x)
        self.reads(f"fc{len(self.fc) - 1}", x)
        return x @ self.fc[-1].T


