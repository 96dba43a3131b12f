"""One seed's arms of the at-initialisation study: what each trains, and the store that lets a
killed run resume after its last finished arm.

An arm is a mask and the weights it starts from, trained with the study's recipe and the mask
held (:func:`prunelab.studies.retraining.masked_train`):

* ``<method>@r``: the method's mask of the untrained net at IMP round r's weight counts;
* ``<method>@r/<control>`` at the control rounds: ``shuffled`` (the mask's per-layer counts,
  placed at random: only the layer densities kept), ``reinit`` (the mask on fresh weights),
  ``inverted`` (the lowest scores kept instead, same counts);
* ``supermask/<init>@<keep>``: scores trained on frozen weights (:mod:`.supermask`), with
  ``.../random``: a random mask of the same counts on the same weights, untrained.
"""

from __future__ import annotations

import hashlib
import json
import platform
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from prunelab.config import Params
from prunelab.data.split import Split
from prunelab.models.layers import Net
from prunelab.runtime.files import read_json, write_json, write_text
from prunelab.runtime.fingerprint import code_digest, shaping
from prunelab.runtime.pool import run_tasks
from prunelab.runtime.rng import derived_seed
from prunelab.studies.atinit import scores, supermask
from prunelab.studies.retraining import masked_train, random_masks, reinitialised

# Derived-seed words (prunelab.runtime.rng): this study's draws, after rng's RANDOM_CRITERION (1)
# and IMP_CONTROL (2); then one sub-word per purpose, so no two draws share a stream.
ATINIT, BATCHES, SCORES, CONTROL = 3, 1, 2, 3
# Imported, but not part of what an arm computes (with their sub-modules): editing them keeps
# the finished arms. The criteria, sweep and savings serve the one-shot study, not these arms.
NOT_SHAPING = ("prunelab.errors", "prunelab.runtime.files", "prunelab.runtime.fingerprint",
               "prunelab.runtime.pool",
               "prunelab.pruning.criteria", "prunelab.pruning.sweep", "prunelab.pruning.savings")
COLUMNS = ("arm", "method", "control", "round", "keep", "weights_remaining", "accuracy",
           "seconds")


@dataclass(frozen=True)
class Arm:
    """One training (or, for a random supermask, one test) of the study."""

    method: str  # an at-init method, or "supermask"
    control: str = ""  # "", a sanity check, or "random" (the supermask's baseline)
    round: int | None = None  # IMP round whose weight counts the mask keeps
    init: str = ""  # supermask: its frozen weights
    keep: float | None = None  # supermask: the share of each layer kept

    @property
    def name(self) -> str:
        head = (f"{self.method}@{self.round}" if self.round is not None
                else f"supermask/{self.init}@{self.keep:g}")
        return f"{head}/{self.control}" if self.control else head


def arms(cfg: Params) -> list[Arm]:
    """Every arm of the configured study, in the order they run."""
    at = cfg.atinit
    out = [Arm(m, round=r) for m in at.methods for r in at.rounds]
    out += [Arm(m, c, r) for m in at.methods for r in at.control_rounds for c in at.controls]
    out += [Arm("supermask", c, init=i, keep=k) for i in at.supermask_inits
            for k in at.supermask_keep for c in ("", "random")]
    return out


def remaining_percent(counts: Sequence[int], net: Net) -> float:
    """Weights kept, in % of all weights (as the IMP study counts)."""
    return round(100 * sum(counts) / sum(layer.weight.numel() for layer in net), 4)


def _seed(seed: int, arm: Arm) -> int:
    return derived_seed(seed, ATINIT, CONTROL, *arm.name.encode())


def calibration_batches(split: Split, cfg: Params) -> list[tuple[Tensor, Tensor]]:
    """atinit.batches training mini-batches of train.batch_size, drawn with the net's seed:
    the data SNIP and GraSP score with. Only ``split.x``/``split.y`` (training) are read."""
    n = min(cfg.atinit.batches * cfg.train.batch_size, len(split.x))
    generator = torch.Generator().manual_seed(derived_seed(cfg.train.seed, ATINIT, BATCHES))
    idx = torch.randperm(len(split.x), generator=generator)[:n].to(split.x.device)
    return list(zip(split.x[idx].split(cfg.train.batch_size),
                    split.y[idx].split(cfg.train.batch_size), strict=True))


def start_of(arm: Arm, init: Net, cfg: Params,
             batches: Sequence[tuple[Tensor, Tensor]]) -> tuple[Net, list[Tensor]]:
    """The weights an at-init arm starts from and its keep-masks."""
    counts = scores.imp_counts(init, arm.round or 0, cfg.imp.rate, cfg.imp.output_rate)
    method, seed = scores.METHODS[arm.method], derived_seed(cfg.train.seed, ATINIT, SCORES)
    data = batches if method.uses_data else ()
    masks = scores.method_masks(method, init, counts, data, seed,
                                inverted=arm.control == "inverted")
    if arm.control == "shuffled":
        masks = random_masks(masks, _seed(cfg.train.seed, arm))
    if arm.control == "reinit":
        return reinitialised(init, _seed(cfg.train.seed, arm)), masks
    return init, masks


def run_arm(arm: Arm, init: Net, data: Split, cfg: Params,
            batches: Sequence[tuple[Tensor, Tensor]]) -> dict[str, Any]:
    """Train (or test) one arm; its row of the seed's curve, plus its histories."""
    row: dict[str, Any] = {"arm": arm.name, "method": arm.method, "control": arm.control,
                           "round": arm.round, "keep": arm.keep}
    if arm.method == "supermask":
        frozen = supermask.frozen_weights(init, arm.init, arm.keep or 1.0)
        counts = [supermask.kept_count(layer, arm.keep or 1.0) for layer in init]
        if arm.control == "random":
            found = supermask.Found(supermask.random_supermask(
                frozen, arm.keep or 1.0, data, _seed(cfg.train.seed, arm)), 0.0, ())
        else:
            found = supermask.train_supermask(
                frozen, arm.keep or 1.0, data, cfg.train, cfg.atinit.supermask_lr,
                cfg.atinit.supermask_epochs, _seed(cfg.train.seed, arm))
        return {**row, "weights_remaining": remaining_percent(counts, init),
                "accuracy": found.accuracy, "seconds": found.seconds,
                "loss": list(found.history), "evals": []}
    start, masks = start_of(arm, init, cfg, batches)
    _, result = masked_train(start, masks, data, cfg.train, eval_every=cfg.atinit.eval_every)
    counts = [int(m.sum()) for m in masks]
    return {**row, "weights_remaining": remaining_percent(counts, init),
            "accuracy": result.evals[-1][1] if result.evals else None,
            "seconds": round(result.seconds, 3),
            "layer_density": [round(c / m.numel(), 6) for c, m in zip(counts, masks,
                                                                       strict=True)],
            "loss": [[i, v] for i, v in enumerate(result.step_losses, 1) if i % 50 == 0],
            "evals": [list(e) for e in result.evals]}


def fingerprint(cfg: Params, init_blob: bytes, device: str, threads: int) -> str:
    """What an arm's result depends on besides its own name: the recipe, the IMP rates, the
    study's settings that shape a training, the initial weights, the code that computes it
    (by module content), the device, the arm's thread count and the CPU's instruction set."""
    flat = cfg.flat()
    keys = [k for k in flat if k.split(".")[0] in ("data", "train", "atinit")
            and k not in ("train.device", "train.seeds") and k not in (
                "atinit.seeds", "atinit.methods", "atinit.rounds", "atinit.control_rounds",
                "atinit.controls", "atinit.supermask_inits", "atinit.supermask_keep")]
    doc = {"params": {k: flat[k] for k in [*keys, "model.arch", "imp.rate", "imp.output_rate"]},
           "init": hashlib.sha256(init_blob).hexdigest(),
           "code": code_digest(shaping(__name__, NOT_SHAPING)),
           "torch": torch.__version__, "device": device, "threads": threads,
           "machine": platform.machine(), "simd": torch.backends.cpu.get_cpu_capability()}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


class ArmStore:
    """The seed's finished arms, one JSON file each, kept only under the same fingerprint."""

    def __init__(self, folder: Path, key: str) -> None:
        self.folder, self.key = Path(folder), key

    def _path(self, arm: Arm) -> Path:
        return self.folder / (arm.name.replace("/", "__") + ".json")

    def get(self, arm: Arm) -> dict[str, Any] | None:
        path = self._path(arm)
        try:
            doc = read_json(path)
        except Exception:  # missing or damaged: recomputed, not trusted
            return None
        return doc.get("result") if doc.get("key") == self.key else None

    def put(self, arm: Arm, result: dict[str, Any]) -> None:
        ignore = self.folder.parent / ".gitignore"  # working state: never committed
        if not ignore.is_file():
            write_text(ignore, "*\n")
        write_json(self._path(arm), {"key": self.key, "arm": asdict(arm), "result": result})


_STATE: dict[str, Any] = {}  # a worker's (or this process's) cfg, init, data and batches


def _setup(cfg: Params, init: Net, data: Split) -> None:
    _STATE.update(cfg=cfg, init=init, data=data, batches=calibration_batches(data, cfg))


def _work(arm: Arm) -> dict[str, Any]:
    state = _STATE
    return run_arm(arm, state["init"], state["data"], state["cfg"], state["batches"])


def run(cfg: Params, init: Net, data: Split, store: ArmStore,
        on_arm: Callable[[dict[str, Any], bool], None], workers: int = 1,
        threads: int = 1) -> list[dict[str, Any]]:
    """Every arm's result, in :func:`arms` order: from the store when finished before, else
    computed in ``workers`` processes of ``threads`` threads (:mod:`prunelab.runtime.pool`;
    the store's key must name that thread count) and stored as each finishes, ``on_arm``
    told then: a killed run loses only the arms in training."""
    todo, results = arms(cfg), {}
    for i, arm in enumerate(todo):
        done = store.get(arm)
        if done is not None:
            results[i] = done
            on_arm(done, True)
    pending = [i for i in range(len(todo)) if i not in results]
    for j, result in run_tasks(_work, [todo[i] for i in pending], workers=workers,
                               threads=threads, setup=_setup, shared=(cfg, init, data)):
        store.put(todo[pending[j]], result)
        on_arm(result, False)
        results[pending[j]] = result
    return [results[i] for i in range(len(todo))]
