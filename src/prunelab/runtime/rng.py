"""Seeds for the study's own random draws, derived from train.seed and what each is for.

``torch.manual_seed(train.seed)`` draws the initial weights, and the shuffle generator is
seeded with train.seed too (both as the study's notebook did). Any other draw seeded with the
same number -- say the random criterion's scores for layer 0 at seed 0 -- would repeat those
very draws and be correlated with the weights it should be independent of. Deriving each
purpose's seed through NumPy's SeedSequence (a hash of the words) gives independent streams,
and the same params still give the same draws.
"""

from __future__ import annotations

import numpy as np

# What a draw is for: the first word after the run's seed, so no two purposes share a stream.
RANDOM_CRITERION = 1  # the `random` criterion's scores (one stream per layer)
IMP_CONTROL = 2  # an IMP round's controls (one stream per round and control)


def derived_seed(seed: int, *words: int) -> int:
    """A 32-bit seed for one draw, from the run's ``seed`` and the words naming the draw."""
    return int(np.random.SeedSequence([seed, *words]).generate_state(1)[0])
