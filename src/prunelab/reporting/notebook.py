"""The study's notebook: its own numbers, and when a run is comparable with them.

The notebook (../shared/REFERENCES.md) trained one 784-1000-1000-500-200-10 bias-free MLP for
3 epochs (Adam, lr 0.001, batches of 100, all of MNIST) and pruned it layer by layer without
retraining: weights by magnitude, units by L2 norm. Its accuracies are one run of that set-up,
so they are compared with ours only when ours is the same set-up (:func:`notebook_applies`).

No matplotlib, no torch, no scipy: the statistics (prunelab.reporting.aggregate), the figures
(prunelab.reporting.figures) and the reports all read these numbers from here.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prunelab.config import Params

# The notebook's grid and test accuracies (%), per granularity, layer-wise, 3 epochs.
STUDY_GRID = (0.0, 0.25, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.97, 0.99)
STUDY_ACCURACY = {
    "weight": (97.15, 97.12, 97.00, 96.90, 96.77, 94.84, 82.43, 72.03, 64.28, 31.88),
    "unit": (97.15, 97.14, 96.98, 96.76, 94.63, 72.66, 36.67, 19.29, 13.07, 10.12),
}

# The notebook's set-up: what a run must match for its numbers to be comparable.
NOTEBOOK_ARCH = "mlp"
NOTEBOOK_HIDDEN = (1000, 1000, 500, 200)
NOTEBOOK_EPOCHS = 3
NOTEBOOK_LR = 0.001
NOTEBOOK_BATCH_SIZE = 100
NOTEBOOK_SCOPE = "layer"


def notebook_applies(cfg: Params) -> bool:
    """True when ``cfg`` is the notebook's own set-up: the MLP with hidden widths
    (1000, 1000, 500, 200), 3 epochs at lr 0.001 in batches of 100 on all of MNIST (data sizes
    None), pruned with layer scope. Any other run (LeNet-5, other widths, more epochs, a
    subset of the data, global ranking) has nothing of the notebook's to be compared with.

    The seeds, the device, the grid and the criteria listed do not matter: the comparison
    takes the notebook's k that the run also has, for magnitude / l2 where the run has them.
    """
    return (cfg.model.arch == NOTEBOOK_ARCH
            and tuple(cfg.model.mlp.hidden) == NOTEBOOK_HIDDEN
            and cfg.train.epochs == NOTEBOOK_EPOCHS
            and math.isclose(cfg.train.lr, NOTEBOOK_LR, rel_tol=1e-9, abs_tol=0.0)
            and cfg.train.batch_size == NOTEBOOK_BATCH_SIZE
            and cfg.prune.scope == NOTEBOOK_SCOPE
            and cfg.data.train_size is None and cfg.data.test_size is None)
