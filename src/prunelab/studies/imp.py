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
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from prunelab.config import Params
from prunelab.models.layers import Net, weights, with_weights
from prunelab.runtime.files import write_bytes
from prunelab.runtime.fingerprint import code_digest, imports_of
from prunelab.runtime.pool import Tasks
from prunelab.runtime.rng import IMP_CONTROL, derived_seed
from prunelab.studies.retraining import (
    Split,
    imp_masks,
    imp_sizes,
    masked_train,
    random_masks,
    reinitialised,
    remaining,
    sized_masks,
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
               "prunelab.runtime.pool", "prunelab.pruning.criteria", "prunelab.pruning.sweep",
               "prunelab.pruning.savings")


def shaping_modules() -> set[str]:
    """The modules whose code is part of the fingerprint (by module, so moving a file counts
    only if its code changed)."""
    def excluded(name: str) -> bool:
        return any(name == x or name.startswith(x + ".") for x in NOT_SHAPING)
    return {m for m in imports_of(__name__) if not excluded(m)}


def fingerprint(cfg: Params, init_blob: bytes, device: str = "cpu", threads: int = 1) -> str:
    """What a round's results depend on, besides imp.rounds: the settings, the initial weights,
    the code that computes them (:func:`shaping_modules`, by content: see
    :mod:`prunelab.runtime.fingerprint`), the device type, the trainings' thread count and the CPU's
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
           "threads": threads, "machine": platform.machine(),
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


@dataclass(frozen=True)
class Control:
    """A control arm: its net and masks from the ticket's start, masks and a seed. A control
    that reads the masks' per-layer sizes only (``sizes_only``) can start before the ticket's
    masks exist: the sizes follow from imp.rate and imp.output_rate alone
    (:func:`studies.retraining.imp_sizes`)."""

    make: Callable[[Net, Sequence[Tensor], int], tuple[Net, Sequence[Tensor]]]
    sizes_only: bool = False


# The controls by their params.yaml names (imp.controls), each with its own seed stream per
# round.
CONTROLS: dict[str, Control] = {"reinit": Control(_reinit),
                                "random_mask": Control(_random_mask, sizes_only=True)}
CONTROL_SEEDS = {name: i for i, name in enumerate(CONTROLS, 1)}
VARIANTS = ("ticket", *CONTROLS)


def rewind_step(cfg: Params) -> int:
    """The step training restarts from after rewinding: 0 for the init, s for step s."""
    return cfg.imp.rewind if isinstance(cfg.imp.rewind, int) else 0


def round_masks(previous: Round, start: Net, cfg: Params) -> list[Tensor]:
    """Round r's keep-masks: imp.rate of each hidden layer's remaining weights (imp.output_rate
    of the output layer's) pruned from round r - 1's trained ticket by |w|."""
    trained_prev = with_weights(start, previous.trained)
    return imp_masks(trained_prev, previous.masks, cfg.imp.rate, cfg.imp.output_rate)


# A round's trainings are tasks (prunelab.runtime.pool): round r's ticket and its controls
# need only round r's masks, so the controls of round r train beside the ticket of round r + 1.
_STATE: dict[str, Any] = {}  # a worker's (or this process's) data and params


def _setup(data: Split, cfg: Params) -> None:
    _STATE.update(data=data, cfg=cfg)


def _hooks(cfg: Params) -> dict[str, int]:
    return {"eval_every": cfg.imp.eval_every, "start_step": rewind_step(cfg)}


def _dense(init: Net) -> Round:
    return dense_round(init, _STATE["data"], _STATE["cfg"])


def _ticket(job: tuple[Net, Sequence[Tensor]]) -> tuple[tuple[Tensor, ...], Outcome]:
    (start, masks), cfg = job, _STATE["cfg"]
    ticket, result = masked_train(start, masks, _STATE["data"], cfg.train, **_hooks(cfg))
    return tuple(weights(ticket)), Outcome.of(result)


def _control(job: tuple[str, int, Net, Sequence[Tensor]]) -> Outcome:
    (name, r, start, masks), cfg = job, _STATE["cfg"]
    seed = derived_seed(cfg.train.seed, IMP_CONTROL, r, CONTROL_SEEDS[name])
    net, control_masks = CONTROLS[name].make(start, masks, seed)
    _, result = masked_train(net, control_masks, _STATE["data"], cfg.train, **_hooks(cfg))
    return Outcome.of(result)


def next_round(previous: Round, start: Net, data: Split, cfg: Params) -> Round:
    """Round r in this process, from round r - 1: prune its ticket, rewind to ``start`` and
    retrain to the end of the dense run's schedule (late rewinding: steps s+1..T); the
    controls likewise, on the same per-layer sizes (the tasks :func:`run` spreads)."""
    r, masks = previous.index + 1, round_masks(previous, start, cfg)
    _setup(data, cfg)
    trained, ticket = _ticket((start, masks))
    outcomes = {"ticket": ticket, **{n: _control((n, r, start, masks)) for n in cfg.imp.controls}}
    return Round(r, tuple(masks), trained, outcomes)


def early_controls(tasks: Tasks, init: Net, cfg: Params) -> dict[str, Future[Any]]:
    """Round 1's controls that read only its mask sizes, submitted beside round 0 (whose
    training nothing else could share): with ``imp.rewind: init`` (their start) and a pool of
    two workers or more (in this process they would only delay round 0). By name; empty when
    none can start."""
    if cfg.imp.rounds < 1 or isinstance(cfg.imp.rewind, int) or tasks.in_process:
        return {}
    sizes = imp_sizes([layer.weight.numel() for layer in init], cfg.imp.rate,
                      cfg.imp.output_rate)
    sized = sized_masks(init, sizes)  # stand-ins: round 1's sizes, not its masks
    return {name: tasks.submit(_control, (name, 1, init, sized))
            for name in cfg.imp.controls if CONTROLS[name].sizes_only}


def run(init: Net, data: Split, cfg: Params, store: RoundStore,
        done: Sequence[Round] = (),
        on_round: Callable[[Round], None] = lambda r: None,
        workers: int = 1, threads: int = 1) -> list[Round]:
    """Rounds 0..imp.rounds, continuing after ``done`` (resumed from ``store``), saving each in
    order, in ``workers`` processes of ``threads`` threads (the fingerprint names that count):
    round r + 1's ticket starts once round r's is trained, beside round r's controls (round 1's
    beside round 0 when they can: :func:`early_controls`). A round's ``wall_seconds`` is the
    time since the previous one was saved (their sum is the run's wall time)."""
    rounds, last = list(done), time.perf_counter()

    def finish(rnd: Round) -> None:
        nonlocal last
        now = time.perf_counter()
        rnd = dataclasses.replace(rnd, wall_seconds=round(now - last, 3))
        last = now
        store.save(rnd)
        rounds.append(rnd)
        on_round(rnd)

    with Tasks(workers, threads, _setup, (data, cfg)) as tasks:
        early: dict[str, Future[Any]] = {}  # round 1's controls started beside round 0
        if not rounds:
            dense = tasks.submit(_dense, init)
            early = early_controls(tasks, init, cfg)
            finish(dense.result())
        rewind = rounds[0].rewind
        start = init if rewind is None else with_weights(init, rewind)
        launched: dict[int, tuple[list[Tensor], dict[str, Future[Any]]]] = {}

        def launch(r: int, previous: Round) -> None:
            masks = round_masks(previous, start, cfg)
            parts: dict[str, Future[Any]] = {"ticket": tasks.submit(_ticket, (start, masks))}
            for name in cfg.imp.controls:  # round 1's early ones: imp_masks keeps imp_sizes
                parts[name] = early.pop(name) if r == 1 and name in early else \
                    tasks.submit(_control, (name, r, start, masks))
            launched[r] = (masks, parts)

        if len(rounds) <= cfg.imp.rounds:
            launch(len(rounds), rounds[-1])
        while len(rounds) <= cfg.imp.rounds:
            r = len(rounds)
            masks, parts = launched.pop(r)
            trained, ticket = parts["ticket"].result()
            if r < cfg.imp.rounds:  # the next ticket needs only this one: start it now
                launch(r + 1, Round(r, tuple(masks), trained, {}))
            outcomes = {"ticket": ticket, **{n: parts[n].result() for n in cfg.imp.controls}}
            finish(Round(r, tuple(masks), trained, outcomes))
    store.keep_only(cfg.imp.rounds)
    return rounds[: cfg.imp.rounds + 1]
