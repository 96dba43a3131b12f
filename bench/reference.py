"""The study's own way of doing things, re-written here only to time it against ours.

Training: a DataLoader over PIL images with per-sample ``ToTensor`` + ``Normalize`` (the
notebook's pipeline). Pruning: masks from a per-layer NumPy argsort, unit norms computed
row by row in Python, and testing through the same per-sample DataLoader at batch 100.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from prunelab.config import MLPConfig, ModelConfig
from prunelab.models.networks import Network, build_model

STUDY_TRANSFORM = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))])


def mlp(hidden: Sequence[int], seed: int = 0) -> Network:
    """The study's bias-free ReLU MLP (784 -> hidden... -> 10) as a trainable module, on the CPU."""
    return build_model(ModelConfig(arch="mlp", mlp=MLPConfig(tuple(hidden))), seed,
                       torch.device("cpu"))


class PilMnist(Dataset):
    """MNIST as torchvision serves it: one PIL image per item, transformed on every access."""

    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        return STUDY_TRANSFORM(Image.fromarray(self.images[i], mode="L")), int(self.labels[i])


def train_steps(model: Network, images: np.ndarray, labels: np.ndarray, steps: int,
                batch_size: int = 100) -> None:
    """``steps`` optimiser steps the study's way (DataLoader, per-sample transforms)."""
    loader = DataLoader(PilMnist(images, labels), batch_size=batch_size, shuffle=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for step, (x, y) in enumerate(loader):
        if step == steps:
            break
        optimizer.zero_grad()
        loss = F.nll_loss(F.log_softmax(model(x.view(len(x), -1)), dim=1), y)
        loss.backward()
        optimizer.step()


def weight_prune(weights: list[np.ndarray], k: float) -> list[np.ndarray]:
    """Per-layer argsort of |w|, zero the smallest floor(k*n); output layer untouched."""
    out = []
    for w in weights[:-1]:
        flat = np.abs(w).flatten()
        drop = np.argsort(flat)[: int(k * flat.size)]
        mask = np.ones(flat.size)
        mask[drop] = 0
        out.append(w * mask.reshape(w.shape))
    return out + [weights[-1]]


def unit_prune(weights: list[np.ndarray], k: float) -> list[np.ndarray]:
    """Row L2 norms computed one row at a time in Python; zero the smallest rows."""
    out = []
    for w in weights[:-1]:
        norms = np.array([np.sqrt(sum(v * v for v in row)) for row in w.tolist()])
        drop = np.argsort(norms)[: int(k * len(norms))]
        w = w.copy()
        w[drop, :] = 0
        out.append(w)
    return out + [weights[-1]]


@torch.no_grad()
def test(model: Network, images: np.ndarray, labels: np.ndarray) -> float:
    """Accuracy (%) through a per-sample-transform DataLoader at batch 100."""
    loader = DataLoader(PilMnist(images, labels), batch_size=100)
    correct = 0
    for x, y in loader:
        correct += int((model(x.view(len(x), -1)).argmax(1) == y).sum())
    return 100.0 * correct / len(images)


def load_into(model: Network, weights: list[np.ndarray]) -> Network:
    """Copy NumPy weights into the model's layers."""
    for param, w in zip(model.weights(), weights, strict=True):
        param.data = torch.from_numpy(np.asarray(w, dtype=np.float32))
    return model
