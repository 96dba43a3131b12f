"""Put this checkout's src/ first on the import path, so a stage runs the code DVC hashed for it.

The editable install points at one checkout; `dvc exp run --temp` and `dvc queue` run the
stages in copies of the repository, whose src/ can differ from it (edits made after an
experiment was queued). Every stage script imports this module before anything of prunelab.

First, a stage process started by DVC hands its stage to a warm server that has torch and
MLflow imported already, and exits with its status (stages/_launch.py); the stage runs here
when there is none yet, or PRUNELAB_LAUNCHER=0.
"""

import _launch

_launch.delegate()

import sys  # noqa: E402
from pathlib import Path  # noqa: E402

SRC = str(Path(__file__).resolve().parents[1] / "src")
if sys.path[:1] != [SRC]:
    sys.path.insert(0, SRC)
