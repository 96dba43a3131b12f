"""The architectures: the study's MLP and LeNet-5, built as a :mod:`prunelab.models.layers` net.

Training needs an ``nn.Module``; everything after it works on the layer description
(``tuple[Layer, ...]``), which is also what the model file stores (versioned).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from prunelab.config import ModelConfig
from prunelab.errors import DataError, PrunelabError
from prunelab.models import archs
from prunelab.models.archs.base import GraphNet, Input, Widths
from prunelab.models.layers import KINDS, Layer, Net, forward

IMAGE_SIDE = 28
IN_FEATURES = IMAGE_SIDE * IMAGE_SIDE
N_CLASSES = 10
# Test images per forward pass: the MNIST test set in 5. A layer's output for all 10,000 at
# once (40 MB for 1,000 units) is a fresh allocation that the kernel zeroes page by page on
# every pass; at 2,000 (8 MB) the allocator reuses memory. Same logits (rows are independent),
# a dense test pass of the study's MLP 18% faster (docs/bench.md: "Test passes").
EVAL_BATCH = 2000
FORMAT = "prunelab-net-v2"  # layers with their geometry
GRAPH_FORMAT = "prunelab-graph-v1"  # a graph-family net: its class, widths and named weights
MNIST_INPUT = Input((1, IMAGE_SIDE, IMAGE_SIDE), N_CLASSES)
GRAPH_EVAL_BATCH = 1000  # a conv net's activations for 10,000 images at once would be ~0.5 GB
OLD_FORMATS = {"prunelab-mlp-v1"}  # (out, in) matrices of an MLP: still loads
LENET_KERNEL = 5
LENET_PADDING = (2, 0)  # LeNet-5 on 28x28 MNIST: the first conv pads to keep 28x28
LENET_POOL = 2


def layer_sizes(hidden: Sequence[int]) -> tuple[int, ...]:
    """(784, *hidden, 10): the width of every layer boundary of the MLP."""
    return (IN_FEATURES, *hidden, N_CLASSES)


Geometry = list[tuple[Layer, tuple[int, ...]]]  # layers without weights, and weight shapes


def mlp_geometry(hidden: Sequence[int]) -> Geometry:
    """The MLP's layers (no weights yet) and their weight shapes."""
    sizes = layer_sizes(hidden)
    return [(Layer(torch.empty(0)), (n_out, n_in)) for n_in, n_out in zip(sizes, sizes[1:])]


def lenet5_geometry(channels: Sequence[int], fc: Sequence[int]) -> Geometry:
    """LeNet-5 for 28x28 inputs: conv 5x5 (pad 2) -> pool 2 -> conv 5x5 -> pool 2 -> flatten
    -> linear ... -> 10; ReLU after every hidden layer, no biases."""
    out: Geometry = []
    side, c_in = IMAGE_SIDE, 1
    for c_out, pad in zip(channels, LENET_PADDING, strict=True):
        layer = Layer(torch.empty(0), "conv", LENET_KERNEL, side, pad, LENET_POOL)
        out.append((layer, (c_out, c_in, LENET_KERNEL, LENET_KERNEL)))
        side, c_in = layer.next_side, c_out
    block, n_in = side * side, c_in * side * side
    for n_out in (*fc, N_CLASSES):
        out.append((Layer(torch.empty(0), block=block), (n_out, n_in)))
        block, n_in = 1, n_out
    return out


def geometry(cfg: ModelConfig) -> Geometry:
    """The chosen architecture's layers and weight shapes."""
    if cfg.arch == "lenet5":
        return lenet5_geometry(cfg.lenet5.channels, cfg.lenet5.fc)
    return mlp_geometry(cfg.mlp.hidden)


def init_weight(layer: Layer, shape: tuple[int, ...]) -> Tensor:
    """PyTorch's default init for the layer (what nn.Linear / nn.Conv2d draw, without bias)."""
    if layer.kind == "conv":
        return nn.Conv2d(shape[1], shape[0], shape[2], bias=False).weight.detach()
    return nn.Linear(shape[1], shape[0], bias=False).weight.detach()


class Network(nn.Module):
    """A layer description as a trainable module: one weight parameter per layer."""

    def __init__(self, net: Sequence[Layer]) -> None:
        super().__init__()
        self.geometry = tuple(layer.with_weight(torch.empty(0)) for layer in net)  # no copies
        self.params = nn.ParameterList(nn.Parameter(layer.weight.clone()) for layer in net)

    def layers(self) -> Net:
        """The net with the live parameters as weights (not copies)."""
        return tuple(layer.with_weight(w) for layer, w in zip(self.geometry, self.params))

    def weights(self) -> list[Tensor]:
        return list(self.params)

    def forward(self, x: Tensor) -> Tensor:  # (B, 784) -> (B, 10) logits
        return forward(self.layers(), x)


class MLP(nn.Module):
    """The study's MLP as models logged to MLflow before the layer description (format v1)
    pickled it: kept only so that ``mlflow.pytorch.load_model`` still loads those runs."""

    def __init__(self, hidden: Sequence[int]) -> None:
        super().__init__()
        sizes = layer_sizes(hidden)
        self.layers = nn.ModuleList(nn.Linear(i, o, bias=False) for i, o in zip(sizes, sizes[1:]))

    def forward(self, x: Tensor) -> Tensor:
        return forward(tuple(Layer(layer.weight) for layer in self.layers), x)


Model = Network | GraphNet  # what train fits: a chain of layers, or a graph-family net


def graph_widths(cfg: ModelConfig) -> Widths:
    """The graph-family architectures' widths from params.yaml ``model``."""
    return Widths(resnet_widths=cfg.resnet.widths, resnet_blocks=cfg.resnet.blocks,
                  lstm_hidden=cfg.lstm.hidden)


def build_model(cfg: ModelConfig, seed: int, device: torch.device) -> Model:
    """The configured architecture with PyTorch's default init drawn from ``seed`` (same seed,
    same weights; the MLP's draws are those of the study's nn.Linear chain). ResNet and LSTM
    are graph-family nets (:mod:`prunelab.models.archs`) on 1x28x28 images."""
    if cfg.graph:
        return archs.build(cfg.arch, MNIST_INPUT, graph_widths(cfg), seed, device)
    torch.manual_seed(seed)
    net = [layer.with_weight(init_weight(layer, shape)) for layer, shape in geometry(cfg)]
    return Network(net).to(device)


@torch.no_grad()
def accuracy(net: Sequence[Layer], x: Tensor, y: Tensor, batch: int = EVAL_BATCH) -> float:
    """Test accuracy in percent."""
    correct = 0
    for start in range(0, len(x), batch):
        logits = forward(net, x[start : start + batch])
        correct += int((logits.argmax(dim=1) == y[start : start + batch]).sum())
    return 100.0 * correct / len(x)


@torch.no_grad()
def model_accuracy(model: Model | Sequence[Layer], x: Tensor, y: Tensor) -> float:
    """Test accuracy in percent of a chain net (its layers, as :func:`accuracy`) or a graph
    net (its forward, in batches of GRAPH_EVAL_BATCH)."""
    if not isinstance(model, GraphNet):
        return accuracy(model.layers() if isinstance(model, Network) else model, x, y)
    correct = sum(int((model(x[i : i + GRAPH_EVAL_BATCH]).argmax(1)
                       == y[i : i + GRAPH_EVAL_BATCH]).sum())
                  for i in range(0, len(x), GRAPH_EVAL_BATCH))
    return 100.0 * correct / len(x)


def dense_accuracy(net: Sequence[Layer] | GraphNet, x: Tensor, y: Tensor) -> float:
    """The unpruned net's test accuracy as every output reports it: percent, 4 decimals (the
    one rounding of the project's dense accuracy)."""
    return round(model_accuracy(net, x, y), 4)


def to_inputs(images: np.ndarray, device: torch.device) -> Tensor:
    """uint8 images (n, 28, 28) -> float (n, 784), normalised with mean 0.5 and std 0.5."""
    x = torch.from_numpy(images.reshape(len(images), IN_FEATURES)).to(device)
    return x.float().div_(255.0).sub_(0.5).div_(0.5)


def to_targets(labels: np.ndarray, device: torch.device) -> Tensor:
    """uint8 labels (n,) -> int64 class indices (n,)."""
    return torch.from_numpy(labels.astype(np.int64)).to(device)


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when present, else the CPU; an unavailable CUDA is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise PrunelabError(f"params.yaml: train.device = {name!r} but CUDA is not available here")
    return torch.device(name)


GEOMETRY_FIELDS = ("kind", "kernel", "side", "padding", "pool", "block")


def weights_blob(net: Sequence[Layer], arch: str = "mlp") -> bytes:
    """The model file's bytes: format, architecture, each layer's geometry and weight (CPU
    copies); loadable with ``torch.load(weights_only=True)``."""
    payload = {
        "format": FORMAT,
        "arch": arch,
        "layers": [{f: getattr(layer, f) for f in GEOMETRY_FIELDS} for layer in net],
        "weights": [layer.weight.detach().to("cpu", copy=True).contiguous() for layer in net],
    }
    # Into memory first: torch.save names the zip's records after the file it is given, and
    # the atomic temporary's name is random, so equal weights would give different bytes.
    buf = io.BytesIO()
    torch.save(payload, buf)
    return buf.getvalue()


def graph_blob(net: GraphNet, arch: str) -> bytes:
    """A graph net's model file: format, architecture, input, widths, group sizes and each
    part's weight (CPU copies); loadable with ``torch.load(weights_only=True)``."""
    widths = {k: list(v) if isinstance(v, tuple) else v for k, v in vars(net.widths).items()}
    payload = {"format": GRAPH_FORMAT, "arch": arch, "input": list(net.inp.shape),
               "classes": net.inp.classes, "widths": widths, "sizes": dict(net.sizes),
               "state": {k: w.detach().to("cpu", copy=True).contiguous()
                         for k, w in net.state().items()}}
    buf = io.BytesIO()
    torch.save(payload, buf)
    return buf.getvalue()


def model_blob(model: Model, arch: str) -> bytes:
    """The model file of what train fits (see :func:`weights_blob`, :func:`graph_blob`)."""
    if isinstance(model, GraphNet):
        return graph_blob(model, arch)
    return weights_blob(model.layers(), arch)


def _from_graph(payload: dict) -> GraphNet | None:
    """A graph file's net, or None when its architecture, widths or weights do not fit."""
    cls = archs.ARCHS.get(payload["arch"]) if isinstance(payload["arch"], str) else None
    state = payload["state"]
    if cls is None or not isinstance(state, dict) or \
            not all(isinstance(w, Tensor) and w.is_floating_point() for w in state.values()):
        return None
    widths = Widths(**{k: tuple(v) if isinstance(v, list) else v
                       for k, v in payload["widths"].items()})
    inp = Input(tuple(payload["input"]), payload["classes"])
    net = cls(inp, widths, payload["sizes"])
    if set(state) != set(net.state()):
        return None
    return net.with_state(state)


def save_net(net: Sequence[Layer], path: Path, arch: str = "mlp") -> None:
    """Save a net atomically (see :func:`weights_blob`)."""
    from prunelab.runtime.files import write_bytes

    write_bytes(path, weights_blob(net, arch))


def _from_v1(payload: dict) -> Net | None:
    """An MLP file of format v1 ((out, in) matrices and the layer widths) as linear layers."""
    weights, sizes = payload["weights"], payload["sizes"]
    ok = len(weights) == len(sizes) - 1 and all(
        isinstance(w, Tensor) and tuple(w.shape) == (n_out, n_in)
        for w, n_in, n_out in zip(weights, sizes, sizes[1:]))
    return tuple(Layer(w) for w in weights) if ok else None


def _fits(layer: Layer) -> bool:
    """A layer's geometry is whole and matches its weight."""
    ints = [layer.kernel, layer.side, layer.pool, layer.block, layer.padding]
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in ints):
        return False
    if min(layer.kernel, layer.side, layer.pool, layer.block) < 1 or layer.padding < 0:
        return False
    w = layer.weight
    if not (w.is_floating_point() and w.layout == torch.strided):
        return False
    if layer.kind == "conv":
        return w.dim() == 4 and tuple(w.shape[2:]) == (layer.kernel, layer.kernel) \
            and layer.next_side >= 1
    flat = (layer.kernel, layer.side, layer.pool, layer.padding) == (1, 1, 1, 0)
    return flat and w.dim() == 2 and w.shape[1] % layer.block == 0


def _chained(a: Layer, b: Layer) -> bool:
    """``b`` reads exactly what ``a`` produces (units, image side, flatten block)."""
    if a.units != b.in_units:
        return False
    if b.kind == "conv":
        return a.kind == "conv" and b.side == a.next_side
    return b.block == (a.next_side**2 if a.kind == "conv" else 1)


def _from_v2(payload: dict) -> Net | None:
    """A v2 file's layers, or None when a geometry or weight does not fit."""
    net = []
    for geo, w in zip(payload["layers"], payload["weights"], strict=True):
        if not isinstance(geo, dict) or set(geo) != set(GEOMETRY_FIELDS) \
                or geo["kind"] not in KINDS or not isinstance(w, Tensor):
            return None
        layer = Layer(w, **geo)
        if not _fits(layer):
            return None
        net.append(layer)
    first = (net[0].in_units, net[0].side) == (1, IMAGE_SIDE) if net and net[0].kind == "conv" \
        else bool(net) and net[0].block == 1
    ok = (first and net[0].in_features == IN_FEATURES and net[-1].units == N_CLASSES
          and net[-1].kind == "linear" and all(_chained(a, b) for a, b in zip(net, net[1:])))
    return tuple(net) if ok else None


def load_net(path: Path, device: torch.device | str = "cpu") -> Net:
    """A chain net's model file (see :func:`load_model`); a graph net's is an error line."""
    net = load_model(path, device)
    if isinstance(net, GraphNet):
        raise PrunelabError(f"{path}: a {type(net).__name__} (graph-family) net; this step "
                            "runs on chain nets only (model.arch mlp or lenet5)")
    return net


def load_model(path: Path, device: torch.device | str = "cpu") -> Net | GraphNet:
    """Load a net saved by :func:`save_net` (or an MLP of the previous format) or a graph net
    saved by :func:`graph_blob`; a missing, damaged or foreign file is one DataError line
    saying what to rerun."""
    try:
        payload = torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise DataError(f"{path}: missing; run: dvc repro train") from None
    except Exception as exc:  # torch raises many kinds for a damaged zip/pickle
        raise DataError(
            f"{path}: damaged model file ({type(exc).__name__}); run: dvc repro -f train"
        ) from None
    fmt = payload.get("format") if isinstance(payload, dict) else None
    try:
        net = (_from_v2(payload) if fmt == FORMAT else
               _from_graph(payload) if fmt == GRAPH_FORMAT else
               _from_v1(payload) if fmt in OLD_FORMATS else None)
    except (KeyError, TypeError, ValueError, RuntimeError):
        net = None
    if net is None:
        known = fmt in (FORMAT, GRAPH_FORMAT) or fmt in OLD_FORMATS
        what = "unexpected content" if known else f"unknown format {str(fmt)[:40]!r}"
        raise DataError(f"{path}: not a prunelab model file ({what}); run: dvc repro -f train")
    return net.to(device) if isinstance(net, GraphNet) else net
