"""An LSTM as a graph net: the input read as a sequence (an MNIST image's 28 rows of 28 pixels,
an MNIST-1D signal's 40 values), one bias-free LSTM layer, its last hidden state into a linear
output layer.

Group ``h`` (the hidden units): unit u owns rows u of all four gates (i, f, g, o) of the input
and recurrent matrices (``repeat=4``), recurrent column u and output column u. Bias-free, a unit
whose gate rows are all zero has g = tanh(0) = 0, so its cell and hidden state stay 0 from the
zero initial state: it is removable. Through its candidate gate g alone a unit receives signal
(``feeds``): with g's rows zero its other gates cannot make it nonzero.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from prunelab.models import graph as g
from prunelab.models.archs.base import GraphNet, Input, Widths, init_linear

GATES, CANDIDATE = 4, 2  # PyTorch's gate order: input, forget, cell candidate (g), output


class LSTM(GraphNet):
    def __init__(self, inp: Input, widths: Widths, sizes: Mapping[str, int]) -> None:
        super().__init__(inp, widths, sizes)
        steps, per_step = inp.steps
        self.lstm = nn.LSTM(per_step, sizes["h"], bias=False, batch_first=True)
        self.fc = init_linear(sizes["h"], inp.classes)

    @staticmethod
    def default_sizes(inp: Input, widths: Widths) -> dict[str, int]:
        return {"h": widths.lstm_hidden}

    def parameters_by_name(self) -> dict[str, nn.Parameter]:
        return {"ih": self.lstm.weight_ih_l0, "hh": self.lstm.weight_hh_l0, "fc": self.fc}

    def graph(self) -> g.Graph:
        steps = self.inp.steps[0]
        rows = g.Axis("h", 0, repeat=GATES)
        parts = (g.Part("ih", rows, g.Axis(g.INPUT, 1), steps, (CANDIDATE,)),
                 g.Part("hh", rows, g.Axis("h", 1), steps, (CANDIDATE,)),
                 g.Part("fc", g.Axis(g.OUTPUT, 0), g.Axis("h", 1)))
        sizes = {**self.sizes, g.INPUT: self.inp.steps[1], g.OUTPUT: self.inp.classes}
        return g.Graph(parts, sizes, "fc")

    def forward(self, x: Tensor) -> Tensor:
        seq = x.reshape(len(x), *self.inp.steps)
        out, _ = self.lstm(seq)
        if self._probe is not None:  # ih reads every step's input, hh the state before it
            self.reads("ih", seq.reshape(-1, seq.shape[2]))
            before = torch.cat([torch.zeros_like(out[:, :1]), out[:, :-1]], dim=1)
            self.reads("hh", before.reshape(-1, out.shape[2]))
            self.fires("h", out.reshape(-1, out.shape[2]))
        self.reads("fc", out[:, -1])
        return out[:, -1] @ self.fc.T
