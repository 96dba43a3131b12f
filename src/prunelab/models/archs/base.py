"""What every architecture of the graph family is: an ``nn.Module`` of bias-free weights that
declares its :class:`~prunelab.models.graph.Graph`, and can be rebuilt at other widths.

An architecture module (``models/archs/<name>.py``) defines one :class:`GraphNet` subclass and
its default widths; ``models/archs/__init__.py`` lists them. Masking, liveness, unit pruning,
compaction and FLOPs never look at the class: they read its graph.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
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


@dataclass
class Probe:
    """What inputs show of a net's parts, summed over samples (and positions, steps): per
    part, the squared norm of each input column its weight matrix multiplies; per group, the
    summed |activation| of each unit and how many values were summed."""

    column_sq: dict[str, Tensor] = field(default_factory=dict)
    activity: dict[str, Tensor] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def column_norms(self, part: str) -> Tensor:
        """||x_j||_2 of each input column of ``part``: (fan_in,)."""
        return self.column_sq[part].sqrt()

    def mean_activity(self, group: str) -> Tensor:
        """Mean |activation| of each unit of ``group`` (over every node it is written at)."""
        return self.activity[group] / self.counts[group]


def unfolded(x: Tensor, kernel: int, stride: int = 1, padding: int = 0) -> Tensor:
    """What a conv's weight matrix (out, in * kernel**d) multiplies: one row per sample and
    output position, columns in the weight's (in, *kernel) order; 1-D and 2-D inputs."""
    if x.dim() == 3:  # a signal as a 1 x L image
        cols = F.unfold(x.unsqueeze(2), (1, kernel), padding=(0, padding), stride=(1, stride))
    else:
        cols = F.unfold(x, kernel, padding=padding, stride=stride)
    return cols.transpose(1, 2).reshape(-1, cols.shape[1])


class GraphNet(nn.Module):
    """A net whose weights are named parts of its graph; ``sizes`` are its groups' widths.

    ``forward`` reports what each part's weight multiplies (:meth:`reads`, :meth:`reads_conv`)
    and each group's activations (:meth:`fires`); both are no-ops unless :meth:`probe` runs.
    """

    _probe: Probe | None = None

    def __init__(self, inp: Input, widths: Widths, sizes: Mapping[str, int]) -> None:
        super().__init__()
        self.inp, self.widths, self.sizes = inp, widths, dict(sizes)

    def reads(self, part: str, x: Tensor) -> None:
        """``part``'s weight multiplies the rows of ``x``: (rows, fan_in)."""
        if self._probe is not None:
            sq = x.detach().square().sum(dim=0)
            old = self._probe.column_sq.get(part)
            self._probe.column_sq[part] = sq if old is None else old + sq

    def reads_conv(self, part: str, x: Tensor, kernel: int, stride: int = 1,
                   padding: int = 0) -> None:
        """``part`` is a conv over ``x`` (N, C, *spatial)."""
        if self._probe is not None:
            self.reads(part, unfolded(x.detach(), kernel, stride, padding))

    def fires(self, group: str, a: Tensor) -> None:
        """``a`` holds activations of ``group``'s units: (N, units, *spatial) or (rows, units)."""
        if self._probe is not None:
            rows = a.detach().movedim(1, -1).reshape(-1, a.shape[1]) if a.dim() > 2 else a
            total = rows.abs().sum(dim=0)
            p = self._probe
            p.activity[group] = total + p.activity[group] if group in p.activity else total
            p.counts[group] = p.counts.get(group, 0) + rows.shape[0]

    @torch.no_grad()
    def probe(self, x: Tensor, batch: int = 256) -> Probe:
        """Run ``x`` (N, features) through the net and collect what its parts see."""
        self._probe = Probe()
        try:
            for i in range(0, len(x), batch):
                self(x[i : i + batch])
            return self._probe
        finally:
            self._probe = None

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
