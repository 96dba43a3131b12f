"""A network as a sequence of layers: what each layer computes and how its units feed the next.

Everything downstream of training -- masks, criteria, liveness, compaction, FLOPs, the save
format -- works on this description, never on a module. A layer is a bias-free linear map
applied at one or more *positions*: a linear layer at one, a convolution at every output pixel
(its weight, flattened to (out, in * k * k), multiplies one input patch per position). Its
*units* are the rows of a linear layer or the output channels of a conv (axis 0 of the weight);
its *input units* are the units of the layer before: a column of a linear layer, an input
channel of a conv, or, after a conv -> linear flatten, one channel's block of ``block`` columns.
Without biases a unit whose incoming weights are all zero outputs exactly 0, after the ReLU and
any max-pool too, which is what makes dead units removable.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

Kind = Literal["linear", "conv"]
KINDS: tuple[Kind, ...] = ("linear", "conv")


@dataclass(frozen=True, eq=False)  # tensors have no single truth value: compare by identity
class Layer:
    """One bias-free layer and its geometry; followed by ReLU (+ max-pool) unless it is last.

    ``weight`` is (out, in) for linear (dense or sparse CSR) and (out, in, k, k) for conv (or,
    realised for speed, its (out, in * k * k) CSR matrix). ``side`` is the height = width of a
    conv's input image, ``pool`` the max-pool window (= stride) after the ReLU, ``block`` the
    number of input columns per input unit (H * W of the channels a linear layer reads after a
    flatten; 1 otherwise).
    """

    weight: Tensor
    kind: Kind = "linear"
    kernel: int = 1
    side: int = 1
    padding: int = 0
    pool: int = 1
    block: int = 1

    @property
    def units(self) -> int:
        """Output units: rows (linear) or output channels (conv)."""
        return int(self.weight.shape[0])

    @property
    def fan_in(self) -> int:
        """Weights per unit: in (linear) or in * k * k (conv)."""
        return math.prod(self.weight.shape[1:])

    @property
    def in_units(self) -> int:
        """Units of the layer before that this one reads (input channels, or columns/block)."""
        if self.kind == "conv":
            return self.fan_in // self.kernel**2
        return self.fan_in // self.block

    @property
    def in_features(self) -> int:
        """Numbers per input sample: channels * side * side (conv) or fan_in (linear)."""
        return self.in_units * self.side**2 if self.kind == "conv" else self.fan_in

    @property
    def out_side(self) -> int:
        """Height = width of the output before pooling (1 for linear)."""
        return self.side + 2 * self.padding - self.kernel + 1 if self.kind == "conv" else 1

    @property
    def next_side(self) -> int:
        """Height = width of what the next layer reads (after pooling)."""
        return self.out_side // self.pool

    @property
    def positions(self) -> int:
        """Where the weight is applied per input: output pixels (conv) or 1 (linear)."""
        return self.out_side**2

    def with_weight(self, weight: Tensor) -> Layer:
        """The same layer with another weight (pruned, re-fitted, compacted, CSR)."""
        return replace(self, weight=weight)

    def matrix(self, weight: Tensor | None = None) -> Tensor:
        """The weight as the (out, fan_in) matrix that multiplies a patch (a view)."""
        w = self.weight if weight is None else weight
        return w if w.dim() == 2 else w.flatten(1)

    def as_weight(self, matrix: Tensor) -> Tensor:
        """An (out, fan_in) matrix back in this layer's weight shape."""
        return matrix.reshape(self.weight.shape)

    def by_input_unit(self, t: Tensor) -> Tensor:
        """A weight-shaped tensor grouped by the input unit each entry reads: (out, in_units,
        per) -- per = 1 (linear), k * k (conv) or the flatten block (linear after a conv)."""
        return t.reshape(t.shape[0], self.in_units, -1)

    def unit_mask(self, keep_units: Tensor) -> Tensor:
        """(out,) kept units -> a keep-mask shaped like the weight (all-or-nothing per unit)."""
        return keep_units.view(-1, *[1] * (self.weight.dim() - 1)).expand(self.weight.shape)

    def image(self, x: Tensor) -> Tensor:
        """The layer's input as it reads it: (N, in, side, side) for conv, (N, features) else."""
        if self.kind == "conv":
            return x.reshape(len(x), self.in_units, self.side, self.side)
        return x.flatten(1)

    def pre_activation(self, x: Tensor) -> Tensor:
        """The layer's output before the ReLU: (N, out, s, s) for conv, (N, out) for linear.
        Always a new tensor (:func:`forward` applies the ReLU to it in place)."""
        w, x = self.weight, self.image(x)
        if self.kind == "conv" and w.numel() == 0:
            # Compacted to nothing (no path left from input to output): torch has no empty
            # convolution, and the exact answer is all zeros.
            return x.new_zeros(len(x), self.units, self.out_side, self.out_side)
        if self.kind == "conv" and w.layout != torch.sparse_csr:
            return F.conv2d(x, w, padding=self.padding)
        if self.kind == "conv":  # realised as CSR: one sparse product over all patches
            n = len(x)
            cols = F.unfold(x, self.kernel, padding=self.padding)  # (N, fan_in, P)
            z = torch.sparse.mm(w, cols.transpose(0, 1).reshape(self.fan_in, -1))  # (out, N * P)
            return z.view(self.units, n, self.out_side, self.out_side).transpose(0, 1)
        if w.layout == torch.sparse_csr:
            return torch.sparse.mm(w, x.T.contiguous()).T
        return x @ w.T

    def activate(self, z: Tensor, inplace: bool = False) -> Tensor:
        """ReLU, then max-pool when the layer has one: a hidden layer's output. ``inplace``
        overwrites ``z`` (a caller that owns it: no second buffer of its size)."""
        a = z.relu_() if inplace else torch.relu(z)
        if self.pool == 1:
            return a
        if a.shape[1] == 0:  # no channels left (see pre_activation): torch cannot pool that
            return a.new_zeros(len(a), 0, self.next_side, self.next_side)
        return F.max_pool2d(a, self.pool)

    def patches(self, x: Tensor) -> Tensor:
        """What the weight matrix multiplies, one row per (input, position): (N * P, fan_in).

        For a linear layer this is the input itself; for a conv the unfolded patches, whose
        column order (channel, row, column) is that of :meth:`matrix`.
        """
        if self.kind != "conv":
            return x.flatten(1)
        cols = F.unfold(self.image(x), self.kernel, padding=self.padding)  # (N, fan_in, P)
        return cols.transpose(1, 2).reshape(-1, cols.shape[1])

    def from_patches(self, z: Tensor, n: int) -> Tensor:
        """(N * P, out) products of :meth:`patches` and the matrix -> :meth:`pre_activation`
        shape."""
        if self.kind != "conv":
            return z
        s = self.out_side
        return z.view(n, s * s, -1).transpose(1, 2).reshape(n, -1, s, s)


Net = tuple[Layer, ...]


def weights(net: Sequence[Layer]) -> list[Tensor]:
    """Every layer's weight, first layer first."""
    return [layer.weight for layer in net]


def with_weights(net: Sequence[Layer], new: Sequence[Tensor]) -> Net:
    """The same geometry with new weights (one per layer)."""
    return tuple(layer.with_weight(w) for layer, w in zip(net, new, strict=True))


def forward(net: Sequence[Layer], x: Tensor) -> Tensor:
    """Logits: ReLU (+ pool) after every layer but the last; (N, 784) -> (N, classes)."""
    for layer in net[:-1]:
        x = layer.activate(layer.pre_activation(x), inplace=True)  # a fresh product: ours
    return net[-1].pre_activation(x)


def mlp_layers(matrices: Sequence[Tensor]) -> Net:
    """A chain of (out, in) matrices as linear layers: the study's MLP shape."""
    return tuple(Layer(w) for w in matrices)
