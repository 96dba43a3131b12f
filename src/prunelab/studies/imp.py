"""The IMP study round by round, each round saved as it finishes so an interrupted run resumes.

Round 0 trains the dense net from its initial weights (testing it every ``imp.eval_every``
steps, and keeping the late-rewinding point); round r >= 1 prunes the previous round's trained
ticket (:func:`studies.retraining.imp_masks`), rewinds, retrains, and trains the controls on the
same mask sizes. A round file (``models/imp/round_NN.pt``) holds the ticket's masks and trained
weights, what every net of the round measured, and a *fingerprint* of everything that shaped
it: the settings, the initial weights, the code and the machine's thread count. A rerun keeps
the leading rounds whose fingerprint matches and computes the rest, so `dvc repro` after a kill
-- or `-S imp.rounds=20` after 15 -- does no round twice.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import platform
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from prunelab.config import Params
from prunelab.models.layers import Net, weights, with_weights
from prunelab.runtime.files import write_bytes
from prunelab.runtime.fingerprint import code_digest, imports_of
from prunelab.runtime.rng import IMP_CONTROL, derived_seed
from prunelab.studies.retraining import (
    Split,
    imp_masks,
    masked_train,
    random_masks,
    reinitialised,
    remaining,
)
from prunelab.training.loop import TrainResult

FORMAT = "prunelab-imp-round-v1"
ROUND_FILE = re.compile(r"round_(\d+)\.pt")


@dataclass(frozen=True)
class Outcome:
    """One trained net of a round: final test accuracy (%), the step of its best test pass,
    every test pass, and the optimisation seconds."""

    accuracy: float
    best_step: int | None
    evals: tuple[tuple[int, float], ...]
    seconds: float

    @classmethod
    def of(cls, result: TrainResult) -> Outcome:
        return cls(result.history[-1].test_accuracy, result.best_step, result.evals,
                   round(result.seconds, 3))


@dataclass(frozen=True)
class Round:
    """One finished round: the ticket's keep-masks and trained weights, and every outcome
    (``ticket`` and the controls). Round 0 also carries the rewinding point when it is a step."""

    index: int
    masks: tuple[Tensor, ...]
    trained: tuple[Tensor, ...]
    outcomes: dict[str, Outcome]
    rewind: tuple[Tensor, ...] | None = None
    wall_seconds: float = 0.0  # the whole round: every training and test pass
    resumed: bool = field(default=False, compare=False)  # loaded from disk, not run now

    @property
    def remaining(self) -> tuple[int, ...]:
        return remaining(self.masks)

    def remaining_percent(self) -> float:
        return 100.0 * sum(self.remaining) / sum(m.numel() for m in self.masks)


# The code that computes a round's numbers: every prunelab module this one imports, directly or
# not, less those below (errors, file writing, and what only the other studies use: a test checks
# the split); editing a figure, the tracking or a criterion keeps the saved rounds.
NOT_SHAPING = ("prunelab.errors", "prunelab.runtime.files", "prunelab.runtime.fingerprint",
               "prunelab.pruning.criteria", "prunelab.pruning.sweep", "prunelab.pruning.savings")


def shaping_modules() -> set[str]:
    """The modules whose code is part of the fingerprint (by module, so moving a file counts
    only if its code changed)."""
    def excluded(name: str) -> bool:
        return any(name == x or name.startswith(x + ".") for x in NOT_SHAPING)
    return {m for m in imports_of(__name__) if not excluded(m)}


def fingerprint(cfg: Params, init_blob: bytes, device: str = "cpu") -> str:
    """What a round's results depend on, besides imp.rounds: the settings, the initial weights,
    the code that computes them (:func:`shaping_modules`, by content: see
    :mod:`prunelab.runtime.fingerprint`), the device type, the thread count and the CPU's
    instruction set (float sums differ between CPU and GPU, 1 and 2 threads, AVX2 and
    AVX-512), so rounds fetched from another machine are recomputed, not mixed in."""
    code = code_digest(shaping_modules())
    flat = cfg.flat()
    # The architecture's widths are in the initial weights; imp.rounds only says where to stop.
    # (The MNIST files need no hash: loading checks them against the official MD5s.)
    # train.seed is the net's seed (the first of train.seeds); the other replicates' seeds do
    # not touch the rounds. The device is resolved, below.
    keys = [k for k in flat if k.split(".")[0] in ("data", "train", "imp")
            and k not in ("imp.rounds", "train.device", "train.seeds")]
    keys.append("model.arch")
    doc = {"params": {k: flat[k] for k in keys}, "init": hashlib.sha256(init_blob).hexdigest(),
           "code": code, "torch": torch.__version__, "device": device,
           "threads": torch.get_num_threads(), "machine": platform.machine(),
           "simd": torch.backends.cpu.get_cpu_capability()}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


class RoundStore:
    """The folder of round files of one fingerprint."""

    def __init__(self, folder: Path, fingerprint: str) -> None:
        self.folder, self.fingerprint = Path(folder), fingerprint

    def path(self, index: int) -> Path:
        return self.folder / f"round_{index:02d}.pt"

    def _files(self) -> dict[int, Path]:
        if not self.folder.is_dir():
            return {}
        return {int(m.group(1)): p for p in self.folder.iterdir()
                if (m := ROUND_FILE.fullmatch(p.name))}

    def resume(self, device: torch.device) -> tuple[list[Round], int]:
        """The leading rounds (0, 1, ...) saved with this fingerprint; every other round file is
        deleted (made with other settings or code, or after a gap). Returns the rounds and
        how many files were discarded."""
        files, rounds = self._files(), []
        while len(rounds) in files:
            loaded = self._load(files[len(rounds)], device)
            if loaded is None:
                break
            rounds.append(loaded)
        stale = [p for i, p in files.items() if i >= len(rounds)]
        for p in stale:
            p.unlink()
        if self.folder.is_dir():  # a kill mid-write (SIGKILL) leaves a temporary behind
            for tmp in self.folder.glob(".round_*.tmp"):
                tmp.unlink()
        return rounds, len(stale)

    def _load(self, path: Path, device: torch.device) -> Round | None:
        try:
            doc = torch.load(path, map_location=device, weights_only=True)
        except Exception:  # a damaged file is recomputed, not trusted
            return None
        index = int(path.name[len("round_"):-len(".pt")])  # the name says which round it holds
        if not isinstance(doc, dict) or doc.get("format") != FORMAT \
                or doc.get("fingerprint") != self.fingerprint or doc.get("round") != index:
            return None
        outcomes = {name: Outcome(o["accuracy"], o["best_step"],
                                  tuple((int(s), float(a)) for s, a in o["evals"]), o["seconds"])
                    for name, o in doc["outcomes"].items()}
        rewind = tuple(doc["rewind"]) if doc["rewind"] is not None else None
        return Round(doc["round"], tuple(doc["masks"]), tuple(doc["trained"]), outcomes, rewind,
                     doc["wall_seconds"], resumed=True)

    def save(self, rnd: Round) -> None:
        """Write one round atomically (a kill mid-write leaves no half file)."""
        doc: dict[str, Any] = {
            "format": FORMAT, "fingerprint": self.fingerprint, "round": rnd.index,
            "masks": [m.cpu() for m in rnd.masks], "trained": [w.cpu() for w in rnd.trained],
            "outcomes": {name: {"accuracy": o.accuracy, "best_step": o.best_step,
                                "evals": [list(e) for e in o.evals], "seconds": o.seconds}
                         for name, o in rnd.outcomes.items()},
            "rewind": None if rnd.rewind is None else [w.cpu() for w in rnd.rewind],
            "wall_seconds": rnd.wall_seconds,
        }
        buf = io.BytesIO()  # in memory first: torch.save names records after the file
        torch.save(doc, buf)
        self.folder.mkdir(parents=True, exist_ok=True)
        write_bytes(self.path(rnd.index), buf.getvalue())

    def keep_only(self, n_rounds: int) -> None:
        """Delete the round files past round ``n_rounds`` (a run with fewer rounds)."""
        for i, p in self._files().items():
            if i > n_rounds:
                p.unlink()


def dense_round(init: Net, data: Split, cfg: Params) -> Round:
    """Round 0: the dense net trained from ``init``, tested every imp.eval_every steps; keeps
    its weights after step imp.rewind when that is a step."""
    ones = [torch.ones_like(layer.weight, dtype=torch.bool) for layer in init]
    step = cfg.imp.rewind if isinstance(cfg.imp.rewind, int) else None
    trained, result = masked_train(init, None, data, cfg.train, eval_every=cfg.imp.eval_every,
                                   checkpoint_at=step)
    return Round(0, tuple(ones), tuple(weights(trained)), {"ticket": Outcome.of(result)},
                 rewind=result.checkpoint)


def _reinit(start: Net, masks: Sequence[Tensor], seed: int) -> tuple[Net, Sequence[Tensor]]:
    """Control: the ticket's mask on fresh random weights (do the initial values matter?)."""
    return reinitialised(start, seed), masks


def _random_mask(start: Net, masks: Sequence[Tensor],
                 seed: int) -> tuple[Net, Sequence[Tensor]]:
    """Control: a random mask of the ticket's per-layer sizes on the ticket's starting weights
    (does the structure matter?)."""
    return start, random_masks(masks, seed)


Control = Callable[[Net, Sequence[Tensor], int], tuple[Net, Sequence[Tensor]]]
# The controls by their params.yaml names (imp.controls), each with its own seed stream per
# round.
CONTROLS: dict[str, Control] = {"reinit": _reinit, "random_mask": _random_mask}
CONTROL_SEEDS = {name: i for i, name in enumerate(CONTROLS, 1)}
VARIANTS = ("ticket", *CONTROLS)


def rewind_step(cfg: Params) -> int:
    """The step training restarts from after rewinding: 0 for the init, s for step s."""
    return cfg.imp.rewind if isinstance(cfg.imp.rewind, int) else 0


def next_round(previous: Round, start: Net, data: Split, cfg: Params) -> Round:
    """Round r: prune the previous ticket, rewind to ``start`` and retrain to the end of the
    dense run's schedule (late rewinding: steps s+1..T); the controls likewise, on the same
    per-layer sizes."""
    r, imp = previous.index + 1, cfg.imp
    trained_prev = with_weights(start, previous.trained)
    masks = imp_masks(trained_prev, previous.masks, imp.rate, imp.output_rate)
    hooks = {"eval_every": imp.eval_every, "start_step": rewind_step(cfg)}
    ticket, result = masked_train(start, masks, data, cfg.train, **hooks)
    outcomes = {"ticket": Outcome.of(result)}
    for name in imp.controls:
        seed = derived_seed(cfg.train.seed, IMP_CONTROL, r, CONTROL_SEEDS[name])
        net, control_masks = CONTROLS[name](start, masks, seed)
        _, res = masked_train(net, control_masks, data, cfg.train, **hooks)
        outcomes[name] = Outcome.of(res)
    return Round(r, tuple(masks), tuple(weights(ticket)), outcomes)


def run(init: Net, data: Split, cfg: Params, store: RoundStore,
        done: Sequence[Round] = (),
        on_round: Callable[[Round], None] = lambda r: None) -> list[Round]:
    """Rounds 0..imp.rounds, continuing after ``done`` (resumed from ``store``), saving each."""
    rounds = list(done)

    def finish(make: Callable[[], Round]) -> None:
        began = time.perf_counter()
        rnd = dataclasses.replace(make(), wall_seconds=round(time.perf_counter() - began, 3))
        store.save(rnd)
        rounds.append(rnd)
        on_round(rnd)

    if not rounds:
        finish(lambda: dense_round(init, data, cfg))
    rewind = rounds[0].rewind
    start = init if rewind is None else with_weights(init, rewind)
    while len(rounds) <= cfg.imp.rounds:
        finish(lambda: next_round(rounds[-1], start, data, cfg))
    store.keep_only(cfg.imp.rounds)
    return rounds[: cfg.imp.rounds + 1]
