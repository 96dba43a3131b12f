"""What every architecture of the graph family is: an ``nn.Module`` of bias-free weights that
declares its :class:`~prunelab.models.graph.Graph`, and can be rebuilt at other widths.

An architecture module (``models/archs/<name>.py``) defines one :class:`GraphNet` subclass and
its default widths; ``models/archs/__init__.py`` lists them. Masking, liveness, unit pruning,
compaction and FLOPs never look at the class: they read its graph.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from prunelab.models import graph as g


@dataclass(frozen=True)
class Input:
    """What one sample is: (channels, *spatial) -- (1, 28, 28) an MNIST image, (1, 40) an
    MNIST-1D signal -- and how many classes there are. Inputs arrive flat, (N, prod(shape))."""

    shape: tuple[int, ...]
    classes: int = 10

    @property
    def features(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    @property
    def dims(self) -> int:
        """Spatial dimensions: 2 for images, 1 for signals (the convs follow)."""
        return len(self.shape) - 1

    @property
    def steps(self) -> tuple[int, int]:
        """As a sequence: (time steps, values per step) -- an image's rows, a signal's values."""
        return (self.shape[1], self.shape[2]) if self.dims == 2 else (self.shape[1], 1)


@dataclass(frozen=True)
class Widths:
    """The architectures' hyper-parameters (params.yaml ``archs``)."""

    mlp_hidden: tuple[int, ...] = (1000, 1000, 500, 200)
    cnn_channels: tuple[int, ...] = (6, 16)
    cnn_fc: tuple[int, ...] = (120, 84)
    resnet_widths: tuple[int, ...] = (16, 32, 64)
    resnet_blocks: int = 1
    lstm_hidden: int = 128


class GraphNet(nn.Module):
    """A net whose weights are named parts of its graph; ``sizes`` are its groups' widths."""

    def __init__(self, inp: Input, widths: Widths, sizes: Mapping[str, int]) -> None:
        super().__init__()
        self.inp, self.widths, self.sizes = inp, widths, dict(sizes)

    def graph(self) -> g.Graph:  # pragma: no cover - every subclass declares its own
        raise NotImplementedError

    def parameters_by_name(self) -> dict[str, nn.Parameter]:
        raise NotImplementedError  # pragma: no cover

    def state(self) -> dict[str, Tensor]:
        """The live weights by part name (not copies)."""
        return dict(self.parameters_by_name())

    def resized(self, sizes: Mapping[str, int]) -> GraphNet:
        """The same architecture at other group widths (fresh weights)."""
        return type(self)(self.inp, self.widths, sizes)

    def with_state(self, state: Mapping[str, Tensor]) -> GraphNet:
        """A copy carrying these weights (shapes must match this net's)."""
        new = copy.deepcopy(self) if all(
            state[k].shape == v.shape for k, v in self.state().items()) else None
        if new is None:
            raise ValueError("with_state: shapes differ; use compacted()")
        with torch.no_grad():
            for k, p in new.parameters_by_name().items():
                p.copy_(state[k])
        return new


def compacted(net: GraphNet, keep: Mapping[str, Tensor]) -> GraphNet:
    """The smaller dense net that computes what ``net`` computes with the units not in
    ``keep`` zeroed: those units removed from every axis of their coupling group."""
    new_state, sizes = g.compact(net.graph(), net.state(), keep)
    small = net.resized({k: sizes[k] for k in net.sizes}).to(next(net.parameters()).device)
    return small.with_state(new_state)


def masked(net: GraphNet, masks: Mapping[str, Tensor]) -> GraphNet:
    """A copy with the weights outside the keep-masks set to 0."""
    return net.with_state({k: w * masks[k] for k, w in net.state().items()})


def init_linear(n_in: int, n_out: int) -> nn.Parameter:
    """PyTorch's default init of a bias-free linear layer (what nn.Linear draws)."""
    return nn.Parameter(nn.Linear(n_in, n_out, bias=False).weight.detach().clone())


def init_conv(dims: int, c_in: int, c_out: int, k: int) -> nn.Parameter:
    """PyTorch's default init of a bias-free conv (nn.Conv1d / nn.Conv2d)."""
    cls = nn.Conv2d if dims == 2 else nn.Conv1d
    return nn.Parameter(cls(c_in, c_out, k, bias=False).weight.detach().clone())


def conv(x: Tensor, w: Tensor, stride: int = 1, padding: int = 0) -> Tensor:
    """A bias-free conv of the weight's dimensionality (1-D signals, 2-D images)."""
    f = torch.nn.functional.conv2d if w.dim() == 4 else torch.nn.functional.conv1d
    return f(x, w, stride=stride, padding=padding)


def pool(x: Tensor, k: int) -> Tensor:
    f = torch.nn.functional.max_pool2d if x.dim() == 4 else torch.nn.functional.max_pool1d
    return f(x, k)


def out_len(n: int, k: int, stride: int = 1, padding: int = 0) -> int:
    return (n + 2 * padding - k) // stride + 1
