"""A small ResNet as a graph net, for images (conv2d) or signals (conv1d).

stem conv 3 (stride 1) -> three stages of basic blocks -> global average -> linear. A basic
block is relu(conv3(relu(conv3(x))) + shortcut(x)); each stage's first block halves the
resolution (stride 2) and its shortcut is a 1x1 projection (stride 2); the others' are the
identity. Bias-free and without BatchNorm: a BatchNorm, even folded, adds a bias per channel,
and then a channel whose weights are all zero no longer outputs 0 -- unit pruning would not be
a removal and compaction would not be exact. Adam trains this depth without it.

Groups: ``stem`` (the stem's channels), ``s<i>`` (stage i's residual stream: written by every
block's second conv and the projection, read by the next blocks -- one coupling group, since
the adds tie their channels), ``s<i>b<j>`` (block j's inner channels).
"""

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
)


class ResNet(GraphNet):
    def __init__(self, inp: Input, widths: Widths, sizes: Mapping[str, int]) -> None:
        super().__init__(inp, widths, sizes)
        d, blocks = inp.dims, widths.resnet_blocks
        params = {"stem": init_conv(d, inp.shape[0], sizes["stem"], 3)}
        prev, side = "stem", inp.shape[1]
        self.positions = {"stem": side**d}
        for i in range(len(widths.resnet_widths)):
            s = f"s{i}"
            for j in range(blocks):
                mid, stride = f"{s}b{j}", 2 if j == 0 else 1
                side = out_len(side, 3, stride, 1)
                params[f"{mid}c1"] = init_conv(d, sizes[prev], sizes[mid], 3)
                params[f"{mid}c2"] = init_conv(d, sizes[mid], sizes[s], 3)
                self.positions[f"{mid}c1"] = self.positions[f"{mid}c2"] = side**d
                if j == 0:
                    params[f"{s}proj"] = init_conv(d, sizes[prev], sizes[s], 1)
                    self.positions[f"{s}proj"] = side**d
                prev = s
        for p in params.values():  # He et al.'s init (the ResNet paper's): a deep
            nn.init.kaiming_normal_(p, mode="fan_out", nonlinearity="relu")  # net without BN
            #   trains from it; PyTorch's default scales each conv's output down by ~sqrt(3)
        params["fc"] = init_linear(sizes[prev], inp.classes)
        self.w = nn.ParameterDict(params)

    @staticmethod
    def default_sizes(inp: Input, widths: Widths) -> dict[str, int]:
        sizes = {"stem": widths.resnet_widths[0]}
        for i, n in enumerate(widths.resnet_widths):
            sizes[f"s{i}"] = n
            sizes.update({f"s{i}b{j}": n for j in range(widths.resnet_blocks)})
        return sizes

    def parameters_by_name(self) -> dict[str, nn.Parameter]:
        return dict(self.w)

    def graph(self) -> g.Graph:
        parts = [g.Part("stem", g.Axis("stem", 0), g.Axis(g.INPUT, 1), self.positions["stem"])]
        skips = []
        prev, prev_node = "stem", "stem"
        for i in range(len(self.widths.resnet_widths)):
            s = f"s{i}"
            for j in range(self.widths.resnet_blocks):
                mid, node = f"{s}b{j}", f"{s}.{j}"
                pos = self.positions[f"{mid}c1"]
                parts.append(g.Part(f"{mid}c1", g.Axis(mid, 0), g.Axis(prev, 1, node=prev_node),
                                    pos))
                parts.append(g.Part(f"{mid}c2", g.Axis(s, 0, node=node), g.Axis(mid, 1), pos))
                if j == 0:
                    parts.append(g.Part(f"{s}proj", g.Axis(s, 0, node=node),
                                        g.Axis(prev, 1, node=prev_node), pos))
                else:
                    skips.append((prev_node, node))
                prev, prev_node = s, node
        parts.append(g.Part("fc", g.Axis(g.OUTPUT, 0), g.Axis(prev, 1, node=prev_node)))
        sizes = {**self.sizes, g.INPUT: self.inp.shape[0], g.OUTPUT: self.inp.classes}
        return g.Graph(tuple(parts), sizes, "fc", tuple(skips))

    def forward(self, x: Tensor) -> Tensor:
        w = self.w
        x = x.reshape(len(x), *self.inp.shape)
        self.reads_conv("stem", x, 3, padding=1)
        x = torch.relu(conv(x, w["stem"], padding=1))
        self.fires("stem", x)
        for i in range(len(self.widths.resnet_widths)):
            for j in range(self.widths.resnet_blocks):
                mid, stride = f"s{i}b{j}", 2 if j == 0 else 1
                self.reads_conv(f"{mid}c1", x, 3, stride, 1)
                h = torch.relu(conv(x, w[f"{mid}c1"], stride, 1))
                self.fires(mid, h)
                self.reads_conv(f"{mid}c2", h, 3, 1, 1)
                h = conv(h, w[f"{mid}c2"], 1, 1)
                if j == 0:
                    self.reads_conv(f"s{i}proj", x, 1, stride)
                x = torch.relu(h + (conv(x, w[f"s{i}proj"], stride) if j == 0 else x))
                self.fires(f"s{i}", x)  # the stage's stream, at every block's output
        x = x.flatten(2).mean(dim=2)
        self.reads("fc", x)
        return x @ w["fc"].T
