"""What a criterion is, and what it may look at.

A criterion scores the candidates of one layer -- single weights, or whole units (output rows
of a linear layer, output channels of a conv) -- higher meaning more important. The scope step
(`prunelab.pruning.masks`) turns scores into keep-masks: per layer, or one ranking across layers
(then `global_score` must be comparable between layers). A criterion may also *reconstruct*:
given the keep-masks, return new weights for what it keeps (and the output layer) so the
pruned net computes closer to the dense one. Nothing here mutates a weight.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from prunelab.models.layers import KINDS, Kind, Layer, weights
from prunelab.runtime.rng import RANDOM_CRITERION, derived_seed

Granularity = Literal["weight", "unit"]
GRANULARITIES: tuple[Granularity, ...] = ("weight", "unit")


@dataclass(frozen=True)
class Context:
    """The dense net and what a criterion may use besides it.

    ``calibration`` are training images only (never test images), drawn with the run's seed;
    criteria that do not need them get a Context without. Layer inputs through the dense net
    are computed once and cached.
    """

    net: tuple[Layer, ...]  # the dense net, input layer first
    calibration: Tensor | None = None  # (N, 784) normalised training images
    labels: Tensor | None = None  # (N,) their classes
    seed: int = 0
    _cache: dict[str, list[Tensor]] = field(default_factory=dict, compare=False, repr=False)

    @property
    def weights(self) -> tuple[Tensor, ...]:
        """Each layer's weight: (out, in) linear, (out, in, k, k) conv."""
        return tuple(weights(self.net))

    def layer_inputs(self) -> list[Tensor]:
        """Each layer's input on the calibration images through the dense net, in the shape the
        layer before produced it: (N, in) after a linear layer, (N, C, H, W) after a conv."""
        if "inputs" not in self._cache:
            if self.calibration is None:
                raise ValueError("this criterion needs calibration data; the context has none")
            acts, a = [], self.calibration
            with torch.no_grad():
                for layer in self.net:
                    acts.append(a)
                    a = layer.activate(layer.pre_activation(a))
            self._cache["inputs"] = acts
        return self._cache["inputs"]

    def patches(self, layer: int) -> Tensor:
        """What layer ``layer``'s weight matrix multiplies on the calibration images through the
        dense net: (N * positions, fan_in); a linear layer's input itself."""
        return self.net[layer].patches(self.layer_inputs()[layer])

    def dense_logits(self) -> Tensor:
        """The dense net's logits on the calibration images: (N, classes)."""
        return self.net[-1].pre_activation(self.layer_inputs()[-1])

    def generator(self, layer: int) -> torch.Generator:
        """A CPU generator for the layer's random draws: same seed, same draws, and independent
        of the draws that made the initial weights (see :mod:`prunelab.runtime.rng`)."""
        return torch.Generator().manual_seed(derived_seed(self.seed, RANDOM_CRITERION, layer))


LayerScore = Callable[[Context, int], Tensor]
Reconstruct = Callable[[Context, Sequence[Tensor]], list[Tensor]]


@dataclass(frozen=True)
class Criterion:
    """A named ranking of one granularity; the name is the one in params.yaml, metrics, plots."""

    name: str
    granularity: Granularity
    score: LayerScore  # layer i's scores: (out, in) for weights, (out,) for units
    global_score: LayerScore | None = None  # comparable across layers; None: same as score
    reconstruct: Reconstruct | None = None  # (context, keep-masks) -> new weights, all layers
    needs_calibration: bool = False  # the sweep draws calibration images only when needed
    layer_kinds: tuple[Kind, ...] = KINDS  # the layers it can rank (prunelab.pruning.masks checks)
    summary: str = ""  # one line for --help, the README and MLflow

    def scores(self, context: Context, layer: int, across_layers: bool) -> Tensor:
        """Layer ``layer``'s scores, comparable across layers when ``across_layers``."""
        fn = self.global_score if across_layers and self.global_score else self.score
        return fn(context, layer)
