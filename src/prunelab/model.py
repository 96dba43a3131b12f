"""The study's network as a list of weight matrices: a bias-free ReLU MLP.

Pruning, compaction and evaluation work on ``list[Tensor]`` (one (out, in) matrix per layer),
so masks stay pure tensor functions and never touch a module.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from prunelab.errors import DataError, PrunelabError

IN_FEATURES = 28 * 28
N_CLASSES = 10
EVAL_BATCH = 10000  # the whole MNIST test set in one matmul per layer
FORMAT = "prunelab-mlp-v1"


def layer_sizes(hidden: Sequence[int]) -> tuple[int, ...]:
    """(784, *hidden, 10): the width of every layer boundary."""
    return (IN_FEATURES, *hidden, N_CLASSES)


class MLP(nn.Module):
    """784 -> hidden... -> 10, ReLU between layers, no biases (as in the study)."""

    def __init__(self, hidden: Sequence[int]) -> None:
        super().__init__()
        sizes = layer_sizes(hidden)
        self.layers = nn.ModuleList(
            nn.Linear(n_in, n_out, bias=False) for n_in, n_out in zip(sizes, sizes[1:])
        )

    def weights(self) -> list[Tensor]:
        """The (out, in) weight matrices, first layer first (live parameters, not copies)."""
        return [layer.weight for layer in self.layers]

    def forward(self, x: Tensor) -> Tensor:  # (B, 784) -> (B, 10) logits
        return forward(self.weights(), x)


def linear(w: Tensor, x: Tensor) -> Tensor:
    """x @ w.T for a dense or sparse-CSR (out, in) matrix; (B, in) -> (B, out)."""
    if w.layout == torch.sparse_csr:
        return torch.sparse.mm(w, x.T.contiguous()).T
    return x @ w.T


def forward(weights: Sequence[Tensor], x: Tensor) -> Tensor:
    """Logits of the MLP given by ``weights``; (B, 784) -> (B, 10)."""
    for w in weights[:-1]:
        x = F.relu(linear(w, x))
    return linear(weights[-1], x)


@torch.no_grad()
def accuracy(weights: Sequence[Tensor], x: Tensor, y: Tensor, batch: int = EVAL_BATCH) -> float:
    """Test accuracy in percent."""
    correct = 0
    for start in range(0, len(x), batch):
        logits = forward(weights, x[start : start + batch])
        correct += int((logits.argmax(dim=1) == y[start : start + batch]).sum())
    return 100.0 * correct / len(x)


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


def weights_blob(weights: Sequence[Tensor]) -> bytes:
    """The model file's bytes: the weight matrices (CPU copies), loadable with weights_only."""
    import io

    payload = {
        "format": FORMAT,
        "sizes": [weights[0].shape[1]] + [w.shape[0] for w in weights],
        "weights": [w.detach().to("cpu", copy=True).contiguous() for w in weights],
    }
    # Into memory first: torch.save names the zip's records after the file it is given, and
    # the atomic temporary's name is random, so equal weights would give different bytes.
    buf = io.BytesIO()
    torch.save(payload, buf)
    return buf.getvalue()


def save_weights(weights: Sequence[Tensor], path: Path) -> None:
    """Save the weight matrices atomically (see :func:`weights_blob`)."""
    from prunelab.files import write_bytes

    write_bytes(path, weights_blob(weights))


def load_weights(path: Path, device: torch.device | str = "cpu") -> list[Tensor]:
    """Load weights saved by :func:`save_weights`; a damaged file is a DataError naming it."""
    try:
        payload = torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise DataError(f"{path}: missing; run: dvc repro train") from None
    except Exception as exc:  # torch raises many kinds for a damaged zip/pickle
        raise DataError(
            f"{path}: damaged model file ({type(exc).__name__}); run: dvc repro -f train"
        ) from None
    try:
        weights, sizes = payload["weights"], payload["sizes"]
        ok = payload["format"] == FORMAT and len(weights) == len(sizes) - 1
        ok = ok and all(
            isinstance(w, Tensor) and tuple(w.shape) == (n_out, n_in)
            for w, n_in, n_out in zip(weights, sizes, sizes[1:])
        )
    except (KeyError, TypeError):
        ok = False
    if not ok:
        raise DataError(f"{path}: not a prunelab model file (unexpected content)")
    return list(weights)
