"""params.yaml, loaded once into frozen, typed config objects.

Every hyper-parameter lives in params.yaml; stages read it through :func:`load_params` and pass
each library function only the section it needs. Anything unexpected -- an unknown or missing
key, a wrong type, a value out of range, NaN -- stops the stage before any work with one line
naming the key, the value and what is allowed.
"""

from __future__ import annotations

import math
import reprlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from prunelab.errors import ParamsError

Scope = Literal["layer", "global"]
SCOPES: tuple[str, ...] = ("layer", "global")
METHODS: tuple[str, ...] = ("weight", "unit")  # the granularities: what is pruned
# The study's criterion per granularity (the notebook's): the one defined here, named as in the
# criteria registry, params.yaml, metrics and plots.
STUDY_CRITERIA: dict[str, str] = {"weight": "magnitude", "unit": "l2"}
# The graph-family nets (prunelab.models.archs) the main pipeline also trains and prunes; the
# chain nets (mlp, lenet5) run every criterion and the retraining studies too.
GRAPH_ARCHS: tuple[str, ...] = ("resnet", "lstm")
ARCHS: tuple[str, ...] = ("mlp", "lenet5", *GRAPH_ARCHS)
MAX_BLOCKS = 16
MAX_CALIBRATION = 60000
MAX_SEEDS = 100  # replicates: each seed trains and prunes its own net (README: Replicates)

# Upper bounds keep hostile input from exhausting memory; they sit far above any sensible study.
MAX_HIDDEN = 16384
MAX_LAYERS = 32
MAX_CHANNELS = 1024
MAX_EPOCHS = 1000
MAX_GRID = 1000  # sparsities must be 0.001 apart (see grid_step), so [0, 1) holds 1000
MAX_SAMPLES = 60000
MAX_PARAMS_BYTES = 1 << 20  # a params file is a few hundred bytes; /dev/zero is not one


@dataclass(frozen=True)
class DataConfig:
    """How much of MNIST to use: ``None`` means all of it (60,000 train / 10,000 test)."""

    train_size: int | None = None
    test_size: int | None = None


@dataclass(frozen=True)
class MLPConfig:
    """The study's bias-free ReLU MLP: 784 inputs, these hidden widths, 10 outputs."""

    hidden: tuple[int, ...] = (1000, 1000, 500, 200)


@dataclass(frozen=True)
class LeNet5Config:
    """LeNet-5, bias-free: two 5x5 convs (these output channels, each ReLU + 2x2 max-pool),
    then linear layers of these widths and 10 outputs."""

    channels: tuple[int, ...] = (6, 16)
    fc: tuple[int, ...] = (120, 84)


@dataclass(frozen=True)
class ResNetConfig:
    """A bias-free ResNet without BatchNorm (models/archs/resnet.py): a 3x3 stem, one stage of
    ``blocks`` basic blocks per width (each stage after the stem halves the resolution), a
    global average and the output layer."""

    widths: tuple[int, ...] = (16, 32, 64)
    blocks: int = 1


@dataclass(frozen=True)
class LSTMConfig:
    """One bias-free LSTM layer reading an image row by row (28 steps of 28 pixels), its last
    hidden state into the output layer (models/archs/lstm.py)."""

    hidden: int = 128


@dataclass(frozen=True)
class ModelConfig:
    """Which architecture to train (``arch``) and every architecture's own settings; only the
    chosen one's are used."""

    arch: str = "mlp"
    mlp: MLPConfig = MLPConfig()
    lenet5: LeNet5Config = LeNet5Config()
    resnet: ResNetConfig = ResNetConfig()
    lstm: LSTMConfig = LSTMConfig()

    @property
    def graph(self) -> bool:
        """A graph-family net (resnet, lstm): pruned through its coupling groups."""
        return self.arch in GRAPH_ARCHS


@dataclass(frozen=True)
class TrainConfig:
    """The study's recipe: Adam, cross-entropy, shuffled mini-batches.

    ``seeds`` (params.yaml) lists the replicates: each trains and prunes its own net. ``seed`` is
    the one this process works on: the first of ``seeds`` (the net the single-net studies --
    speed, sensitivity, retraining -- use) unless a per-seed stage picked another with
    :meth:`Params.for_seed`.
    """

    epochs: int = 3
    lr: float = 0.001
    batch_size: int = 100
    seed: int = 0
    device: str = "auto"
    seeds: tuple[int, ...] = (0,)


@dataclass(frozen=True)
class PruneConfig:
    """The sparsity grid (sorted, unique, each in [0, 1)), the ranking scope, the criteria to
    sweep per granularity, and how many training images calibrate the criteria that need them."""

    sparsities: tuple[float, ...] = (0.0, 0.25, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.97, 0.99)
    scope: Scope = "layer"
    weight_criteria: tuple[str, ...] = ("magnitude",)
    unit_criteria: tuple[str, ...] = ("l2",)
    calibration_size: int = 1024

    def criteria(self, granularity: str) -> tuple[str, ...]:
        """The criteria swept for ``granularity`` (weight or unit)."""
        return self.weight_criteria if granularity == "weight" else self.unit_criteria


@dataclass(frozen=True)
class Section:
    """A study's own section of params.yaml: its name (the top-level key) and the function that
    validates it into a frozen config, given the raw mapping and the core params (data, model,
    train, prune) it may be checked against. A study declares its section beside its stages
    (:class:`prunelab.runtime.declare.Study`); this module knows none of them by name."""

    name: str
    parse: Callable[[Any, Params], Any]


CORE: tuple[str, ...] = ("data", "model", "train", "prune")  # every study reads these


@dataclass(frozen=True)
class Params:
    """params.yaml: the core sections every stage reads, and the study sections (``imp``,
    ``finetune``, ...) that were asked for, reachable as attributes too (``cfg.imp.rounds``)."""

    data: DataConfig
    model: ModelConfig
    train: TrainConfig
    prune: PruneConfig
    sections: Mapping[str, Any] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        # Only called for names that are not fields: a study's section.
        sections = self.__dict__.get("sections", {})
        if name in sections:
            return sections[name]
        raise AttributeError(f"params section {name!r} was not loaded here; loaded: "
                             + ", ".join([*CORE, *sections]))

    @property
    def first_seed(self) -> int:
        """The first of train.seeds: the net the single-net studies (sensitivity, speed,
        retraining) use, and the seed whose runs carry the parent's headline tags."""
        return self.train.seeds[0]

    def for_seed(self, seed: int, key: str = "train.seeds") -> Params:
        """These params for replicate ``seed`` (one of the seeds at ``key``: train.seeds, or a
        study's own list such as atinit.seeds): what its per-seed stages see as ``train.seed``
        (the init and data order train draws from that seed)."""
        section, name = key.split(".")
        seeds = getattr(getattr(self, section), name)
        if seed not in seeds:
            raise fail(key, list(seeds), f"a list that includes the seed asked for ({seed})")
        return replace(self, train=replace(self.train, seed=seed))

    def with_section(self, name: str, **changes: Any) -> Params:
        """These params with fields of study section ``name`` changed (``imp``, rounds=9)."""
        return replace(self, sections={**self.sections,
                                       name: replace(getattr(self, name), **changes)})

    def flat(self) -> dict[str, Any]:
        """Dotted names to values (``train.lr`` -> 0.001, ``model.mlp.hidden`` -> [...]), as
        MLflow and the docs show them."""
        def leaves(prefix: str, value: Any) -> dict[str, Any]:
            if isinstance(value, dict):
                return {k: v for key, sub in value.items()
                        for k, v in leaves(f"{prefix}.{key}", sub).items()}
            return {prefix: list(value) if isinstance(value, tuple) else value}

        tree = {name: asdict(getattr(self, name)) for name in CORE}
        tree |= {name: asdict(value) for name, value in self.sections.items()}
        return {k: v for section, fields in tree.items()
                for k, v in leaves(section, fields).items()}


_REPR = reprlib.Repr()  # attributes, not keywords: Python 3.10/3.11 take no arguments
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxtuple = 2, 4, 4, 4
_REPR.maxstring, _REPR.maxother, _REPR.maxlong = 40, 40, 40


def show(value: Any) -> str:
    """A short repr of a user's value: bounded work even for a YAML alias bomb or a huge int."""
    try:
        text = _REPR.repr(value)
    except (ValueError, RecursionError):  # e.g. ints past Python's 4300-digit repr limit
        text = f"<{type(value).__name__} too large to show>"
    return text if len(text) <= 60 else text[:57] + "..."


def fail(key: str, value: Any, allowed: str) -> ParamsError:
    return ParamsError(f"params.yaml: {key} = {show(value)} is not allowed: {allowed}")


def integer(raw: Mapping[str, Any], section: str, key: str, lo: int, hi: int) -> int:
    value = raw[key]
    # bool is an int subclass in Python; `epochs: true` is a typo, not 1.
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise fail(f"{section}.{key}", value, f"an integer from {lo} to {hi}")
    return value


def optional_integer(raw: Mapping[str, Any], section: str, key: str, lo: int,
                     hi: int) -> int | None:
    if raw[key] is None:
        return None
    value = raw[key]
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise fail(f"{section}.{key}", value, f"null (all) or an integer from {lo} to {hi}")
    return value


def choice(raw: Mapping[str, Any], section: str, key: str, allowed: tuple[str, ...]) -> str:
    value = raw[key]
    if not isinstance(value, str) or value not in allowed:
        raise fail(f"{section}.{key}", value, "one of " + ", ".join(allowed))
    return value


def check_keys(raw: Any, section: str, expected: tuple[str, ...]) -> Mapping[str, Any]:
    where = section or "the top level"
    if not isinstance(raw, Mapping):
        raise ParamsError(
            f"params.yaml: {section or '<file>'} = {show(raw)} is not allowed: a mapping of "
            + ", ".join(expected)
        )
    for key in raw:
        if key not in expected:
            name = f"{section}.{key}" if section else str(key)
            raise ParamsError(
                f"params.yaml: unknown key {show(name)} in {where}; allowed: "
                + ", ".join(expected)
            )
    for key in expected:
        if key not in raw:
            name = f"{section}.{key}" if section else key
            raise ParamsError(f"params.yaml: missing key {name!r} in {where}")
    return raw


def _data(raw: Any) -> DataConfig:
    raw = check_keys(raw, "data", ("train_size", "test_size"))
    return DataConfig(
        train_size=optional_integer(raw, "data", "train_size", 1, MAX_SAMPLES),
        test_size=optional_integer(raw, "data", "test_size", 1, 10000),
    )


def _widths(raw: Mapping[str, Any], key: str, n: tuple[int, int], hi: int) -> tuple[int, ...]:
    """``model.<key>``: a list of ``n[0]`` to ``n[1]`` integer widths from 1 to ``hi``."""
    values = raw[key.rsplit(".", 1)[-1]]
    count = f"{n[0]}" if n[0] == n[1] else f"{n[0]} to {n[1]}"
    allowed = f"a list of {count} integers from 1 to {hi}"
    if not isinstance(values, list) or not n[0] <= len(values) <= n[1]:
        raise fail(f"model.{key}", values, allowed)
    for i, width in enumerate(values):
        if isinstance(width, bool) or not isinstance(width, int) or not 1 <= width <= hi:
            raise fail(f"model.{key}[{i}]", width, allowed)
    return tuple(values)


def _model(raw: Any) -> ModelConfig:
    # Each architecture's settings sit in its own section, so `-S model.arch=lenet5` needs no
    # other change (DVC's -S can set a key but not delete one); a key that belongs to no
    # architecture, or to another one's section, is an error naming it.
    if isinstance(raw, Mapping) and "hidden" in raw:  # params.yaml from before architectures
        raise ParamsError("params.yaml: unknown key 'model.hidden' in model; allowed: arch, "
                          + ", ".join(ARCHS) + " (the MLP's widths are now model.mlp.hidden)")
    raw = check_keys(raw, "model", ("arch", *ARCHS))
    arch = choice(raw, "model", "arch", ARCHS)
    mlp = check_keys(raw["mlp"], "model.mlp", ("hidden",))
    lenet = check_keys(raw["lenet5"], "model.lenet5", ("channels", "fc"))
    resnet = check_keys(raw["resnet"], "model.resnet", ("widths", "blocks"))
    lstm = check_keys(raw["lstm"], "model.lstm", ("hidden",))
    return ModelConfig(
        arch=arch,
        mlp=MLPConfig(hidden=_widths(mlp, "mlp.hidden", (1, MAX_LAYERS), MAX_HIDDEN)),
        lenet5=LeNet5Config(channels=_widths(lenet, "lenet5.channels", (2, 2), MAX_CHANNELS),
                            fc=_widths(lenet, "lenet5.fc", (0, MAX_LAYERS), MAX_HIDDEN)),
        resnet=ResNetConfig(widths=_widths(resnet, "resnet.widths", (1, 4), MAX_CHANNELS),
                            blocks=integer(resnet, "model.resnet", "blocks", 1, MAX_BLOCKS)),
        lstm=LSTMConfig(hidden=integer(lstm, "model.lstm", "hidden", 1, MAX_HIDDEN)),
    )


def _train(raw: Any) -> TrainConfig:
    if isinstance(raw, Mapping) and "seed" in raw and "seeds" not in raw:  # before replicates
        raise ParamsError("params.yaml: unknown key 'train.seed' in train; allowed: epochs, lr, "
                          "batch_size, seeds, device (one seed is now train.seeds: [0])")
    raw = check_keys(raw, "train", ("epochs", "lr", "batch_size", "seeds", "device"))
    lr = raw["lr"]
    # Range first: it also rejects NaN, and math.isfinite would overflow on a huge int.
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not 0 < lr <= 10:
        raise fail("train.lr", lr, "a finite number in (0, 10]")
    device = raw["device"]
    if not isinstance(device, str) or not (
        device in ("auto", "cpu", "cuda")
        or (device.startswith("cuda:") and device[5:].isascii() and device[5:].isdigit())
    ):
        raise fail("train.device", device, "auto, cpu, cuda or cuda:N")
    seeds = seeds_of(raw["seeds"])
    return TrainConfig(
        epochs=integer(raw, "train", "epochs", 1, MAX_EPOCHS),
        lr=float(lr),
        batch_size=integer(raw, "train", "batch_size", 1, MAX_SAMPLES),
        seed=seeds[0],
        device=device,
        seeds=seeds,
    )


def seeds_of(seeds: Any, key: str = "train.seeds") -> tuple[int, ...]:
    """A list of seeds (train.seeds, or a study's own per-seed stages'): 1 to MAX_SEEDS distinct
    seeds. Order is kept: train.seeds' first is the single-net studies' seed, and each seed
    names its own DVC stages (train@0, prune_weight@0, ...)."""
    allowed = f"a list of 1 to {MAX_SEEDS} distinct integers from 0 to {2**32 - 1}"
    if not isinstance(seeds, list) or not 1 <= len(seeds) <= MAX_SEEDS:
        raise fail(key, seeds, allowed)
    for i, seed in enumerate(seeds):
        if (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32
                or seed in seeds[:i]):
            raise fail(f"{key}[{i}]", seed, allowed)
    return tuple(seeds)


def grid_step(sparsity: float) -> int:
    """MLflow's integer step for a grid value: sparsity in per-mille (k = 0.97 is step 970).

    Rounds half up, so values at least 0.001 apart always get distinct steps (Python's round()
    sends 0.0015 and 0.0025 both to 2 by rounding half to even).
    """
    return math.floor(sparsity * 1000 + 0.5)


def names(raw: Mapping[str, Any], key: str, known: Sequence[str] | None = None,
          section: str = "prune") -> tuple[str, ...]:
    """A non-empty list of distinct names, from ``known`` when given (the criteria registry
    checks a study's criteria names: :func:`prunelab.pruning.criteria.registry.check_names`)."""
    names = raw[key]
    allowed = ("a non-empty list of distinct names from: " + ", ".join(known) if known
               else "a non-empty list of distinct names")
    if not isinstance(names, list) or not 1 <= len(names) <= (len(known) if known else MAX_GRID):
        raise fail(f"{section}.{key}", names, allowed)
    for i, name in enumerate(names):
        if (not isinstance(name, str) or (known and name not in known)
                or name in names[:i]):
            raise fail(f"{section}.{key}[{i}]", name, allowed)
    return tuple(names)


def _prune(raw: Any) -> PruneConfig:
    raw = check_keys(raw, "prune", ("sparsities", "scope", "weight_criteria", "unit_criteria",
                                     "calibration_size"))
    grid = raw["sparsities"]
    allowed = f"a list of 1 to {MAX_GRID} distinct numbers in [0, 1), at least 0.001 apart"
    if not isinstance(grid, list) or not 1 <= len(grid) <= MAX_GRID:
        raise fail("prune.sparsities", grid, allowed)
    for i, k in enumerate(grid):
        if isinstance(k, bool) or not isinstance(k, (int, float)) or not 0 <= k < 1:
            raise fail(f"prune.sparsities[{i}]", k, "a number in [0, 1)")
    seen: dict[float, Any] = {}
    steps: dict[int, Any] = {}
    for i, k in enumerate(grid):
        if float(k) in seen:
            raise fail(f"prune.sparsities[{i}]", k, "each sparsity once (duplicate)")
        step = grid_step(float(k))
        if step in steps:  # two points on one MLflow step would overwrite each other
            raise fail(f"prune.sparsities[{i}]", k, f"sparsities at least 0.001 apart (it "
                        f"shares MLflow step {step}, per-mille, with {show(steps[step])})")
        seen[float(k)], steps[step] = k, k
    # An unsorted grid is simply sorted: the order a user typed carries no meaning.
    return PruneConfig(
        sparsities=tuple(sorted(float(k) for k in grid)),
        scope=choice(raw, "prune", "scope", SCOPES),  # type: ignore[arg-type]
        weight_criteria=names(raw, "weight_criteria"),
        unit_criteria=names(raw, "unit_criteria"),
        calibration_size=integer(raw, "prune", "calibration_size", 1, MAX_CALIBRATION),
    )


def rate(raw: Mapping[str, Any], section: str, key: str) -> float:
    value = raw[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise fail(f"{section}.{key}", value, "a number in (0, 1): the share pruned per round")
    return float(value)


def train_steps(data: DataConfig, train: TrainConfig) -> int:
    """Optimizer steps of one training run: epochs x ceil(training images / batch size)."""
    return train.epochs * math.ceil((data.train_size or MAX_SAMPLES) / train.batch_size)


def parse_params(raw: Any, sections: Sequence[Section] = (), *,
                 complete: bool = False) -> Params:
    """Validate a parsed params.yaml document: the core sections and the study ``sections``
    given; raise ParamsError naming the first bad key. ``complete``: the document must hold
    exactly these sections (the pipeline's first stage checks the whole file so); otherwise
    sections nobody asked for are left to their studies."""
    if complete:
        raw = check_keys(raw, "", (*CORE, *(s.name for s in sections)))
    else:
        raw = check_keys({k: v for k, v in raw.items() if k in CORE
                          or any(k == s.name for s in sections)} if isinstance(raw, Mapping)
                         else raw, "", (*CORE, *(s.name for s in sections)))
    params = Params(data=_data(raw["data"]), model=_model(raw["model"]),
                    train=_train(raw["train"]), prune=_prune(raw["prune"]))
    available = params.data.train_size or MAX_SAMPLES
    if params.prune.calibration_size > available:  # calibration comes from the training split
        raise fail("prune.calibration_size", params.prune.calibration_size,
                   f"at most data.train_size ({available}): calibration images are training "
                   "images")
    return replace(params, sections={s.name: s.parse(raw[s.name], params) for s in sections})


def read_bounded(path: Path) -> str:
    """The file's text, refusing anything over MAX_PARAMS_BYTES (a device, a log, a dump)."""
    try:
        with path.open("rb") as fh:
            blob = fh.read(MAX_PARAMS_BYTES + 1)
    except OSError as exc:
        raise ParamsError(f"{path}: cannot be read: {exc}") from None
    if len(blob) > MAX_PARAMS_BYTES:
        raise ParamsError(f"{path}: larger than {MAX_PARAMS_BYTES // 1024} KiB; a params file "
                          "is a few hundred bytes (is this the right file?)")
    try:
        return blob.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ParamsError(f"{path}: cannot be read: {exc}") from None


def parse_yaml(text: str, path: Path) -> Any:
    """Parse with DVC's own YAML reader (ruamel, YAML 1.2), so `lr: 1e-4` is a number for
    both DVC and the stages (PyYAML's YAML 1.1 rules read it as a string)."""
    from ruamel.yaml import YAML, YAMLError

    try:
        return YAML(typ="safe").load(text)
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ParamsError(f"{path}: YAML syntax error{where}: {show(problem)}") from None
    except (ValueError, LookupError, AttributeError, TypeError, RecursionError,
            OverflowError) as exc:
        # YAML constructors raise these on some malformed input (deep nesting, bad tags).
        raise ParamsError(f"{path}: not readable YAML ({type(exc).__name__})") from None


def load_params(path: Path, sections: Sequence[Section] = (), *,
                complete: bool = False) -> Params:
    """Read and validate params.yaml: the core sections and the study ``sections`` given (every
    study's, ``complete``: :func:`prunelab.studies.registry.load_params`)."""
    return parse_params(parse_yaml(read_bounded(path), path), sections, complete=complete)


def check_device(device: str) -> None:
    """A CUDA device named in params.yaml must exist here. Imports torch only for CUDA names,
    so checking the usual `auto`/`cpu` costs nothing."""
    if not device.startswith("cuda"):
        return
    import torch

    index = int(device[5:]) if device.startswith("cuda:") else 0
    if not torch.cuda.is_available() or index >= torch.cuda.device_count():
        found = torch.cuda.device_count() if torch.cuda.is_available() else 0
        raise fail("train.device", device, f"auto or cpu here ({found} CUDA devices found)")
