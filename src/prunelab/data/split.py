"""The training and test data of a run, on the device its nets train on."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass(frozen=True)
class Split:
    """The training and test data, on the device the nets train on: (N, ...) inputs and (N,)
    labels."""

    x: Tensor
    y: Tensor
    x_test: Tensor
    y_test: Tensor
