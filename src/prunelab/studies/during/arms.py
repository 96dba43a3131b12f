"""The arms of the during-training study: what each trains, how it is tested, and the store
that lets a killed run resume after its last finished arm.

An arm is one training of one seed's init (the init ``train@<seed>`` starts from, drawn again
from the seed) with the study's recipe, the mask set by a :mod:`.sparse` method:

* ``gradual/<shape>@s``: magnitude pruning of each hidden layer to sparsity s on the schedule
  ``shape`` (``decreasing`` is Zhu & Gupta's cubic; the schedule comparison adds ``constant``
  and ``increasing`` at ``during.final_sparsity``);
* ``oneshot@s``: dense until the schedule's end, pruned there at once, fine-tuned for the steps
  left: one-shot magnitude + fine-tuning with the same total number of steps;
* ``set@s``, ``rigl@s``, ``static@s``: dynamic sparse training from a random mask at s, and the
  same random mask held (RigL's static baseline);
* ``dense/earlybird``: the dense run, tracking its magnitude masks at
  ``during.earlybird_sparsity``; ``earlybird@s`` the ticket drawn where the masks settle and
  ``earlybird/late@s`` the one drawn after full training, each rewound to the init and
  retrained with its mask held (one IMP-style round).

Every trained arm is then tested clean, under Gaussian input noise (``during.noise``, in the
normalised inputs' units) and after deleting a further share of its surviving hidden weights
at random (``during.delete``): the robustness measures of the schedule comparison. Every draw
is seeded from the arm's seed and name (:mod:`prunelab.runtime.rng`).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import platform
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from prunelab.config import Params, train_steps
from prunelab.data.split import Split
from prunelab.models.layers import Net, with_weights
from prunelab.models.networks import accuracy, build_model
from prunelab.runtime.files import write_bytes
from prunelab.runtime.fingerprint import code_digest, shaping
from prunelab.runtime.pool import Tasks
from prunelab.runtime.rng import derived_seed
from prunelab.studies.atinit.arms import ArmStore
from prunelab.studies.during import sparse
from prunelab.studies.during.schedule import ONESHOT, bounds

# Derived-seed words (prunelab.runtime.rng): after RANDOM_CRITERION (1), IMP_CONTROL (2) and the
# at-init study's (3); one sub-word per purpose.
DURING, MASK, NOISE, DELETE = 4, 1, 2, 3
NOT_SHAPING = ("prunelab.errors", "prunelab.runtime.files", "prunelab.runtime.fingerprint",
               "prunelab.runtime.pool", "prunelab.pruning", "prunelab.studies.atinit.arms")
MEASURES = ("accuracy", "noise", "delete")  # clean; under input noise; after random deletion
COLUMNS = ("seed", "arm", "method", "shape", "sparsity", "weights_remaining", "accuracy",
           "seconds", "steps", "drawn_at")


@dataclass(frozen=True)
class Arm:
    """One training of the study."""

    seed: int
    method: str  # gradual, oneshot, set, rigl, static, dense, earlybird
    sparsity: float = 0.0  # each hidden layer's final sparsity
    shape: str = ""  # gradual: the schedule's shape; earlybird: "" or "late"

    @property
    def name(self) -> str:
        if self.method == "gradual":
            return f"gradual/{self.shape}@{self.sparsity:g}"
        if self.method == "dense":
            return "dense/earlybird"
        head = f"{self.method}@{self.sparsity:g}"
        return f"earlybird/late@{self.sparsity:g}" if self.shape == "late" else head

    @property
    def key(self) -> str:
        """Its name in the store: the seed and the name."""
        return f"{self.seed}/{self.name}"


def arms(cfg: Params) -> list[Arm]:
    """Every arm of the configured study, in the order they run: the methods on
    ``during.method_seeds`` (the dense run first: its masks draw the early-bird tickets), then the
    schedule comparison on ``during.schedule_seeds``; each (seed, name) once."""
    d, out = cfg.during, []
    for seed in d.method_seeds:
        if d.earlybird:
            out.append(Arm(seed, "dense"))
            out += [Arm(seed, "earlybird", d.earlybird_sparsity),
                    Arm(seed, "earlybird", d.earlybird_sparsity, "late")]
        out += [Arm(seed, "gradual", s, "decreasing") for s in d.sparsities]
        out += [Arm(seed, ONESHOT, s) for s in d.sparsities]
        out += [Arm(seed, m, s) for m in d.dst_methods for s in d.dst_sparsities]
    for seed in d.schedule_seeds:
        out += [Arm(seed, "gradual", d.final_sparsity, shape) for shape in d.shapes]
    return list(dict.fromkeys(out))


def _seed(arm: Arm, purpose: int) -> int:
    return derived_seed(arm.seed, DURING, purpose, *arm.name.encode())


def steps(cfg: Params) -> tuple[int, int]:
    """The schedules' first and last pruning steps (shares of the run's steps)."""
    return bounds(train_steps(cfg.data, cfg.train), cfg.during.start, cfg.during.end)


def method_of(arm: Arm, cfg: Params, init: Net, ticket: Sequence[Tensor] | None
              ) -> sparse.Method:
    """The :mod:`.sparse` method an arm trains with (``ticket``: an early-bird arm's mask)."""
    d, (start, end) = cfg.during, steps(cfg)
    if arm.method == "gradual":
        return sparse.Gradual(arm.sparsity, start, end, d.every, arm.shape)
    if arm.method == ONESHOT:
        return sparse.Gradual(arm.sparsity, end, end, d.every, ONESHOT)
    if arm.method in ("set", "rigl"):
        return sparse.Regrow(arm.sparsity, d.every, end, d.drop_fraction,
                             "random" if arm.method == "set" else "gradient",
                             _seed(Arm(arm.seed, "set", arm.sparsity), MASK))
    if arm.method == "static":  # SET's and RigL's starting mask, held
        return sparse.Static(sparse.random_masks([layer.weight for layer in init],
                                                 arm.sparsity,
                                                 _seed(Arm(arm.seed, "set", arm.sparsity),
                                                       MASK)))
    if arm.method == "dense":
        return sparse.EarlyBird(d.earlybird_sparsity, d.earlybird_every)
    if ticket is None:
        raise ValueError(f"{arm.name}: no ticket to train")
    return sparse.Static(list(ticket))


def robustness(net: Net, masks: Sequence[Tensor] | None, data: Split, cfg: Params,
               arm: Arm) -> dict[str, float]:
    """Test accuracy under Gaussian input noise of each ``during.noise`` std (normalised
    units), and after deleting each ``during.delete`` share of every hidden layer's surviving
    weights at random; seeded by the arm."""
    out: dict[str, float] = {}
    for sigma in cfg.during.noise:
        generator = torch.Generator().manual_seed(_seed(arm, NOISE))
        noise = torch.randn(data.x_test.shape, generator=generator).to(data.x_test.device)
        out[f"noise_{sigma:g}"] = round(accuracy(net, data.x_test + sigma * noise,
                                                 data.y_test), 4)
    for share in cfg.during.delete:
        generator = torch.Generator().manual_seed(_seed(arm, DELETE))
        out[f"delete_{share:g}"] = round(accuracy(deleted(net, masks, share, generator),
                                                  data.x_test, data.y_test), 4)
    return out


@dataclass(frozen=True)
class Tickets:
    """The dense run's early-bird masks: the one drawn where the masks settle (None: never)
    and the one drawn after full training, with the steps they were drawn at."""

    early: list[Tensor] | None
    late: list[Tensor]
    early_step: int | None
    late_step: int

    def of(self, arm: Arm) -> tuple[list[Tensor] | None, int | None]:
        return (self.late, self.late_step) if arm.shape == "late" \
            else (self.early, self.early_step)


def deleted(net: Net, masks: Sequence[Tensor] | None, share: float,
            generator: torch.Generator) -> Net:
    """The net with floor(``share`` x survivors) of each hidden layer's surviving weights (its
    mask's, or its nonzero ones) set to 0, drawn with ``generator``; the output layer as is."""
    weights = []
    for i, layer in enumerate(net):
        w = layer.weight
        if i == len(net) - 1:
            weights.append(w)
            continue
        alive = (masks[i] if masks is not None else w != 0).flatten().nonzero().flatten()
        gone = alive[torch.randperm(alive.numel(), generator=generator)[
            : math.floor(share * alive.numel())].to(alive.device)]
        flat = w.flatten().clone()
        flat[gone] = 0.0
        weights.append(flat.view(w.shape))
    return with_weights(net, weights)


def run_arm(arm: Arm, cfg: Params, data: Split, tickets: Tickets | None = None
            ) -> tuple[dict[str, Any], Tickets | None]:
    """Train and test one arm: its row with its histories, and (the dense run) the tickets."""
    recipe = replace(cfg.train, seed=arm.seed)
    init = tuple(layer.with_weight(layer.weight.detach())
                 for layer in build_model(cfg.model, arm.seed, data.x.device).layers())
    ticket, drawn_at = tickets.of(arm) if tickets and arm.method == "earlybird" else (None, None)
    method = method_of(arm, cfg, init, ticket)
    net, trained = sparse.train_dynamic(init, data, recipe, method,
                                        eval_every=cfg.during.eval_every)
    row: dict[str, Any] = {
        "seed": arm.seed, "arm": arm.name, "method": arm.method, "shape": arm.shape,
        "sparsity": arm.sparsity,
        "weights_remaining": sparse.remaining_percent(trained.masks,
                                                      [layer.weight for layer in net]),
        "accuracy": trained.evals[-1][1] if trained.evals else round(
            accuracy(net, data.x_test, data.y_test), 4),
        "seconds": trained.seconds, "steps": trained.steps, "drawn_at": drawn_at,
        **robustness(net, trained.masks, data, cfg, arm),
        "evals": [list(e) for e in trained.evals],
        "sparsity_history": [list(s) for s in trained.sparsity],
        "loss": [list(v) for v in trained.losses]}
    if not isinstance(method, sparse.EarlyBird):
        return row, None
    d = cfg.during
    at = sparse.earliest_stable(method.distances, d.earlybird_threshold, d.earlybird_window)
    row.update({"drawn_at": at, "distances": [list(v) for v in method.distances],
                "tracking_seconds": round(method.seconds, 3)})
    late = sparse.magnitude_masks([layer.weight for layer in net], d.earlybird_sparsity)
    return row, Tickets(None if at is None else method.masks[at], late, at, trained.steps)


def fingerprint(cfg: Params, device: str, threads: int) -> str:
    """What an arm's result depends on besides its own name and seed: the recipe, the study's
    settings that shape a training, the code that computes it (by module content), the device,
    the arm's thread count and the CPU's instruction set."""
    flat = cfg.flat()
    listing = ("during.method_seeds", "during.schedule_seeds", "during.shapes", "during.sparsities",
               "during.dst_methods", "during.dst_sparsities")
    keys = [k for k in flat if k.split(".")[0] in ("data", "train", "during", "model")
            and k not in ("train.device", "train.seeds", *listing)]
    doc = {"params": {k: flat[k] for k in keys},
           "code": code_digest(shaping(__name__, NOT_SHAPING)),
           "torch": torch.__version__, "device": device, "threads": threads,
           "machine": platform.machine(), "simd": torch.backends.cpu.get_cpu_capability()}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


class Store(ArmStore):
    """One seed's finished arms (:class:`prunelab.studies.atinit.arms.ArmStore`), and the dense
    run's tickets beside them."""

    def tickets(self) -> Tickets | None:
        try:
            saved = torch.load(io.BytesIO((self.folder / "tickets.pt").read_bytes()),
                               weights_only=True)
        except Exception:  # missing or damaged: the dense run is recomputed
            return None
        return Tickets(**saved["tickets"]) if saved.get("key") == self.key else None

    def put_tickets(self, tickets: Tickets) -> None:
        buffer = io.BytesIO()
        torch.save({"key": self.key, "tickets": asdict(tickets)}, buffer)
        write_bytes(self.folder / "tickets.pt", buffer.getvalue())


_STATE: dict[str, Any] = {}  # a worker's (or this process's) params and data


def _setup(cfg: Params, data: Split) -> None:
    _STATE.update(cfg=cfg, data=data)


def _work(job: tuple[Arm, Tickets | None]) -> tuple[dict[str, Any], Tickets | None]:
    return run_arm(job[0], _STATE["cfg"], _STATE["data"], job[1])


class _Run:
    """One run of the study's arms: resumed from the stores, else trained as tasks; a seed's
    early-bird arms wait for its dense run (their tickets), every other arm starts at once."""

    def __init__(self, cfg: Params, folder: Path, key: str, tasks: Tasks,
                 on_arm: Callable[[dict[str, Any], bool], None]) -> None:
        self.cfg, self.folder, self.key, self.tasks, self.on_arm = cfg, folder, key, tasks, on_arm
        self.results: dict[Arm, dict[str, Any]] = {}
        self.tickets: dict[int, Tickets | None] = {}
        self.waiting: list[Arm] = []  # early-bird arms whose seed's dense run is training
        self.running: dict[Future[Any], Arm] = {}

    def store(self, arm: Arm) -> Store:
        return Store(self.folder / str(arm.seed), self.key)

    def start(self, arm: Arm) -> None:
        """The arm from its store, or skipped (an early-bird arm without a ticket), or
        submitted (with one worker it has then run: handled at once)."""
        done = self.store(arm).get(arm)  # type: ignore[arg-type]
        if arm.method == "dense":  # resumed only with its tickets; else trained again
            saved = self.store(arm).tickets()
            if saved is None:
                done = None
            else:
                self.tickets[arm.seed] = saved
        if arm.method == "earlybird":
            if arm.seed not in self.tickets:  # its dense run is training
                self.waiting.append(arm)
                return
            mine = self.tickets[arm.seed]
            if mine is None or mine.of(arm)[0] is None:
                return
        if done is not None:
            self.results[arm] = done
            self.on_arm(done, True)
            return
        future = self.tasks.submit(_work, (arm, self.tickets.get(arm.seed)))
        self.running[future] = arm
        if self.tasks.in_process:
            self.finish(future)

    def finish(self, future: Future[Any]) -> None:
        arm = self.running.pop(future)
        result, drawn = future.result()
        if arm.method == "dense":
            self.tickets[arm.seed] = drawn
            if drawn is not None:
                self.store(arm).put_tickets(drawn)
        self.store(arm).put(arm, result)  # type: ignore[arg-type]
        self.results[arm] = result
        self.on_arm(result, False)
        if arm.method == "dense":
            ready = [a for a in self.waiting if a.seed == arm.seed]
            self.waiting = [a for a in self.waiting if a.seed != arm.seed]
            for waiting in ready:
                self.start(waiting)


def run(cfg: Params, data: Split, folder: Path, key: str,
        on_arm: Callable[[dict[str, Any], bool], None], workers: int = 1,
        threads: int = 1) -> list[dict[str, Any]]:
    """Every arm's result in :func:`arms` order, from ``folder/<seed>/`` when finished before
    under the same ``key``, else computed in ``workers`` processes of ``threads`` threads
    (:mod:`prunelab.runtime.pool`; ``key`` must name that count) and stored as each finishes.
    The dense run's tickets are stored too, so its early-bird arms resume; with no ticket (the
    masks never settled) the early-bird arm is left out."""
    with Tasks(workers, threads, _setup, (cfg, data)) as tasks:
        state = _Run(cfg, folder, key, tasks, on_arm)
        for arm in arms(cfg):
            state.start(arm)
        while state.running:
            finished, _ = wait(list(state.running), return_when=FIRST_COMPLETED)
            for future in finished:
                state.finish(future)
    return [state.results[arm] for arm in arms(cfg) if arm in state.results]
